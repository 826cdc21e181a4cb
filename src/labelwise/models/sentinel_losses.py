"""Losses of Quality Sentinel: weighted MSE of predicted vs true Dice plus a pairwise ranking loss.

Wang et al., "Quality Sentinel: Estimating Label Quality and Errors in Medical Segmentation Datasets", 2024.
The MSE weights favour low-quality masks (7/5/3/2/1 for true Dice <= 0.3/0.5/0.7/0.9/1), so the rare bad masks
are not drowned by the many good ones; the ranking term asks the predictions to order each batch as the true
Dice does.

Example:
    >>> p, y = torch.tensor([0.5, 0.5]), torch.tensor([0.1, 1.0])
    >>> {k: round(float(v), 3) for k, v in sentinel_loss(p, y).items()}
    {'loss': 0.685, 'mse': 0.685, 'rank': 0.0}

"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["mse_weights", "ranking_loss", "sentinel_loss"]


def mse_weights(target: torch.Tensor, edges: Sequence[float], weights: Sequence[float]) -> torch.Tensor:
    """Per-sample MSE weight: ``weights[i]`` for the first edge with ``target <= edges[i]`` (last weight above).

    Args:
        target: ``(B,)`` true Dice in [0, 1].
        edges: Increasing upper edges of the bins.
        weights: One weight per bin (same length as ``edges``).

    Returns:
        ``(B,)`` weights, same dtype and device as ``target``.

    """
    w = torch.full_like(target, float(weights[-1]))
    for e, v in reversed(list(zip(edges, weights, strict=True))):
        w = torch.where(target <= e, torch.full_like(target, float(v)), w)
    return w


def ranking_loss(pred: torch.Tensor, target: torch.Tensor, margin: float = 0.0) -> torch.Tensor:
    """Pairwise ranking loss ``mean_{i<j} relu(-(p_i - p_j)(y_i - y_j) + margin)`` over a batch (0 if B < 2).

    Args:
        pred: ``(B,)`` predicted Dice.
        target: ``(B,)`` true Dice.
        margin: Margin added to every pair's term.

    Returns:
        Scalar loss (0 with gradient for a batch of one).

    """
    b = pred.shape[0]
    if b < 2:
        return pred.sum() * 0.0
    dp = pred[:, None] - pred[None, :]
    dy = target[:, None] - target[None, :]
    iu = torch.triu_indices(b, b, offset=1, device=pred.device)
    return torch.relu(-(dp * dy)[iu[0], iu[1]] + margin).mean()


def sentinel_loss(
    pred: torch.Tensor,
    target: torch.Tensor,
    edges: Sequence[float] = (0.3, 0.5, 0.7, 0.9, 1.0),
    weights: Sequence[float] = (7.0, 5.0, 3.0, 2.0, 1.0),
    rank_weight: float = 1.0,
    margin: float = 0.0,
) -> dict[str, torch.Tensor]:
    """Weighted MSE + ranking loss of predicted vs true Dice, both ``(B,)`` in [0, 1].

    Returns:
        ``{"loss", "mse", "rank"}`` scalars; ``mse = mean(w(y) * (p - y)^2)``, ``loss = mse + rank_weight * rank``.

    """
    mse = (mse_weights(target, edges, weights) * (pred - target) ** 2).mean()
    rank = ranking_loss(pred, target, margin)
    return {"loss": mse + rank_weight * rank, "mse": mse.detach(), "rank": rank.detach()}
