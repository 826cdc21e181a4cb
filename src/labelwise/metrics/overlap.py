"""Overlap metrics from confusion counts (two-stage: count once, derive every score).

Counts are stored as int64 arrays ``(..., 4)`` in the order ``(tp, fp, fn, tn)`` so one set of derivation
functions serves a single pair, a batch ``(B, 4)`` and per-class tables ``(K, 4)`` or ``(B, K, 4)``.

Example:
    >>> import numpy as np
    >>> pred = np.array([1, 1, 0, 0], bool); target = np.array([1, 0, 1, 0], bool)
    >>> confusion(pred, target)
    Confusion(tp=1, fp=1, fn=1, tn=1)
    >>> dice(pred, target)
    0.5
    >>> float(dice(np.zeros(3, bool), np.zeros(3, bool), empty="nnunet"))
    nan

"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import ConfigError, DataError
from labelwise.metrics._checks import as_masks_pair, check_finite
from labelwise.metrics._kernels import confusion_matrix_kernel, count_pair, count_rows
from labelwise.metrics.conventions import EmptyConvention, EmptyMode, resolve_convention

__all__ = [
    "OVERLAP_METRICS",
    "Confusion",
    "OverlapMetric",
    "accuracy",
    "batch_confusion",
    "confusion",
    "confusion_matrix",
    "dice",
    "iou",
    "overlap_from_counts",
    "per_class_confusion",
    "per_class_overlap",
    "precision",
    "sensitivity",
    "specificity",
    "volume_similarity",
]

OverlapMetric = Literal[
    "dice",
    "iou",
    "precision",
    "sensitivity",
    "specificity",
    "accuracy",
    "volume_similarity",
    "abs_volume_difference",
]
OVERLAP_METRICS: tuple[str, ...] = get_args(OverlapMetric)


@dataclass(frozen=True)
class Confusion:
    """Voxel counts of one prediction/reference pair.

    Attributes:
        tp: Voxels foreground in both.
        fp: Foreground in the prediction only.
        fn: Foreground in the reference only.
        tn: Background in both.

    """

    tp: int
    fp: int
    fn: int
    tn: int

    @property
    def counts(self) -> NDArray[np.int64]:
        """The counts as an int64 array ``(4,)`` ordered ``(tp, fp, fn, tn)``."""
        return np.array([self.tp, self.fp, self.fn, self.tn], dtype=np.int64)


def confusion(pred: ArrayLike, target: ArrayLike) -> Confusion:
    """Count tp, fp, fn, tn of two binary masks in one fused compiled pass.

    Args:
        pred: Prediction mask, any shape, bool (or numbers: nonzero is foreground).
        target: Reference mask, same shape.

    Returns:
        The :class:`Confusion` counts. Empty masks are fine (all counts well defined).

    Raises:
        DataError: Shapes differ, or a float input holds NaN/inf.

    """
    p, t = as_masks_pair(pred, target)
    sp, st, spt = count_pair(p, t)
    return Confusion(tp=spt, fp=sp - spt, fn=st - spt, tn=p.size - sp - st + spt)


def batch_confusion(pred: ArrayLike, target: ArrayLike) -> NDArray[np.int64]:
    """Per-sample counts of a batch of binary masks, in one compiled call.

    Args:
        pred: ``(B, *spatial)`` bool prediction masks.
        target: ``(B, *spatial)`` bool reference masks.

    Returns:
        ``(B, 4)`` int64 counts ``(tp, fp, fn, tn)``.

    """
    p, t = as_masks_pair(pred, target)
    if p.ndim < 1:
        raise DataError("batch_confusion needs a leading batch axis")
    b = p.shape[0]
    if b == 0:
        return np.zeros((0, 4), np.int64)
    c = count_rows(p, t)
    n = p.size // b
    sp, st, spt = c[:, 0], c[:, 1], c[:, 2]
    return np.stack([spt, sp - spt, st - spt, n - sp - st + spt], axis=1)


def confusion_matrix(pred_labels: ArrayLike, target_labels: ArrayLike, num_classes: int) -> NDArray[np.int64]:
    """Multi-class confusion matrix of two integer label maps, in one compiled pass.

    Args:
        pred_labels: ``(*spatial)`` integer label map with values in ``[0, num_classes)``.
        target_labels: ``(*spatial)`` integer label map, same shape and range.
        num_classes: Number of classes K (background included).

    Returns:
        ``(K, K)`` int64 matrix, ``cm[i, j]`` = voxels predicted ``i`` whose reference is ``j``.

    Raises:
        DataError: Shapes differ, labels are not integers or fall outside ``[0, K)``.

    """
    p = np.asarray(pred_labels)
    t = np.asarray(target_labels)
    if p.shape != t.shape:
        raise DataError(f"pred shape {p.shape} differs from target shape {t.shape}")
    for name, a in (("pred", p), ("target", t)):
        if a.dtype.kind == "f":
            check_finite(a, name)
            if not np.array_equal(a, np.round(a)):
                raise DataError(f"{name} label map holds non-integer values")
        elif a.dtype.kind not in "biu":
            raise DataError(f"{name} label map has unsupported dtype {a.dtype}")
        if a.size and (a.min() < 0 or a.max() >= num_classes):
            raise DataError(f"{name} labels span [{a.min()}, {a.max()}], outside [0, {num_classes})")
    if p.dtype != np.uint8 or t.dtype != np.uint8:
        dt = np.uint8 if num_classes <= 256 else np.int64
        p, t = p.astype(dt), t.astype(dt)
    return confusion_matrix_kernel(np.ascontiguousarray(p), np.ascontiguousarray(t), num_classes)


def per_class_confusion(
    pred_labels: ArrayLike, target_labels: ArrayLike, classes: Sequence[int] | int
) -> NDArray[np.int64]:
    """One-vs-rest counts per class of two label maps (from one confusion matrix).

    Args:
        pred_labels: ``(*spatial)`` integer label map.
        target_labels: ``(*spatial)`` integer label map, same shape.
        classes: Class labels to score, or K meaning ``1..K-1`` (foreground classes of a K-class map).

    Returns:
        ``(len(classes), 4)`` int64 counts ``(tp, fp, fn, tn)``.

    """
    cls = list(range(1, classes)) if isinstance(classes, int) else [int(c) for c in classes]
    p = np.asarray(pred_labels)
    t = np.asarray(target_labels)
    k = max([*cls, int(p.max(initial=0)), int(t.max(initial=0))]) + 1
    cm = confusion_matrix(p, t, k)
    n = int(cm.sum())
    out = np.zeros((len(cls), 4), dtype=np.int64)
    for i, c in enumerate(cls):
        tp = int(cm[c, c])
        fp = int(cm[c, :].sum()) - tp
        fn = int(cm[:, c].sum()) - tp
        out[i] = (tp, fp, fn, n - tp - fp - fn)
    return out


def per_class_overlap(
    pred_labels: ArrayLike,
    target_labels: ArrayLike,
    classes: Sequence[int] | int,
    metric: OverlapMetric = "dice",
    *,
    empty: EmptyMode | EmptyConvention = "labelwise",
) -> NDArray[np.float64]:
    """One-vs-rest overlap score per class of two label maps (one confusion matrix, then derivation).

    Args:
        pred_labels: ``(*spatial)`` integer label map.
        target_labels: ``(*spatial)`` integer label map, same shape.
        classes: Class labels to score, or K meaning ``1..K-1``.
        metric: Overlap score (see :func:`overlap_from_counts`).
        empty: Empty-mask convention (a class absent from both maps gets ``overlap_both_empty``).

    Returns:
        ``(len(classes),)`` float64 scores.

    """
    return overlap_from_counts(per_class_confusion(pred_labels, target_labels, classes), metric, empty=empty)


def _ratio(num: NDArray[np.float64], den: NDArray[np.float64], fill: NDArray[np.float64]) -> NDArray[np.float64]:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = num / den
    return np.where(den == 0, fill, r)


def overlap_from_counts(
    counts: ArrayLike,
    metric: OverlapMetric,
    *,
    empty: EmptyMode | EmptyConvention = "labelwise",
    voxel_volume_mm3: float = 1.0,
) -> NDArray[np.float64]:
    """Derive an overlap score from counts ``(..., 4)`` ordered ``(tp, fp, fn, tn)``.

    Definitions: Dice ``2tp/(2tp+fp+fn)``, IoU ``tp/(tp+fp+fn)``, precision ``tp/(tp+fp)``, sensitivity
    ``tp/(tp+fn)``, specificity ``tn/(tn+fp)``, accuracy ``(tp+tn)/N``, volume similarity
    ``1 - |fp-fn|/(2tp+fp+fn)``, absolute volume difference ``|fp-fn| * voxel_volume_mm3`` (mm^3, or mm^2 in 2D).

    Empty masks: when both masks are empty the score is ``convention.overlap_both_empty`` (absolute volume
    difference is 0); Dice/IoU with only the reference (prediction) empty give ``overlap_target_empty``
    (``overlap_pred_empty``); any other zero denominator (e.g. precision of an empty prediction against a
    non-empty reference) gives nan.

    Args:
        counts: int array ``(..., 4)``.
        metric: Which score.
        empty: Empty-mask convention name or object (see :mod:`labelwise.metrics.conventions`).
        voxel_volume_mm3: Volume (area in 2D) of one voxel, for ``abs_volume_difference``.

    Returns:
        float64 array of shape ``counts.shape[:-1]``.

    """
    c = np.asarray(counts, dtype=np.float64)
    if c.shape[-1:] != (4,):
        raise DataError(f"counts must have shape (..., 4), got {c.shape}")
    conv = resolve_convention(empty)
    tp, fp, fn, tn = c[..., 0], c[..., 1], c[..., 2], c[..., 3]
    both_empty = (tp + fp + fn) == 0
    nan = np.full(tp.shape, np.nan)
    fill_both = np.where(both_empty, conv.overlap_both_empty, nan)
    if metric in ("dice", "iou"):
        num = 2 * tp if metric == "dice" else tp
        den = 2 * tp + fp + fn if metric == "dice" else tp + fp + fn
        out = _ratio(num, den, fill_both)
        target_empty = (tp + fn == 0) & ~both_empty
        pred_empty = (tp + fp == 0) & ~both_empty
        out = np.where(target_empty, conv.overlap_target_empty, out)
        return np.where(pred_empty, conv.overlap_pred_empty, out)
    if metric == "precision":
        return _ratio(tp, tp + fp, fill_both)
    if metric == "sensitivity":
        return _ratio(tp, tp + fn, fill_both)
    if metric == "specificity":
        return _ratio(tn, tn + fp, np.where(fp == 0, conv.overlap_both_empty, nan))
    if metric == "accuracy":
        return _ratio(tp + tn, tp + fp + fn + tn, nan)
    if metric == "volume_similarity":
        return _ratio(2 * tp + fp + fn - np.abs(fp - fn), 2 * tp + fp + fn, fill_both)
    if metric == "abs_volume_difference":
        return np.abs(fp - fn) * float(voxel_volume_mm3)
    raise ConfigError(f"unknown overlap metric {metric!r}; choose one of {OVERLAP_METRICS}")


def _scalar(metric: OverlapMetric, pred: ArrayLike, target: ArrayLike, empty: EmptyMode | EmptyConvention) -> float:
    # scalar fast path (plain Python arithmetic) with the same rules as overlap_from_counts
    c = confusion(pred, target)
    tp, fp, fn = c.tp, c.fp, c.fn
    conv = resolve_convention(empty)
    if tp + fp + fn == 0 and metric in ("dice", "iou", "precision", "sensitivity", "volume_similarity"):
        return float(conv.overlap_both_empty)
    if metric in ("dice", "iou"):
        if tp + fn == 0:
            return float(conv.overlap_target_empty)
        if tp + fp == 0:
            return float(conv.overlap_pred_empty)
        return 2 * tp / (2 * tp + fp + fn) if metric == "dice" else tp / (tp + fp + fn)
    return float(overlap_from_counts(c.counts, metric, empty=conv))


def dice(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Dice coefficient ``2|P∩T| / (|P| + |T|)`` of two binary masks of any dimension.

    Args:
        pred: Prediction mask, any shape, bool (nonzero = foreground).
        target: Reference mask, same shape.
        empty: Empty-mask convention; ``"labelwise"`` gives 1.0 when both are empty, 0.0 when one is.

    Returns:
        Dice in [0, 1] (or the convention's value, possibly nan, for empty masks).

    """
    return _scalar("dice", pred, target, empty)


def iou(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Intersection over union (Jaccard) ``|P∩T| / |P∪T|``; empty masks as in :func:`dice`."""
    return _scalar("iou", pred, target, empty)


def precision(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Precision ``tp/(tp+fp)``; both empty -> convention value, empty prediction only -> nan."""
    return _scalar("precision", pred, target, empty)


def sensitivity(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Sensitivity (recall) ``tp/(tp+fn)``; both empty -> convention value, empty reference only -> nan."""
    return _scalar("sensitivity", pred, target, empty)


def specificity(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Specificity ``tn/(tn+fp)``; an all-foreground reference with fp = 0 gives the both-empty value."""
    return _scalar("specificity", pred, target, empty)


def accuracy(pred: ArrayLike, target: ArrayLike) -> float:
    """Voxel accuracy ``(tp+tn)/N``; nan for zero-size arrays."""
    return _scalar("accuracy", pred, target, "labelwise")


def volume_similarity(pred: ArrayLike, target: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> float:
    """Volume similarity ``1 - |fp-fn|/(2tp+fp+fn)``; both empty -> convention value."""
    return _scalar("volume_similarity", pred, target, empty)


def mean_foreground_dice(pred_labels: ArrayLike, target_labels: ArrayLike, num_classes: int) -> float:
    """Mean Dice over the foreground classes ``1..K-1`` present in either label map (the validation score).

    A class absent from both maps is left out of the mean (nnU-Net's convention); NaN when no foreground
    class is present at all.

    Example:
        >>> mean_foreground_dice([0, 1, 1, 2], [0, 1, 2, 2], 4)
        0.6666666666666666

    """
    d = per_class_overlap(pred_labels, target_labels, num_classes, "dice", empty="nnunet")
    return float(np.nanmean(d)) if np.isfinite(d).any() else float("nan")
