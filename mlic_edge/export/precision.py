"""FP16 and INT8 graphs from a verified FP32 graph.

* fp16 (any target): NVIDIA Model Optimizer AutoCast, FP32 I/O kept, the numerically sensitive ops
  (LayerNorm, Softmax, reductions, Sigmoid, Exp/Pow/Sqrt) stay FP32. TensorRT 11 is strongly typed:
  the engine runs exactly these types.
* int8 (both targets): activation ranges measured on ONNX Runtime's CPU provider one batch at a
  time (`activation_ranges`: running min/max and a sampled |x| histogram, memory independent of
  the number of images), then ONNX Runtime's QDQ quantizer places Q/DQ with per-channel INT8
  weights on Conv, Gemm and the Linear MatMuls (`int8_nodes`). The per-class head, the stem conv
  and depthwise convs (`sensitive_convs`, measured) stay out of INT8; so do LayerNorm, Softmax,
  reductions, the Sigmoid and attention's activation x activation MatMuls.
  - target tensorrt: explicit symmetric Q/DQ on inputs only (TensorRT's layout), entropy ranges
    (TensorRT's KL method) by default, the rest of the graph in `high_precision`: fp32 by default
    (fp16 there adds its rounding to int8's, which the parity check shows on the trained fixture),
    fp16 on request (Model Optimizer's AutoCast).
  - target cpu: UINT8 activations with max ranges by default, QDQ format (as fast as QOperator on
    ORT CPU: ORT fuses DQ->Conv->Q into QLinearConv at load; and it stays plain ONNX).
  Model Optimizer's own ONNX INT8 pipeline is not used: on a model of ResNet101's size its
  repeated shape inference, save/reload and checks of the whole graph need several times the
  graph's memory, more than a 16 GB machine gives (benchmarks/export_memory.py measures ours).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from ..core.errors import ExportError, MissingDependencyError

log = logging.getLogger(__name__)

# Kept in FP32 by the FP16 conversion: normalisation statistics, softmax, reductions and the final
# score nonlinearity overflow or lose calibration in FP16 (docs/deployment.md, "Known pitfalls").
FP16_EXCLUDE = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Sigmoid", "Exp",
                "Pow", "Sqrt"]
# Never quantized to INT8 (and kept out of FP16 by ModelOpt's high-precision pass as well).
INT8_OPS = ("Conv", "Gemm", "MatMul")   # the op types INT8 covers (see int8_nodes)
CALIB_METHODS = {"entropy": "entropy", "max": "max", "minmax": "max"}
MODELOPT_INSTALL = ("pip uninstall -y onnxruntime && pip install 'mlic-edge[export]' "
                    "(nvidia-modelopt[onnx]; it brings onnxruntime-gpu, which also runs on CPU)")


class _DropNoise(logging.Filter):
    """ModelOpt logs an ERROR when NVML is missing (CPU machines); it is harmless here."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Failed to get GPU count" not in record.getMessage()


@contextlib.contextmanager
def _modelopt_quiet():
    """ModelOpt logs INFO to stdout and draws tqdm bars on stderr: keep only its errors."""
    logger = logging.getLogger("modelopt.onnx")
    noise = _DropNoise()
    logger.addFilter(noise)
    levels = {name: logging.getLogger(name).level for name in list(logging.root.manager.loggerDict)
              if name.startswith("modelopt.onnx")}
    try:
        for name in levels:
            logging.getLogger(name).setLevel(logging.ERROR)
        with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.removeFilter(noise)
        for name, level in levels.items():
            logging.getLogger(name).setLevel(level)


def _import_autocast(what: str):
    """Model Optimizer's AutoCast (FP16 graphs), or a one-line install hint."""
    try:
        with _modelopt_quiet():
            from modelopt.onnx import autocast
    except ImportError as e:
        raise MissingDependencyError(f"{what} needs NVIDIA Model Optimizer ({e.name or e}); "
                                     f"install it with: {MODELOPT_INSTALL}") from None
    return autocast


def _to_float16(values: np.ndarray) -> np.ndarray:
    """FP32 -> FP16 as AutoCast converts initializers: clamped to FP16's largest value, and
    non-zero values below its smallest subnormal kept non-zero (at that subnormal, with their
    sign; AutoCast itself makes them positive)."""
    info = np.finfo(np.float16)
    values = np.clip(values, -info.max, info.max)
    tiny = (values != 0) & (np.abs(values) < info.smallest_subnormal)
    if tiny.any():
        values = np.where(tiny, np.copysign(info.smallest_subnormal, values), values)
    return values.astype(np.float16)


def to_fp16(fp32_path: Path, *, exclude: list[str] | None = None):
    """Mixed-precision FP16 graph (FP32 inputs/outputs) as a ModelProto: Model Optimizer's
    AutoCast (`convert_to_f16`) with the op types in `exclude` (default FP16_EXCLUDE) kept FP32.

    AutoCast converts a weight-free skeleton (`skeleton.lift_weights`); the weights are read back
    from the file one at a time: a weight that AutoCast casts to FP16 (a Cast right after its stand-in, for every
    reader) becomes an FP16 initializer in that Cast's place, one read in FP32 goes back as it was.
    Converting the skeleton instead of the whole graph (`convert_to_mixed_precision`) keeps the
    conversion's time and memory far below the graph's own size on large models, with the same
    FP32 node set; a test checks that the result computes exactly what `convert_to_f16` of the
    whole graph computes."""
    import onnx
    from onnx import TensorProto, numpy_helper

    from .skeleton import lift_weights, put_back

    autocast = _import_autocast("fp16 export")
    model = onnx.load(str(fp32_path), load_external_data=False)
    weights = lift_weights(model, fp32_path.parent)
    with _modelopt_quiet():
        try:
            model = autocast.convert_to_f16(model, low_precision_type="fp16", keep_io_types=True,
                                            op_block_list=list(exclude or FP16_EXCLUDE))
        except Exception as e:
            raise ExportError(f"fp16 conversion failed: {' '.join(str(e).split())[:300]}") from None

    def cast_to_fp16(model, tensor):
        readers = [n for n in model.graph.node if tensor.name in n.input]
        casts = [n for n in readers if n.op_type == "Cast"
                 and next(a.i for a in n.attribute if a.name == "to") == TensorProto.FLOAT16]
        if not casts or len(casts) != len(readers) or tensor.data_type != TensorProto.FLOAT:
            return [tensor]
        half = _to_float16(numpy_helper.to_array(tensor))
        for cast in casts:                   # the Cast's output becomes the FP16 weight
            model.graph.node.remove(cast)
        return [numpy_helper.from_array(half, cast.output[0]) for cast in casts]

    put_back(model, weights, fp32_path.parent, cast_to_fp16)
    return model


def _head_nodes(model) -> list[str]:
    """Nodes of the per-class head (GroupWiseLinear: Mul -> ReduceSum -> Add before `logits`)."""
    producers = {out: node for node in model.graph.node for out in node.output}
    names, frontier = [], ["logits"]
    for _ in range(3):
        node = producers.get(frontier.pop()) if frontier else None
        if node is None or node.op_type not in ("Add", "ReduceSum", "Mul"):
            break
        names.append(node.name)
        frontier.extend(i for i in node.input if i in producers)
        frontier = frontier[:1]
    return names


def int8_nodes(model) -> list[Any]:
    """The nodes INT8 covers, for both targets: Conv, Gemm and the MatMuls with a 2-D weight (the
    Linear layers). Activation x activation MatMuls (q @ k^T, attn @ v) and the iRPE ones (3-D
    tables / one-hot) stay FP32, as do the per-class head and `sensitive_convs`; LayerNorm,
    Softmax, reductions and the Sigmoid are never quantized (docs/deployment.md)."""
    weights_2d = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    skip = set(_head_nodes(model)) | set(sensitive_convs(model))
    return [node for node in model.graph.node if node.name not in skip and (
        node.op_type in ("Conv", "Gemm") or (node.op_type == "MatMul" and any(i in weights_2d for i in node.input)))]


def calibrated_tensors(model, nodes: list[Any], target: str) -> list[str]:
    """Activations that need a range: the non-weight inputs of `nodes`, and for the CPU target
    their outputs too (ONNX Runtime fuses DQ -> Conv -> Q into QLinearConv; TensorRT wants Q/DQ
    on inputs only)."""
    initializers = {i.name for i in model.graph.initializer}
    names: list[str] = []
    for node in nodes:
        inputs = node.input[:1] if node.op_type in ("Conv", "Gemm") else node.input
        tensors = list(inputs) + (list(node.output) if target == "cpu" else [])
        names.extend(t for t in tensors if t and t not in initializers and t not in names)
    return names


def ort_workarounds(model: Any) -> list[str]:
    """ONNX Runtime CPU graph optimizers to disable for this graph.

    These Q/DQ graphs are laid out for TensorRT; ONNX Runtime only has to compute what they
    say, exactly, so parity measures the numerics TensorRT will see:
    * QDQSelectorActionTransformer fuses Q/DQ + MatMul into ORT's own integer kernels, and its
      MatMulIntegerToFloat rejects the per-channel weight zero points of these graphs ("b zero
      point is not valid", ORT 1.24, on the quickstart model; measured on Model Optimizer's
      graphs, which ORT's QDQ quantizer wrote with the same settings): disabled, DQ -> float op
      runs instead.
    * ORT 1.24 and 1.32 segfault in NchwcTransformer (ORT_ENABLE_ALL, the default) on INT8
      graphs whose high-precision part is FP16.
    The list is stored in the metadata (extra.ort_disabled_optimizers) for every ORT consumer.
    """
    from onnx import TensorProto

    has_qdq = any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    if not has_qdq:
        return []
    has_fp16 = any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    return ["QDQSelectorActionTransformer"] + (["NchwcTransformer"] if has_fp16 else [])


def sensitive_convs(model) -> list[str]:
    """Convs kept out of INT8 for both targets: the stem (it sees the normalised image, whose
    entropy-calibrated range clips dark backgrounds) and depthwise convs (group > 1: few weights
    per channel, memory-bound, so INT8 buys little there).

    Measured on the quickstart model (EfficientNet-Lite0, digits test, 500 images, fp32 mAP 97.11,
    256 calibration images; delta mAP / max |delta logit| / mean |delta logit| / top-1 agreement):
    * TensorRT Q/DQ (ModelOpt, entropy): every conv INT8 -0.10 / 2.81 / 0.233 / 91.8%; stem kept
      -0.11 / 3.05 / 0.215 / 91.8%; stem + depthwise kept +0.07 / 1.53 / 0.117 / 94.4% (max
      calibration: -0.29 / 3.85 / 0.236 / 90.6%, -0.03 / 3.17 / 0.220 / 91.6%, -0.02 / 1.93 / 0.123 / 93.4%).
    * ONNX Runtime CPU (max): all convs INT8 mAP 93.43; stem kept 95.82; depthwise kept 94.70;
      both kept 96.60.
    ResNet backbones have no depthwise convs: only their stem stays fp32."""
    from ..core.contract import INPUT_NAME

    def group(node) -> int:
        return next((a.i for a in node.attribute if a.name == "group"), 1)

    convs = [n for n in model.graph.node if n.op_type == "Conv"]
    stem = [n.name for n in convs if INPUT_NAME in n.input][:1]
    return stem + [n.name for n in convs if group(n) > 1]


# ONNX Runtime QDQ quantizer settings per target. TensorRT: symmetric INT8 activations, Q/DQ on
# the inputs only, FP32 weights with a per-channel Q/DQ pair and FP32 bias (the layout Model
# Optimizer's TensorRT mode asks ONNX Runtime for; TensorRT folds the weight Q/DQ at build time).
# CPU: UINT8 activations, INT8 per-channel weights, INT32 bias (what ORT fuses into QLinearConv).
QDQ_OPTIONS = {
    "tensorrt": {"ActivationSymmetric": True, "WeightSymmetric": True, "QuantizeBias": False,
                 "AddQDQPairToWeight": True, "DedicatedQDQPair": False,
                 "OpTypesToExcludeOutputQuantization": list(INT8_OPS)},
    "cpu": {"WeightSymmetric": True},
}


ORT_SHAPES_INFERRED = {"onnx.infer": "onnxruntime.quant"}   # onnxruntime.quantization.quant_utils.add_infer_metadata


def to_int8(fp32_path: Path, calibration, target: str, *, batch: int | None, method: str = "entropy",
            high_precision: str = "fp32", calib_batch: int = 0):
    """INT8 Q/DQ graph as a ModelProto: ranges measured by `activation_ranges.collect_stats`
    (streamed, bounded memory), Q/DQ placed by ONNX Runtime's QDQ quantizer with the target's
    settings (QDQ_OPTIONS). target "tensorrt": explicit symmetric Q/DQ for TensorRT, the rest of
    the graph in `high_precision` (fp16 via Model Optimizer's AutoCast); "cpu": ONNX Runtime's
    CPU provider. method: entropy (TensorRT's KL threshold) | max."""
    import onnx
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorData, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    from .activation_ranges import collect_stats
    from .calibration import progress

    if method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    if high_precision not in ("fp16", "fp32"):
        raise ExportError(f"high_precision must be fp16 or fp32, got {high_precision!r}")
    structure = onnx.load(str(fp32_path), load_external_data=False)   # node names only, not the weights
    quantized = int8_nodes(structure)
    nodes, tensors = [node.name for node in quantized], calibrated_tensors(structure, quantized, target)
    del quantized
    stats = collect_stats(fp32_path, tensors, calibration, method=CALIB_METHODS[method], batch=batch,
                          calib_batch=calib_batch, progress=lambda total: progress(total, "calibrating"))
    ranges = stats.ranges(symmetric=target == "tensorrt")
    # ONNX Runtime's quantizer infers shapes on a deep copy of the model saved with its weights and
    # reloaded (seconds and a second copy of the weights on a large model) unless the model carries
    # its "shapes inferred" marker: infer them on the structure and set the marker.
    inferred = onnx.shape_inference.infer_shapes(structure).graph.value_info
    del structure
    model = onnx.load(str(fp32_path))
    del model.graph.value_info[:]
    model.graph.value_info.extend(inferred)
    onnx.helper.set_model_props(model, {**{p.key: p.value for p in model.metadata_props}, **ORT_SHAPES_INFERRED})
    tensors_range = TensorsData(CalibrationMethod.MinMax, {
        name: TensorData(lowest=np.float32(low), highest=np.float32(high)) for name, (low, high) in ranges.items()})
    activation_type = QuantType.QInt8 if target == "tensorrt" else QuantType.QUInt8
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            quantizer = QDQQuantizer(model, True, False, QuantType.QInt8, activation_type, tensors_range, nodes,
                                     [], list(INT8_OPS), dict(QDQ_OPTIONS[target]))
            quantizer.quantize_model()
    except Exception as e:
        raise ExportError(f"int8 quantization (ONNX Runtime) failed: {' '.join(str(e).split())[:300]}") from None
    model = quantizer.model.model
    del quantizer
    onnx.helper.set_model_props(model, {p.key: p.value for p in model.metadata_props if p.key not in ORT_SHAPES_INFERRED})
    _toposort(model.graph)    # the quantizer appends its Q/DQ nodes at the end of the node list
    if target == "tensorrt" and high_precision == "fp16":
        autocast = _import_autocast("int8 export with --int8-high-precision fp16")
        with _modelopt_quiet():
            model = autocast.convert_to_f16(model, low_precision_type="fp16", keep_io_types=True,
                                            op_block_list=list(FP16_EXCLUDE))
    return model


def _toposort(graph) -> None:
    """Reorder the nodes topologically (Kahn's algorithm), keeping the original order among
    ready nodes. ONNX requires the order; graphsurgeon's toposort would copy the weights."""
    available = {i.name for i in graph.input} | {i.name for i in graph.initializer} | {""}
    producer_count = []
    waiting: dict[str, list[int]] = {}
    nodes = list(graph.node)
    for index, node in enumerate(nodes):
        missing = {x for x in node.input if x not in available}
        producer_count.append(len(missing))
        for name in missing:
            waiting.setdefault(name, []).append(index)
    produced_by = {out for node in nodes for out in node.output}
    for index, node in enumerate(nodes):   # inputs nobody produces (graph-level errors) are not waited for
        unknown = {x for x in node.input if x not in available and x not in produced_by}
        producer_count[index] -= len(unknown)
    import heapq
    ready = [i for i, count in enumerate(producer_count) if count == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        index = heapq.heappop(ready)
        order.append(index)
        for out in nodes[index].output:
            for consumer in waiting.pop(out, []):
                producer_count[consumer] -= 1
                if producer_count[consumer] == 0:
                    heapq.heappush(ready, consumer)
    if len(order) != len(nodes):
        raise ExportError("int8 graph has a cycle after quantization")
    if order != sorted(order):
        del graph.node[:]
        graph.node.extend(nodes[i] for i in order)


def convert(fp32_path: Path, precision: str, target: str, calibration, *, batch: int | None, method: str,
            high_precision: str, calib_batch: int = 0) -> tuple[Any, list[str]]:
    """The verified fp32 graph -> its fp16 / int8 version, as `export` and `build-engine` make it.
    calibration: a CalibrationSet (read a batch of `calib_batch` images at a time; 0 = default).

    Returns (ModelProto, ONNX Runtime optimizers to disable for this graph)."""
    if precision == "fp16":
        return to_fp16(fp32_path), []
    proto = to_int8(fp32_path, calibration, target, batch=batch, method=method,
                    high_precision=high_precision, calib_batch=calib_batch)
    return proto, ort_workarounds(proto) if target == "tensorrt" else []
