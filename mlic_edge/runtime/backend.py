"""`open_backend` and `read_model_metadata`: the backend or metadata a model file needs, by its
suffix (`core.capabilities.MODEL_FORMATS`). The backends are imported when a file of their kind is
opened, so edge devices without torch or TensorRT open what they can run."""
from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from ..core.capabilities import DEVICE_KINDS, MODEL_FORMATS, model_format
from ..core.devices import Device, parse_device
from ..core.errors import BackendUnavailable, ModelFileError
from ..core.metadata import ModelMetadata
from .base import Backend


# The class that runs each backend of the capability table: (module, class name), imported when
# a file of its kind is opened.
BACKENDS = {"onnxruntime": (".onnxruntime_backend", "OnnxRuntimeBackend"),
            "tensorrt": (".tensorrt_backend", "TensorRTBackend"),
            "torch": (".torch_backend", "TorchBackend")}


def open_backend(model_path: str | os.PathLike, device: str | Device = "auto", **options: Any) -> Backend:
    """Open a model file with the backend its format calls for (`capabilities.model_format`).

    device: auto (GPU when the backend can use one, else CPU) | cpu | cuda | cuda:N |
    tensorrt (ONNX Runtime's TensorRT execution provider; .onnx only): `capabilities.DEVICE_KINDS`
    says which apply to which format.
    options: backend-specific (TensorRT: cuda_graph=True, io="auto"|"torch"|"cudart";
    ONNX Runtime: threads=N, spin=False). Raises ConfigError (malformed device), ModelFileError
    (missing/unreadable file) or BackendUnavailable (runtime or GPU missing) with one-line messages.
    """
    path = Path(model_path)
    fmt = model_format(path)
    device = parse_device(device)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such model file")
    kind = DEVICE_KINDS[device.kind]
    if fmt.name not in kind.formats:
        runs = [name for name, d in DEVICE_KINDS.items() if fmt.name in d.formats]
        raise BackendUnavailable(f"{path}: device {str(device)!r} ({kind.about}) does not run {fmt.name} files; "
                                 f"they run on {', '.join(runs)}")
    module, name = BACKENDS[fmt.backend]
    backend_class = getattr(importlib.import_module(module, __package__), name)
    return backend_class(path, device=device, **options)


def read_model_metadata(model_path: str | os.PathLike) -> ModelMetadata:
    """Metadata of any model file without opening a runtime (engine: its sidecar JSON;
    checkpoint: needs torch)."""
    path = Path(model_path)
    kind = model_format(path).backend
    if kind == MODEL_FORMATS["onnx"].backend:
        from ..core.onnx_metadata import read_metadata
        return read_metadata(path)
    if kind == MODEL_FORMATS["engine"].backend:
        from ..tensorrt.sidecar import read_engine_info
        return read_engine_info(path).metadata
    from .torch_backend import checkpoint_file_metadata
    return checkpoint_file_metadata(path)
