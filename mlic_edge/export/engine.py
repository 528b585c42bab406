"""Checkpoint or ONNX -> precision ONNX graph -> TensorRT engine (+ `<engine>.json` sidecar).

    from mlic_edge.export import build_engine
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

Steps (ENGINE_STEPS, each a function of (`EngineOptions`, `EngineState`)):
`choose_build_runtime` picks the runtime; `prepare_graph` writes or reuses the precision ONNX and,
without a runtime that can build here, stops with a one-line BackendUnavailable naming the written
ONNX and the pip extra; `reuse_engine` takes an existing engine whose sidecar key (ONNX sha256,
runtime and version, target compute capabilities, precision, batch profile; the GPU for TensorRT
10/11) matches; `build_network` parses, sets one optimization profile for the batch range and
(TensorRT 10/11) a timing cache loaded from and saved back to a file, and builds; `write_engine`
writes engine and sidecar atomically.
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

from ..core.capabilities import (DEFAULT_BATCH_PROFILE, PRECISIONS, check_precision, check_target, model_format,
                                 precision_family, precision_tag)
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

_PRECISION_SUFFIX = re.compile(rf"\.({'|'.join(PRECISIONS)})$")   # best.fp16.onnx -> best


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
            raise ConfigError(f"--batch-profile must be MIN:OPT:MAX or one size, e.g. 1:8:32, got {text!r}") from None
    if len(values) == 1:
        values = values * 3
    if len(values) != 3 or not 1 <= values[0] <= values[1] <= values[2]:
        raise ConfigError(f"--batch-profile must be MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX, got {text!r}")
    return tuple(int(v) for v in values)  # type: ignore[return-value]


def default_timing_cache(trt_version: str, gpu: dict[str, Any]) -> Path:  # TensorRT 10/11 only
    """Timing caches are only valid for one TensorRT version and GPU: one file per pair."""
    root = cache_dir("tensorrt")
    slug = re.sub(r"[^A-Za-z0-9]+", "-", str(gpu.get("name", "gpu"))).strip("-").lower()
    return root / f"timing-trt{trt_version}-{slug}-sm{gpu.get('compute_capability', '')}.cache"


def _default_paths(source: Path, precision: str, out: Path | None) -> tuple[Path, Path]:
    """(engine, precision ONNX): best.pt, fp16 -> best.fp16.engine, best.fp16.onnx."""
    if out is None:
        stem = _PRECISION_SUFFIX.sub("", source.stem)
        out = source.with_name(f"{stem}.{precision}.engine")
    stem = _PRECISION_SUFFIX.sub("", out.stem)
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
    backend = model_format(source).backend
    if backend == "torch":
        precision = precision or "fp32"
        if not force:
            meta = _reusable_onnx(out_onnx, source, precision, with_attention, irpe_plugin)
            if meta is not None:
                notes.append(f"reused {out_onnx} (same checkpoint sha256 and options; --force re-exports)")
                return out_onnx, meta, source, True, notes
        from .onnx_export import export_onnx
        result = export_onnx(source, out_onnx, precision=precision, batch=None, target="tensorrt",
                             calib=calib, with_attention=with_attention, calib_images=calib_images,
                             calib_method=calib_method, irpe_plugin=irpe_plugin)
        notes += result.notes
        return out_onnx, result.metadata, source, False, notes
    if backend != "onnxruntime":
        raise ModelFileError(f"{source}: build-engine takes a checkpoint (.pt) or an ONNX file (.onnx)")
    meta = read_metadata(source)
    have = meta.precision
    target = "cpu" if have == precision_tag("int8", "cpu") else meta.extra.get("target", "tensorrt")
    if not check_target(target, f"{source}: target").engine_ok:
        # ORT's CPU int8 (int32 biases behind DequantizeLinear, QLinear ops) is not a TensorRT graph
        raise ModelFileError(f"{source}: made for ONNX Runtime on CPUs ({have}, --target cpu), which "
                             f"TensorRT cannot parse; use `mlic-edge export <best.pt> --precision "
                             f"{precision_family(have)}` (--target tensorrt, the default), or pass the checkpoint")
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
    return list(targets or runtime.capability.portable_default)


def _profile_for(meta: ModelMetadata, requested: tuple[int, int, int], batch: Any,
                 onnx_path: Path) -> tuple[int, int, int] | None:
    """The optimization profile: the requested one for a dynamic-batch graph; None (static) for a
    fixed-batch graph, which accepts only its own batch."""
    fixed = _static_batch(meta)
    if fixed is None:
        return requested
    if requested != parse_batch_profile(DEFAULT_BATCH_PROFILE) and requested != (fixed,) * 3:
        raise ConfigError(f"{onnx_path}: the graph has a fixed batch of {fixed}; --batch-profile {batch} "
                          f"does not fit (export with --batch-dim dynamic)")
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


# ----------------------------------------------------------------------------------- steps
@dataclass(frozen=True)
class EngineOptions:
    """Everything `build_engine` takes besides the source.

    precision: fp32 | fp16 | int8 | None (= the ONNX's own, or fp32 for a checkpoint).
    batch: "MIN:OPT:MAX" profile for dynamic-batch graphs (a fixed-batch ONNX needs its own size).
    runtime: auto | tensorrt | tensorrt-rtx. compute_capability (TensorRT for RTX): "portable"
    (None), "current" or a list "8.6,8.9". status: called with a line before each long step.
    """

    out: str | os.PathLike | None = None
    precision: str | None = None
    calib: Any = None
    batch: str | tuple = DEFAULT_BATCH_PROFILE
    workspace_gb: float | None = None
    timing_cache: str | os.PathLike | None = None
    optimization_level: int | None = None
    with_attention: bool = False
    calib_images: int = 500
    calib_method: str = "entropy"
    force: bool = False
    verbose: bool = False
    status: Callable[[str], None] | None = None
    irpe_plugin: bool = False
    runtime: str = "auto"
    compute_capability: str | None = None
    profile: tuple[int, int, int] = field(init=False)          # `batch`, parsed once
    targets: tuple[str, ...] | None = field(init=False)       # `compute_capability`, parsed once

    def __post_init__(self) -> None:
        if self.precision is not None:
            check_precision(self.precision, "precision")
        object.__setattr__(self, "profile", parse_batch_profile(self.batch))
        object.__setattr__(self, "targets", parse_targets(self.compute_capability))

    def say(self, message: str) -> None:
        if self.status is not None:
            self.status(message)


@dataclass
class EngineState:
    """What the engine steps hand on."""

    source: Path
    started: float = field(default_factory=time.time)
    gpu: dict[str, Any] | None = None
    runtime: TensorRTRuntime | None = None
    unavailable: str | None = None    # why no runtime can build here
    engine: Path | None = None
    onnx: Path | None = None
    meta: ModelMetadata | None = None
    checkpoint: Path | None = None
    reused_onnx: bool = False
    info: EngineInfo | None = None    # the build's sidecar, before and after the build
    data: bytes | None = None         # the serialized engine
    notes: list[str] = field(default_factory=list)
    result: BuildResult | None = None


def choose_build_runtime(options: EngineOptions, state: EngineState) -> None:
    """The runtime that will build (or why none can, kept until the ONNX is written); a plugin
    request the runtime cannot build is refused before any export work."""
    from ..core.gpu import gpu_info

    if not state.source.is_file():
        raise ModelFileError(f"{state.source}: no such file")
    state.gpu = gpu_info(0)
    state.runtime, state.unavailable = resolve_build_runtime(options.runtime, state.gpu)
    no_plugin = state.runtime.plugin_support() if state.runtime is not None and options.irpe_plugin else None
    if no_plugin:
        raise BackendUnavailable(f"--irpe-plugin: {no_plugin}; build the lowered graph (without --irpe-plugin) instead")


def prepare_graph(options: EngineOptions, state: EngineState) -> None:
    """Write or reuse the precision ONNX (`prepare_onnx`); without a runtime, stop here with a
    one-line BackendUnavailable naming the written ONNX."""
    is_onnx = model_format(state.source).backend == "onnxruntime"
    guess = options.precision or ("onnx" if is_onnx else "fp32")
    out = Path(options.out) if options.out else None
    state.engine, onnx_out = _default_paths(state.source, guess, out)
    ensure_writable(state.engine)
    options.say(f"preparing the {options.precision or 'source'} ONNX graph...")
    state.onnx, state.meta, state.checkpoint, state.reused_onnx, notes = prepare_onnx(
        state.source, options.precision, onnx_out, calib=options.calib, with_attention=options.with_attention,
        calib_images=options.calib_images, calib_method=options.calib_method, force=options.force,
        irpe_plugin=options.irpe_plugin)
    state.notes += notes
    if out is None and guess == "onnx":
        state.engine = _default_paths(state.source, state.meta.precision, None)[0]
    if state.runtime is None:
        raise BackendUnavailable(f"{state.meta.precision} ONNX graph ready at {state.onnx}, but no engine was "
                                 f"built: {state.unavailable}. Then: mlic-edge build-engine {state.onnx} "
                                 f"--out {state.engine}")
    no_plugin = state.runtime.plugin_support() if state.meta.extra.get("irpe_plugin") else None
    if no_plugin:
        raise BackendUnavailable(f"{state.onnx}: has IRPEAttention plugin nodes, but {no_plugin}; "
                                 f"export without --irpe-plugin")


def reuse_engine(options: EngineOptions, state: EngineState) -> None:
    """The build's key (the sidecar it will have); an existing engine with the same key is the
    result (unless `force`)."""
    profile = _profile_for(state.meta, options.profile, options.batch, state.onnx)
    state.info = EngineInfo(
        metadata=state.meta, runtime=state.runtime.name, runtime_version=state.runtime.version,
        compute_capabilities=_target_capabilities(state.runtime, options.targets, state.gpu),
        gpu=state.gpu, onnx_sha256=file_sha256(state.onnx), precision=state.meta.precision,
        profile=dict(zip(("min", "opt", "max"), profile)) if profile else None, onnx_path=str(state.onnx),
        checkpoint=str(state.checkpoint.resolve()) if state.checkpoint else None)
    existing = None if options.force else _matching_engine(state.engine, state.info)
    if existing is not None:
        state.notes.append(f"reused {state.engine}: same ONNX sha256, runtime, targets, precision and profile "
                           f"(--force rebuilds)")
        state.result = BuildResult(state.engine, sidecar_path(state.engine), state.onnx, state.meta.precision,
                                   True, state.reused_onnx, time.time() - state.started, existing, state.notes)


def build_network(options: EngineOptions, state: EngineState) -> None:
    """Parse the ONNX and build the engine (`build_serialized_engine`) into `state.data`."""
    runtime, gpu, info = state.runtime, state.gpu, state.info
    cache_file = None
    if runtime.uses_timing_cache:
        cache_file = Path(options.timing_cache) if options.timing_cache else default_timing_cache(runtime.version, gpu)
    elif options.timing_cache:
        state.notes.append(f"--timing-cache ignored: {runtime.label} does not time tactics at build time")
    options.say(f"building the {runtime.label} engine on {gpu['name'] if gpu else 'this CPU'} for compute "
                f"capability {', '.join(info.compute_capabilities)} (minutes for large models)...")
    profile = tuple(info.profile[k] for k in ("min", "opt", "max")) if info.profile else None
    state.data, facts = build_serialized_engine(
        runtime, state.onnx, state.meta.input_name, state.meta.preprocessing(str(state.onnx)).image_size, profile,
        workspace_gb=options.workspace_gb, timing_cache=cache_file, optimization_level=options.optimization_level,
        verbose=options.verbose, targets=options.targets if runtime.is_rtx else None,
        irpe_plugin=bool(state.meta.extra.get("irpe_plugin")))
    from .._version import __version__
    info.build = {**facts, "built_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "mlic_edge_version": __version__, "engine_bytes": len(state.data)}


def write_engine(options: EngineOptions, state: EngineState) -> None:
    """The engine and its `<engine>.json` sidecar, each written atomically."""
    atomic_write_bytes(state.engine, state.data)
    side = write_engine_info(state.engine, state.info)
    state.result = BuildResult(state.engine, side, state.onnx, state.meta.precision, False, state.reused_onnx,
                               time.time() - state.started, state.info, state.notes)


ENGINE_STEPS: tuple[Callable[[EngineOptions, EngineState], None], ...] = (
    choose_build_runtime, prepare_graph, reuse_engine, build_network, write_engine)


def build_engine(source: str | os.PathLike, out: str | os.PathLike | None = None, **options: Any) -> BuildResult:
    """Build (or reuse) a TensorRT engine for `source` (.pt or .onnx) with the `EngineOptions`
    given as keywords; see the module docstring. Runs ENGINE_STEPS until one has a result.
    Raises BackendUnavailable (after writing the ONNX) when no runtime can build here."""
    engine_options = EngineOptions(out=out, **options)
    state = EngineState(Path(source))
    for step in ENGINE_STEPS:
        step(engine_options, state)
        if state.result is not None:
            return state.result
    raise ModelFileError(f"{source}: the engine steps ended without a result")
