"""PyTorch eager backend for checkpoints (.pt): the reference every exported file is compared to.

The one module of the runtime that imports torch (import-linter holds the rest of `runtime` to
that): the others ask `import_torch()` here when they can use it (device buffers, doctor). torch
is imported inside the functions, so `import mlic_edge.runtime` works where torch is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..core.devices import Device, parse_device
from ..core.errors import BackendUnavailable
from .base import Backend, Timer


def import_torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("running a checkpoint (.pt) needs PyTorch (pip install torch); "
                                 "on devices without it, run an exported .onnx or .engine") from None
    return torch


def checkpoint_file_metadata(path: str | os.PathLike):
    """A checkpoint's ModelMetadata (classes, preprocessing, thresholds); needs torch."""
    import_torch()  # a one-line BackendUnavailable on machines without torch
    from ..checkpoint import checkpoint_metadata
    return checkpoint_metadata(path)


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, path: str | os.PathLike, device: str | Device = "auto"):
        torch = import_torch()
        from ..checkpoint import checkpoint_metadata, load_model

        device = parse_device(device)
        if device.kind == "auto":
            device = parse_device("cuda" if torch.cuda.is_available() else "cpu")
        if device.is_gpu and not torch.cuda.is_available():
            raise BackendUnavailable(f"{path}: device {str(device)!r} asked but torch sees no CUDA GPU")
        self._torch = torch
        self._device = torch.device(str(device))
        self.model, ckpt = load_model(path, self._device)  # CheckpointError on a bad file
        metadata = checkpoint_metadata(path, ckpt, self.model)
        super().__init__(Path(path), metadata, device=str(self._device),
                         output_names=["logits", "attention"])

    def _run(self, images: np.ndarray) -> dict[str, np.ndarray]:
        torch = self._torch
        with torch.inference_mode():
            x = torch.from_numpy(images).to(self._device, non_blocking=True)   # (B, 3, S, S)
            logits, attention = self.model.forward_with_attention(x)         # (B, K), (B, K, h, w)
            return {"logits": logits.float().cpu().numpy(), "attention": attention.float().cpu().numpy()}

    def timer(self) -> Timer:
        if self._device.type == "cuda":
            return TorchEventTimer(self._torch, self._torch.cuda.current_stream(self._device))
        return Timer()

    def close(self) -> None:
        self.model = None


class TorchEventTimer:
    """CUDA-event timer on a torch stream (the torch backend, and cuda_io's torch buffers)."""

    kind = "cuda_events"

    def __init__(self, torch, stream):
        self.stream = stream
        self.begin = torch.cuda.Event(enable_timing=True)
        self.end = torch.cuda.Event(enable_timing=True)

    def start(self) -> None:
        self.begin.record(self.stream)

    def stop(self) -> float:
        self.end.record(self.stream)
        self.end.synchronize()
        return float(self.begin.elapsed_time(self.end))
