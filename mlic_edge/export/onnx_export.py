"""Checkpoint -> ONNX: torch export, graph cleanup, reduced precision, metadata, parity check.

Pipeline of `export_onnx`:

1. rebuild the model from the checkpoint (one-line CheckpointError if unreadable);
2. torch.onnx.export; input "images" float32 (B, 3, S, S), spatial size static (the iRPE bucket
   matrix is built for one feature grid), batch dynamic or fixed; outputs "logits" (B, K)
   [+ "attention" (B, K, h, w)];
3. onnx-graphsurgeon: fold constants, cleanup, toposort; ONNX shape inference; checker;
4. ONNX Runtime (CPU) vs PyTorch on random inputs: ExportParityError when the max relative logit
   error exceeds 1e-4 (fp32 graph);
5. fp16 / int8 graph from the verified fp32 graph (see `precision.py`);
6. TensorRT operator check (target "tensorrt"), metadata (`ModelMetadata` JSON in
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

import dataclasses
import io
import logging
import os
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..core.capabilities import PRECISIONS, precision_tag
from ..core.contract import INPUT_NAME
from ..core.metadata import ModelMetadata
from ..core.errors import one_line
from ..core.errors import ExportError, ExportParityError, MissingDependencyError

log = logging.getLogger(__name__)

TARGETS = ("tensorrt", "cpu")
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
    fp32_max_rel_error: float                 # ORT fp32 graph vs PyTorch, random inputs
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


def _validate_options(precision: str, target: str, exporter: str, batch: int | None, opset: int,
                      calib_method: str | None, high_precision: str) -> None:
    from .precision import CALIB_METHODS

    if precision not in PRECISIONS:
        raise ExportError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    if target not in TARGETS:
        raise ExportError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if exporter not in EXPORTERS:
        raise ExportError(f"exporter must be one of {', '.join(EXPORTERS)}, got {exporter!r}")
    if batch is not None and batch < 1:
        raise ExportError(f"batch must be >= 1 (or None for dynamic), got {batch}")
    if not 17 <= opset <= 20:
        raise ExportError(f"opset must be 17-20 (LayerNormalization needs 17; TensorRT 10.x parses "
                          f"up to 20), got {opset}")
    if precision == "int8" and target == "tensorrt" and opset < 19:
        raise ExportError("int8 for TensorRT needs opset >= 19 (Q/DQ with FP16 scales, as "
                          "--int8-high-precision fp16 writes them)")
    if calib_method is not None and calib_method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be entropy or max, got {calib_method!r}")
    if high_precision not in ("fp16", "fp32"):
        raise ExportError(f"high_precision must be fp16 or fp32, got {high_precision!r}")


def _insert_plugins(lowered, model, notes: list[str], precision: str, check: bool,
                    check_batches: tuple[int, ...], image_size: int, ort_disabled: list[str]):
    """(plugin-mode graph, metadata entry): IRPEAttention nodes in, checked against `lowered`."""
    from ..kernels.irpe_reference import OP_TYPE, PLUGIN_NAMESPACE, PLUGIN_VERSION
    from .irpe_plugin_graph import insert_irpe_plugins

    proto, plugin_nodes = insert_irpe_plugins(lowered, model)
    plugin_error = compare_graphs(lowered, proto, check_batches, image_size, disabled_optimizers=ort_disabled)
    if check and precision == "fp32" and not plugin_error <= PLUGIN_MAX_REL_ERROR:
        raise ExportParityError(
            f"the IRPEAttention plugin graph disagrees with the lowered graph on ONNX Runtime: max "
            f"relative logit error {plugin_error:.3g} > {PLUGIN_MAX_REL_ERROR:g}")
    notes.append(f"{plugin_nodes} IRPEAttention plugin node(s); ORT reference op vs lowered graph: "
                 f"max relative logit error {plugin_error:.2g}")
    return proto, {"op": OP_TYPE, "namespace": PLUGIN_NAMESPACE, "version": PLUGIN_VERSION,
                   "nodes": plugin_nodes, "max_rel_error_vs_lowered": plugin_error}


# ----------------------------------------------------------------------------------- entry point
def export_onnx(
    checkpoint_path: str | os.PathLike,
    out_path: str | os.PathLike,
    precision: str = "fp32",
    batch: int | None = None,
    opset: int = DEFAULT_OPSET,
    target: str = "tensorrt",
    calib: Any = None,
    with_attention: bool = False,
    *,
    calib_images: int = 500,
    calib_method: str | None = None,
    calib_batch: int = 0,
    high_precision: str = "fp32",
    calib_cache_dir: Any = "default",
    exporter: str = "auto",
    check: bool = True,
    irpe_plugin: bool = False,
) -> ExportResult:
    """Export a checkpoint to one ONNX file; see the module docstring for the steps.

    precision: fp32 | fp16 | int8. target: tensorrt (graphs for TensorRT 10/11: explicit
    symmetric Q/DQ, op-support check) | cpu (ONNX Runtime CPU: UINT8 QDQ for int8).
    batch: None = dynamic batch, else a fixed batch size. calib: int8 calibration source, see
    `calibration.collect_calibration` (folder, DatasetSource / dict, array, or loader).
    calib_method: entropy | max; None = the target's default (tensorrt: entropy, TensorRT's
    default; cpu: max, which beat entropy on our fixture for ORT's asymmetric UINT8 activations).
    high_precision: type of the ops left out of INT8 (target tensorrt). Default fp32: with fp16 the Q/DQ graph lost
    2.2 mAP points on ONNX Runtime on the trained fixture (fp32: 0.2); fp16 is faster on GPU.
    irpe_plugin: after quantization, replace each encoder's iRPE attention core by one
    IRPEAttention plugin node (see irpe_plugin_graph.py); the plugin graph is checked on ORT with
    the reference op against the lowered graph (fp32: max relative logit error <= 1e-5).
    Raises MLICError subclasses with one-line messages.
    """
    import onnx
    import torch

    from ..checkpoint import checkpoint_metadata, load_model
    from ..core.files import ensure_writable
    from . import precision as precision_mod
    from ..tensorrt.onnx_ops import assert_trt_compatible, op_histogram

    started = time.time()
    _validate_options(precision, target, exporter, batch, opset, calib_method, high_precision)
    out_path = ensure_writable(out_path)          # a one-line error now, not after minutes of export

    # 1. the model; the checkpoint's copy of the weights is dropped at once (large models: GBs)
    model, ckpt = load_model(checkpoint_path)  # CheckpointError on a bad file
    ckpt.pop("model", None)
    ckpt.pop("ema", None)
    release_memory()
    cfg = model.cfg
    source = checkpoint_metadata(checkpoint_path, ckpt, model)  # classes, preprocess, thresholds, sha256
    preprocess = source.preprocess
    if int(preprocess.get("image_size", cfg.image_size)) != cfg.image_size:
        raise ExportError(f"checkpoint preprocess image_size {preprocess['image_size']} != model "
                          f"image_size {cfg.image_size}")
    output_names = ["logits", "attention"] if with_attention else ["logits"]
    module = _exportable(model, with_attention)

    # 2. calibration images first: a bad calibration source should fail before minutes of export
    calibration = None
    if calib_method is None:
        calib_method = "entropy" if target == "tensorrt" else "max"
    if precision == "int8":
        from .calibration import collect_calibration
        calibration = collect_calibration(calib, preprocess, calib_images, cache_dir=calib_cache_dir)

    # 3. PyTorch's answers for the checks, then the trace; the model is freed after both (the
    #    plugin step still needs its iRPE layers)
    dynamic = batch is None
    check_batches = (1, 3) if dynamic else (batch,)   # neither is the traced batch (TRACE_BATCH)
    fp32_reference, final_reference = torch_reference(module, (check_batches, (2,) if dynamic else (batch,)),
                                                      cfg.image_size)
    example = torch.randn(TRACE_BATCH if dynamic else batch, 3, cfg.image_size, cfg.image_size,
                          generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory(prefix="mlic-export-") as tmp:
        with torch.no_grad():   # the weights go to a file in tmp; the graph comes back without them
            proto, used, notes = torch_to_onnx(module, example, dynamic=dynamic, opset=opset,
                                               output_names=output_names, exporter=exporter,
                                               path=Path(tmp) / "traced.onnx")
        grid = list(model.grid)
        del module, example
        if not irpe_plugin:
            del model
        release_memory()

        # 4. clean up into a file and verify it from there (ONNX and ORT read the file: no copy of
        #    the weights in this process until the conversion needs them)
        fp32_file = cleanup_graph(proto, base_dir=Path(tmp), out_path=Path(tmp) / "fp32.onnx")
        del proto
        fp32_error = compare_with_reference(fp32_file, fp32_reference)["logits"]
        if check and not fp32_error <= FP32_MAX_REL_ERROR:
            raise ExportParityError(
                f"ONNX Runtime and PyTorch disagree on the exported graph: max relative logit error "
                f"{fp32_error:.3g} > {FP32_MAX_REL_ERROR:g} (exporter {used}, opset {opset})")

        # 5. the precision conversion reads the verified file
        ort_disabled: list[str] = []
        release_memory()
        if precision == "fp32":
            proto = onnx.load(str(fp32_file))
        else:
            proto, ort_disabled = precision_mod.convert(
                fp32_file, precision, target, calibration, batch=batch, method=calib_method,
                high_precision=high_precision, calib_batch=calib_batch)

        # 6. plugin nodes, after quantization: calibration runs on ONNX Runtime, which cannot run them
        plugin_info = None
        if irpe_plugin:
            proto, plugin_info = _insert_plugins(proto, model, notes, precision, check, check_batches,
                                                 cfg.image_size, ort_disabled)
            del model

        # 7. the graph as written (plugin nodes included) vs PyTorch; a lowered graph is checked
        #    from a file with its weights beside it (no serialized copy of them in memory)
        final_error = None
        if precision != "fp32":
            checked = proto
            if not irpe_plugin:  # (plugin graphs need the reference op registered on a ModelProto)
                checked = Path(tmp) / "final.onnx"
                onnx.save(proto, str(checked), save_as_external_data=True, all_tensors_to_one_file=True,
                          location="final.onnx.data", size_threshold=4096)
                del proto
                release_memory()
            final_error = compare_with_reference(checked, final_reference,
                                                 disabled_optimizers=ort_disabled)["logits"]
            if not np.isfinite(final_error):
                raise ExportParityError(f"{precision} graph gives non-finite logits on random inputs")
            if not irpe_plugin:
                release_memory()
                proto = onnx.load(str(checked))

    if target == "tensorrt":
        assert_trt_compatible(proto, what=f"{precision} graph")

    # 8. metadata and an atomic write
    tag = precision_tag(precision, target)
    metadata = dataclasses.replace(
        source,
        model_config=cfg.to_dict(),
        precision=tag,
        input_name=INPUT_NAME,
        output_names=output_names,
        extra={
            "target": target, "exporter": used, "opset": opset,
            "batch": batch if batch is not None else "dynamic",
            "feature_grid": grid,
            "fp32_max_rel_error": fp32_error,
            "final_max_rel_error": final_error,
            "calibration": ({"images": int(len(calibration)), "method": calib_method,
                             "high_precision": high_precision if target == "tensorrt" else "fp32"}
                            if calibration is not None else None),
            "ort_disabled_optimizers": ort_disabled,
            "irpe_plugin": plugin_info,
            "torch_version": torch.__version__,
        },
    )
    from ..core.onnx_metadata import set_metadata
    set_metadata(proto, metadata)
    _save(proto, out_path)
    return ExportResult(
        path=out_path, precision=tag, target=target, exporter=used, opset=opset,
        batch=batch, output_names=output_names, num_nodes=len(proto.graph.node),
        op_counts=op_histogram(proto), fp32_max_rel_error=fp32_error, final_max_rel_error=final_error,
        calibration_images=0 if calibration is None else int(len(calibration)),
        seconds=time.time() - started, metadata=metadata, notes=notes)
