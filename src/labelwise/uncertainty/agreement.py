"""Agreement between several predictions of the same image: vote, voxel agreement map, per-class IoU certainty.

The predictions can be anything that labels the same voxels: the two networks of a CPS pair, several
propagation runs (different reference slices or models), test-time augmentations. Following the FLARE22
pseudo-labelling recipe (Huynh et al., "Semi-supervised organ segmentation with mask propagation refinement
and uncertainty estimation for data generation", FLARE22), a volume or chunk is *certain* when every run agrees
with the majority vote: certainty = mean over runs and foreground classes of IoU(run, vote), where a class that
is empty in both counts as IoU 1.

The vote here is a **plurality** vote (the class with most votes, ties to the lower class index), the FLARE
convention: :func:`labelwise.labels.majority_vote` with ``tie="lowest"`` applied to N predictions. The stricter
"more than half" vote used as an evaluation reference is :func:`labelwise.labels.strict_majority`. The IoU is
:func:`labelwise.metrics.per_class_overlap` under the ``"labelwise"`` empty-mask convention (empty/empty = 1).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from labelwise.errors import DataError
from labelwise.labels import majority_vote
from labelwise.metrics import per_class_overlap

__all__ = ["ChunkCertainty", "agreement_map", "certainty", "chunk_certainty", "class_iou", "plurality_vote"]


def _stack(labels: np.ndarray | Sequence[np.ndarray], num_classes: int | None) -> tuple[np.ndarray, int]:
    if isinstance(labels, np.ndarray):
        arr = labels
    else:
        shapes = {np.asarray(x).shape for x in labels}
        if len(shapes) != 1:
            raise DataError(f"predictions have different shapes: {sorted(shapes)}")
        arr = np.stack([np.asarray(x) for x in labels])
    if arr.ndim < 2 or arr.shape[0] < 1:
        raise DataError(f"expected (N, *spatial) label maps with N >= 1, got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.all(np.equal(np.mod(arr, 1), 0)):
            raise DataError("label maps must hold integer class indices")
        arr = arr.astype(np.int64)
    if arr.size and int(arr.min()) < 0:
        raise DataError(f"label maps hold negative values ({int(arr.min())})")
    k = int(arr.max()) + 1 if num_classes is None else int(num_classes)
    if arr.size and int(arr.max()) >= k:
        raise DataError(f"label value {int(arr.max())} is outside the {k} classes")
    return arr, max(k, 2)


def plurality_vote(labels: np.ndarray | Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Per-voxel most frequent class over N predictions (:func:`labelwise.labels.majority_vote`, ties to the lowest).

    Args:
        labels: ``(N, *spatial)`` integer label maps (or a list of N equally shaped maps).
        num_classes: K including background (default: max label + 1).

    Returns:
        ``(*spatial)`` int16 vote; ties go to the lower class index (background first).

    Example:
        >>> plurality_vote(np.array([[0, 1, 2, 2], [1, 1, 2, 1], [1, 0, 0, 0]])).tolist()
        [1, 1, 2, 0]

    """
    arr, k = _stack(labels, num_classes)
    return majority_vote(arr, num_classes=k, tie="lowest")


def agreement_map(labels: np.ndarray | Sequence[np.ndarray], num_classes: int | None = None) -> np.ndarray:
    """Fraction of the N predictions that agree with the plurality vote, per voxel.

    Args:
        labels: ``(N, *spatial)`` integer label maps.
        num_classes: K including background (default: max label + 1).

    Returns:
        ``(*spatial)`` float32 in ``[1/N, 1]`` (1 = unanimous). With N = 1 every voxel is 1.

    """
    arr, k = _stack(labels, num_classes)
    vote = plurality_vote(arr, k)
    return np.asarray((arr == vote[None]).mean(axis=0), dtype=np.float32)


def class_iou(a: np.ndarray, b: np.ndarray, num_classes: int) -> np.ndarray:
    """IoU of each foreground class between two label maps; a class empty in both gives 1.

    Args:
        a: ``(*spatial)`` integer label map.
        b: ``(*spatial)`` integer label map, same shape.
        num_classes: K including background.

    Returns:
        ``(K - 1,)`` float64 IoU of classes ``1..K-1`` in [0, 1].

    Example:
        >>> class_iou(np.array([1, 1, 0, 0]), np.array([1, 0, 0, 0]), 3).tolist()
        [0.5, 1.0]

    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise DataError(f"label maps have different shapes {a.shape} and {b.shape}")
    return per_class_overlap(a, b, num_classes, "iou", empty="labelwise")


def certainty(
    labels: np.ndarray | Sequence[np.ndarray], num_classes: int | None = None, vote: np.ndarray | None = None
) -> float:
    """Mean over predictions and foreground classes of IoU(prediction, vote); empty/empty counts as 1.

    Args:
        labels: ``(N, *spatial)`` integer label maps.
        num_classes: K including background (default: max label + 1).
        vote: Precomputed plurality vote ``(*spatial)`` (default: computed here).

    Returns:
        Certainty in [0, 1]; 1 when all predictions are identical (including all empty).

    """
    arr, k = _stack(labels, num_classes)
    v = plurality_vote(arr, k) if vote is None else np.asarray(vote)
    return float(np.mean([class_iou(x, v, k).mean() for x in arr]))


@dataclass(frozen=True)
class ChunkCertainty:
    """Certainty of one chunk of consecutive slices ``[start, stop)`` along the chunk axis."""

    start: int
    stop: int
    certainty: float


def chunk_certainty(
    labels: np.ndarray | Sequence[np.ndarray],
    num_classes: int | None = None,
    chunk_size: int | None = None,
    axis: int = -1,
) -> list[ChunkCertainty]:
    """Certainty (see :func:`certainty`) of consecutive chunks along ``axis``.

    Args:
        labels: ``(N, *spatial)`` integer label maps.
        num_classes: K including background (default: max label + 1).
        chunk_size: Slices per chunk along ``axis`` (the last chunk may be shorter); None: one chunk (the
            whole volume).
        axis: Spatial axis of the chunks (negative counts from the end; default the last, i.e. z).

    Returns:
        One :class:`ChunkCertainty` per chunk, in order.

    """
    arr, k = _stack(labels, num_classes)
    spatial_axis = axis if axis >= 0 else arr.ndim - 1 + axis
    if not 0 <= spatial_axis < arr.ndim - 1:
        raise DataError(f"axis {axis} is not a spatial axis of label maps with shape {arr.shape[1:]}")
    depth = arr.shape[1 + spatial_axis]
    size = depth if chunk_size is None else int(chunk_size)
    if size < 1:
        raise DataError(f"chunk_size must be >= 1, got {chunk_size}")
    vote = plurality_vote(arr, k)
    out = []
    for start in range(0, depth, size):
        stop = min(start + size, depth)
        sub = np.take(arr, np.arange(start, stop), axis=1 + spatial_axis)
        vsub = np.take(vote, np.arange(start, stop), axis=spatial_axis)
        out.append(ChunkCertainty(start, stop, certainty(sub, k, vsub)))
    return out
