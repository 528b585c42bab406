"""Checkpoint -> ONNX: torch export, graph cleanup, reduced precision, metadata, parity check.

`export_onnx(checkpoint, out, **options)` runs EXPORT_STEPS, each a function of
(`ExportOptions`, `ExportState`) that can also be run alone, e.g. a trace written without checks:

    options = ExportOptions(batch=4)
    with export_state("best.pt", "model.onnx") as state:
        for step in (load_checkpoint, trace, write_onnx):
            step(options, state)

1. `load_checkpoint`: rebuild the model (one-line CheckpointError if unreadable);
2. `gather_calibration` (int8): the calibration images, before minutes of export;
3. `trace`: torch.onnx.export; input "images" float32 (B, 3, S, S), spatial size static (the
   iRPE bucket matrix is built for one feature grid), batch dynamic or fixed; outputs "logits"
   (B, K) [+ "attention" (B, K, h, w)]; onnx-graphsurgeon cleanup, shape inference, checker;
4. `check_against_torch`: ONNX Runtime (CPU) vs PyTorch on random inputs: ExportParityError when
   the max relative logit error exceeds FP32_MAX_REL_ERROR;
5. `convert_precision`: fp16 / int8 graph from the verified fp32 graph (see `precision.py`);
6. `insert_plugins` (--irpe-plugin): IRPEAttention plugin nodes, checked on ONNX Runtime;
7. `check_converted`: the fp16 / int8 graph vs PyTorch;
8. `write_onnx`: TensorRT operator check (target "tensorrt"), metadata (`ModelMetadata` JSON in
   metadata_props["mlic_edge"]), atomic write.

Exporter choice (measured with torch 2.14, onnxscript 0.7, on this model): the dynamo exporter
(`dynamo=True`, dynamic_shapes={0: Dim("batch")}, traced at batch 2) is the default because its
graph is already clean: torch.export resolves the symbolic batch, so reshapes take constant
shapes (0/-1) and the only shape arithmetic left is one Shape -> Concat -> Expand for the iRPE
index. The TorchScript exporter (`dynamo=False` + dynamic_axes; deprecated, opset <= 20) leaves
~3x the nodes for the same model even after constant folding (Shape/Gather/Unsqueeze/Concat chains
for every reshape, Equal/Where from expand), which TensorRT must fold again at build time. It is
kept as the fallback when the dynamo path raises or yields a graph with custom-domain functions.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..core.capabilities import check_precision, check_target, precision_tag
from ..core.contract import INPUT_NAME
from ..core.metadata import ModelMetadata
from ..core.errors import one_line
from ..core.errors import ExportError, ExportParityError, MissingDependencyError

log = logging.getLogger(__name__)

EXPORTERS = ("auto", "dynamo", "torchscript")
# Opset 19: LayerNormalization is one op (>= 17); Q/DQ with FP16 scales need >= 19 (the
# minimum for int8); TensorRT 10.0-10.3 (JetPack 6) parses opsets 9-20, TensorRT 11 9-25.
DEFAULT_OPSET = 19
FP32_MAX_REL_ERROR = 1e-4
PLUGIN_MAX_REL_ERROR = 1e-5  # fp32 plugin-mode graph (reference op) vs the lowered graph, both on ORT
TWO_GB = 2 * 1024 ** 3
TRACE_BATCH = 2  # batch >= 2 when tracing: size-1 dims get specialised


@dataclass
class ExportResult:
    path: Path
    precision: str
    target: str
    exporter: str
    opset: int
    batch: int | None
    output_names: list[str]
    num_nodes: int
    op_counts: dict[str, int]
    fp32_max_rel_error: float | None          # ORT fp32 graph vs PyTorch, random inputs (None: not checked)
    final_max_rel_error: float | None = None  # the written graph (fp16/int8) vs PyTorch, random inputs
    calibration_images: int = 0
    seconds: float = 0.0
    metadata: ModelMetadata | None = None
    notes: list[str] = field(default_factory=list)


def max_relative_error(output: np.ndarray, reference: np.ndarray) -> float:
    """max |output - reference| / max |reference| (error relative to the output's scale)."""
    output = np.asarray(output, dtype=np.float64)
    reference = np.asarray(reference, dtype=np.float64)
    if output.shape != reference.shape:
        raise ExportParityError(f"output shape {output.shape} != reference shape {reference.shape}")
    if not np.isfinite(output).all():
        return float("inf")
    scale = max(float(np.abs(reference).max(initial=0.0)), 1e-6)
    return float(np.abs(output - reference).max(initial=0.0) / scale)


# ----------------------------------------------------------------------------------- torch side
def _exportable(model, with_attention: bool):
    import torch

    class Exportable(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, images):
            if with_attention:
                return self.model.forward_with_attention(images)
            return self.model(images)

    return Exportable().eval()


def _is_clean(proto) -> str | None:
    """Why a freshly exported graph is not usable as is (None = clean)."""
    if len(proto.functions):
        return f"{len(proto.functions)} local functions left in the graph"
    custom = sorted({n.domain for n in proto.graph.node if n.domain not in ("", "ai.onnx")})
    if custom:
        return f"custom-domain nodes ({', '.join(custom)})"
    return None


def _export_dynamo(module, example, *, dynamic: bool, opset: int, output_names: list[str], path: Path):
    import torch

    dynamic_shapes = ({0: torch.export.Dim("batch", min=1, max=65536)},) if dynamic else None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        program = torch.onnx.export(
            module, (example,), dynamo=True, input_names=[INPUT_NAME], output_names=output_names,
            dynamic_shapes=dynamic_shapes, opset_version=opset, external_data=False,
            optimize=True, verify=False, report=False, verbose=False)
        program.save(str(path), external_data=True)   # weights straight from the torch tensors to disk
    del program


def _export_torchscript(module, example, *, dynamic: bool, opset: int, output_names: list[str], path: Path):
    import onnx
    import torch

    axes = {name: {0: "batch"} for name in [INPUT_NAME, *output_names]} if dynamic else None
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(module, (example,), buffer, dynamo=False, input_names=[INPUT_NAME],
                          output_names=output_names, dynamic_axes=axes,
                          opset_version=min(opset, 20), do_constant_folding=True)
    onnx.save(onnx.load_from_string(buffer.getvalue()), str(path), save_as_external_data=True,
              all_tensors_to_one_file=True, location=path.name + ".data", size_threshold=4096)


def torch_to_onnx(module, example, *, dynamic: bool, opset: int, output_names: list[str],
                  exporter: str = "auto", path: Path) -> tuple[Any, str, list[str]]:
    """Trace into `path` (the graph; its weights in a .data file beside it) and return (the graph
    without its weights: a ModelProto whose initializers point into the .data file, exporter
    used, notes). `exporter`: auto (dynamo, else TorchScript) | dynamo | torchscript."""
    import onnx

    def skeleton():
        return onnx.load(str(path), load_external_data=False)

    notes: list[str] = []
    if exporter in ("auto", "dynamo"):
        try:
            _export_dynamo(module, example, dynamic=dynamic, opset=opset, output_names=output_names, path=path)
            proto = skeleton()
            reason = _is_clean(proto)
            if reason is None:
                return proto, "dynamo", notes
            if exporter == "dynamo":
                raise ExportError(f"dynamo exporter produced an unusable graph: {reason}")
            notes.append(f"dynamo graph not clean ({reason}); used the TorchScript exporter")
        except ExportError:
            raise
        except Exception as e:  # torch.export / onnxscript failures are many and varied
            if exporter == "dynamo":
                raise ExportError(f"dynamo export failed: {one_line(e, 300)}") from None
            notes.append(f"dynamo export failed ({one_line(e, 160)}); used the TorchScript exporter")
    try:
        _export_torchscript(module, example, dynamic=dynamic, opset=opset, output_names=output_names, path=path)
    except Exception as e:
        raise ExportError(f"ONNX export failed: {one_line(e, 300)}") from None
    if min(opset, 20) != opset:
        notes.append(f"TorchScript exporter caps the opset at 20 (asked {opset})")
    return skeleton(), "torchscript", notes


# ----------------------------------------------------------------------------------- graph side
def cleanup_graph(proto, *, base_dir: Path, out_path: Path, fold_size_limit: int = 16 * 1024 ** 2) -> Path:
    """Fold constants, drop dead nodes, toposort (onnx-graphsurgeon), then infer shapes and check.

    `proto` is the traced graph whose weights stay in their .data file in `base_dir`
    (`torch_to_onnx`): graphsurgeon copies whole graphs, so it gets references (only the weights
    a constant-foldable node reads are loaded), and the cleaned graph written to `out_path` (in
    `base_dir`) points into the same file. Shape inference and the checker run on that file, in
    ONNX's C++ code. Constant tensors above `fold_size_limit` bytes are left unfolded (a static
    large batch would otherwise bake a (B, H, L, L) copy of the iRPE index into the file).
    """
    import onnx
    try:
        import onnx_graphsurgeon as gs
    except ImportError:
        raise MissingDependencyError("graph cleanup needs onnx-graphsurgeon: "
                                     "pip install 'mlic-edge[export]'") from None
    from .skeleton import foldable_reads, load_data

    folded_inputs = foldable_reads(proto)
    for tensor in proto.graph.initializer:
        if tensor.name in folded_inputs:
            load_data(tensor, base_dir)
    for node in proto.graph.node:   # spell out the spec's default (float 0): AutoCast's type inference needs it
        if node.op_type == "ConstantOfShape" and not any(a.name == "value" for a in node.attribute):
            node.attribute.append(onnx.helper.make_attribute(
                "value", onnx.helper.make_tensor("value", onnx.TensorProto.FLOAT, [1], [0.0])))
    opsets = list(proto.opset_import)
    graph = gs.import_onnx(proto)
    graph.fold_constants(size_threshold=fold_size_limit).cleanup().toposort()
    cleaned = gs.export_onnx(graph, do_type_check=True)
    del graph
    # keep the exporter's opset imports and IR version (gs may write its own defaults)
    del cleaned.opset_import[:]
    cleaned.opset_import.extend(opsets)
    cleaned.ir_version = proto.ir_version
    cleaned.producer_name, cleaned.producer_version = proto.producer_name, proto.producer_version
    try:
        onnx.save(cleaned, str(out_path))
        del cleaned
        onnx.shape_inference.infer_shapes_path(str(out_path), str(out_path), check_type=True, strict_mode=True,
                                               data_prop=True)
        onnx.checker.check_model(str(out_path), full_check=True)
        return out_path
    except Exception as e:
        raise ExportError(f"exported graph fails ONNX checks: {one_line(e, 300)}") from None


def ort_session(model: Any, *, disabled_optimizers: list[str] | None = None, threads: int | None = None,
                arena: bool = True):
    """CPU InferenceSession from a path or a ModelProto (`core.onnxruntime.make_session`; a
    ModelProto with IRPEAttention nodes gets the plugin's numpy reference op registered)."""
    from ..core.onnxruntime import CPU, make_session
    from ..kernels.irpe_reference import ort_session_inputs

    return make_session(model, [CPU], threads=threads, disabled_optimizers=disabled_optimizers, arena=arena,
                        prepare=ort_session_inputs)


def compare_graphs(reference, candidate, batches: tuple[int, ...], image_size: int, *, seed: int = 0,
                   disabled_optimizers: list[str] | None = None) -> float:
    """Max relative logit error of `candidate` vs `reference` (two ModelProtos) on ORT, random inputs."""
    sessions = [ort_session(m, disabled_optimizers=disabled_optimizers) for m in (reference, candidate)]
    rng = np.random.default_rng(seed)
    worst = 0.0
    for batch in batches:
        x = rng.standard_normal((batch, 3, image_size, image_size), dtype=np.float32)
        want, got = (s.run(["logits"], {INPUT_NAME: x})[0] for s in sessions)
        worst = max(worst, max_relative_error(got, want))
    return worst


def torch_reference(module, batch_groups: tuple[tuple[int, ...], ...], image_size: int, *,
                    seed: int = 0) -> list[list[tuple[np.ndarray, tuple[np.ndarray, ...]]]]:
    """PyTorch outputs on random inputs, computed once, so the model can be freed before the
    ONNX graphs are checked against them. One group per check; each group draws its batches in
    order from a generator seeded with `seed`: [[(x, outputs), ...], ...]."""
    import torch

    groups = []
    for batches in batch_groups:
        generator = torch.Generator().manual_seed(seed)
        group = []
        for batch in batches:
            x = torch.randn(batch, 3, image_size, image_size, generator=generator)
            with torch.no_grad():
                out = module(x)
            out = out if isinstance(out, (tuple, list)) else (out,)
            group.append((x.numpy(), tuple(o.numpy() for o in out)))
        groups.append(group)
    return groups


def compare_with_reference(model, reference: list[tuple[np.ndarray, tuple[np.ndarray, ...]]], *,
                           disabled_optimizers: list[str] | None = None) -> dict[str, float]:
    """Max relative error of every output of `model` (a path or ModelProto, on ORT) vs the
    PyTorch outputs of `torch_reference`. The session's memory arena is off: a large model's
    activations are returned to the system after each batch instead of staying reserved."""
    session = ort_session(model, disabled_optimizers=disabled_optimizers, arena=False)
    names = [o.name for o in session.get_outputs()]
    worst = {name: 0.0 for name in names}
    for x, ref in reference:
        outs = session.run(names, {INPUT_NAME: x})
        for name, out, r in zip(names, outs, ref):
            worst[name] = max(worst[name], max_relative_error(out, r))
    return worst


def release_memory() -> None:
    """Collect garbage and hand freed heap memory back to the system. glibc keeps freed blocks in
    its arenas, so after dropping GBs of weights RSS would otherwise stay where it peaked."""
    import ctypes
    import gc

    gc.collect()
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc (macOS, musl): the collection alone
        pass


def _save(proto, path: Path) -> None:
    """Every exported graph is written here, value_info sorted by name: converters list it in set
    order (AutoCast, in the fp16 and int8 + fp16 paths), which changes with Python's hash seed, and
    the same checkpoint must give the same bytes for build-engine to reuse an engine built from them."""
    from ..core.files import atomic_write_bytes

    ordered = sorted(proto.graph.value_info, key=lambda info: info.name)
    del proto.graph.value_info[:]
    proto.graph.value_info.extend(ordered)
    if proto.ByteSize() < TWO_GB - 64 * 1024 ** 2:
        data = proto.SerializeToString()
        atomic_write_bytes(path, data)
        return
    import onnx  # > 2 GB: protobuf cannot hold it; weights go to <name>.data beside the graph
    path.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(proto, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
              location=path.name + ".data")


# ----------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class ExportOptions:
    """Everything `export_onnx` takes besides the checkpoint and the output path.

    precision: fp32 | fp16 | int8. target: tensorrt (graphs for TensorRT 10/11: explicit
    symmetric Q/DQ, op-support check) | cpu (ONNX Runtime CPU: UINT8 QDQ for int8).
    batch: None = dynamic batch, else a fixed batch size. calib: int8 calibration source, see
    `calibration.collect_calibration` (folder, DatasetSource / dict, array, or loader).
    calib_method: entropy | max; None = the target's default (tensorrt: entropy, TensorRT's
    default; cpu: max, which suits ORT's asymmetric UINT8 activations better on our fixture).
    high_precision: type of the ops left out of INT8 (target tensorrt); fp32 keeps more accuracy
    (`mlic-edge parity` shows how much), fp16 is faster on GPU.
    irpe_plugin: after quantization, replace each encoder's iRPE attention core by one
    IRPEAttention plugin node (see irpe_plugin_graph.py), checked on ORT with the reference op.
    check: raise ExportParityError when ORT and PyTorch disagree (the errors are measured anyway).
    """

    precision: str = "fp32"
    batch: int | None = None
    opset: int = DEFAULT_OPSET
    target: str = "tensorrt"
    calib: Any = None
    with_attention: bool = False
    calib_images: int = 500
    calib_method: str | None = None
    calib_batch: int = 0
    high_precision: str = "fp32"
    calib_cache_dir: Any = "default"
    exporter: str = "auto"
    check: bool = True
    irpe_plugin: bool = False

    def __post_init__(self) -> None:
        from .precision import CALIB_METHODS

        check_precision(self.precision, "precision")
        check_target(self.target, "target")
        if self.exporter not in EXPORTERS:
            raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {self.exporter!r}")
        if self.batch is not None and self.batch < 1:
            raise ExportError(f"batch must be >= 1 (or None for dynamic), got {self.batch}")
        if not 17 <= self.opset <= 20:
            raise ExportError(f"opset must be 17-20 (LayerNormalization needs 17; TensorRT 10.x parses "
                              f"up to 20), got {self.opset}")
        if self.precision == "int8" and self.target == "tensorrt" and self.opset < 19:
            raise ExportError("int8 for TensorRT needs opset >= 19 (Q/DQ with FP16 scales, as "
                              "--int8-high-precision fp16 writes them)")
        if self.calib_method is not None and self.calib_method not in CALIB_METHODS:
            raise ExportError(f"calibration method must be entropy or max, got {self.calib_method!r}")
        if self.high_precision not in ("fp16", "fp32"):
            raise ExportError(f"high_precision must be fp16 or fp32, got {self.high_precision!r}")

    @property
    def method(self) -> str:
        """The calibration method: the one asked for, else the target's default."""
        return self.calib_method or ("entropy" if self.target == "tensorrt" else "max")

    @property
    def check_batches(self) -> tuple[int, ...]:
        """Batches of the fp32 check: neither is the traced batch (TRACE_BATCH)."""
        return (1, 3) if self.batch is None else (self.batch,)

    @property
    def final_check_batches(self) -> tuple[int, ...]:
        return (2,) if self.batch is None else (self.batch,)

    @property
    def output_names(self) -> list[str]:
        return ["logits", "attention"] if self.with_attention else ["logits"]


@dataclass
class ExportState:
    """What the export steps hand on. The current graph is `proto` when set, else the file `graph`
    (its weights in a .data file beside it, in `workdir`)."""

    checkpoint: Path
    out: Path
    workdir: Path
    started: float = field(default_factory=time.time)
    model: Any = None                 # the PyTorch model, until the last step that needs it
    cfg: Any = None                   # its ModelConfig
    grid: list[int] = field(default_factory=list)   # its encoder's feature grid
    source: ModelMetadata | None = None
    calibration: Any = None
    references: tuple = ()            # PyTorch outputs for the fp32 check and the final check
    exporter: str = ""
    graph: Path | None = None
    proto: Any = None
    fp32_error: float | None = None
    final_error: float | None = None
    ort_disabled: list[str] = field(default_factory=list)
    plugin_info: dict | None = None
    notes: list[str] = field(default_factory=list)
    result: ExportResult | None = None

    def current(self):
        """The current graph as a ModelProto (loaded from `graph` with its weights when needed)."""
        import onnx

        if self.proto is None:
            release_memory()
            self.proto = onnx.load(str(self.graph))
        return self.proto


@contextlib.contextmanager
def export_state(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike) -> Iterator[ExportState]:
    """A fresh ExportState whose working folder lives as long as the `with` block."""
    with tempfile.TemporaryDirectory(prefix="mlic-export-") as tmp:
        yield ExportState(Path(checkpoint_path), Path(out_path), Path(tmp))


# ----------------------------------------------------------------------------------- steps
def load_checkpoint(options: ExportOptions, state: ExportState) -> None:
    """Rebuild the model from the checkpoint (one-line CheckpointError if unreadable); the
    checkpoint's copy of the weights is dropped at once (large models: GBs)."""
    from ..checkpoint import checkpoint_metadata, load_model
    from ..core.files import ensure_writable

    state.out = ensure_writable(state.out)          # a one-line error now, not after minutes of export
    model, ckpt = load_model(state.checkpoint)
    ckpt.pop("model", None)
    ckpt.pop("ema", None)
    release_memory()
    state.source = checkpoint_metadata(state.checkpoint, ckpt, model)  # classes, preprocess, thresholds, sha256
    size = state.source.preprocess.get("image_size", model.cfg.image_size)
    if int(size) != model.cfg.image_size:
        raise ExportError(f"{state.checkpoint}: preprocess image_size {size} != model image_size "
                          f"{model.cfg.image_size}")
    state.model, state.cfg, state.grid = model, model.cfg, list(model.grid)


def gather_calibration(options: ExportOptions, state: ExportState) -> None:
    """int8: the calibration images, before the trace: a bad source fails before minutes of export."""
    if options.precision == "int8":
        from .calibration import collect_calibration

        state.calibration = collect_calibration(options.calib, state.source.preprocess, options.calib_images,
                                                cache_dir=options.calib_cache_dir)


def trace(options: ExportOptions, state: ExportState) -> None:
    """PyTorch's answers for the checks, then torch.onnx.export and graph cleanup into
    `workdir/fp32.onnx` (weights beside it, none in this process). The model is freed after
    both, unless the plugin step still needs its iRPE layers."""
    import torch

    module = _exportable(state.model, options.with_attention)
    size = state.cfg.image_size
    state.references = tuple(torch_reference(module, (options.check_batches, options.final_check_batches), size))
    example = torch.randn(options.batch or TRACE_BATCH, 3, size, size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():   # the weights go to a file in workdir; the graph comes back without them
        proto, state.exporter, notes = torch_to_onnx(
            module, example, dynamic=options.batch is None, opset=options.opset,
            output_names=options.output_names, exporter=options.exporter, path=state.workdir / "traced.onnx")
    state.notes += notes
    del module, example
    if not options.irpe_plugin:
        state.model = None
    release_memory()
    state.graph = cleanup_graph(proto, base_dir=state.workdir, out_path=state.workdir / "fp32.onnx")


def check_against_torch(options: ExportOptions, state: ExportState) -> None:
    """The traced fp32 graph on ONNX Runtime (read from its file) vs PyTorch: ExportParityError
    beyond FP32_MAX_REL_ERROR."""
    state.fp32_error = compare_with_reference(state.graph, state.references[0])["logits"]
    if options.check and not state.fp32_error <= FP32_MAX_REL_ERROR:
        raise ExportParityError(
            f"ONNX Runtime and PyTorch disagree on the exported graph: max relative logit error "
            f"{state.fp32_error:.3g} > {FP32_MAX_REL_ERROR:g} (exporter {state.exporter}, opset {options.opset})")


def convert_precision(options: ExportOptions, state: ExportState) -> None:
    """fp16 / int8 graph from the verified fp32 file (see `precision.py`); fp32 stays as it is."""
    from . import precision as precision_mod

    if options.precision == "fp32":
        return
    release_memory()
    state.proto, state.ort_disabled = precision_mod.convert(
        state.graph, options.precision, options.target, state.calibration, batch=options.batch,
        method=options.method, high_precision=options.high_precision, calib_batch=options.calib_batch)


def insert_plugins(options: ExportOptions, state: ExportState) -> None:
    """--irpe-plugin: IRPEAttention nodes in place of the lowered iRPE attention, after quantization
    (calibration runs on ONNX Runtime, which cannot run them); checked against the lowered graph."""
    from ..kernels.irpe_reference import OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION
    from .irpe_plugin_graph import insert_irpe_plugins

    if not options.irpe_plugin:
        return
    lowered = state.current()
    state.proto, nodes = insert_irpe_plugins(lowered, state.model)
    state.model = None
    error = compare_graphs(lowered, state.proto, options.check_batches, state.cfg.image_size,
                           disabled_optimizers=state.ort_disabled)
    if options.check and options.precision == "fp32" and not error <= PLUGIN_MAX_REL_ERROR:
        raise ExportParityError(
            f"the IRPEAttention plugin graph disagrees with the lowered graph on ONNX Runtime: max "
            f"relative logit error {error:.3g} > {PLUGIN_MAX_REL_ERROR:g}")
    state.notes.append(f"{nodes} IRPEAttention plugin node(s); ORT reference op vs lowered graph: "
                       f"max relative logit error {error:.2g}")
    state.plugin_info = {"op": OP_TYPE, "namespace": PLUGIN_NAMESPACE, "version": PLUGIN_VERSION,
                         "nodes": nodes, "max_rel_error_vs_lowered": error}


def check_converted(options: ExportOptions, state: ExportState) -> None:
    """fp16 / int8: the graph as written (plugin nodes included) vs PyTorch. A lowered graph is
    checked from a file with its weights beside it (no serialized copy of them in memory); plugin
    graphs need the reference op registered on a ModelProto."""
    import onnx

    if options.precision == "fp32":
        return
    checked = state.current()
    if not options.irpe_plugin:
        checked = state.workdir / "final.onnx"
        onnx.save(state.proto, str(checked), save_as_external_data=True, all_tensors_to_one_file=True,
                  location="final.onnx.data", size_threshold=4096)
        state.graph, state.proto = checked, None
        release_memory()                 # the converted graph's heap, before ONNX Runtime loads it
    state.final_error = compare_with_reference(checked, state.references[1],
                                               disabled_optimizers=state.ort_disabled)["logits"]
    if not np.isfinite(state.final_error):
        raise ExportParityError(f"{options.precision} graph gives non-finite logits on random inputs")


def _metadata(options: ExportOptions, state: ExportState) -> ModelMetadata:
    """The file's metadata: the checkpoint's (classes, preprocess, thresholds) plus how it was made."""
    import torch

    calibration = state.calibration
    return dataclasses.replace(
        state.source,
        model_config=state.cfg.to_dict(),
        precision=precision_tag(options.precision, options.target),
        input_name=INPUT_NAME,
        output_names=options.output_names,
        extra={
            "target": options.target, "exporter": state.exporter, "opset": options.opset,
            "batch": options.batch if options.batch is not None else "dynamic",
            "feature_grid": state.grid,
            "fp32_max_rel_error": state.fp32_error,
            "final_max_rel_error": state.final_error,
            "calibration": ({"images": int(len(calibration)), "method": options.method,
                             "high_precision": options.high_precision if options.target == "tensorrt" else "fp32"}
                            if calibration is not None else None),
            "ort_disabled_optimizers": state.ort_disabled,
            "irpe_plugin": state.plugin_info,
            "torch_version": torch.__version__,
        },
    )


def write_onnx(options: ExportOptions, state: ExportState) -> None:
    """TensorRT operator check (target tensorrt), metadata (`ModelMetadata` JSON in
    metadata_props["mlic_edge"]), atomic write; the ExportResult goes to `state.result`."""
    from ..core.onnx_metadata import set_metadata
    from ..tensorrt.onnx_ops import assert_trt_compatible, op_histogram

    proto = state.current()
    if options.target == "tensorrt":
        assert_trt_compatible(proto, what=f"{options.precision} graph")
    metadata = _metadata(options, state)
    set_metadata(proto, metadata)
    _save(proto, state.out)
    state.result = ExportResult(
        path=state.out, precision=metadata.precision, target=options.target, exporter=state.exporter,
        opset=options.opset, batch=options.batch, output_names=options.output_names,
        num_nodes=len(proto.graph.node), op_counts=op_histogram(proto), fp32_max_rel_error=state.fp32_error,
        final_max_rel_error=state.final_error,
        calibration_images=0 if state.calibration is None else int(len(state.calibration)),
        seconds=time.time() - state.started, metadata=metadata, notes=state.notes)


EXPORT_STEPS: tuple[Callable[[ExportOptions, ExportState], None], ...] = (
    load_checkpoint, gather_calibration, trace, check_against_torch, convert_precision, insert_plugins,
    check_converted, write_onnx)


# ----------------------------------------------------------------------------------- entry points
def export_onnx(checkpoint_path: str | os.PathLike, out_path: str | os.PathLike | None = None, *,
                steps: Sequence[Callable[[ExportOptions, ExportState], None]] = EXPORT_STEPS,
                **options: Any) -> ExportResult:
    """`mlic-edge export` as one call: export a checkpoint to one ONNX file with the `ExportOptions`
    given as keywords, by running `steps` (default: all of them, in order; the last one must write)
    on a fresh state. The output goes beside the checkpoint by default (`default_onnx_path`).
    Raises MLICError subclasses with one-line messages."""
    export_options = ExportOptions(**options)
    if out_path is None:
        out_path = default_onnx_path(checkpoint_path, export_options.precision, export_options.target)
    with export_state(checkpoint_path, out_path) as state:
        for step in steps:
            step(export_options, state)
    if state.result is None:
        raise ExportError(f"{out_path}: the export steps ended without writing the graph (add write_onnx)")
    return state.result


def default_onnx_path(checkpoint_path: str | os.PathLike, precision: str = "fp32", target: str = "tensorrt") -> Path:
    """best.pt -> best.fp16.onnx (beside the checkpoint); int8 for CPUs: best.int8-cpu.onnx."""
    checkpoint_path = Path(checkpoint_path)
    return checkpoint_path.with_name(f"{checkpoint_path.stem}.{precision_tag(precision, target)}.onnx")
