"""Run a model over a dataset and score it; in distributed runs, gather every rank's scores first."""
from __future__ import annotations

import contextlib
import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from .distributed import DistInfo, all_gather_objects
from .loader import IndexedSamples, ShardSampler, collate_indexed

log = logging.getLogger(__name__)


def autocast_context(device: torch.device, amp_dtype: torch.dtype | None):
    if amp_dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=amp_dtype)


@torch.no_grad()
def predict(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 32,
            workers: int = 0, amp_dtype: torch.dtype | None = None, dist: DistInfo | None = None,
            progress=None) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """Sigmoid scores of every readable sample, gathered from all ranks, in dataset order.

    Returns (indices (N,), scores (N, K), targets (N, K), n_skipped) on every rank.
    """
    dist = dist or DistInfo()
    loader = DataLoader(IndexedSamples(dataset), batch_size=batch_size, num_workers=workers,
                        sampler=ShardSampler(len(dataset), dist.rank, dist.world_size),
                        collate_fn=collate_indexed, generator=torch.Generator().manual_seed(0))
    model.eval()
    indices, scores, targets, skipped = [], [], [], 0
    task = progress.add_task("eval", total=len(loader), info="") if progress is not None else None
    for idx, images, target, n_skipped in loader:
        skipped += n_skipped
        if images is not None:
            with autocast_context(device, amp_dtype):
                logits = model(images.to(device, non_blocking=True))
            indices.append(idx.numpy())
            scores.append(torch.sigmoid(logits.float()).cpu().numpy())
            targets.append(target.numpy())
        if task is not None:
            progress.advance(task)
    if task is not None:
        progress.remove_task(task)
    k = len(getattr(dataset, "classes", [])) or (scores[0].shape[1] if scores else 0)
    local = (np.concatenate(indices) if indices else np.zeros(0, np.int64),
             np.concatenate(scores) if scores else np.zeros((0, k), np.float32),
             np.concatenate(targets) if targets else np.zeros((0, k), np.float32), skipped)
    parts = all_gather_objects(local, dist)
    idx = np.concatenate([p[0] for p in parts])
    order = np.argsort(idx, kind="stable")
    return (idx[order], np.concatenate([p[1] for p in parts])[order],
            np.concatenate([p[2] for p in parts])[order], sum(p[3] for p in parts))


def score(scores: np.ndarray, targets: np.ndarray, threshold: float = 0.5) -> dict:
    """mAP, CP, CR, CF1, OP, OR, OF1 (+ top-3) and per-class AP, all in percent."""
    from ..metrics import evaluate as evaluate_metrics

    return evaluate_metrics(scores, targets, threshold=threshold)
