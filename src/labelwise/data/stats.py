"""Dataset summary (``labelwise data stats``): counts, shapes, spacing, class frequencies, inter-rater agreement.

Inter-rater agreement is the mean pairwise Dice (:func:`labelwise.metrics.pairwise_dice`) between the raters of
each case, per foreground class, over the pairs ``i < j`` of raters present for that case. A pair where both
raters leave the class empty is skipped (it says nothing about agreement and would count as a perfect 1.0); a
pair where only one is empty counts as 0. Partially labelled volumes are compared on ``labelled_slices`` only.
The per-class means are over all (case, pair) values; ``mean_pairwise_dice`` is their average over the classes
that have any value (macro), and ``pair_dice`` is the ``(R, R)`` rater-by-rater matrix of the same values
averaged over cases and classes.
"""

from __future__ import annotations

import logging
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.dataset import Dataset
from labelwise.data.manifest import SPLITS

__all__ = ["DatasetStats", "dataset_stats", "format_stats"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class DatasetStats:
    """Summary of a dataset (see the module docstring for the agreement definition).

    Attributes:
        name: Dataset name.
        spatial_dims: 2 or 3.
        num_cases: Number of cases.
        split_counts: ``{"train": n, "val": n, "test": n, "none": n}``.
        num_raters: Number of rater ids of the dataset.
        raters_per_case: ``{number of raters present: number of cases}``.
        channels: Image channels.
        shapes: ``{spatial shape: number of cases}``.
        spacing_min_mm, spacing_median_mm, spacing_max_mm: Per-axis spacing over cases, in mm.
        class_names: Class names (0 = background).
        class_frequency: Fraction of labelled voxels per class over all rater maps (sums to 1; all 0 if none).
        image_label_counts: ``{label name: {value: number of cases}}``.
        class_pairwise_dice: Mean pairwise inter-rater Dice per class (index 0, background, is nan); nan where
            no case has two raters with the class.
        mean_pairwise_dice: Macro mean of ``class_pairwise_dice`` over foreground classes with a value (nan if
            none).
        pair_dice: ``(R, R)`` mean Dice per rater pair (diagonal 1; nan for pairs never compared).
        num_compared_cases: Cases with at least two raters.
        min_pairwise_dice: Lowest single (case, class, rater pair) Dice (nan if none).

    """

    name: str
    spatial_dims: int
    num_cases: int
    split_counts: dict[str, int]
    num_raters: int
    raters_per_case: dict[int, int]
    channels: int
    shapes: dict[tuple[int, ...], int]
    spacing_min_mm: tuple[float, ...]
    spacing_median_mm: tuple[float, ...]
    spacing_max_mm: tuple[float, ...]
    class_names: tuple[str, ...]
    class_frequency: tuple[float, ...]
    image_label_counts: dict[str, dict[int, int]]
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
            "name": self.name,
            "spatial_dims": self.spatial_dims,
            "num_cases": self.num_cases,
            "split_counts": self.split_counts,
            "num_raters": self.num_raters,
            "raters_per_case": {str(k): v for k, v in self.raters_per_case.items()},
            "channels": self.channels,
            "shapes": {"x".join(map(str, k)): v for k, v in self.shapes.items()},
            "spacing_min_mm": list(self.spacing_min_mm),
            "spacing_median_mm": list(self.spacing_median_mm),
            "spacing_max_mm": list(self.spacing_max_mm),
            "class_names": list(self.class_names),
            "class_frequency": list(self.class_frequency),
            "image_label_counts": {k: {str(a): b for a, b in v.items()} for k, v in self.image_label_counts.items()},
            "class_pairwise_dice": [clean(v) for v in self.class_pairwise_dice],
            "mean_pairwise_dice": clean(self.mean_pairwise_dice),
            "pair_dice": [[clean(float(v)) for v in row] for row in self.pair_dice],
            "num_compared_cases": self.num_compared_cases,
            "min_pairwise_dice": clean(self.min_pairwise_dice),
        }


def _no_track(items: Iterable[Any], description: str, total: int | None = None) -> Iterator[Any]:
    yield from items


def _pair_values(labels: np.ndarray, present: np.ndarray, cls: int) -> list[tuple[int, int, float]]:
    from labelwise.metrics import pairwise_dice

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
    rater_ids = ds.rater_ids
    r_count = len(rater_ids)
    k = len(ds.class_names)
    voxels = np.zeros(k, dtype=np.int64)
    shapes: Counter[tuple[int, ...]] = Counter()
    raters_per_case: Counter[int] = Counter()
    spacings = []
    class_values: list[list[float]] = [[] for _ in range(k)]
    pair_sum = np.zeros((r_count, r_count))
    pair_n = np.zeros((r_count, r_count))
    compared = 0
    channels = ds.manifest.channels
    for case in (track or _no_track)(ds.cases(), f"reading {ds.name}", len(ds)):
        shapes[case.spatial_shape] += 1
        raters_per_case[case.num_raters] += 1
        spacings.append(case.spacing_mm)
        labels, present = case.rater_stack(rater_ids)
        if case.labelled_slices is not None:
            labels = labels[..., list(case.labelled_slices)]
        for r in np.flatnonzero(present):
            voxels += np.bincount(labels[r].ravel().clip(0, k - 1), minlength=k)[:k]
        if present.sum() < 2:
            continue
        compared += 1
        for cls in range(1, k):
            for a, b, v in _pair_values(labels, present, cls):
                class_values[cls].append(v)
                pair_sum[a, b] += v
                pair_sum[b, a] += v
                pair_n[a, b] += 1
                pair_n[b, a] += 1
    total = voxels.sum()
    freq = tuple(float(v) / total if total else 0.0 for v in voxels)
    per_class = tuple(float(np.mean(v)) if v and c > 0 else float("nan") for c, v in enumerate(class_values))
    fg = [v for v in per_class[1:] if not math.isnan(v)]
    every = [v for values in class_values for v in values]
    with np.errstate(invalid="ignore", divide="ignore"):
        pair = np.where(pair_n > 0, pair_sum / np.maximum(pair_n, 1), np.nan)
    np.fill_diagonal(pair, 1.0)
    sp = np.asarray(spacings, dtype=np.float64) if spacings else np.zeros((0, ds.spatial_dims))
    split_counts = {s: len(ds.split_ids(s)) for s in SPLITS}
    split_counts["none"] = len(ds) - sum(split_counts.values())
    label_counts: dict[str, dict[int, int]] = {}
    for rec in ds.manifest.cases:
        for name, value in rec.image_labels.items():
            label_counts.setdefault(name, {})
            label_counts[name][value] = label_counts[name].get(value, 0) + 1
    return DatasetStats(
        name=ds.name,
        spatial_dims=ds.spatial_dims,
        num_cases=len(ds),
        split_counts=split_counts,
        num_raters=r_count,
        raters_per_case=dict(sorted(raters_per_case.items())),
        channels=channels,
        shapes=dict(shapes.most_common()),
        spacing_min_mm=tuple(float(v) for v in sp.min(axis=0)) if len(sp) else (),
        spacing_median_mm=tuple(float(v) for v in np.median(sp, axis=0)) if len(sp) else (),
        spacing_max_mm=tuple(float(v) for v in sp.max(axis=0)) if len(sp) else (),
        class_names=ds.class_names,
        class_frequency=freq,
        image_label_counts={n: dict(sorted(c.items())) for n, c in label_counts.items()},
        class_pairwise_dice=per_class,
        mean_pairwise_dice=float(np.mean(fg)) if fg else float("nan"),
        pair_dice=pair,
        num_compared_cases=compared,
        min_pairwise_dice=min(every) if every else float("nan"),
    )


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
