"""`open_backend` and `read_model_metadata`: the backend or metadata a model file needs, by its
suffix (`core.capabilities.MODEL_FORMATS`). The backends are imported when a file of their kind is
opened, so edge devices without torch or TensorRT open what they can run."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from ..core.capabilities import model_format
from ..core.errors import BackendUnavailable, ModelFileError
from ..core.metadata import ModelMetadata
from .base import DEVICES, Backend


def open_backend(model_path: str | os.PathLike, device: str = "auto", **options: Any) -> Backend:
    """Open a model file with the backend its suffix calls for.

    device: auto (GPU when the backend can use one, else CPU) | cpu | cuda | cuda:N |
    tensorrt (ONNX Runtime's TensorRT execution provider; .onnx only).
    options: backend-specific (TensorRT: cuda_graph=True, io="auto"|"torch"|"cudart";
    ONNX Runtime: threads=N). Raises ModelFileError (missing/unreadable file) or
    BackendUnavailable (runtime or GPU missing) with one-line messages.
    """
    path = Path(model_path)
    kind = model_format(path).backend
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    if device not in DEVICES and not device.startswith("cuda:"):
        raise BackendUnavailable(f"unknown device {device!r}: use auto, cpu, cuda, cuda:N or tensorrt")
    if kind == "onnxruntime":
        from .onnxruntime_backend import OnnxRuntimeBackend
        return OnnxRuntimeBackend(path, device=device, **options)
    if device == "tensorrt":
        raise BackendUnavailable(f"{path}: device 'tensorrt' is ONNX Runtime's TensorRT provider "
                                 f"(.onnx files); engines always run on TensorRT")
    if kind == "tensorrt":
        from .tensorrt_backend import TensorRTBackend
        return TensorRTBackend(path, device=device, **options)
    from .torch_backend import TorchBackend
    return TorchBackend(path, device=device, **options)


def read_model_metadata(model_path: str | os.PathLike) -> ModelMetadata:
    """Metadata of any model file without opening a runtime (engine: its sidecar JSON;
    checkpoint: needs torch)."""
    path = Path(model_path)
    kind = model_format(path).backend
    if kind == "onnxruntime":
        from ..core.onnx_metadata import read_metadata
        return read_metadata(path)
    if kind == "tensorrt":
        from ..tensorrt.sidecar import read_engine_info
        return read_engine_info(path).metadata
    from .torch_backend import checkpoint_file_metadata
    return checkpoint_file_metadata(path)
