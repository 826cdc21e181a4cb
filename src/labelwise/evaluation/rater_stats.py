"""Dataset summary with inter-rater agreement (``labelwise data stats``): the data layer's counts plus pairwise Dice.

Inter-rater agreement is the mean pairwise Dice (:func:`labelwise.metrics.pairwise_dice`) between the raters of
each case, per foreground class, over the pairs ``i < j`` of raters present for that case. A pair where both
raters leave the class empty is skipped (it says nothing about agreement and would count as a perfect 1.0); a
pair where only one is empty counts as 0. Partially labelled volumes are compared on ``labelled_slices`` only.
The per-class means are over all (case, pair) values; ``mean_pairwise_dice`` is their average over the classes
that have any value (macro), and ``pair_dice`` is the ``(R, R)`` rater-by-rater matrix of the same values
averaged over cases and classes. The counts come from :func:`labelwise.data.stats.dataset_counts`, in the same
single pass over the cases.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.data.stats import DatasetCounts, dataset_counts
from labelwise.metrics import pairwise_dice

__all__ = ["DatasetStats", "PairwiseAgreement", "dataset_stats", "format_stats"]


@dataclass(frozen=True)
class DatasetStats(DatasetCounts):
    """Summary of a dataset: :class:`~labelwise.data.stats.DatasetCounts` plus inter-rater agreement.

    Attributes:
        class_pairwise_dice: Mean pairwise inter-rater Dice per class (index 0, background, is nan); nan where
            no case has two raters with the class.
        mean_pairwise_dice: Macro mean of ``class_pairwise_dice`` over foreground classes with a value (nan if
            none).
        pair_dice: ``(R, R)`` mean Dice per rater pair (diagonal 1; nan for pairs never compared).
        num_compared_cases: Cases with at least two raters.
        min_pairwise_dice: Lowest single (case, class, rater pair) Dice (nan if none).

    """

    class_pairwise_dice: tuple[float, ...]
    mean_pairwise_dice: float
    pair_dice: np.ndarray = field(repr=False)
    num_compared_cases: int = 0
    min_pairwise_dice: float = float("nan")

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (nan becomes None, tuple keys become ``"AxBxC"`` strings)."""

        def clean(v: float) -> float | None:
            return None if math.isnan(v) else float(v)

        return {
            **super().to_json(),
            "class_pairwise_dice": [clean(v) for v in self.class_pairwise_dice],
            "mean_pairwise_dice": clean(self.mean_pairwise_dice),
            "pair_dice": [[clean(float(v)) for v in row] for row in self.pair_dice],
            "num_compared_cases": self.num_compared_cases,
            "min_pairwise_dice": clean(self.min_pairwise_dice),
        }


class PairwiseAgreement:
    """Accumulates pairwise inter-rater Dice case by case (a :data:`labelwise.data.stats.CaseVisitor`).

    Args:
        num_raters: Raters of the dataset (R).
        num_classes: Classes including background (K).

    """

    def __init__(self, num_raters: int, num_classes: int) -> None:
        self.num_classes = num_classes
        self.class_values: list[list[float]] = [[] for _ in range(num_classes)]
        self.pair_sum = np.zeros((num_raters, num_raters))
        self.pair_n = np.zeros((num_raters, num_raters))
        self.compared = 0

    def __call__(self, case: Case, labels: np.ndarray, present: np.ndarray) -> None:
        """Add one case: ``labels`` ``(R, *spatial)`` in the dataset's rater order, ``present`` ``(R,)`` bool."""
        if present.sum() < 2:
            return
        self.compared += 1
        for cls in range(1, self.num_classes):
            for a, b, v in _pair_values(labels, present, cls):
                self.class_values[cls].append(v)
                self.pair_sum[a, b] += v
                self.pair_sum[b, a] += v
                self.pair_n[a, b] += 1
                self.pair_n[b, a] += 1

    def result(self) -> dict[str, Any]:
        """The agreement fields of :class:`DatasetStats`."""
        per_class = tuple(float(np.mean(v)) if v and c > 0 else float("nan") for c, v in enumerate(self.class_values))
        fg = [v for v in per_class[1:] if not math.isnan(v)]
        every = [v for values in self.class_values for v in values]
        with np.errstate(invalid="ignore", divide="ignore"):
            pair = np.where(self.pair_n > 0, self.pair_sum / np.maximum(self.pair_n, 1), np.nan)
        np.fill_diagonal(pair, 1.0)
        return {
            "class_pairwise_dice": per_class,
            "mean_pairwise_dice": float(np.mean(fg)) if fg else float("nan"),
            "pair_dice": pair,
            "num_compared_cases": self.compared,
            "min_pairwise_dice": min(every) if every else float("nan"),
        }


def _pair_values(labels: np.ndarray, present: np.ndarray, cls: int) -> list[tuple[int, int, float]]:
    """``(rater a, rater b, Dice)`` of class ``cls`` for the present pairs where at least one is non-empty."""
    idx = np.flatnonzero(present)
    masks = labels[idx] == cls
    nonempty = masks.reshape(len(idx), -1).any(axis=1)
    if not nonempty.any():
        return []
    d = pairwise_dice(masks)
    out = []
    for a in range(len(idx)):
        for b in range(a + 1, len(idx)):
            if nonempty[a] or nonempty[b]:
                out.append((int(idx[a]), int(idx[b]), float(d[a, b])))
    return out


def dataset_stats(
    root: str | Path | Dataset,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
) -> DatasetStats:
    """Compute :class:`DatasetStats`, reading one case at a time.

    Args:
        root: Dataset folder or an open :class:`~labelwise.data.Dataset`.
        track: Optional progress wrapper ``track(items, description, total)`` over the cases.

    Raises:
        DataError: an unreadable case (run ``labelwise data check`` to list every problem).

    """
    ds = root if isinstance(root, Dataset) else Dataset(root)
    agreement = PairwiseAgreement(len(ds.rater_ids), len(ds.class_names))
    counts = dataset_counts(ds, track, visit=agreement)
    return DatasetStats(**{f.name: getattr(counts, f.name) for f in fields(DatasetCounts)}, **agreement.result())


def format_stats(stats: DatasetStats, max_classes: int = 20) -> str:
    """Plain-text report of ``stats`` (one fact per line; at most ``max_classes`` classes, most frequent first)."""

    def fmt(v: tuple[float, ...]) -> str:
        return " x ".join(f"{x:.4g}" for x in v)

    lines = [
        f"dataset        {stats.name} ({stats.spatial_dims}D, {stats.channels} channel(s))",
        f"cases          {stats.num_cases} x {stats.num_raters} raters "
        f"(train {stats.split_counts['train']}, val {stats.split_counts['val']}, test {stats.split_counts['test']}"
        + (f", no split {stats.split_counts['none']})" if stats.split_counts["none"] else ")"),
        "raters/case    " + ", ".join(f"{n} raters: {c} cases" for n, c in stats.raters_per_case.items()),
        "shapes         "
        + ", ".join(f"{'x'.join(map(str, s))}: {c}" for s, c in list(stats.shapes.items())[:5])
        + (" ..." if len(stats.shapes) > 5 else ""),
        f"spacing (mm)   min {fmt(stats.spacing_min_mm)}, median {fmt(stats.spacing_median_mm)}, "
        f"max {fmt(stats.spacing_max_mm)}",
    ]
    for name, counts in stats.image_label_counts.items():
        lines.append(f"image label    {name}: " + ", ".join(f"{v}: {c}" for v, c in counts.items()))
    order = sorted(range(len(stats.class_names)), key=lambda c: -stats.class_frequency[c])
    shown = [c for c in order if stats.class_frequency[c] > 0][:max_classes]
    lines.append(f"classes        {len(stats.class_names)} ({sum(f > 0 for f in stats.class_frequency)} present)")
    for c in shown:
        dice = stats.class_pairwise_dice[c]
        agree = "" if math.isnan(dice) else f"   inter-rater Dice {dice:.3f}"
        lines.append(f"  {c:>3} {stats.class_names[c]:<24} {100 * stats.class_frequency[c]:7.3f} %{agree}")
    if stats.num_compared_cases:
        off = stats.pair_dice[~np.eye(len(stats.pair_dice), dtype=bool)]
        off = off[~np.isnan(off)]
        low = f"; rater-pair means {off.min():.3f}..{off.max():.3f}" if off.size else ""
        low += f"; lowest single pair {stats.min_pairwise_dice:.3f}"
        lines.append(
            f"agreement      mean pairwise inter-rater Dice {stats.mean_pairwise_dice:.3f} over "
            f"{stats.num_compared_cases} cases with >= 2 raters{low}"
        )
    else:
        lines.append("agreement      no case has two raters")
    return "\n".join(lines)
