"""Metrics against sklearn (AP) and a loop-based transcription of the ML-GCN definitions."""
import math

import numpy as np
import pytest

from mlic_edge.metrics import average_precision, evaluate, mean_average_precision, multilabel_prf

sklearn_metrics = pytest.importorskip("sklearn.metrics")


def _random_multilabel(seed, n=60, k=7, decimals=1):
    """scores (n,k) rounded to `decimals` (many ties) and targets (n,k) in {1,0,-1}."""
    rng = np.random.default_rng(seed)
    targets = rng.choice([1, 0, 0, 0, -1], size=(n, k))
    targets[0] = 1  # every class has a positive
    scores = np.clip(0.35 * (targets == 1) + rng.random((n, k)) * 0.7, 0, 1).round(decimals)
    return scores, targets


@pytest.mark.parametrize("seed", range(5))
def test_average_precision_equals_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, size=80)
    targets[0] = 1
    scores = rng.random(80).round(1)  # 11 distinct values for 80 items: heavy ties
    assert len(np.unique(scores)) < 20
    expected = sklearn_metrics.average_precision_score(targets, scores)
    assert average_precision(scores, targets) == pytest.approx(expected, abs=1e-12)
    # Shuffling tied items must not change AP.
    perm = rng.permutation(80)
    assert average_precision(scores[perm], targets[perm]) == pytest.approx(expected, abs=1e-12)


@pytest.mark.parametrize("seed", range(3))
def test_map_equals_sklearn_per_class_with_difficult_ignored(seed):
    scores, targets = _random_multilabel(seed)
    mean_ap, per_class = mean_average_precision(scores, targets)
    expected = []
    for k in range(scores.shape[1]):
        kept = targets[:, k] != -1
        ap = sklearn_metrics.average_precision_score(targets[kept, k], scores[kept, k])
        expected.append(100 * ap)
    np.testing.assert_allclose(per_class, expected, atol=1e-10)
    assert mean_ap == pytest.approx(np.mean(expected), abs=1e-10)
    # Treating difficult as negative would give a different number: the ignoring is observable.
    as_negative = np.where(targets == -1, 0, targets)
    assert not np.allclose(mean_average_precision(scores, as_negative)[1], per_class)


def test_voc_interpolated_ap_by_hand():
    # Ranking: + - - + +  (P = 3). Points (recall, precision): (1/3, 1), (1/3, 1/2), (1/3, 1/3),
    # (2/3, 1/2), (1, 3/5). Non-interpolated: (1 + 1/2 + 3/5) / 3 = 0.7.
    # VOC: the precision at recall 2/3 is lifted to max(1/2, 3/5) = 3/5 -> (1 + 3/5 + 3/5) / 3.
    scores = np.array([0.9, 0.8, 0.7, 0.6, 0.5])
    targets = np.array([1, 0, 0, 1, 1])
    assert average_precision(scores, targets) == pytest.approx(0.7, abs=1e-12)
    assert average_precision(scores, targets, mode="voc") == pytest.approx(2.2 / 3, abs=1e-12)
    mean_ap, _ = mean_average_precision(scores[:, None], targets[:, None], mode="voc")
    assert mean_ap == pytest.approx(100 * 2.2 / 3, abs=1e-10)


def test_voc_interpolated_ap_with_a_tie():
    # Items 2 and 3 tie at 0.7 (one +, one -): a single point (recall 2/3, precision 2/3).
    # Points: (1/3, 1), (2/3, 2/3), (1, 3/4) -> envelope 1, 3/4, 3/4 -> AP = (1 + 3/4 + 3/4) / 3.
    scores = np.array([0.9, 0.7, 0.7, 0.6])
    targets = np.array([1, 1, 0, 1])
    assert average_precision(scores, targets, mode="voc") == pytest.approx(2.5 / 3, abs=1e-12)
    assert average_precision(scores, targets) == pytest.approx((1 + 2 / 3 + 3 / 4) / 3, abs=1e-12)


def test_class_without_positive_is_nan_and_excluded():
    scores, targets = _random_multilabel(0, k=4)
    targets[:, 2] = np.where(targets[:, 2] == 1, -1, targets[:, 2])  # only difficult/negatives left
    mean_ap, per_class = mean_average_precision(scores, targets)
    assert math.isnan(per_class[2])
    assert mean_ap == pytest.approx(np.mean(per_class[[0, 1, 3]]), abs=1e-12)
    assert math.isnan(average_precision(np.array([0.2, 0.3]), np.array([0, -1])))
    assert math.isnan(mean_average_precision(np.zeros((3, 2)), np.zeros((3, 2)))[0])


def _mlgcn_reference(scores, targets, threshold=0.5, top_k=None):
    """Direct, loop-based transcription of the ML-GCN definitions (docs/method.md "Metrics")."""
    n, num_classes = scores.shape
    predicted = [[False] * num_classes for _ in range(n)]
    for i in range(n):
        allowed = range(num_classes)
        if top_k is not None:
            allowed = sorted(range(num_classes), key=lambda c: (-scores[i][c], c))[:top_k]
        for c in allowed:
            predicted[i][c] = scores[i][c] >= threshold
    nc, np_, ng = [], [], []
    for c in range(num_classes):
        correct = pred = gt = 0
        for i in range(n):
            is_pos = targets[i][c] == 1  # -1 (difficult) is a negative
            gt += is_pos
            pred += predicted[i][c]
            correct += predicted[i][c] and is_pos
        nc.append(correct)
        np_.append(pred if pred > 0 else 1)
        ng.append(gt)
    op = sum(nc) / sum(np_)
    o_r = sum(nc) / sum(ng)
    cp = sum(nc[c] / np_[c] for c in range(num_classes)) / num_classes
    cr = sum(nc[c] / ng[c] for c in range(num_classes)) / num_classes
    return {
        "CP": 100 * cp, "CR": 100 * cr, "CF1": 100 * 2 * cp * cr / (cp + cr),
        "OP": 100 * op, "OR": 100 * o_r, "OF1": 100 * 2 * op * o_r / (op + o_r),
    }


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("top_k", [None, 3])
def test_prf_matches_loop_based_mlgcn(seed, top_k):
    scores, targets = _random_multilabel(seed, decimals=2)
    scores[1, 0] = 0.5  # exactly at the threshold: predicted (>=)
    scores[2, :] = 0.9  # a row of ties for the top-k tie-break
    got = multilabel_prf(scores, targets, threshold=0.5, top_k=top_k)
    expected = _mlgcn_reference(scores, targets, 0.5, top_k)
    assert set(got) == set(expected)
    for name in expected:
        assert got[name] == pytest.approx(expected[name], abs=1e-10), name


def test_top3_differs_from_all_labels_and_np_zero_rule():
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.1], [0.2, 0.1, 0.1, 0.1, 0.1]])
    targets = np.array([[1, 1, 0, 1, 0], [1, 0, 0, 0, 1]])
    all_labels = multilabel_prf(scores, targets)
    top3 = multilabel_prf(scores, targets, top_k=3)
    # All labels: Nc = [1,1,0,1,0], Np = [1,1,1,1,0->1], Ng = [2,1,0,1,1]; the Np = 1 rule
    # also enters OP (as in ML-GCN): 3 / 5, not 3 / 4.
    assert all_labels["OP"] == pytest.approx(100 * 3 / 5)
    assert all_labels["OR"] == pytest.approx(100 * 3 / 5)
    assert all_labels["CP"] == pytest.approx(100 * 3 / 5)
    # Top-3 drops class 3 (rank 4) from image 0: Nc = [1,1,0,0,0], Np = [1,1,1,0->1,0->1].
    assert top3["OP"] == pytest.approx(100 * 2 / 5)
    assert top3["OR"] == pytest.approx(100 * 2 / 5)
    assert top3["CP"] == pytest.approx(100 * 2 / 5)


def test_evaluate_keys_and_consistency():
    scores, targets = _random_multilabel(7)
    result = evaluate(scores, targets)
    expected_keys = {
        "mAP", "CP", "CR", "CF1", "OP", "OR", "OF1",
        "CP_top3", "CR_top3", "CF1_top3", "OP_top3", "OR_top3", "OF1_top3", "per_class_ap",
    }
    assert set(result) == expected_keys
    assert isinstance(result["per_class_ap"], list) and len(result["per_class_ap"]) == 7
    assert all(isinstance(v, float) for v in result["per_class_ap"])
    assert result["mAP"] == pytest.approx(mean_average_precision(scores, targets)[0])
    top3 = multilabel_prf(scores, targets, top_k=3)
    assert result["OF1_top3"] == pytest.approx(top3["OF1"])
    assert 0 <= result["mAP"] <= 100 and 0 <= result["CF1"] <= 100


def test_metrics_module_does_not_import_torch():
    import subprocess
    import sys

    code = "import sys, mlic_edge.metrics; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
