"""Training targets from a case's raters: the fused label a supervised network learns from.

Used by every method that trains on one label per case (``supervised``, ``cps``, the propagation reference).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from labelwise.data import Case
from labelwise.errors import DataError
from labelwise.labels.fusion import majority_vote, soft_mean

__all__ = ["TargetKind", "fused_target"]

TargetKind = Literal["majority", "mean", "rater"]


def fused_target(case: Case, target: TargetKind, num_classes: int, rater: str | None = None) -> np.ndarray | None:
    """The training target of one case as class probabilities.

    Args:
        case: The case (its raters ``(R, *spatial)``).
        target: ``"majority"`` (per-voxel majority of the raters present, ties to the lower class index, one-hot),
            ``"mean"`` (soft mean of the raters' one-hot maps) or ``"rater"`` (one rater's label, one-hot).
        num_classes: K, including background.
        rater: Rater id for ``"rater"``.

    Returns:
        ``(K, *spatial)`` float32 in [0, 1] summing to 1 over K, or None if the case has no usable label
        (no rater, or not the asked rater).

    Raises:
        DataError: a label value lies outside ``0..K-1``.

    Example:
        >>> raters = np.array([[[0, 1]], [[1, 1]]], dtype=np.int16)
        >>> case = Case("c", np.zeros((1, 1, 2)), (1.0, 1.0), np.eye(4), raters, rater_ids=("a", "b"))
        >>> fused_target(case, "majority", 2)[1].tolist(), fused_target(case, "mean", 2)[1].tolist()
        ([[0.0, 1.0]], [[0.5, 1.0]])

    """
    if case.num_raters == 0:
        return None
    if target == "rater":
        if rater not in case.rater_ids:
            return None
        maps = case.raters[[case.rater_ids.index(rater)]]
    else:
        maps = case.raters
    if int(maps.max()) >= num_classes or int(maps.min()) < 0:
        raise DataError(f"case {case.id}: label values outside 0..{num_classes - 1}")
    if target == "mean":
        return np.asarray(soft_mean(maps, num_classes=num_classes), dtype=np.float32)
    votes = majority_vote(maps, num_classes=num_classes, tie="lowest")  # ties go to the lower class index
    return np.asarray(np.arange(num_classes).reshape(-1, *([1] * votes.ndim)) == votes[None], dtype=np.float32)
