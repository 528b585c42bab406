"""Score a checkpoint on a dataset split, print the metrics, write JSON / plot / VOC12 server files
(what `mlic-edge eval` and the quickstart run)."""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np

from ..checkpoint import load_model
from ..core.errors import ConfigError, DatasetError
from ..core.files import atomic_write_bytes
from ..data.registry import default_splits


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


def run_eval(checkpoint: Path, data: str, data_root: str | None, split: str | None, *, batch_size: int,
             device: str, workers: int, threshold: float, ap_mode: str, json_out: Path | None,
             plot: Path | None, voc12_submission: Path | None) -> dict[str, Any]:
    from ..data import build_dataset, build_transform
    from ..metrics import evaluate, multilabel_prf
    from ..plots import plot_per_class_ap
    from . import setup_logging
    from .distributed import resolve_device
    from .evaluate import predict
    from .report import print_metrics

    check_ap_mode(ap_mode)
    setup_logging()
    dev = resolve_device(device, "--device")
    model, ckpt = load_model(checkpoint, dev)
    split = split or default_splits(data)[1]
    dataset = build_dataset(data, data_root, split, build_transform(ckpt["preprocess"], train=False))
    if list(dataset.classes) != list(ckpt["classes"]):
        raise DatasetError(f"{data} ({data_root}) classes {list(dataset.classes)[:5]}... do not match "
                           f"the checkpoint's {list(ckpt['classes'])[:5]}...")
    indices, scores, targets, skipped = predict(model, dataset, dev, batch_size=batch_size, workers=workers)

    if voc12_submission is not None:
        ids = getattr(dataset, "ids", None)
        if ids is None:
            raise DatasetError(f"--voc12-submission needs a VOC dataset (got {data})")
        write_voc12_submission(Path(voc12_submission), [ids[i] for i in indices], list(dataset.classes), scores)
        print(f"wrote {len(dataset.classes)} VOC2012 result files to {voc12_submission}")

    has_labels = getattr(dataset, "has_labels", True)
    if not has_labels:
        print(f"{data}/{split} has no public labels: predictions only")
        return {}
    metrics = evaluate(scores, targets, threshold=threshold, ap_mode=ap_mode)
    per_class = np.asarray(ckpt.get("thresholds") or [threshold] * len(dataset.classes), dtype=np.float64)
    if not np.allclose(per_class, threshold):   # the checkpoint's own per-class thresholds, side by side
        metrics["per_class_thresholds"] = multilabel_prf(scores, targets, per_class)
    metrics.update({"images": int(len(indices)), "skipped_images": int(skipped), "split": split,
                    "dataset": data, "checkpoint": str(checkpoint), "ap_mode": ap_mode,
                    "threshold": threshold})
    print_metrics(metrics, dataset.classes, title=f"{checkpoint} on {data}/{split} "
                                                  f"({len(indices)} images, AP {ap_mode})")
    if json_out is not None:
        write_json(json_out, {**metrics, "classes": list(dataset.classes)})
    plot = plot or (Path(json_out).with_suffix(".png") if json_out else Path(checkpoint).parent / "per_class_ap.png")
    plot_per_class_ap(dataset.classes, [0.0 if math.isnan(a) else a for a in metrics["per_class_ap"]],
                      plot, title=f"per-class AP, {data}/{split}: mAP {metrics['mAP']:.2f}")
    return metrics
