"""Checkpoint or ONNX -> precision ONNX graph -> TensorRT engine (+ `<engine>.json` sidecar).

    from . import build_engine
    result = build_engine("best.pt", "best.fp16.engine", precision="fp16", batch="1:8:32")

Two runtimes (`tensorrt.runtimes`): TensorRT 10/11 builds on the GPU that will run the
engine; TensorRT for RTX builds anywhere, a CPU-only machine included, for a list of compute
capabilities, and specialises the engine just in time on the GPU that runs it. `runtime="auto"`
takes TensorRT where it imports and a GPU exists, else TensorRT for RTX.

Why this order: every numerical decision (FP16 casts, INT8 Q/DQ scales) is made in the ONNX graph
by `mlic_edge.export`, where ONNX Runtime on any CPU can check it (`mlic-edge parity`). TensorRT
11 is strongly typed (TensorRT 10 with NetworkDefinitionCreationFlag.STRONGLY_TYPED behaves the
same), so the engine runs exactly the types of that graph and no precision flag is set here:
BuilderFlag.FP16/INT8, calibrators and layer precisions are gone in TensorRT 11.

Steps: (1) pick the runtime; (2) write/reuse the precision ONNX; (3) without a runtime that can
build here, stop with a one-line BackendUnavailable naming the written ONNX and the pip extra;
(4) reuse an existing engine whose sidecar key (ONNX sha256, runtime and version, target compute
capabilities, precision, batch profile; the GPU for TensorRT 10/11) matches; (5) parse, one
optimization profile for the batch range, (TensorRT 10/11) timing cache loaded from and saved
back to a file, build, write engine and sidecar atomically.
"""
from __future__ import annotations

import datetime
import logging
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from ..core.capabilities import PRECISIONS
from ..tensorrt.sidecar import (
    EngineInfo,
    read_engine_info,
    same_build,
    sidecar_path,
    write_engine_info,
)
from ..core.errors import BackendUnavailable, ConfigError, ModelFileError
from ..core.files import atomic_write_bytes, cache_dir, ensure_writable, file_sha256
from ..core.metadata import ModelMetadata
from ..tensorrt.runtimes import TensorRTRuntime, choose_runtime, parse_targets

log = logging.getLogger(__name__)

DEFAULT_PROFILE = "1:8:32"


@dataclass
class BuildResult:
    engine: Path | None          # None when TensorRT/GPU is missing (never reached: we raise)
    sidecar: Path | None
    onnx: Path
    precision: str
    reused_engine: bool
    reused_onnx: bool
    seconds: float
    info: EngineInfo | None = None
    notes: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------- options
def parse_batch_profile(text: str | int | tuple) -> tuple[int, int, int]:
    """"1:8:32" -> (1, 8, 32); "8" -> (8, 8, 8) (static). min <= opt <= max, all >= 1."""
    if isinstance(text, int):
        values = [text]
    elif isinstance(text, (tuple, list)):
        values = list(text)
    else:
        try:
            values = [int(v) for v in str(text).split(":")]
        except ValueError:
            raise ConfigError(f"--batch must be MIN:OPT:MAX or one size, e.g. 1:8:32, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ConfigError(f"--batch must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def default_timing_cache(trt_version: str, gpu: dict[str, Any]) -> Path:  # TensorRT 10/11 only
    """Timing caches are only valid for one TensorRT version and GPU: one file per pair."""
    root = cache_dir("tensorrt")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu.get("name", "gpu"))).strip("-").lower()
    return root / f"timing-trt{trt_version}-{slug}-sm{gpu.get('compute_capability', '')}.cache"


def _default_paths(source: Path, precision: str, out: Path | None) -> tuple[Path, Path]:
    """(engine, precision ONNX): best.pt --fp16 -> best.fp16.engine, best.fp16.onnx."""
    if out is None:
        stem = re.sub(r"\.(fp32|fp16|int8)$", "", source.stem)
        out = source.with_name(f"{stem}.{precision}.engine")
    stem = re.sub(r"\.(fp32|fp16|int8)$", "", out.stem)
    return out, out.with_name(f"{stem}.{precision}.onnx")


# ----------------------------------------------------------------------------------- ONNX side
def _static_batch(meta: ModelMetadata) -> int | None:
    """The batch the exporter baked into the graph (metadata "batch"), None when dynamic."""
    batch = meta.extra.get("batch")
    return batch if isinstance(batch, int) else None


def _reusable_onnx(onnx_path: Path, checkpoint: Path, precision: str, with_attention: bool,
                   irpe_plugin: bool = False) -> ModelMetadata | None:
    """Metadata of an earlier export at `onnx_path` that matches this request, else None."""
    from ..core.onnx_metadata import read_metadata

    if not onnx_path.is_file():
        return None
    try:
        meta = read_metadata(onnx_path)
    except ModelFileError:
        return None
    ok = (meta.source_sha256 == file_sha256(checkpoint) and meta.precision == precision
          and ("attention" in meta.output_names) == with_attention
          and bool(meta.extra.get("irpe_plugin")) == irpe_plugin
          and meta.extra.get("target") == "tensorrt" and meta.extra.get("batch") == "dynamic")
    return meta if ok else None


def _convert_onnx(source: Path, meta: ModelMetadata, precision: str, out_onnx: Path, calib: Any,
                  calib_images: int, calib_method: str) -> ModelMetadata:
    """fp32 ONNX (ours, target tensorrt) -> fp16/int8 ONNX with the export stage's converters."""
    from ..core.onnx_metadata import set_metadata
    from . import precision as precision_mod
    from .calibration import collect_calibration
    from .onnx_export import _save
    from ..tensorrt.onnx_ops import assert_trt_compatible

    extra = dict(meta.extra)
    # Same conversion and defaults as `export` (non-INT8 ops in fp32: measured safer, precision.py).
    calibration = collect_calibration(calib, meta.preprocess, calib_images) if precision == "int8" else None
    proto, extra["ort_disabled_optimizers"] = precision_mod.convert(
        source, precision, "tensorrt", calibration, batch=_static_batch(meta), method=calib_method,
        high_precision="fp32")
    if calibration is not None:
        extra["calibration"] = {"images": int(len(calibration)), "method": calib_method, "high_precision": "fp32"}
    assert_trt_compatible(proto, what=f"{precision} graph")
    extra["converted_from"] = str(source)
    new_meta = ModelMetadata(**{**meta.__dict__, "precision": precision, "extra": extra})
    set_metadata(proto, new_meta)
    _save(proto, out_onnx)
    return new_meta


def prepare_onnx(source: Path, precision: str | None, out_onnx: Path, *, calib: Any = None,
                 with_attention: bool = False, calib_images: int = 500, calib_method: str = "entropy",
                 force: bool = False, irpe_plugin: bool = False
                 ) -> tuple[Path, ModelMetadata, Path | None, bool, list[str]]:
    """(onnx path, its metadata, source checkpoint or None, reused?, notes) for the engine build."""
    from ..core.onnx_metadata import read_metadata

    notes: list[str] = []
    suffix = source.suffix.lower()
    if suffix in (".pt", ".pth"):
        precision = precision or "fp32"
        if not force:
            meta = _reusable_onnx(out_onnx, source, precision, with_attention, irpe_plugin)
            if meta is not None:
                notes.append(f"reused {out_onnx} (same checkpoint sha256 and options; --force re-exports)")
                return out_onnx, meta, source, True, notes
        from . import export_onnx
        result = export_onnx(source, out_onnx, precision=precision, batch=None, target="tensorrt",
                             calib=calib, with_attention=with_attention, calib_images=calib_images,
                             calib_method=calib_method, irpe_plugin=irpe_plugin)
        notes += result.notes
        return out_onnx, result.metadata, source, False, notes
    if suffix != ".onnx":
        raise ModelFileError(f"{source}: build-engine takes a checkpoint (.pt) or an ONNX file (.onnx)")
    meta = read_metadata(source)
    have = meta.precision
    if meta.extra.get("target", "tensorrt") != "tensorrt" or have.endswith("-cpu"):
        # ORT's CPU int8 (int32 biases behind DequantizeLinear, QLinear ops) is not a TensorRT graph
        raise ModelFileError(f"{source}: made for ONNX Runtime on CPUs ({have}, --target cpu), which "
                             f"TensorRT cannot parse; use `mlic-edge export <best.pt> --precision "
                             f"{have.removesuffix('-cpu')}` (--target tensorrt, the default), or pass the checkpoint")
    if with_attention and "attention" not in meta.output_names:
        raise ModelFileError(f"{source}: has no attention output; export it with --attention")
    has_plugin = bool(meta.extra.get("irpe_plugin"))
    if irpe_plugin and not has_plugin:
        raise ModelFileError(f"{source}: has no IRPEAttention plugin nodes; export it with --irpe-plugin "
                             f"(or pass the checkpoint)")
    if has_plugin and precision not in (None, meta.precision):
        raise ModelFileError(f"{source}: a plugin-mode graph cannot be converted to {precision} (quantization "
                             f"runs before plugin insertion); export with --precision {precision} --irpe-plugin")
    if precision is None or precision == have:
        if calib is not None:
            notes.append("calibration ignored: the ONNX graph is already " + have)
        return source, meta, None, True, notes
    if have != "fp32":
        raise ModelFileError(f"{source}: is a {have} graph; {precision} needs the fp32 ONNX or the checkpoint")
    notes.append(f"converted {source.name} (fp32) to {precision}")
    return out_onnx, _convert_onnx(source, meta, precision, out_onnx, calib, calib_images, calib_method), \
        None, False, notes


# ----------------------------------------------------------------------------------- TensorRT side
def load_timing_cache(config, path: Path) -> tuple[Any, bool]:
    """(timing cache set on `config`, reused?). A corrupt or foreign file (create_timing_cache
    returns None, or set_timing_cache refuses it) gives a fresh cache and a warning, never a crash."""
    data = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(data) if data else None
    if cache is not None and config.set_timing_cache(cache, False):  # False: refuse foreign caches
        return cache, True
    if data:
        log.warning("timing cache %s is corrupt or from another TensorRT/GPU; starting a new one", path)
    cache = config.create_timing_cache(b"")
    config.set_timing_cache(cache, False)
    return cache, False


def parser_error_line(parser) -> str:
    """The ONNX parser's errors in one line, each naming the node and its op type."""
    errors = []
    for i in range(parser.num_errors):
        error = parser.get_error(i)
        where = ""
        try:
            name, op = error.node_name(), error.node_operator()
            where = f"node {name or '#' + str(error.node())} ({op}): " if (name or op) else ""
        except AttributeError:  # older parsers: the description alone
            pass
        errors.append(where + " ".join(str(error.desc()).split()))
    return "; ".join(errors)[:600]


def describe_network(trt, network) -> dict[str, Any]:
    """What the built engine will hold, read from the parsed network (no GPU needed): I/O names,
    shapes and dtypes, layer counts by type and the dtypes of the layers' outputs."""
    def tensor(t) -> dict[str, Any]:
        return {"name": t.name, "shape": [int(d) for d in t.shape], "dtype": t.dtype.name}

    layers: dict[str, int] = {}
    dtypes: dict[str, int] = {}
    for i in range(network.num_layers):
        layer = network.get_layer(i)
        layers[layer.type.name] = layers.get(layer.type.name, 0) + 1
        for j in range(layer.num_outputs):
            name = layer.get_output(j).dtype.name
            dtypes[name] = dtypes.get(name, 0) + 1
    return {"inputs": [tensor(network.get_input(i)) for i in range(network.num_inputs)],
            "outputs": [tensor(network.get_output(i)) for i in range(network.num_outputs)],
            "layers": dict(sorted(layers.items())), "tensor_dtypes": dict(sorted(dtypes.items()))}


def build_serialized_engine(runtime: TensorRTRuntime, onnx_path: Path, input_name: str, image_size: int,
                            profile: tuple[int, int, int] | None, *, workspace_gb: float | None,
                            timing_cache: Path | None, optimization_level: int | None,
                            targets: tuple[str, ...] | None = None, verbose: bool = False,
                            irpe_plugin: bool = False) -> tuple[bytes, dict[str, Any]]:
    """Parse the ONNX into a strongly typed network and build it; returns (engine bytes, facts).

    irpe_plugin: the graph has IRPEAttention nodes; the plugin is registered first and its
    ahead-of-time (PTX) implementation preferred, so the engine runs without Python.
    targets: TensorRT for RTX's compute capabilities (None: its portable set)."""
    trt = runtime.trt
    logger = runtime.logger(verbose)
    builder = trt.Builder(logger)
    if irpe_plugin:
        from ..tensorrt.plugin import register_irpe_plugin
        register_irpe_plugin(runtime)
    flags, flag_names = runtime.network_flags(irpe_plugin)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):  # parse_from_file: external weights resolved
        raise ModelFileError(f"{onnx_path}: {runtime.label}'s ONNX parser rejected it: {parser_error_line(parser)}")
    config = builder.create_builder_config()
    if workspace_gb:
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_gb * 2 ** 30))
    if optimization_level is not None:
        config.builder_optimization_level = int(optimization_level)
    if profile is not None:
        low, opt, high = profile
        shapes = [(b, 3, image_size, image_size) for b in (low, opt, high)]   # (B, 3, S, S)
        optimization_profile = builder.create_optimization_profile()
        optimization_profile.set_shape(input_name, *shapes)
        config.add_optimization_profile(optimization_profile)
    set_targets = runtime.set_targets(config, targets)
    cache, cache_reused = load_timing_cache(config, timing_cache) if timing_cache else (None, False)
    started = time.time()
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise ModelFileError(f"{onnx_path}: {runtime.label} failed to build an engine (see its log above)")
    seconds = time.time() - started
    if cache is not None:
        atomic_write_bytes(timing_cache, bytes(memoryview(config.get_timing_cache().serialize())))
    facts = {"strongly_typed": True, "network_flags": " + ".join(flag_names) or "none (strongly typed by default)",
             "plugins": ["mlic_edge::IRPEAttention v1 (AOT PTX)"] if irpe_plugin else [],
             "plugin_impl": "aot" if irpe_plugin else None,
             "target_compute_capabilities": list(set_targets) or None,
             "timing_cache": str(timing_cache) if cache is not None else None,
             "timing_cache_reused": cache_reused, "workspace_gb": workspace_gb,
             "optimization_level": optimization_level, "build_seconds": round(seconds, 2),
             "network": describe_network(trt, network)}
    return bytes(memoryview(serialized)), facts


def resolve_build_runtime(request: str, gpu: dict[str, Any] | None) -> tuple[TensorRTRuntime | None, str | None]:
    """(runtime, None) or (None, why not): the ONNX is still written when no runtime can build."""
    try:
        runtime = choose_runtime(request, gpu)
    except BackendUnavailable as e:
        return None, str(e)
    if not runtime.builds_without_gpu and gpu is None:
        return None, (f"{runtime.label} builds engines on the GPU that runs them and no CUDA GPU is "
                      f"visible (TensorRT for RTX builds without one: --runtime tensorrt-rtx)")
    return runtime, None


def _target_capabilities(runtime: TensorRTRuntime, targets: tuple[str, ...] | None,
                         gpu: dict[str, Any] | None) -> list[str]:
    """The compute capabilities the engine will run on (recorded in the sidecar)."""
    from ..tensorrt.runtimes import RTX_PORTABLE

    if not runtime.is_rtx:
        if targets is not None:
            raise ConfigError(f"--compute-capability is for TensorRT for RTX; {runtime.label} builds for "
                              f"the GPU it runs on")
        return [gpu["compute_capability"]]
    if targets == ("current",):
        if gpu is None:
            raise ConfigError("--compute-capability current needs a GPU on this machine; name the targets "
                              "instead, e.g. --compute-capability 8.9")
        return [gpu["compute_capability"]]
    return list(targets or RTX_PORTABLE)


def _profile_for(meta: ModelMetadata, requested: tuple[int, int, int], batch: Any,
                 onnx_path: Path) -> tuple[int, int, int] | None:
    """The optimization profile: the requested one for a dynamic-batch graph; None (static) for a
    fixed-batch graph, which accepts only its own batch."""
    fixed = _static_batch(meta)
    if fixed is None:
        return requested
    if requested != parse_batch_profile(DEFAULT_PROFILE) and requested != (fixed,) * 3:
        raise ConfigError(f"{onnx_path}: the graph has a fixed batch of {fixed}; --batch {batch} "
                          f"does not fit (export with --batch dynamic)")
    return None


def _matching_engine(engine_path: Path, wanted: EngineInfo) -> EngineInfo | None:
    """The sidecar of an existing engine built exactly as `wanted` (same_build), else None."""
    if not (engine_path.is_file() and sidecar_path(engine_path).is_file()):
        return None
    try:
        existing = read_engine_info(engine_path)
    except ModelFileError:
        return None
    return existing if same_build(existing, wanted) else None


def build_engine(
    source: str | os.PathLike,
    out: str | os.PathLike | None = None,
    *,
    precision: str | None = None,
    calib: Any = None,
    batch: str | tuple = DEFAULT_PROFILE,
    workspace_gb: float | None = None,
    timing_cache: str | os.PathLike | None = None,
    optimization_level: int | None = None,
    with_attention: bool = False,
    calib_images: int = 500,
    calib_method: str = "entropy",
    force: bool = False,
    verbose: bool = False,
    status: Callable[[str], None] | None = None,
    irpe_plugin: bool = False,
    runtime: str = "auto",
    compute_capability: str | None = None,
) -> BuildResult:
    """Build (or reuse) a TensorRT engine for `source` (.pt or .onnx); see the module docstring.

    precision: fp32 | fp16 | int8 | None (= the ONNX's own, or fp32 for a checkpoint).
    batch: "MIN:OPT:MAX" profile for dynamic-batch graphs (a fixed-batch ONNX needs its own size).
    runtime: auto | tensorrt | tensorrt-rtx. compute_capability (TensorRT for RTX): "portable"
    (None), "current" or a list "8.6,8.9".
    Raises BackendUnavailable (after writing the ONNX) when no runtime can build here.
    """
    from ..core.gpu import gpu_info

    say = status or (lambda message: None)
    started = time.time()
    source = Path(source)
    if not source.is_file():
        raise ModelFileError(f"{source}: no such file")
    if precision is not None and precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    profile_req = parse_batch_profile(batch)
    targets = parse_targets(compute_capability)
    gpu = gpu_info(0)
    trt_runtime, unavailable = resolve_build_runtime(runtime, gpu)
    no_plugin = trt_runtime.plugin_support() if trt_runtime is not None and irpe_plugin else None
    if no_plugin:  # before any export work
        raise BackendUnavailable(f"--irpe-plugin: {no_plugin}; build the lowered graph (without --irpe-plugin) instead")
    engine_guess = precision or ("fp32" if source.suffix.lower() != ".onnx" else "onnx")
    engine_path, onnx_out = _default_paths(source, engine_guess, Path(out) if out else None)
    ensure_writable(engine_path)

    say(f"preparing the {precision or 'source'} ONNX graph...")
    onnx_path, meta, checkpoint, reused_onnx, notes = prepare_onnx(
        source, precision, onnx_out, calib=calib, with_attention=with_attention,
        calib_images=calib_images, calib_method=calib_method, force=force, irpe_plugin=irpe_plugin)
    precision = meta.precision
    if out is None and engine_guess == "onnx":
        engine_path = _default_paths(source, precision, None)[0]
    if trt_runtime is None:
        raise BackendUnavailable(f"{precision} ONNX graph ready at {onnx_path}, but no engine was built: "
                                 f"{unavailable}. Then: mlic-edge build-engine {onnx_path} --out {engine_path}")
    has_plugin = bool(meta.extra.get("irpe_plugin"))
    no_plugin = trt_runtime.plugin_support() if has_plugin else None
    if no_plugin:
        raise BackendUnavailable(f"{onnx_path}: has IRPEAttention plugin nodes, but {no_plugin}; "
                                 f"export without --irpe-plugin")

    profile = _profile_for(meta, profile_req, batch, onnx_path)
    capabilities = _target_capabilities(trt_runtime, targets, gpu)
    wanted = EngineInfo(
        metadata=meta, runtime=trt_runtime.name, runtime_version=trt_runtime.version,
        compute_capabilities=capabilities, gpu=gpu, onnx_sha256=file_sha256(onnx_path), precision=precision,
        profile=dict(zip(("min", "opt", "max"), profile)) if profile else None, onnx_path=str(onnx_path),
        checkpoint=str(checkpoint.resolve()) if checkpoint else None)
    existing = None if force else _matching_engine(engine_path, wanted)
    if existing is not None:
        notes.append(f"reused {engine_path}: same ONNX sha256, runtime, targets, precision and profile "
                     f"(--force rebuilds)")
        return BuildResult(engine_path, sidecar_path(engine_path), onnx_path, precision, True,
                           reused_onnx, time.time() - started, existing, notes)

    cache_file = None
    if trt_runtime.uses_timing_cache:
        cache_file = Path(timing_cache) if timing_cache else default_timing_cache(trt_runtime.version, gpu)
    elif timing_cache:
        notes.append(f"--timing-cache ignored: {trt_runtime.label} does not time tactics at build time")
    where = gpu["name"] if gpu else "this CPU"
    say(f"building the {trt_runtime.label} engine on {where} for compute capability "
        f"{', '.join(capabilities)} (minutes for large models)...")
    data, facts = build_serialized_engine(trt_runtime, onnx_path, meta.input_name,
                                          int(meta.preprocess["image_size"]), profile,
                                          workspace_gb=workspace_gb, timing_cache=cache_file,
                                          optimization_level=optimization_level, verbose=verbose,
                                          targets=targets if trt_runtime.is_rtx else None,
                                          irpe_plugin=has_plugin)
    from .._version import __version__
    wanted.build = {**facts, "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                    "mlic_edge_version": __version__, "engine_bytes": len(data)}
    atomic_write_bytes(engine_path, data)
    side = write_engine_info(engine_path, wanted)
    return BuildResult(engine_path, side, onnx_path, precision, False, reused_onnx,
                       time.time() - started, wanted, notes)
