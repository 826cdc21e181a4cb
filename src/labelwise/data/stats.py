"""Dataset counts: cases, splits, raters per case, shapes, spacing, class frequencies, image-level labels.

:func:`dataset_counts` reads one case at a time. Partially labelled volumes are counted on their labelled slices
only (:func:`labelwise.data.slices.labelled_slice_indices`). Statistics that need metrics, such as inter-rater
agreement (``labelwise data stats``: :func:`labelwise.evaluation.dataset_stats`), are computed a floor up, in the
same single pass over the files, through the ``visit`` hook.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data.case import Case
from labelwise.data.dataset import Dataset
from labelwise.data.manifest import SPLITS
from labelwise.data.slices import labelled_slice_indices

__all__ = ["CaseVisitor", "DatasetCounts", "dataset_counts"]

logger = logging.getLogger(__name__)

CaseVisitor = Callable[[Case, np.ndarray, np.ndarray], None]
"""``visit(case, labels, present)``: ``labels`` ``(R, *spatial)`` the rater stack in the dataset's rater order
(restricted to the labelled slices of a partially labelled volume), ``present`` ``(R,)`` bool."""


@dataclass(frozen=True)
class DatasetCounts:
    """Counts of a dataset.

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

    def to_json(self) -> dict[str, Any]:
        """JSON-ready dict (tuple keys become ``"AxBxC"`` strings)."""
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
        }


def _no_track(items: Iterable[Any], description: str, total: int | None = None) -> Iterator[Any]:
    yield from items


def dataset_counts(
    root: str | Path | Dataset,
    track: Callable[[Iterable[Any], str, int | None], Iterable[Any]] | None = None,
    visit: CaseVisitor | None = None,
) -> DatasetCounts:
    """Compute :class:`DatasetCounts`, reading one case at a time.

    Args:
        root: Dataset folder or an open :class:`~labelwise.data.Dataset`.
        track: Optional progress wrapper ``track(items, description, total)`` over the cases.
        visit: Optional hook called once per case with its rater stack (see :data:`CaseVisitor`), for statistics
            computed by the caller in the same pass.

    Raises:
        DataError: an unreadable case (run ``labelwise data check`` to list every problem).

    """
    ds = root if isinstance(root, Dataset) else Dataset(root)
    rater_ids = ds.rater_ids
    k = len(ds.class_names)
    voxels = np.zeros(k, dtype=np.int64)
    shapes: Counter[tuple[int, ...]] = Counter()
    raters_per_case: Counter[int] = Counter()
    spacings = []
    for case in (track or _no_track)(ds.cases(), f"reading {ds.name}", len(ds)):
        shapes[case.spatial_shape] += 1
        raters_per_case[case.num_raters] += 1
        spacings.append(case.spacing_mm)
        labels, present = case.rater_stack(rater_ids)
        if case.labelled_slices is not None:
            labels = labels[..., list(labelled_slice_indices(case))]
        for r in np.flatnonzero(present):
            voxels += np.bincount(labels[r].ravel().clip(0, k - 1), minlength=k)[:k]
        if visit is not None:
            visit(case, labels, present)
    total = voxels.sum()
    freq = tuple(float(v) / total if total else 0.0 for v in voxels)
    sp = np.asarray(spacings, dtype=np.float64) if spacings else np.zeros((0, ds.spatial_dims))
    split_counts = {s: len(ds.split_ids(s)) for s in SPLITS}
    split_counts["none"] = len(ds) - sum(split_counts.values())
    label_counts: dict[str, dict[int, int]] = {}
    for rec in ds.manifest.cases:
        for name, value in rec.image_labels.items():
            label_counts.setdefault(name, {})
            label_counts[name][value] = label_counts[name].get(value, 0) + 1
    return DatasetCounts(
        name=ds.name,
        spatial_dims=ds.spatial_dims,
        num_cases=len(ds),
        split_counts=split_counts,
        num_raters=len(rater_ids),
        raters_per_case=dict(sorted(raters_per_case.items())),
        channels=ds.manifest.channels,
        shapes=dict(shapes.most_common()),
        spacing_min_mm=tuple(float(v) for v in sp.min(axis=0)) if len(sp) else (),
        spacing_median_mm=tuple(float(v) for v in np.median(sp, axis=0)) if len(sp) else (),
        spacing_max_mm=tuple(float(v) for v in sp.max(axis=0)) if len(sp) else (),
        class_names=ds.class_names,
        class_frequency=freq,
        image_label_counts={n: dict(sorted(c.items())) for n, c in label_counts.items()},
    )
