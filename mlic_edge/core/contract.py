"""The model-file contract: what every file mlic-edge writes agrees on, stated once.

* Tensors: input "images" float32 (B, 3, S, S), preprocessed (squash resize + mean/std from the
  metadata); outputs "logits" (B, K) [+ "attention" (B, K, h, w)].
* Precisions: fp32 | fp16 | int8; a graph made for ONNX Runtime's CPU kernels is tagged with its
  target ("int8-cpu"). The family ("int8") picks the parity limits.
* Files by suffix: .onnx (ONNX Runtime; metadata in metadata_props, see `onnx_metadata`), .engine
  / .plan / .trt (TensorRT; metadata in the `<engine>.json` sidecar, see `engine_info`), .pt /
  .pth (a PyTorch checkpoint).
"""
from __future__ import annotations

import os
from pathlib import Path

from .errors import ModelFileError

INPUT_NAME = "images"
LOGITS, ATTENTION = "logits", "attention"
PRECISIONS = ("fp32", "fp16", "int8")

# suffix -> backend kind (the backend that runs the file)
MODEL_FILES = {".onnx": "onnxruntime", ".engine": "tensorrt", ".plan": "tensorrt", ".trt": "tensorrt",
               ".pt": "torch", ".pth": "torch"}
ENGINE_SUFFIXES = tuple(s for s, kind in MODEL_FILES.items() if kind == "tensorrt")


def precision_tag(precision: str, target: str) -> str:
    """The precision recorded in a file: "int8-cpu" for ONNX Runtime's CPU int8, else itself."""
    return f"{precision}-cpu" if (precision == "int8" and target == "cpu") else precision


def precision_family(precision: str) -> str:
    """'int8-cpu' -> 'int8'; anything unknown -> itself."""
    return precision.split("-")[0]


def backend_kind(path: str | os.PathLike) -> str:
    """"onnxruntime" | "tensorrt" | "torch" from the file suffix; ModelFileError for others."""
    suffix = Path(path).suffix.lower()
    if suffix not in MODEL_FILES:
        raise ModelFileError(f"{path}: unknown model file type {suffix or '(no suffix)'!r}; expected "
                             f"{', '.join(MODEL_FILES)}")
    return MODEL_FILES[suffix]
