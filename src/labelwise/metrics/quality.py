"""Quality-estimation metrics: how well predicted per-case scores track the true ones.

Used to evaluate label-quality / segmentation-quality estimators (e.g. a predicted Dice per case) and the
review queues built from them.

Example:
    >>> worst_case_recall([0.9, 0.2, 0.5, 0.8], [0.95, 0.1, 0.7, 0.3], k=2)
    0.5

"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import DataError
from labelwise.metrics._checks import check_finite

__all__ = ["kendall", "mae", "pearson", "quality_report", "spearman", "worst_case_recall"]


def _scores(predicted: ArrayLike, true: ArrayLike) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    p = np.asarray(predicted, dtype=np.float64).reshape(-1)
    t = np.asarray(true, dtype=np.float64).reshape(-1)
    check_finite(p, "predicted scores")
    check_finite(t, "true scores")
    if p.size != t.size:
        raise DataError(f"{p.size} predicted scores for {t.size} true scores")
    return p, t


def _corr(p: NDArray[np.float64], t: NDArray[np.float64], kind: str) -> float:
    if p.size < 2 or np.ptp(p) == 0 or np.ptp(t) == 0:
        return float("nan")
    from scipy import stats

    if kind == "pearson":
        return float(stats.pearsonr(p, t).statistic)
    if kind == "spearman":
        return float(stats.spearmanr(p, t).statistic)
    return float(stats.kendalltau(p, t).statistic)


def pearson(predicted: ArrayLike, true: ArrayLike) -> float:
    """Pearson correlation of two ``(N,)`` score lists; nan if N < 2 or either list is constant."""
    return _corr(*_scores(predicted, true), "pearson")


def spearman(predicted: ArrayLike, true: ArrayLike) -> float:
    """Spearman rank correlation (ties get average ranks); nan if N < 2 or either list is constant."""
    return _corr(*_scores(predicted, true), "spearman")


def kendall(predicted: ArrayLike, true: ArrayLike) -> float:
    """Kendall's tau-b; nan if N < 2 or either list is constant."""
    return _corr(*_scores(predicted, true), "kendall")


def mae(predicted: ArrayLike, true: ArrayLike) -> float:
    """Mean absolute error ``mean(|predicted - true|)``; nan for empty lists."""
    p, t = _scores(predicted, true)
    return float(np.mean(np.abs(p - t))) if p.size else float("nan")


def worst_case_recall(predicted: ArrayLike, true: ArrayLike, k: int, *, higher_is_worse: bool = False) -> float:
    """Fraction of the k truly worst cases found among the k predicted worst (a review queue of length k).

    Args:
        predicted: ``(N,)`` predicted quality scores.
        true: ``(N,)`` true quality scores (e.g. Dice against the reference).
        k: Queue length, 1 <= k <= N.
        higher_is_worse: False for scores like Dice (low = bad), True for errors like HD95.

    Returns:
        Recall in [0, 1]. Ties are broken by case order (stable sort).

    """
    p, t = _scores(predicted, true)
    if not 1 <= k <= p.size:
        raise DataError(f"k must lie in [1, {p.size}], got {k}")
    sign = -1.0 if higher_is_worse else 1.0
    worst_true = set(np.argsort(sign * t, kind="stable")[:k].tolist())
    worst_pred = set(np.argsort(sign * p, kind="stable")[:k].tolist())
    return len(worst_true & worst_pred) / k


def quality_report(
    predicted: ArrayLike, true: ArrayLike, *, k: int | None = None, higher_is_worse: bool = False
) -> dict[str, float]:
    """All quality-estimation metrics in one dict (``k`` defaults to 10% of the cases, at least 1)."""
    p, t = _scores(predicted, true)
    kk = k if k is not None else max(1, round(0.1 * p.size))
    out = {
        "pearson": pearson(p, t),
        "spearman": spearman(p, t),
        "kendall": kendall(p, t),
        "mae": mae(p, t),
    }
    if p.size:
        out[f"worst_{kk}_recall"] = worst_case_recall(p, t, kk, higher_is_worse=higher_is_worse)
    return out
