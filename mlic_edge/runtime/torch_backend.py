"""PyTorch eager backend for checkpoints (.pt): the reference every exported file is compared to.

torch is imported inside the functions, so `import mlic_edge.runtime` works where torch is absent.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import BackendUnavailable
from .backend import Backend, Timer
from .metadata import ModelMetadata


def _import_torch():
    try:
        import torch
    except ImportError:
        raise BackendUnavailable("running a checkpoint (.pt) needs PyTorch (pip install torch); "
                                 "on devices without it, run an exported .onnx or .engine") from None
    return torch


def checkpoint_metadata(path: str | os.PathLike, ckpt: dict | None = None, model=None) -> ModelMetadata:
    """ModelMetadata of a checkpoint, shaped like an exported file's (outputs: logits + attention)."""
    _import_torch()
    from ..checkpoint import load_checkpoint
    from .files import file_sha256

    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    config = dict(ckpt["config"])
    num_classes = int(config["num_classes"])
    preprocess = dict(ckpt.get("preprocess") or (model.data_config() if model is not None else {}))
    if not preprocess:
        from ..checkpoint import load_model
        preprocess = load_model(path)[0].data_config()
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()}
    return ModelMetadata(
        classes=list(ckpt.get("classes") or [f"class_{k}" for k in range(num_classes)]),
        preprocess=preprocess,
        thresholds=[float(t) for t in (ckpt.get("thresholds") or [0.5] * num_classes)],
        model_config=config, precision="fp32", source_sha256=file_sha256(path),
        output_names=["logits", "attention"], extra={"backend": "torch"})


class TorchBackend(Backend):
    kind = "torch"

    def __init__(self, path: str | os.PathLike, device: str = "auto"):
        torch = _import_torch()
        from ..checkpoint import load_model

        if device == "auto":
            device = "cuda" if torch.cuda.is_available() else "cpu"
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise BackendUnavailable(f"{path}: device {device!r} asked but torch sees no CUDA GPU")
        self._torch = torch
        self._device = torch.device(device)
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
            from .cuda_io import TorchEventTimer
            return TorchEventTimer(self._torch, self._torch.cuda.current_stream(self._device))
        return Timer()

    def close(self) -> None:
        self.model = None
