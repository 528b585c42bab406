"""Checkpoints: one dict, written atomically, read with `weights_only=True`.

Layout (all plain types, tensors and dicts, so `torch.load(weights_only=True)` accepts it):

    {
      "format": "mlic-edge/1",
      "model": state_dict,            # the weights to deploy (the better of model / EMA)
      "config": ModelConfig.to_dict(),
      "classes": [str, ...],
      "preprocess": {"image_size", "resize", "mean", "std", "interpolation"},
      "thresholds": [float, ...],     # per-class decision thresholds (default 0.5)
      "metrics": {...},               # evaluation of these weights, if any
      "train_state": {...},           # optimizer, scheduler, EMA, epoch, RNG (last.pt only)
    }
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from .core.errors import CheckpointError, ConfigError
from .core.files import atomic_open
from .core.metadata import ModelMetadata

FORMAT = "mlic-edge/1"


def save_checkpoint(path: str | Path, checkpoint: dict[str, Any]) -> None:
    """Write atomically: a crash or Ctrl-C leaves the previous file or the new one, never half."""
    checkpoint = {"format": FORMAT, **checkpoint}
    with atomic_open(path, "wb") as f:
        torch.save(checkpoint, f)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read a checkpoint safely (weights_only=True); one-line CheckpointError on any problem."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle refused by weights_only, ...
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CheckpointError(f"{path}: not a readable mlic-edge checkpoint ({reason[:200]})") from None
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise CheckpointError(f"{path}: not an mlic-edge checkpoint (no 'model'/'config' entries)")
    return ckpt


def load_model(path: str | Path, device: str | torch.device = "cpu"):
    """Rebuild the model of a checkpoint, in eval mode. Returns (model, checkpoint dict)."""
    ckpt = load_checkpoint(path)
    model = _build_stored_model(path, ckpt["config"])
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise CheckpointError(f"{path}: weights do not fit the stored config "
                              f"({str(e).splitlines()[0][:200]})") from None
    return model.to(device).eval(), ckpt


def _build_stored_model(path: Path, config: Any):
    """The model a checkpoint's `config` describes, untrained; a stored config that is not a
    ModelConfig mapping, or names a backbone this timm lacks, is a CheckpointError naming the file."""
    from .config import ModelConfig
    from .model import build_model

    if not isinstance(config, dict):
        raise CheckpointError(f"{path}: stored model config is a {type(config).__name__}, "
                              f"not a mapping of model settings")
    try:
        # irpe_kernel is how training ran, not part of the model: export, eval and infer run anywhere.
        return build_model(ModelConfig.from_dict({**config, "pretrained": "none", "irpe_kernel": "torch"}))
    except ConfigError as e:
        raise CheckpointError(f"{path}: stored model config: {e}") from None


def checkpoint_metadata(path: str | os.PathLike, ckpt: dict | None = None, model=None) -> ModelMetadata:
    """ModelMetadata of a checkpoint, shaped like an exported file's (outputs: logits + attention)."""
    from .core.files import file_sha256

    ckpt = ckpt if ckpt is not None else load_checkpoint(path)
    config = dict(ckpt["config"])
    num_classes = int(config["num_classes"])
    preprocess = dict(ckpt.get("preprocess") or (model.data_config() if model is not None else {}))
    if not preprocess:
        preprocess = load_model(path)[0].data_config()
    preprocess = {k: list(v) if isinstance(v, tuple) else v for k, v in preprocess.items()}
    return ModelMetadata(
        classes=list(ckpt.get("classes") or [f"class_{k}" for k in range(num_classes)]),
        preprocess=preprocess,
        thresholds=[float(t) for t in (ckpt.get("thresholds") or [0.5] * num_classes)],
        model_config=config, precision="fp32", source_sha256=file_sha256(path),
        output_names=["logits", "attention"], extra={"backend": "torch"})
