"""Export: PyTorch checkpoint -> ONNX graph (fp32 / fp16 / int8) for TensorRT 10/11 or ONNX Runtime,
and ONNX graph -> TensorRT engine + JSON sidecar (`build_engine`; tensorrt imported only then).

    from mlic_edge.export import export_onnx
    result = export_onnx("best.pt", "model.onnx", precision="int8", calib="calib_images/")

Importing this package is cheap (no torch, no onnx); the heavy modules load on first use.
Install the extra first: see pyproject's `export` extra (nvidia-modelopt[onnx], onnx-graphsurgeon).
"""
from __future__ import annotations

from typing import Any

from ..core.errors import (
    CalibrationError,
    ExportError,
    ExportParityError,
    MissingDependencyError,
    UnsupportedOpsError,
)

__all__ = ["BuildResult", "CalibrationError", "ExportError", "ExportParityError", "ExportResult",
           "MissingDependencyError", "UnsupportedOpsError", "check_trt_ops", "collect_calibration",
           "build_engine", "export_onnx", "load_trt_ops", "parse_batch_profile"]

_LAZY = {
    "export_onnx": "mlic_edge.export.onnx_export",
    "ExportResult": "mlic_edge.export.onnx_export",
    "check_trt_ops": "mlic_edge.tensorrt.onnx_ops",
    "load_trt_ops": "mlic_edge.tensorrt.onnx_ops",
    "collect_calibration": "mlic_edge.export.calibration",
    "build_engine": "mlic_edge.export.engine",
    "BuildResult": "mlic_edge.export.engine",
    "parse_batch_profile": "mlic_edge.export.engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
