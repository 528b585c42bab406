"""Multi-label metrics comparable with the paper's tables (numpy only; no torch import).

Conventions (docs/method.md, "Metrics"):

* Targets: 1 = positive, 0 = negative, -1 = "difficult" (PASCAL VOC).
  - AP / mAP *ignore* difficult entries (they are dropped from that class's ranking).
  - CP/CR/CF1/OP/OR/OF1 count difficult as *negative* (ML-GCN).
* Scores are probabilities (sigmoid outputs); a label is predicted when score >= threshold.
* All returned metrics are in percent.
* AP is non-interpolated by default (ASL/ML-Decoder; equals sklearn's
  ``average_precision_score``, ties included). ``mode="voc"`` gives VOC all-point interpolated AP
  (Q2L/SSGRL). Say which one when reporting numbers.
* A class with no positive (after dropping difficult) has an undefined AP: it is NaN in the
  per-class array and left out of the mAP mean (an unlabelled class says nothing about ranking
  quality; counting it as 0 or 100 would bias small evaluation sets). If no class has a positive,
  mAP is NaN.
"""
from __future__ import annotations

import numpy as np


def sigmoid(logits: np.ndarray) -> np.ndarray:
    """Scores from logits, in float64 and without overflow warnings for large |logit|."""
    return 1.0 / (1.0 + np.exp(-np.clip(logits.astype(np.float64), -60, 60)))

__all__ = [
    "AP_MODES",
    "average_precision",
    "mean_average_precision",
    "multilabel_prf",
    "evaluate",
]

AP_MODES = ("noninterp", "voc")


def _precision_recall_points(
    scores: np.ndarray, positive: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Precision and recall at every distinct score threshold, highest threshold first.

    Tied scores form one threshold (all of them are predicted together), which is what makes the
    result independent of the order of tied items and equal to sklearn's curve.
    Returns (precision (T,), recall (T,)), T = number of distinct scores.
    """
    order = np.argsort(-scores, kind="mergesort")  # (N,) descending, stable
    sorted_scores = scores[order]
    sorted_positive = positive[order].astype(np.float64)
    # Index of the last item of each run of equal scores: the threshold includes the whole run.
    run_ends = np.r_[np.nonzero(np.diff(sorted_scores))[0], sorted_scores.size - 1]  # (T,)
    true_pos = np.cumsum(sorted_positive)[run_ends]  # (T,)
    predicted = (run_ends + 1).astype(np.float64)  # (T,)
    precision = true_pos / predicted
    recall = true_pos / true_pos[-1]
    return precision, recall


def average_precision(scores, targets, mode: str = "noninterp") -> float:
    """AP of one class as a fraction in [0, 1]; NaN when there is no positive.

    scores (N,), targets (N,) with 1 = positive and anything else negative (callers drop difficult
    entries first; `mean_average_precision` does).
    mode "noninterp": sum_t (R_t - R_{t-1}) P_t over distinct thresholds (= sklearn).
    mode "voc": all-point interpolated, precision replaced by max precision at recall >= R_t
    (VOC 2010+ devkit / Q2L), evaluated on the same tie-aware points.
    """
    if mode not in AP_MODES:
        raise ValueError(f"unknown AP mode {mode!r}; expected one of {AP_MODES}")
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    positive = np.asarray(targets).reshape(-1) == 1
    if scores.shape != positive.shape:
        raise ValueError(f"scores {scores.shape} and targets {positive.shape} differ in length")
    if not positive.any():
        return float("nan")
    precision, recall = _precision_recall_points(scores, positive)
    if mode == "voc":
        # Precision envelope: the best precision achievable at this recall or any higher one.
        precision = np.maximum.accumulate(precision[::-1])[::-1]
    recall_steps = np.diff(np.r_[0.0, recall])  # (T,)
    return float(np.sum(recall_steps * precision))


def _check_2d(scores, targets) -> tuple[np.ndarray, np.ndarray]:
    scores = np.asarray(scores, dtype=np.float64)
    targets = np.asarray(targets)
    if scores.ndim != 2 or scores.shape != targets.shape:
        raise ValueError(
            "expected scores and targets of the same shape (N,K), "
            f"got {scores.shape} and {targets.shape}"
        )
    return scores, targets


def mean_average_precision(scores, targets, mode: str = "noninterp") -> tuple[float, np.ndarray]:
    """mAP over classes and the per-class AP, both in percent.

    scores (N,K), targets (N,K) in {1, 0, -1}; -1 (difficult) entries are dropped from their
    class's ranking. Returns (mAP, per_class_ap (K,)); classes without a positive are NaN and
    excluded from the mean (module docstring says why); mAP is NaN if every class is.
    """
    scores, targets = _check_2d(scores, targets)
    num_classes = scores.shape[1]
    per_class = np.full(num_classes, np.nan)  # (K,)
    for k in range(num_classes):
        kept = targets[:, k] != -1  # (N,) drop difficult
        per_class[k] = average_precision(scores[kept, k], targets[kept, k], mode=mode)
    per_class *= 100.0
    defined = ~np.isnan(per_class)
    mean_ap = float(per_class[defined].mean()) if defined.any() else float("nan")
    return mean_ap, per_class


def _f1(precision: float, recall: float) -> float:
    return 2.0 * precision * recall / (precision + recall) if precision + recall > 0 else 0.0


def f1_optimal_thresholds(scores, targets, default: float = 0.5) -> np.ndarray:
    """(K,) per-class decision thresholds: for each class, the threshold that maximises its F1 on
    these scores (F1 = 2 Nc / (Np + Ng) when predicting score >= t), placed halfway between the
    best cut's lowest score and the next score below it, so that it is not fitted to one image.
    Classes without a positive keep `default`. Pick them on held-out data, never the test split."""
    scores, targets = _check_2d(scores, targets)
    thresholds = np.full(scores.shape[1], default, dtype=np.float64)
    for k in range(scores.shape[1]):
        positive = targets[:, k] == 1
        if not positive.any():
            continue
        order = np.argsort(-scores[:, k], kind="mergesort")
        ranked = scores[order, k].astype(np.float64)
        last_of_run = np.r_[ranked[1:] != ranked[:-1], True]      # ties are predicted together
        correct = np.cumsum(positive[order])[last_of_run]
        predicted = np.arange(1, len(ranked) + 1)[last_of_run]
        best = int(np.argmax(2 * correct / (predicted + positive.sum())))
        cut = ranked[last_of_run][best]
        below = ranked[ranked < cut]
        thresholds[k] = (cut + below[0]) / 2 if below.size else cut
    return thresholds


def multilabel_prf(
    scores, targets, threshold: float | np.ndarray = 0.5, top_k: int | None = None
) -> dict[str, float]:
    """CP, CR, CF1, OP, OR, OF1 in percent, ML-GCN convention. threshold: one for every class,
    or (K,) per-class thresholds.

    scores (N,K) probabilities, targets (N,K) in {1, 0, -1}; -1 counts as negative.
    Per class k: Ng = positives, Np = predicted (score >= threshold), Nc = correct predictions;
    Np = 1 where it is 0. OP = sum Nc / sum Np, OR = sum Nc / sum Ng, CP = mean_k Nc/Np,
    CR = mean_k Nc/Ng, F1 = harmonic mean (0 when P + R = 0).
    top_k: only the k highest scores of each image may be predicted, and they still need
    score >= threshold (ties at the k-th place go to the lower class index).
    Where the definition leaves it open: a class with Ng = 0 contributes Nc/Ng = 0 to CR (Ng is
    taken as 1, mirroring the Np rule; ML-GCN would give NaN), and OR = 0 when there is no
    positive at all. On COCO/VOC test sets every class has positives, so this never applies there.
    """
    scores, targets = _check_2d(scores, targets)
    predicted = scores >= threshold  # (N,K)
    if top_k is not None:
        if top_k < 1:
            raise ValueError(f"top_k must be >= 1, got {top_k}")
        rank_order = np.argsort(-scores, axis=1, kind="mergesort")[:, :top_k]  # (N,k)
        in_top_k = np.zeros_like(predicted)
        np.put_along_axis(in_top_k, rank_order, True, axis=1)
        predicted &= in_top_k
    positive = targets == 1  # (N,K) difficult (-1) -> negative
    n_correct = (predicted & positive).sum(axis=0).astype(np.float64)  # (K,) Nc
    n_predicted = predicted.sum(axis=0).astype(np.float64)  # (K,) Np
    n_ground_truth = positive.sum(axis=0).astype(np.float64)  # (K,) Ng
    n_predicted[n_predicted == 0] = 1.0
    overall_p = n_correct.sum() / n_predicted.sum()
    overall_r = n_correct.sum() / n_ground_truth.sum() if n_ground_truth.sum() > 0 else 0.0
    per_class_p = float(np.mean(n_correct / n_predicted))
    per_class_r = float(np.mean(n_correct / np.maximum(n_ground_truth, 1.0)))
    result = {
        "CP": per_class_p,
        "CR": per_class_r,
        "CF1": _f1(per_class_p, per_class_r),
        "OP": float(overall_p),
        "OR": float(overall_r),
        "OF1": _f1(float(overall_p), float(overall_r)),
    }
    return {name: 100.0 * value for name, value in result.items()}


def evaluate(scores, targets, threshold: float = 0.5, *, ap_mode: str = "noninterp") -> dict:
    """Every reported metric in percent: mAP, CP..OF1 (all labels), the same with "_top3" suffix
    (top-3 per image), and per_class_ap (list of K floats, NaN for classes without positives).

    scores (N,K) probabilities, targets (N,K) in {1, 0, -1}. AP is non-interpolated unless
    ap_mode="voc".
    """
    mean_ap, per_class = mean_average_precision(scores, targets, mode=ap_mode)
    result: dict = {"mAP": mean_ap}
    result.update(multilabel_prf(scores, targets, threshold=threshold))
    top3 = multilabel_prf(scores, targets, threshold=threshold, top_k=3)
    result.update({f"{name}_top3": value for name, value in top3.items()})
    result["per_class_ap"] = [float(v) for v in per_class]
    return result
