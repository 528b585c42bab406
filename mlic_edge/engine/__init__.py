"""TensorRT engines: `build_engine(source, ...)` turns a checkpoint or ONNX file into a TensorRT
engine + JSON sidecar. Importing this package is cheap (no torch, no tensorrt); `tensorrt` is
imported only when an engine is built. Running engines: `mlic_edge.runtime.open_backend`.
"""
from __future__ import annotations

from typing import Any

__all__ = ["BuildResult", "build_engine", "parse_batch_profile"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from . import build
        return getattr(build, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
