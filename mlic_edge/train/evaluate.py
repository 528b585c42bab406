"""Score models on data: the evaluation loop the trainer runs (every rank's scores gathered
first in distributed runs), and a checkpoint scored on a dataset split with its metrics printed
and written as JSON / plot / VOC12 server files (what `mlic-edge eval` and the quickstart run)."""
from __future__ import annotations

import contextlib
import logging
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from ..checkpoint import load_model
from ..core.errors import ConfigError, DatasetError
from ..core.files import atomic_write_bytes
from ..data.registry import default_splits
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


def json_safe(value: Any) -> Any:
    """NaN (e.g. AP of a class without positives) -> null, numpy scalars -> Python numbers."""
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, np.ndarray)):
        return [json_safe(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    return value


def write_json(path: str | Path, data: Any) -> None:
    text = json.dumps(json_safe(data), indent=2, allow_nan=False)
    atomic_write_bytes(path, text.encode())


def write_voc12_submission(folder: Path, ids: list[str], classes: list[str], scores: np.ndarray) -> None:
    """VOC2012 classification results, one `comp1_cls_test_<class>.txt` per class: `<id> <score>`."""
    for k, name in enumerate(classes):
        lines = "".join(f"{image_id} {scores[i, k]:.6f}\n" for i, image_id in enumerate(ids))
        atomic_write_bytes(folder / f"comp1_cls_test_{name}.txt", lines.encode())


def check_ap_mode(ap_mode: str) -> None:
    """Before any image is predicted: metrics.evaluate would only reject it after the whole split."""
    from ..metrics import AP_MODES

    if ap_mode not in AP_MODES:
        raise ConfigError(f"--ap-mode {ap_mode!r}: unknown AP convention; expected {' or '.join(AP_MODES)}")


def load_eval_split(checkpoint: Path, data: str, data_root: str | None, split: str, device: torch.device):
    """The checkpoint's model and the dataset split it is scored on (its classes must match)."""
    from ..data import build_dataset, build_transform

    model, ckpt = load_model(checkpoint, device)
    dataset = build_dataset(data, data_root, split, build_transform(ckpt["preprocess"], train=False))
    if list(dataset.classes) != list(ckpt["classes"]):
        raise DatasetError(f"{data} ({data_root}) classes {list(dataset.classes)[:5]}... do not match "
                           f"the checkpoint's {list(ckpt['classes'])[:5]}...")
    return model, ckpt, dataset


def eval_metrics(scores: np.ndarray, targets: np.ndarray, ckpt: dict, threshold: float, ap_mode: str) -> dict:
    """The metrics at the global threshold, and beside them at the checkpoint's own per-class
    thresholds when it has some."""
    from ..metrics import evaluate, multilabel_prf

    metrics = evaluate(scores, targets, threshold=threshold, ap_mode=ap_mode)
    per_class = np.asarray(ckpt.get("thresholds") or [threshold] * scores.shape[1], dtype=np.float64)
    if not np.allclose(per_class, threshold):
        metrics["per_class_thresholds"] = multilabel_prf(scores, targets, per_class)
    return metrics


def evaluate_checkpoint(checkpoint: Path, data: str, data_root: str | None, split: str | None, *,
                        batch_size: int, device: str, workers: int, threshold: float, ap_mode: str,
                        json_out: Path | None, plot: Path | None, voc12_submission: Path | None):
    """`mlic_edge.train.api.evaluate`: score, print, write; returns an EvalResult."""
    from ..plots import plot_per_class_ap
    from .results import EvalResult
    from .distributed import resolve_device
    from .report import print_metrics

    check_ap_mode(ap_mode)
    dev = resolve_device(device, "--device")
    split = split or default_splits(data)[1]
    model, ckpt, dataset = load_eval_split(checkpoint, data, data_root, split, dev)
    indices, scores, targets, skipped = predict(model, dataset, dev, batch_size=batch_size, workers=workers)
    classes = list(dataset.classes)
    result = EvalResult(checkpoint, data, split, {}, classes)
    if voc12_submission is not None:
        ids = getattr(dataset, "ids", None)
        if ids is None:
            raise DatasetError(f"--voc12-submission needs a VOC dataset (got {data})")
        write_voc12_submission(Path(voc12_submission), [ids[i] for i in indices], classes, scores)
        print(f"wrote {len(classes)} VOC2012 result files to {voc12_submission}")
    if not getattr(dataset, "has_labels", True):
        print(f"{data}/{split} has no public labels: predictions only")
        return result
    result.metrics = metrics = eval_metrics(scores, targets, ckpt, threshold, ap_mode)
    metrics.update({"images": int(len(indices)), "skipped_images": int(skipped), "split": split,
                    "dataset": data, "checkpoint": str(checkpoint), "ap_mode": ap_mode, "threshold": threshold})
    print_metrics(metrics, classes, title=f"{checkpoint} on {data}/{split} ({len(indices)} images, AP {ap_mode})")
    if json_out is not None:
        write_json(json_out, {**metrics, "classes": classes})
        result.json_path = Path(json_out)
    result.plot_path = plot or (Path(json_out).with_suffix(".png") if json_out else Path(checkpoint).parent / "per_class_ap.png")
    plot_per_class_ap(classes, [0.0 if math.isnan(a) else a for a in metrics["per_class_ap"]],
                      result.plot_path, title=f"per-class AP, {data}/{split}: mAP {metrics['mAP']:.2f}")
    return result
