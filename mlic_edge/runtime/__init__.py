"""Edge runtime: run exported models with numpy + PIL + one runtime, no torch needed.

    from mlic_edge.runtime import open_backend
    backend = open_backend("model.onnx")                 # .onnx | .engine | .pt (by suffix)
    spec = backend.metadata.preprocessing()              # Preprocessing: image_size, mean, std, ...
    batch = spec.batch(["a.jpg"])                        # float32 (B, 3, S, S)
    logits = backend.predict(batch)["logits"]            # (B, K)

Importing this package loads numpy/PIL-level modules only; onnxruntime, tensorrt and torch are
imported when a model of their kind is opened (tests import it with torch made unimportable).
"""
from __future__ import annotations

from ..core.capabilities import model_format
from ..tensorrt.sidecar import EngineInfo, read_engine_info
from ..core.errors import BackendUnavailable, ModelFileError
from ..core.metadata import ModelMetadata
from ..core.onnx_metadata import read_metadata
from ..core.preprocess import Preprocessing, load_image, preprocess, preprocess_batch
from .backend import open_backend, read_model_metadata
from .base import Backend, Timer
from .model import LoadedModel, Prediction

__all__ = ["Backend", "BackendUnavailable", "EngineInfo", "LoadedModel", "ModelFileError", "ModelMetadata",
           "Prediction", "Preprocessing", "Timer", "model_format", "load_image", "open_backend", "preprocess",
           "preprocess_batch", "read_engine_info", "read_metadata", "read_model_metadata"]
