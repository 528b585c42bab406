"""FP16 and INT8 graphs from a verified FP32 graph.

* fp16 (any target): NVIDIA Model Optimizer AutoCast, FP32 I/O kept, the numerically sensitive ops
  (LayerNorm, Softmax, reductions, Sigmoid, Exp/Pow/Sqrt) stay FP32. TensorRT 11 is strongly typed:
  the engine runs exactly these types.
* int8, target tensorrt: Model Optimizer explicit Q/DQ quantization (TensorRT's fusion patterns),
  calibrated on ONNX Runtime's CPU provider, one batch at a time from the calibration cache;
  LayerNorm/Softmax/Sigmoid/the per-class head, the stem conv and depthwise convs
  (`sensitive_convs`, measured) stay out of INT8, the rest of the non-quantized graph in
  `high_precision`: fp32 by default (with fp16 the trained fixture lost 2.2 mAP points on ONNX
  Runtime, against 0.2 with fp32), fp16 on request.
* int8, target cpu: ONNX Runtime static quantization, QDQ format (as fast as QOperator on ORT CPU:
  ORT fuses DQ->Conv->Q into QLinearConv at load; and it stays plain ONNX), per-channel INT8
  weights, UINT8 activations, MinMax ranges by default; only Conv/Gemm and MatMuls with a 2-D
  weight (activation x activation MatMuls of attention and the iRPE ones stay FP32).
"""
from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path
from typing import Any

import numpy as np

from .errors import ExportError, MissingDependencyError

log = logging.getLogger(__name__)

# Kept in FP32 by the FP16 conversion: normalisation statistics, softmax, reductions and the final
# score nonlinearity overflow or lose calibration in FP16 (deployment.md, "Known pitfalls").
FP16_EXCLUDE = ["LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "Sigmoid", "Exp",
                "Pow", "Sqrt"]
# Never quantized to INT8 (and kept out of FP16 by ModelOpt's high-precision pass as well).
INT8_EXCLUDE = ["LayerNormalization", "Softmax", "Sigmoid", "ReduceSum", "ReduceMean"]
INT8_CPU_OPS = ["Conv", "Gemm", "MatMul"]
CALIB_METHODS = {"entropy": "entropy", "max": "max", "minmax": "max"}
CALIB_BATCH = 8                  # images per calibration step, at most
CALIB_STEP_BYTES = 1024 ** 3     # ... and at most this much activation data per step (see calibration_step)
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


@contextlib.contextmanager
def _restore_ort_quantization():
    """Undo ModelOpt's monkey-patching of onnxruntime.quantization when its call returns.

    `modelopt.onnx.quantization.quantize` replaces methods of ORT's calibrators, histogram
    collector and quantizers and the module function `calibrate.create_calibrator`, process-wide
    (ort_patching.patch_ort_modules). Left in place, ORT's own `quantize_static` later in the same
    process fails ("Histogram has not been collected") or silently ignores the calibration method.
    """
    import importlib
    import inspect

    modules = [importlib.import_module(f"onnxruntime.quantization.{name}")
               for name in ("calibrate", "base_quantizer", "onnx_quantizer", "qdq_quantizer", "quantize")]
    module_attrs = {m: dict(vars(m)) for m in modules}
    classes = {obj for m in modules for obj in vars(m).values() if inspect.isclass(obj)}
    class_attrs = {cls: dict(vars(cls)) for cls in classes}
    try:
        yield
    finally:
        for module, attrs in module_attrs.items():
            for name, value in attrs.items():
                if vars(module).get(name) is not value:
                    setattr(module, name, value)
        for cls, attrs in class_attrs.items():
            for name in [k for k in vars(cls) if k not in attrs]:
                delattr(cls, name)
            for name, value in attrs.items():
                if name in ("__dict__", "__weakref__"):
                    continue
                if vars(cls).get(name) is not value:
                    setattr(cls, name, value)


def _import_modelopt(what: str):
    try:
        with _modelopt_quiet():
            import modelopt.onnx.autocast as autocast
            import modelopt.onnx.quantization as quantization
    except ImportError as e:
        raise MissingDependencyError(f"{what} needs NVIDIA Model Optimizer ({e.name or e}); "
                                     f"install it with: {MODELOPT_INSTALL}") from None
    return autocast, quantization


def to_fp16(fp32_path: Path, *, exclude: list[str] | None = None):
    """Mixed-precision FP16 graph (FP32 inputs/outputs) as a ModelProto."""
    autocast, _ = _import_modelopt("fp16 export")
    with _modelopt_quiet():
        try:
            return autocast.convert_to_mixed_precision(
                str(fp32_path), low_precision_type="fp16", keep_io_types=True,
                op_types_to_exclude=list(exclude or FP16_EXCLUDE), providers=["cpu"])
        except Exception as e:
            raise ExportError(f"fp16 conversion failed: {' '.join(str(e).split())[:300]}") from None


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


def activation_bytes_per_image(model_path: Path) -> int:
    """Bytes of every float tensor the graph computes for one image (shape-inferred value_info of
    the fp32 graph; the batch dimension counted as 1). The calibrators keep one step's worth of
    all of them, which is what fills memory on large models (ResNet101 @448: GBs per image)."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    total = 0
    for info in model.graph.value_info:
        tensor = info.type.tensor_type
        if tensor.elem_type not in (onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1 for d in tensor.shape.dim]
        total += int(np.prod(dims, dtype=np.int64)) * (4 if tensor.elem_type == onnx.TensorProto.FLOAT else 2)
    return total


def calibration_step(model_path: Path, requested: int = 0) -> int:
    """Images per calibration step: `requested`, else CALIB_BATCH capped so that one step's
    activations stay under CALIB_STEP_BYTES (1 image at least). Memory then does not grow with
    the number of calibration images or with a fixed step on a large model."""
    if requested:
        return requested
    per_image = activation_bytes_per_image(model_path)
    return int(max(1, min(CALIB_BATCH, CALIB_STEP_BYTES // max(per_image, 1))))


class CalibrationReader:
    """onnxruntime.quantization CalibrationDataReader (also what Model Optimizer takes) over a
    CalibrationSet: one batch in memory at a time, whole batches only (a fixed-batch graph needs
    its own size). Shows the images calibrated per pass on stderr when there are many."""

    def __init__(self, calibration, batch: int | None, calib_batch: int = CALIB_BATCH):
        self.calibration = calibration
        self.step = batch or min(calib_batch or CALIB_BATCH, len(calibration))
        self.count = (len(calibration) // self.step) * self.step
        if self.count == 0:
            raise ExportError(f"need at least {self.step} calibration images for a batch-{self.step} graph, "
                              f"got {len(calibration)}")
        self._batches = None
        self._bar = None

    def get_first(self):
        return {"images": self.calibration.read(0, self.step)}

    def get_next(self):
        if self._batches is None:
            from .calibration import progress
            self._batches = self.calibration.batches(self.step, self.count)
            self._bar = progress(self.count, "calibrating")
        batch = next(self._batches, None)
        if batch is None:
            self.rewind()
            return None
        self._bar.update(len(batch))
        return {"images": batch}

    def rewind(self):
        if self._bar is not None:
            self._bar.close()
        self._batches, self._bar = None, None


def to_int8_tensorrt(fp32_path: Path, calibration, *, batch: int | None, method: str = "entropy",
                     high_precision: str = "fp32", work_dir: Path, calib_batch: int = 0):
    """Explicit Q/DQ INT8 graph for TensorRT (ModelOpt), as a ModelProto."""
    import onnx

    if method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    if high_precision not in ("fp16", "fp32"):
        raise ExportError(f"high_precision must be fp16 or fp32, got {high_precision!r}")
    _, quantization = _import_modelopt("int8 export for TensorRT")
    reader = CalibrationReader(calibration, batch, calibration_step(fp32_path, calib_batch))
    size = calibration.shape[-1]
    fp32 = onnx.load(str(fp32_path), load_external_data=False)   # node names only, not the weights
    out_path = work_dir / "int8.onnx"
    with _modelopt_quiet(), _restore_ort_quantization():
        try:
            quantization.quantize(
                str(fp32_path), quantize_mode="int8", calibration_data_reader=reader,
                calibration_method=CALIB_METHODS[method], calibration_shapes=f"images:{reader.step}x3x{size}x{size}",
                calibration_eps=["cpu"], op_types_to_exclude=list(INT8_EXCLUDE),
                op_types_to_exclude_fp16=list(FP16_EXCLUDE), nodes_to_exclude=_head_nodes(fp32) + sensitive_convs(fp32),
                high_precision_dtype=high_precision, output_path=str(out_path), log_level="ERROR")
        except Exception as e:
            raise ExportError(f"int8 quantization (ModelOpt) failed: {' '.join(str(e).split())[:300]}") from None
    return onnx.load(str(out_path))


def ort_workarounds(model: Any) -> list[str]:
    """ONNX Runtime CPU graph optimizers to disable for this graph.

    These Q/DQ graphs are laid out for TensorRT; ONNX Runtime only has to compute what they
    say, exactly, so parity measures the numerics TensorRT will see:
    * QDQSelectorActionTransformer fuses Q/DQ + MatMul into ORT's own integer kernels, and its
      MatMulIntegerToFloat rejects ModelOpt's per-channel weight zero points ("b zero point is
      not valid", ORT 1.24, on the quickstart model): disabled, DQ -> float op runs instead.
    * ORT 1.24 and 1.32 segfault in NchwcTransformer (ORT_ENABLE_ALL, the default) on ModelOpt
      INT8 graphs whose high-precision part is FP16.
    The list is stored in the metadata (extra.ort_disabled_optimizers) for every ORT consumer.
    """
    from onnx import TensorProto

    has_qdq = any(n.op_type == "DequantizeLinear" for n in model.graph.node)
    if not has_qdq:
        return []
    has_fp16 = any(i.data_type == TensorProto.FLOAT16 for i in model.graph.initializer)
    return ["QDQSelectorActionTransformer"] + (["NchwcTransformer"] if has_fp16 else [])


@contextlib.contextmanager
def _ort_entropy_bins(num_bins: int = 2048):
    """Make quantize_static's entropy calibrator use a 2048-bin histogram (TensorRT's choice).

    ORT's entropy calibrator defaults to 128 histogram bins for 128 quantized bins, which leaves
    nothing to search: it returns the min/max range, so "entropy" silently equals "max", and
    quantize_static has no option to change it. The wrapper is scoped to this call.
    """
    import importlib

    from onnxruntime.quantization import CalibrationMethod

    # the package re-exports a function named `quantize`: fetch the module itself
    ort_quantize = importlib.import_module("onnxruntime.quantization.quantize")

    original = ort_quantize.create_calibrator

    def create_calibrator(*args, **kwargs):
        if kwargs.get("calibrate_method") == CalibrationMethod.Entropy:
            kwargs["extra_options"] = {"num_bins": num_bins, **(kwargs.get("extra_options") or {})}
        return original(*args, **kwargs)

    ort_quantize.create_calibrator = create_calibrator
    try:
        yield
    finally:
        ort_quantize.create_calibrator = original


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


def to_int8_cpu(fp32_path: Path, calibration, *, batch: int | None, method: str = "entropy",
                work_dir: Path, quant_format: str = "qdq", calib_batch: int = 0):
    """ONNX Runtime static INT8 (per-channel weights) for the CPU provider, as a ModelProto.

    quant_format: "qdq" (default, see CPU_QUANT_FORMAT) or "qoperator".
    """
    import onnx
    from onnxruntime.quantization import (
        CalibrationMethod,
        QuantFormat,
        QuantType,
        quantize_static,
    )
    from onnxruntime.quantization.shape_inference import quant_pre_process

    if method not in CALIB_METHODS:
        raise ExportError(f"calibration method must be one of {', '.join(CALIB_METHODS)}, got {method!r}")
    reader = CalibrationReader(calibration, batch, calibration_step(fp32_path, calib_batch))
    prepared = work_dir / "prepared.onnx"
    out_path = work_dir / "int8_cpu.onnx"
    # ORT's symbolic shape inference mis-types GatherElements (it gives the iRPE bias a Gather-like
    # rank and then asserts); the graph already carries full ONNX shape inference, so skip it.
    quant_pre_process(str(fp32_path), str(prepared), skip_symbolic_shape=True)
    model = onnx.load(str(prepared))
    weights_2d = {i.name for i in model.graph.initializer if len(i.dims) == 2}
    # Only MatMuls with a 2-D weight (the Linear layers) are quantized. activation x activation
    # MatMuls (q @ k^T, attn @ v) stay FP32, and so do the iRPE ones (3-D tables / one-hot:
    # per-channel zero points of a 3-D weight are rejected by ORT's QLinearMatMul).
    exclude = [n.name for n in model.graph.node
               if n.op_type == "MatMul" and not any(i in weights_2d for i in n.input)]
    exclude += _head_nodes(model) + sensitive_convs(model)
    calibrate = CalibrationMethod.Entropy if CALIB_METHODS[method] == "entropy" else CalibrationMethod.MinMax
    try:
        with contextlib.redirect_stdout(io.StringIO()), _ort_entropy_bins():  # (it print()s progress)
            quantize_static(
                str(prepared), str(out_path), reader,
                quant_format=QuantFormat.QDQ if quant_format == "qdq" else QuantFormat.QOperator,
                op_types_to_quantize=INT8_CPU_OPS, nodes_to_exclude=exclude, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=calibrate)
    except Exception as e:
        raise ExportError(f"int8 quantization (ONNX Runtime) failed: {' '.join(str(e).split())[:300]}") from None
    return onnx.load(str(out_path))


def convert(fp32_path: Path, precision: str, target: str, calibration, *, batch: int | None, method: str,
            high_precision: str, work_dir: Path, calib_batch: int = 0) -> tuple[Any, list[str]]:
    """The verified fp32 graph -> its fp16 / int8 version, as `export` and `build-engine` make it.
    calibration: a CalibrationSet (read a batch of `calib_batch` images at a time; 0 = default).

    Returns (ModelProto, ONNX Runtime optimizers to disable for this graph)."""
    if precision == "fp16":
        return to_fp16(fp32_path), []
    if target == "tensorrt":
        proto = to_int8_tensorrt(fp32_path, calibration, batch=batch, method=method,
                                 high_precision=high_precision, work_dir=work_dir, calib_batch=calib_batch)
        return proto, ort_workarounds(proto)
    return to_int8_cpu(fp32_path, calibration, batch=batch, method=method, work_dir=work_dir,
                       calib_batch=calib_batch), []
