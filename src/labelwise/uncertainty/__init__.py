"""Uncertainty from agreement between predictions, and pseudo-label selection (FLARE22 recipe).

:func:`agreement_map` gives a voxel map, :func:`certainty` / :func:`chunk_certainty` the mean per-class IoU of
each prediction to the plurality vote (empty/empty = 1), and :func:`select_chunks` / :func:`select_by_scores`
keep units at or above a threshold (0.9 by default), from certainty or from an external quality score.
"""

from __future__ import annotations

from labelwise.uncertainty.agreement import (
    ChunkCertainty,
    agreement_map,
    certainty,
    chunk_certainty,
    class_iou,
    plurality_vote,
)
from labelwise.uncertainty.pseudo import PSEUDO_RATER, REPORT_NAME, PseudoLabelReport, write_pseudo_labels
from labelwise.uncertainty.selection import (
    DEFAULT_THRESHOLD,
    Decision,
    kept_slices,
    load_quality_scores,
    select_by_scores,
    select_chunks,
)

__all__ = [
    "DEFAULT_THRESHOLD",
    "PSEUDO_RATER",
    "REPORT_NAME",
    "ChunkCertainty",
    "Decision",
    "PseudoLabelReport",
    "agreement_map",
    "certainty",
    "chunk_certainty",
    "class_iou",
    "kept_slices",
    "load_quality_scores",
    "plurality_vote",
    "select_by_scores",
    "select_chunks",
    "write_pseudo_labels",
]
