"""Accumulator classes: aggregate metrics over batches (and across DDP ranks) around the functional core.

``import labelwise.metrics`` does not import torch; :meth:`CountsAccumulator.gather` imports it only when
``torch.distributed`` is available and initialised, then all-gathers the per-sample state of every rank.

Example:
    >>> import numpy as np
    >>> acc = Dice()
    >>> acc.update(np.array([[1, 1, 0, 0]], bool), np.array([[1, 0, 0, 0]], bool))
    >>> acc.update(np.array([[0, 0, 0, 0]], bool), np.array([[0, 0, 0, 0]], bool))
    >>> acc.per_sample().tolist()
    [0.6666666666666666, 1.0]
    >>> round(acc.compute(), 6), round(acc.compute(reduction="pooled"), 6)
    (0.833333, 0.666667)

"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import DataError
from labelwise.metrics._checks import as_masks_pair
from labelwise.metrics.conventions import EmptyConvention, EmptyMode
from labelwise.metrics.overlap import OverlapMetric, batch_confusion, overlap_from_counts

__all__ = ["CountsAccumulator", "Dice", "IoU", "Reduction", "ValueAccumulator"]

Reduction = Literal["mean", "pooled"]


def _gather_rows(local: NDArray[np.float64]) -> NDArray[np.float64]:
    """All-gather a ``(n_i, k)`` float64 array from every DDP rank (no-op without an initialised group)."""
    try:
        import torch
        import torch.distributed as dist
    except ImportError:  # pragma: no cover - torch is a dependency, kept optional here
        return local
    if not (dist.is_available() and dist.is_initialized()):
        return local
    world = dist.get_world_size()
    n = torch.tensor([local.shape[0]], dtype=torch.int64)
    sizes = [torch.zeros_like(n) for _ in range(world)]
    dist.all_gather(sizes, n)
    longest = int(max(int(s.item()) for s in sizes))
    padded = torch.zeros((longest, local.shape[1]), dtype=torch.float64)
    padded[: local.shape[0]] = torch.from_numpy(local)
    parts = [torch.zeros_like(padded) for _ in range(world)]
    dist.all_gather(parts, padded)
    return np.concatenate([p[: int(s.item())].numpy() for p, s in zip(parts, sizes, strict=True)])


class CountsAccumulator:
    """Collect per-sample confusion counts; derive an overlap score per sample or pooled.

    Args:
        metric: Overlap score to derive (see :func:`labelwise.metrics.overlap_from_counts`).
        empty: Empty-mask convention for the per-sample scores.

    """

    def __init__(self, metric: OverlapMetric, *, empty: EmptyMode | EmptyConvention = "labelwise") -> None:
        self.metric: OverlapMetric = metric
        self.empty = empty
        self._counts: list[NDArray[np.int64]] = []

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._counts.clear()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch: ``pred`` and ``target`` are ``(B, *spatial)`` bool masks (numpy or CPU torch tensors)."""
        p, t = as_masks_pair(_to_numpy(pred), _to_numpy(target))
        if p.ndim < 2:
            raise DataError(f"update expects (B, *spatial) masks, got shape {p.shape}")
        self._counts.append(batch_confusion(p, t))

    def counts(self) -> NDArray[np.int64]:
        """``(N, 4)`` int64 counts of every sample seen on this rank and, under DDP, on all ranks."""
        local = np.concatenate(self._counts) if self._counts else np.zeros((0, 4), np.int64)
        return np.rint(_gather_rows(local.astype(np.float64))).astype(np.int64)

    def per_sample(self) -> NDArray[np.float64]:
        """``(N,)`` float64 score of each sample."""
        return overlap_from_counts(self.counts(), self.metric, empty=self.empty)

    def compute(self, reduction: Reduction = "mean") -> float:
        """Aggregate: ``"mean"`` of per-sample scores (nan scores ignored) or ``"pooled"`` over summed counts.

        Returns nan when nothing (or only nan scores) was accumulated.
        """
        if reduction == "pooled":
            c = self.counts()
            return float(overlap_from_counts(c.sum(axis=0), self.metric, empty=self.empty)) if len(c) else np.nan
        vals = self.per_sample()
        vals = vals[~np.isnan(vals)]
        return float(vals.mean()) if vals.size else float("nan")


class Dice(CountsAccumulator):
    """Cumulative Dice over batches (see :class:`CountsAccumulator`)."""

    def __init__(self, *, empty: EmptyMode | EmptyConvention = "labelwise") -> None:
        super().__init__("dice", empty=empty)


class IoU(CountsAccumulator):
    """Cumulative IoU over batches (see :class:`CountsAccumulator`)."""

    def __init__(self, *, empty: EmptyMode | EmptyConvention = "labelwise") -> None:
        super().__init__("iou", empty=empty)


class ValueAccumulator:
    """Collect one score per sample from any metric function ``fn(pred, target, **kwargs) -> float``.

    Example: ``ValueAccumulator(hausdorff_percentile, spacing_mm=(1, 1, 3))`` for HD95 over a validation set.

    Args:
        fn: Metric of one pair.
        **kwargs: Passed to ``fn`` on every call.

    """

    def __init__(self, fn: Callable[..., float], **kwargs: Any) -> None:
        self.fn = fn
        self.kwargs = kwargs
        self._values: list[float] = []

    def reset(self) -> None:
        """Forget everything accumulated."""
        self._values.clear()

    def update(self, pred: ArrayLike, target: ArrayLike) -> None:
        """Add a batch ``(B, *spatial)`` of prediction/reference masks."""
        p, t = _to_numpy(pred), _to_numpy(target)
        if p.ndim < 2 or p.shape != t.shape:
            raise DataError(f"update expects two (B, *spatial) arrays of one shape, got {p.shape} and {t.shape}")
        self._values.extend(float(self.fn(p[b], t[b], **self.kwargs)) for b in range(p.shape[0]))

    def per_sample(self) -> NDArray[np.float64]:
        """``(N,)`` float64 values of every sample (all DDP ranks)."""
        local = np.asarray(self._values, dtype=np.float64).reshape(-1, 1)
        return _gather_rows(local)[:, 0]

    def compute(self) -> float:
        """Mean of the finite per-sample values (nan if none)."""
        v = self.per_sample()
        v = v[np.isfinite(v)]
        return float(v.mean()) if v.size else float("nan")


def _to_numpy(x: ArrayLike) -> NDArray[Any]:
    if hasattr(x, "detach") and hasattr(x, "cpu"):
        return np.asarray(x.detach().cpu().numpy())
    return np.asarray(x)
