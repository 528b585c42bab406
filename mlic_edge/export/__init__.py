"""Export: PyTorch checkpoint -> ONNX graph (fp32 / fp16 / int8) for TensorRT 10/11 or ONNX Runtime,
and ONNX graph -> TensorRT engine + JSON sidecar (`build_engine`; tensorrt imported only then).

    from mlic_edge.export import build_engine, export_onnx
    result = export_onnx("best.pt", "model.onnx", precision="int8", calib="calib_images/")
    engine = build_engine(result.path, batch="1:8:32")

Calling this package, `mlic_edge.export(...)`, runs `export_onnx(...)`. Both are a sequence of small steps over an options object (`ExportOptions` / EXPORT_STEPS in
onnx_export.py, `EngineOptions` / ENGINE_STEPS in engine.py) that can be run one by one.

Importing this package is cheap (no torch, no onnx); the heavy modules load on first use.
Install the extra first: see pyproject's `export` extra (nvidia-modelopt[onnx], onnx-graphsurgeon).
"""
from __future__ import annotations

from typing import Any

from ..core.callable_module import make_callable
from ..core.errors import (
    CalibrationError,
    ExportError,
    ExportParityError,
    MissingDependencyError,
    UnsupportedOpsError,
)

__all__ = ["BuildResult", "CalibrationError", "EngineOptions", "ExportError", "ExportOptions", "ExportParityError",
           "ExportResult", "MissingDependencyError", "UnsupportedOpsError", "check_trt_ops", "collect_calibration",
           "build_engine", "export_onnx", "load_trt_ops", "parse_batch_profile"]

_LAZY = {
    "export_onnx": "mlic_edge.export.onnx_export",
    "ExportOptions": "mlic_edge.export.onnx_export",
    "ExportResult": "mlic_edge.export.onnx_export",
    "check_trt_ops": "mlic_edge.tensorrt.onnx_ops",
    "load_trt_ops": "mlic_edge.tensorrt.onnx_ops",
    "collect_calibration": "mlic_edge.export.calibration",
    "build_engine": "mlic_edge.export.engine",
    "BuildResult": "mlic_edge.export.engine",
    "EngineOptions": "mlic_edge.export.engine",
    "parse_batch_profile": "mlic_edge.export.engine",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib
        module = importlib.import_module(_LAZY[name])
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


make_callable(__name__, "mlic_edge.export.onnx_export:export_onnx")
