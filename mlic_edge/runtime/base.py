"""`Backend`: one interface over every way of running an exported model (ONNX Runtime, TensorRT,
PyTorch); `open_backend` (backend.py) picks the one a file needs.

    from mlic_edge.runtime import open_backend
    with open_backend("model.onnx") as backend:           # .onnx | .engine/.plan/.trt | .pt/.pth
        out = backend.predict(images)                      # images float32 (B, 3, S, S), preprocessed
        out["logits"]                                      # (B, K) float32; sigmoid gives the scores
        out.get("attention")                               # (B, K, h, w) when the model outputs it

Why one interface: `infer`, `bench` and `parity` must treat a file the same whatever runs it, so the
differences (static/dynamic batch, engine profiles, device buffers) are absorbed here. Importing
this module needs numpy only; each backend imports its runtime (onnxruntime, tensorrt, torch)
lazily when a model is opened, so edge devices without torch can run ONNX models and engines.
"""
from __future__ import annotations

import abc
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from ..core.metadata import ModelMetadata
from .model import LoadedModel


class Timer:
    """Wall-clock timer (perf_counter) for one call; GPU backends return CUDA-event timers instead."""

    kind = "perf_counter"

    def start(self) -> None:
        self._t0 = time.perf_counter()

    def stop(self) -> float:
        """Milliseconds since start()."""
        return (time.perf_counter() - self._t0) * 1e3


class Backend(abc.ABC):
    """A loaded model. Subclasses set the attributes below in __init__ and implement `_run`.

    kind: "onnxruntime" | "tensorrt" | "torch"; loaded_model: its metadata's classes, thresholds
    and preprocessing, checked (`LoadedModel`); device: where it actually runs (e.g. "cpu",
    "cuda:0"); batch_range: (min, max) batch the model accepts in one call (None = any); a fixed
    batch is (b, b): smaller batches are zero-padded, larger ones split.
    """

    kind = "base"

    def __init__(self, path: str | os.PathLike, metadata: ModelMetadata, *, device: str,
                 output_names: list[str], batch_range: tuple[int, int] | None = None):
        self.path = Path(path)
        self.metadata = metadata
        self.device = device
        self.output_names = list(output_names)
        self.batch_range = batch_range
        self.loaded_model = LoadedModel.from_metadata(metadata, str(self.path))   # ModelFileError if malformed
        self.image_size = self.loaded_model.image_size

    # ---------------------------------------------------------------- public
    @property
    def has_attention(self) -> bool:
        return "attention" in self.output_names

    @property
    def precision(self) -> str:
        return self.metadata.precision

    def predict(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """images float32 (B, 3, S, S), already preprocessed -> {"logits": (B, K)[, "attention":
        (B, K, h, w)]}, float32 numpy arrays on the host."""
        images = self._check_input(images)
        count = len(images)
        low, high = self.batch_range or (1, max(count, 1))
        if low <= count <= high:
            return self._run(images)
        chunks: list[dict[str, np.ndarray]] = []
        for start in range(0, count, high):
            chunk = images[start:start + high]                      # (b, 3, S, S), b <= high
            real = len(chunk)
            if real < low:                                          # below the profile/fixed batch
                pad = np.zeros((low - real, *chunk.shape[1:]), np.float32)
                chunk = np.concatenate([chunk, pad])
            out = self._run(chunk)
            chunks.append({k: v[:real] for k, v in out.items()})
        return {k: np.concatenate([c[k] for c in chunks]) for k in chunks[0]}

    def timer(self) -> Timer:
        """A timer for one predict() call: CUDA events on the backend's stream where it has one."""
        return Timer()

    @property
    def timer_kind(self) -> str:
        """What timer() measures with: "perf_counter" | "cuda_events"."""
        return "cuda_events" if self.device.startswith("cuda") and self.kind != "onnxruntime" else "perf_counter"

    def describe(self) -> dict[str, Any]:
        return {"model": str(self.path), "backend": self.kind, "device": self.device,
                "precision": self.precision, "outputs": self.output_names,
                "batch_range": list(self.batch_range) if self.batch_range else None}

    def close(self) -> None:
        """Release sessions and device memory (idempotent)."""

    def __enter__(self) -> "Backend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- subclasses
    @abc.abstractmethod
    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        """One call of the model on a batch it accepts as is: {output name: array}."""

    def _check_input(self, images: np.ndarray) -> np.ndarray:
        images = np.asarray(images)
        size = self.image_size
        if images.ndim != 4 or images.shape[1:] != (3, size, size):
            raise ValueError(f"{self.path.name}: expects images (B, 3, {size}, {size}), "
                             f"got {tuple(images.shape)}")
        if len(images) == 0:
            raise ValueError("predict() needs at least one image")
        return np.ascontiguousarray(images, dtype=np.float32)
