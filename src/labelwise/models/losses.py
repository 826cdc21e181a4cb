"""Segmentation losses that accept hard or soft (probabilistic) targets."""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["dice_ce_loss", "soft_dice_loss"]


def soft_dice_loss(logits: torch.Tensor, target: torch.Tensor, smooth: float = 1e-5) -> torch.Tensor:
    """Soft Dice loss per sample and foreground class, averaged.

    Args:
        logits: ``(B, K, *spatial)`` raw scores.
        target: ``(B, K, *spatial)`` class probabilities in [0, 1] (one-hot or soft).
        smooth: Added to numerator and denominator; an empty class in both prediction and target gives loss 0.

    Returns:
        Scalar ``1 - mean_{b,k} dice_{b,k}`` over samples b and classes ``1..K-1`` (all classes if K == 1).
        Per-sample (not batch) Dice keeps the loss a mean over samples, so DDP over W ranks (each averaging its
        share) and gradient accumulation give the same gradient as one process with the whole batch.

    """
    probs = torch.softmax(logits.float(), dim=1)
    dims = tuple(range(2, logits.ndim))
    inter = (probs * target).sum(dims)
    denom = probs.sum(dims) + target.sum(dims)
    dice = (2 * inter + smooth) / (denom + smooth)  # (B, K)
    fg = dice[:, 1:] if dice.shape[1] > 1 else dice
    return 1 - fg.mean()


def dice_ce_loss(logits: torch.Tensor, target: torch.Tensor, ce_weight: float = 1.0) -> torch.Tensor:
    """Soft Dice + cross-entropy with probabilistic targets ``(B, K, *spatial)`` (see :func:`soft_dice_loss`)."""
    ce = F.cross_entropy(logits.float(), target.float(), reduction="mean")
    return soft_dice_loss(logits, target) + ce_weight * ce
