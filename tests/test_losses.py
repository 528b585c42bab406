"""Losses against the formulas of docs/method.md ("Loss"), recomputed here independently in float64.

The references below use p = 1/(1+exp(-x)) and log p directly (no log-sigmoid tricks), the
probability shift p_m = max(p - m, 0), and focusing weights computed from a detached p, so both the
loss value and its gradient w.r.t. the logits are checked against an independent derivation.
Reduction under test: sum over the (B,K) elements / B.
"""
import pytest
import torch
import torch.nn.functional as F

from mlic_edge.core.errors import ConfigError
from mlic_edge.losses import (
    AsymmetricLoss,
    AsymmetricPolynomialLoss,
    BCELoss,
    FocalLoss,
    build_loss,
)

B, K = 6, 5


def _batch(seed: int = 0, dtype=torch.float64):
    """logits (B,K) in about [-6, 6] and targets (B,K) in {1, 0, -1} with every value present."""
    gen = torch.Generator().manual_seed(seed)
    logits = (torch.rand(B, K, generator=gen, dtype=torch.float64) * 12.0 - 6.0).to(dtype)
    targets = torch.randint(-1, 2, (B, K), generator=gen).to(dtype)
    targets[0, :3] = torch.tensor([1.0, 0.0, -1.0], dtype=dtype)
    return logits, targets


def _reference(logits, targets, kind, detach=True, **params):
    """Loss of method.md in float64, with its autograd gradient w.r.t. the logits.

    Returns (loss scalar, grad (B,K)). -1 targets are negatives (ML-GCN convention).
    """
    x = logits.detach().to(torch.float64).clone().requires_grad_(True)
    y = (targets == 1).to(torch.float64)
    p = 1.0 / (1.0 + torch.exp(-x))
    p_const = p.detach() if detach else p  # focusing weights see p as a constant when detached
    if kind == "focal":
        g = params["gamma"]
        pos = -((1 - p_const) ** g) * torch.log(p)
        neg = -(p_const**g) * torch.log(1 - p)
    elif kind == "asl":
        g_pos, g_neg, m = params["gamma_pos"], params["gamma_neg"], params["clip"]
        p_m = torch.clamp(p - m, min=0.0)
        p_m_const = torch.clamp(p_const - m, min=0.0)
        pos = -((1 - p_const) ** g_pos) * torch.log(p)
        neg = -(p_m_const**g_neg) * torch.log(1 - p_m)
    elif kind == "apl":
        g_pos, g_neg, m = params["gamma_pos"], params["gamma_neg"], params["clip"]
        e_pos, e_neg, e_pow = params["e_pos"], params["e_neg"], params["e_pow"]
        p_m = torch.clamp(p - m, min=0.0)
        p_m_const = torch.clamp(p_const - m, min=0.0)
        polynomial = -torch.log(p) - e_pos * (1 - p) - (e_pow / 2) * (1 - p) ** 2
        pos = ((1 - p_const) ** g_pos) * polynomial
        neg = (p_m_const**g_neg) * (-torch.log(1 - p_m) - e_neg * (1 - p_m))
    else:
        raise AssertionError(kind)
    loss = (y * pos + (1 - y) * neg).sum() / x.shape[0]
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


def _loss_and_grad(module, logits, targets):
    x = logits.detach().clone().requires_grad_(True)
    loss = module(x, targets)
    (grad,) = torch.autograd.grad(loss, x)
    return loss.detach(), grad


CASES = [
    ("focal", FocalLoss(), dict(gamma=2.0)),
    ("focal", FocalLoss(gamma=1.5), dict(gamma=1.5)),
    ("asl", AsymmetricLoss(), dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.05)),
    (
        "asl",
        AsymmetricLoss(gamma_pos=0.0, gamma_neg=2.0, clip=0.2),
        dict(gamma_pos=0.0, gamma_neg=2.0, clip=0.2),
    ),
    (
        "apl",
        AsymmetricPolynomialLoss(),
        dict(gamma_pos=0.0, gamma_neg=2.0, clip=0.05, e_pos=1.0, e_neg=0.0, e_pow=-2.5),
    ),
    (
        "apl",
        AsymmetricPolynomialLoss(
            gamma_pos=1.0, gamma_neg=4.0, clip=0.1, e_pos=0.5, e_neg=0.3, e_pow=1.0
        ),
        dict(gamma_pos=1.0, gamma_neg=4.0, clip=0.1, e_pos=0.5, e_neg=0.3, e_pow=1.0),
    ),
]


@pytest.mark.parametrize(
    "kind,module,params", CASES, ids=[f"{case[0]}{i}" for i, case in enumerate(CASES)]
)
def test_loss_and_gradient_match_method_formulas(kind, module, params):
    logits, targets = _batch(seed=1)
    ref_loss, ref_grad = _reference(logits, targets, kind, **params)
    loss, grad = _loss_and_grad(module, logits, targets)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)


@pytest.mark.parametrize(
    "kind,module,params",
    [
        ("focal", FocalLoss(detach_focusing=False), dict(gamma=2.0)),
        ("apl", AsymmetricPolynomialLoss(detach_focusing=False),
         dict(gamma_pos=0.0, gamma_neg=2.0, clip=0.05, e_pos=1.0, e_neg=0.0, e_pow=-2.5)),
    ],
)
def test_gradient_through_focusing_weight_when_not_detached(kind, module, params):
    logits, targets = _batch(seed=2)
    loss, grad = _loss_and_grad(module, logits, targets)
    ref_loss, ref_grad = _reference(logits, targets, kind, detach=False, **params)
    torch.testing.assert_close(loss, ref_loss, atol=1e-6, rtol=0)
    torch.testing.assert_close(grad, ref_grad, atol=1e-6, rtol=0)
    # ...and it really differs from the detached gradient, so the detach default is observable.
    _, detached_grad = _reference(logits, targets, kind, detach=True, **params)
    assert (grad - detached_grad).abs().max() > 1e-3


def test_apl_defaults_are_the_papers():
    apl = AsymmetricPolynomialLoss()
    assert (apl.gamma_pos, apl.gamma_neg, apl.clip, apl.eps) == (0.0, 2.0, 0.05, 1e-8)
    assert (apl.e_pos, apl.e_neg, apl.e_pow) == (1.0, 0.0, -2.5)
    asl = AsymmetricLoss()
    assert (asl.gamma_pos, asl.gamma_neg, asl.clip) == (1.0, 4.0, 0.05)
    assert FocalLoss().gamma == 2.0


def test_apl_analytic_gradient_for_a_positive():
    """dL+/dx for gamma_pos = 0: -(1-p) + e_pos p(1-p) + e_pow p(1-p)^2 (hand-derived)."""
    x = torch.tensor([[-2.0, 0.3, 4.0]], dtype=torch.float64)
    y = torch.ones_like(x)
    loss, grad = _loss_and_grad(AsymmetricPolynomialLoss(), x, y)
    p = torch.sigmoid(x)
    expected = -(1 - p) + 1.0 * p * (1 - p) + (-2.5) * p * (1 - p) ** 2
    torch.testing.assert_close(grad, expected, atol=1e-12, rtol=0)


def test_asl_shift_zeroes_easy_negatives():
    """Negatives with p <= clip contribute neither loss nor gradient."""
    x = torch.full((2, 3), -5.0, dtype=torch.float64)  # p ~ 0.0067 < 0.05
    loss, grad = _loss_and_grad(AsymmetricLoss(), x, torch.zeros_like(x))
    assert loss.item() == 0.0
    assert torch.count_nonzero(grad) == 0


def test_bce_matches_torch_under_sum_over_classes_mean_over_batch():
    logits, targets = _batch(seed=3, dtype=torch.float32)
    binary = (targets == 1).float()
    expected = F.binary_cross_entropy_with_logits(logits, binary, reduction="sum") / logits.shape[0]
    torch.testing.assert_close(BCELoss()(logits, targets), expected, atol=1e-5, rtol=1e-6)
    # Not the torch default (mean over all B*K elements): the reduction is part of the contract.
    assert not torch.allclose(expected, F.binary_cross_entropy_with_logits(logits, binary))


@pytest.mark.parametrize("name", ["bce", "focal", "asl", "apl"])
def test_difficult_targets_are_negatives(name):
    logits, targets = _batch(seed=4)
    loss = build_loss(name)
    as_negative = torch.where(targets == -1, torch.zeros_like(targets), targets)
    torch.testing.assert_close(loss(logits, targets), loss(logits, as_negative))
    as_positive = torch.where(targets == -1, torch.ones_like(targets), targets)
    assert not torch.allclose(loss(logits, targets), loss(logits, as_positive))


@pytest.mark.parametrize("name", ["bce", "focal", "asl", "apl"])
def test_float32_matches_float64_and_extreme_logits_stay_finite(name):
    loss = build_loss(name)
    logits, targets = _batch(seed=5)
    torch.testing.assert_close(
        loss(logits.float(), targets.float()).double(), loss(logits, targets), atol=1e-4, rtol=1e-5
    )
    extreme = torch.tensor([[-100.0, 100.0, -30.0, 30.0]], requires_grad=True)
    value = loss(extreme, torch.tensor([[1.0, 0.0, 1.0, 0.0]]))
    value.backward()
    assert torch.isfinite(value) and torch.isfinite(extreme.grad).all()
    # A confidently wrong positive keeps a gradient pushing its logit up (no eps saturation).
    assert extreme.grad[0, 0] < 0


def test_reduction_is_mean_over_batch():
    logits, targets = _batch(seed=6)
    loss = build_loss("apl")
    doubled = loss(torch.cat([logits, logits]), torch.cat([targets, targets]))
    torch.testing.assert_close(doubled, loss(logits, targets))


def test_build_loss_passes_kwargs_and_rejects_unknown():
    asl = build_loss("ASL", gamma_neg=3, clip=0.1)
    assert isinstance(asl, AsymmetricLoss) and asl.gamma_neg == 3.0 and asl.clip == 0.1
    assert isinstance(build_loss("apl"), AsymmetricPolynomialLoss)
    assert isinstance(build_loss("bce"), BCELoss)
    with pytest.raises(ConfigError, match="unknown loss"):
        build_loss("hinge")
    with pytest.raises(ConfigError):
        build_loss("apl", gama_neg=2)


def test_shape_mismatch_is_rejected():
    with pytest.raises(ValueError):
        BCELoss()(torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("name", ["bce", "focal", "asl", "apl"])
def test_label_smoothing_mixes_the_positive_and_negative_terms(name):
    """With smoothing e each element is (1 - e/2) x its positive-target loss + e/2 x its
    negative-target loss (and the other way round for negatives); 0 is the loss as it was."""
    logits, targets = _batch(seed=7)
    plain, smoothed = build_loss(name), build_loss(name, label_smoothing=0.2)
    torch.testing.assert_close(build_loss(name, label_smoothing=0.0)(logits, targets), plain(logits, targets))
    for row in range(B):
        for col in range(K):
            x = logits[row:row + 1, col:col + 1]
            pos, neg = plain(x, torch.ones_like(x)), plain(x, torch.zeros_like(x))
            y = 0.9 if targets[row, col] == 1 else 0.1
            torch.testing.assert_close(smoothed(x, targets[row:row + 1, col:col + 1]), y * pos + (1 - y) * neg)
    with pytest.raises(ConfigError):
        build_loss(name, label_smoothing=1.0)
