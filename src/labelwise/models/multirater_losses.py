"""Losses of the multi-rater methods, with raters that may be missing for some cases (masked out).

Conventions: rater label maps are ``(B, R, *spatial)`` integer class indices with ``-1`` everywhere for a rater
who did not annotate that case; ``present`` is the ``(B, R)`` bool mask derived from them by
:func:`rater_presence`. Samples whose raters are all missing contribute nothing (their weight is 0) and a batch
with no usable sample gives a zero loss that still back-propagates (so DDP ranks stay in step).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = [
    "bound_constrained_loss",
    "generalised_dice_loss",
    "one_hot_raters",
    "rater_presence",
    "soft_cross_entropy",
]


def rater_presence(raters: torch.Tensor) -> torch.Tensor:
    """``(B, R)`` bool: rater r annotated sample b (its map holds no ``-1``).

    Args:
        raters: ``(B, R, *spatial)`` integer labels, ``-1`` for a missing rater.

    """
    return raters.flatten(2).min(dim=2).values >= 0


def one_hot_raters(raters: torch.Tensor, num_classes: int) -> torch.Tensor:
    """One-hot encode ``(B, R, *spatial)`` labels to ``(B, R, K, *spatial)`` float32 (missing raters: all zero)."""
    valid = raters >= 0
    oh = F.one_hot(raters.clamp(min=0).long(), num_classes).movedim(-1, 2).float()
    return oh * valid.unsqueeze(2).float()


def _masked_mean(values: torch.Tensor, weight: torch.Tensor | None) -> torch.Tensor:
    if weight is None:
        return values.mean()
    w = weight.float()
    return (values * w).sum() / w.sum().clamp(min=1.0)


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """Cross-entropy with probability targets (the K-class form of MRNet's BCE on soft labels).

    Args:
        logits: ``(B, K, *spatial)`` raw scores.
        target: ``(B, K, *spatial)`` class probabilities (soft labels ``sum_i c_i * onehot(mask_i)``).
        valid: ``(B,)`` bool/float sample weights; samples with weight 0 are ignored.

    Returns:
        Scalar mean over voxels and valid samples (0 with gradient when nothing is valid). For K = 2 it equals
        binary cross-entropy on the foreground logit difference.

    """
    ce = -(target * F.log_softmax(logits.float(), dim=1)).sum(1)  # (B, *spatial)
    return _masked_mean(ce.flatten(1).mean(1), valid)


def generalised_dice_loss(
    probs: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None, eps: float = 1e-6
) -> torch.Tensor:
    """Generalised Dice loss (Sudre et al., DLMIA 2017) per sample, class weights ``1 / (sum target_k)^2``.

    Args:
        probs: ``(B, K, *spatial)`` predicted probabilities in [0, 1].
        target: ``(B, K, *spatial)`` reference in [0, 1].
        valid: ``(B,)`` sample weights (0: ignored).
        eps: Smoothing of numerator and denominator.

    Returns:
        Scalar ``1 - GDice`` averaged over valid samples. A class absent from the target gets the largest weight
        of the present classes (MONAI's convention), so empty targets do not produce infinite weights.

    """
    dims = tuple(range(2, probs.ndim))
    t = target.float()
    p = probs.float()
    tsum = t.sum(dims)  # (B, K)
    w = 1.0 / (tsum * tsum)
    finite = torch.isfinite(w)
    wmax = torch.where(finite, w, torch.zeros_like(w)).max(dim=1, keepdim=True).values
    w = torch.where(finite, w, torch.where(wmax > 0, wmax, torch.ones_like(wmax)))
    inter = (w * (p * t).sum(dims)).sum(1)
    denom = (w * (p + t).sum(dims)).sum(1)
    loss = 1.0 - (2.0 * inter + eps) / (denom + eps)
    return _masked_mean(loss, valid)


def _binary_stack(fg: torch.Tensor) -> torch.Tensor:
    return torch.stack([1.0 - fg, fg], dim=1)


def bound_constrained_loss(
    sample_probs: torch.Tensor, raters_onehot: torch.Tensor, present: torch.Tensor
) -> torch.Tensor:
    """D-Persona's bound-constrained loss: sample max/min matched to rater union/intersection by GDL.

    Args:
        sample_probs: ``(N, B, K, *spatial)`` class probabilities of N prior samples.
        raters_onehot: ``(B, R, K, *spatial)`` one-hot rater maps (see :func:`one_hot_raters`).
        present: ``(B, R)`` bool, which raters annotated each sample; missing raters are ignored by union and
            intersection.

    Returns:
        Scalar: mean over foreground classes of ``GDL(max_n p, union) + GDL(min_n p, intersection)`` on the
        binary (background, class k) pair, averaged over samples with at least one rater.

    """
    k_total = sample_probs.shape[2]
    pres = present.float().reshape(*present.shape, *([1] * (raters_onehot.ndim - 2)))
    valid = present.any(dim=1)
    upper = sample_probs.max(dim=0).values
    lower = sample_probs.min(dim=0).values
    union = (raters_onehot * pres).max(dim=1).values
    inter = (raters_onehot * pres + (1.0 - pres)).min(dim=1).values
    classes = range(1, k_total) if k_total > 1 else range(k_total)
    losses = []
    for k in classes:
        losses.append(generalised_dice_loss(_binary_stack(upper[:, k]), _binary_stack(union[:, k]), valid))
        losses.append(generalised_dice_loss(_binary_stack(lower[:, k]), _binary_stack(inter[:, k]), valid))
    return torch.stack(losses).sum() / max(len(losses) // 2, 1)
