"""Segmentation metrics: overlap, surface, multi-rater, calibration and quality estimation (2D and 3D).

Functional core (``dice(pred, target)``) with two-stage derivations (counts or surface distances computed once)
and thin accumulator classes. Importing this package does not import torch. Empty-mask behaviour is selected by
``empty=`` (see :mod:`labelwise.metrics.conventions` and ``docs/metrics.md``).
"""

from __future__ import annotations

from labelwise.metrics.accumulate import CountsAccumulator, Dice, IoU, ValueAccumulator
from labelwise.metrics.calibration import CalibrationMode, ReliabilityData, brier, ece, nll, reliability
from labelwise.metrics.conventions import CONVENTIONS, EmptyConvention, EmptyMode, resolve_convention
from labelwise.metrics.multirater import (
    DEFAULT_SOFT_DICE_THRESHOLDS,
    dice_match,
    dice_max,
    fleiss_kappa,
    ged,
    pair_counts,
    pairwise_dice,
    pairwise_iou,
    per_rater_dice,
    sample_diversity,
    soft_dice,
)
from labelwise.metrics.overlap import (
    OVERLAP_METRICS,
    Confusion,
    accuracy,
    batch_confusion,
    confusion,
    confusion_matrix,
    dice,
    iou,
    mean_foreground_dice,
    overlap_from_counts,
    per_class_confusion,
    per_class_overlap,
    precision,
    sensitivity,
    specificity,
    volume_similarity,
)
from labelwise.metrics.quality import kendall, mae, pearson, quality_report, spearman, worst_case_recall
from labelwise.metrics.surface import (
    SurfaceDistances,
    assd,
    boundary_points,
    hausdorff,
    hausdorff_percentile,
    masd,
    nsd,
    surface_distances,
)

__all__ = [
    "CONVENTIONS",
    "DEFAULT_SOFT_DICE_THRESHOLDS",
    "OVERLAP_METRICS",
    "CalibrationMode",
    "Confusion",
    "CountsAccumulator",
    "Dice",
    "EmptyConvention",
    "EmptyMode",
    "IoU",
    "ReliabilityData",
    "SurfaceDistances",
    "ValueAccumulator",
    "accuracy",
    "assd",
    "batch_confusion",
    "boundary_points",
    "brier",
    "confusion",
    "confusion_matrix",
    "dice",
    "dice_match",
    "dice_max",
    "ece",
    "fleiss_kappa",
    "ged",
    "hausdorff",
    "hausdorff_percentile",
    "iou",
    "kendall",
    "mae",
    "masd",
    "mean_foreground_dice",
    "nll",
    "nsd",
    "overlap_from_counts",
    "pair_counts",
    "pairwise_dice",
    "pairwise_iou",
    "pearson",
    "per_class_confusion",
    "per_class_overlap",
    "per_rater_dice",
    "precision",
    "quality_report",
    "reliability",
    "resolve_convention",
    "sample_diversity",
    "sensitivity",
    "soft_dice",
    "spearman",
    "specificity",
    "surface_distances",
    "volume_similarity",
    "worst_case_recall",
]
