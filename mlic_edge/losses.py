"""Multi-label losses: BCE, focal, ASL and APL, all taking ``(logits (B,K), targets (B,K))``.

Targets
    1 = positive, 0 = negative, -1 = "difficult" (PASCAL VOC). Every value other than 1 is a
    negative in the loss. This is the ML-GCN convention (difficult objects are visible but too
    ambiguous to demand a positive); the metrics instead *ignore* difficult labels in AP and count
    them as negatives in CP/CR/OP/OR (see `mlic_edge.metrics`).

Reduction (one convention for all four losses)
    ``loss = sum over the (B,K) element losses / B``: summed over classes, averaged over the batch.
    Why: the authors' ASL and APL code return the plain sum over the batch, so per image our loss
    is exactly theirs; dividing by B keeps the gradient scale independent of the batch size (and of
    gradient accumulation), so a recipe's learning rate transfers between batch sizes. Averaging
    over classes as well (Q2L divides by B*K and multiplies by 1000) would tie the scale to K.
    The learning rates in the recipes are tuned for this reduction.

Formulas (p = sigmoid(x), p_m = max(p - m, 0) is the probability shift of ASL/APL; docs/method.md):
    BCE    L+ = -log p                              L- = -log(1 - p)
    focal  L+ = -(1-p)^g log p                      L- = -p^g log(1 - p)
    ASL    L+ = -(1-p)^g+ log p                     L- = -p_m^g- log(1 - p_m)
    APL    L+ = (1-p)^g+ [-log p - e_pos (1-p) - (e_pow/2) (1-p)^2]
           L- = p_m^g- [-log(1 - p_m) - e_neg (1 - p_m)]
The focusing weights ((1-p)^g+, p^g, p_m^g-) are computed without gradient by default
(``detach_focusing=True``), as in the authors' APL code and ASL's training script: they re-weight
elements but are not themselves optimised. Set ``detach_focusing=False`` for the classic focal
loss of Lin et al., which back-propagates through the weight.

Numerical stability: log p and log(1 - p) come from ``logsigmoid`` (exact for any logit, gradient
never vanishes for a confidently wrong positive), and 1 - p is computed as sigmoid(-x) (no
cancellation). The shifted term log(1 - p_m) = log(min(1 - p + m, 1)) is bounded below by log m,
and is additionally floored at ``eps`` as in the authors' code. The authors instead clamp p at eps
before the log, which caps a positive's loss at -log(eps) ~ 18.4 (logit < -18.4); ours keeps
growing there. Elsewhere the two agree to floating-point precision.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .core.errors import ConfigError

__all__ = [
    "BCELoss",
    "FocalLoss",
    "AsymmetricLoss",
    "AsymmetricPolynomialLoss",
    "LOSS_NAMES",
    "build_loss",
]


def _positive_mask(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.0) -> torch.Tensor:
    """(B,K) float weight of the positive term: 1 where target == 1, 0 and -1 (difficult) are both
    negatives; with label smoothing e, 1 - e/2 and e/2 (each element's negative term gets the rest)."""
    if logits.dim() != 2 or logits.shape != targets.shape:
        raise ValueError(
            f"expected logits and targets of the same shape (B,K), got {tuple(logits.shape)} "
            f"and {tuple(targets.shape)}"
        )
    y = (targets == 1).to(logits.dtype)
    return y * (1.0 - smoothing) + 0.5 * smoothing if smoothing else y


def _check_smoothing(value: float) -> float:
    if not 0.0 <= float(value) < 1.0:
        raise ConfigError(f"label_smoothing must be in [0, 1), got {value}")
    return float(value)


def _reduce(element_loss: torch.Tensor) -> torch.Tensor:
    """(B,K) -> scalar: sum over classes, mean over the batch (module docstring says why)."""
    return element_loss.sum() / element_loss.shape[0]


def _shifted_negative_terms(
    logits: torch.Tensor, clip: float, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Return (p_m, log(1 - p_m)), both (B,K), with p_m = max(p - clip, 0).

    Without a shift log(1 - p) is taken as logsigmoid(-x), which is exact for large logits.
    """
    one_minus_p = torch.sigmoid(-logits)  # (B,K), 1 - p without cancellation
    if clip is not None and clip > 0:
        one_minus_p_m = (one_minus_p + clip).clamp(max=1.0)  # (B,K), = 1 - max(p - m, 0)
        log_one_minus_p_m = torch.log(one_minus_p_m.clamp(min=eps))
    else:
        one_minus_p_m = one_minus_p
        log_one_minus_p_m = F.logsigmoid(-logits)
    return 1.0 - one_minus_p_m, log_one_minus_p_m


def _focusing_weight(base: torch.Tensor, gamma: float, detach: bool) -> torch.Tensor:
    """base**gamma, detached when `detach` (weights re-weight elements, are not optimised)."""
    if detach:
        base = base.detach()
    return torch.pow(base, gamma)


class BCELoss(nn.Module):
    """Binary cross-entropy on logits: -[y log p + (1-y) log(1-p)], summed over K, mean over B.
    label_smoothing e: y in {e/2, 1 - e/2} (as in every loss here)."""

    def __init__(self, label_smoothing: float = 0.0) -> None:
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = _positive_mask(logits, targets, self.label_smoothing)  # (B,K)
        element = -(y * F.logsigmoid(logits) + (1.0 - y) * F.logsigmoid(-logits))  # (B,K)
        return _reduce(element)


class AsymmetricLoss(nn.Module):
    """ASL (Ridnik et al., ICCV 2021; Alibaba-MIIL/ASL parameterisation).

    L+ = -(1-p)^gamma_pos log p ;  L- = -p_m^gamma_neg log(1 - p_m),  p_m = max(p - clip, 0).
    The shift discards easy negatives (p < clip) entirely; gamma_neg > gamma_pos down-weights the
    many easy negatives of multi-label data more than the rare positives.
    """

    def __init__(
        self,
        gamma_neg: float = 4.0,
        gamma_pos: float = 1.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        detach_focusing: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__()
        self.label_smoothing = _check_smoothing(label_smoothing)
        self.gamma_neg = float(gamma_neg)
        self.gamma_pos = float(gamma_pos)
        self.clip = float(clip) if clip is not None else 0.0
        self.eps = float(eps)
        self.detach_focusing = bool(detach_focusing)

    def forward(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        y = _positive_mask(logits, targets, self.label_smoothing)  # (B,K)
        one_minus_p = torch.sigmoid(-logits)  # (B,K)
        p_m, log_one_minus_p_m = _shifted_negative_terms(logits, self.clip, self.eps)  # (B,K) x2
        base_pos, base_neg = self._base_losses(logits, one_minus_p, p_m, log_one_minus_p_m)
        weight_pos = _focusing_weight(one_minus_p, self.gamma_pos, self.detach_focusing)  # (B,K)
        weight_neg = _focusing_weight(p_m, self.gamma_neg, self.detach_focusing)  # (B,K)
        return _reduce(y * weight_pos * base_pos + (1.0 - y) * weight_neg * base_neg)

    def _base_losses(self, logits, one_minus_p, p_m, log_one_minus_p_m):
        """Per-side losses before the focusing weights: here ASL's cross-entropy terms."""
        return -F.logsigmoid(logits), -log_one_minus_p_m

    def extra_repr(self) -> str:
        return (
            f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, "
            f"eps={self.eps}, detach_focusing={self.detach_focusing}"
        )


class FocalLoss(AsymmetricLoss):
    """Focal loss (Lin et al.): ASL with gamma_pos = gamma_neg = gamma and no shift.

    L+ = -(1-p)^gamma log p ;  L- = -p^gamma log(1-p). The weight is detached by default to match
    the ASL/APL code the paper's loss ablation builds on; ``detach_focusing=False`` gives Lin et al.
    """

    def __init__(self, gamma: float = 2.0, eps: float = 1e-8, detach_focusing: bool = True,
                 label_smoothing: float = 0.0) -> None:
        super().__init__(
            gamma_neg=gamma, gamma_pos=gamma, clip=0.0, eps=eps, detach_focusing=detach_focusing,
            label_smoothing=label_smoothing,
        )
        self.gamma = float(gamma)


class AsymmetricPolynomialLoss(AsymmetricLoss):
    """APL (Huang et al., ICASSP 2023; LUMIA-Group/APL parameterisation).

    L+ = (1-p)^gamma_pos [-log p - e_pos (1-p) - (e_pow/2) (1-p)^2]
    L- = p_m^gamma_neg [-log(1 - p_m) - e_neg (1 - p_m)],   p_m = max(p - clip, 0)
    i.e. a Taylor expansion of BCE whose leading polynomial coefficients are re-weighted (paper
    Eq. 8 with a1 = 0, a2 = 1.75, b1 = 1 for the defaults). Defaults are the paper's gamma_pos = 0,
    gamma_neg = 2 (the authors' code ships gamma_neg = 4) and the authors' e_pos = 1, e_neg = 0,
    e_pow = -2.5, clip = 0.05, eps = 1e-8.
    """

    def __init__(
        self,
        gamma_neg: float = 2.0,
        gamma_pos: float = 0.0,
        clip: float = 0.05,
        eps: float = 1e-8,
        e_pos: float = 1.0,
        e_neg: float = 0.0,
        e_pow: float = -2.5,
        detach_focusing: bool = True,
        label_smoothing: float = 0.0,
    ) -> None:
        super().__init__(gamma_neg, gamma_pos, clip, eps, detach_focusing, label_smoothing)
        self.e_pos = float(e_pos)
        self.e_neg = float(e_neg)
        self.e_pow = float(e_pow)

    def _base_losses(self, logits, one_minus_p, p_m, log_one_minus_p_m):
        """The polynomial-corrected cross-entropy of each side (the focusing weights are ASL's)."""
        poly_pos = (
            -F.logsigmoid(logits)
            - self.e_pos * one_minus_p
            - 0.5 * self.e_pow * one_minus_p.pow(2)
        )  # (B,K)
        poly_neg = -log_one_minus_p_m - self.e_neg * (1.0 - p_m)  # (B,K)
        return poly_pos, poly_neg

    def extra_repr(self) -> str:
        return (
            f"gamma_neg={self.gamma_neg}, gamma_pos={self.gamma_pos}, clip={self.clip}, "
            f"eps={self.eps}, e_pos={self.e_pos}, e_neg={self.e_neg}, e_pow={self.e_pow}, "
            f"detach_focusing={self.detach_focusing}"
        )


_LOSS_CLASSES: dict[str, type[nn.Module]] = {
    "bce": BCELoss,
    "focal": FocalLoss,
    "asl": AsymmetricLoss,
    "apl": AsymmetricPolynomialLoss,
}
LOSS_NAMES: tuple[str, ...] = tuple(_LOSS_CLASSES)


def build_loss(name: str, **kwargs) -> nn.Module:
    """Build a loss by config name ("bce", "focal", "asl", "apl"); kwargs go to its constructor.

    Raises ConfigError (a ValueError) for an unknown name or an argument the loss does not take,
    so a typo in a config file is reported as a config problem rather than a traceback.
    """
    key = str(name).strip().lower()
    if key not in _LOSS_CLASSES:
        raise ConfigError(f"unknown loss {name!r}; expected one of {', '.join(LOSS_NAMES)}")
    try:
        return _LOSS_CLASSES[key](**kwargs)
    except TypeError as exc:
        raise ConfigError(f"loss {key!r}: {exc}") from exc
