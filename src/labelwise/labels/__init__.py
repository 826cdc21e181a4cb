"""Rater fusion (majority vote, soft mean, STAPLE) and seeded, recorded label perturbations."""

from __future__ import annotations

from labelwise.labels.fusion import (
    FusionResult,
    FusionRule,
    StapleResult,
    TiePolicy,
    fuse,
    fusion_rules,
    majority_vote,
    soft_mean,
    staple,
    strict_majority,
)
from labelwise.labels.perturb import (
    Candidate,
    Perturbation,
    PerturbationKind,
    add_blobs,
    apply_perturbation,
    boundary_noise,
    class_swap,
    drop_components,
    erode_dilate,
    holes,
    random_perturbation,
    replay,
    sample_candidates,
    shift,
    truncate,
)
from labelwise.labels.targets import TargetKind, fused_target

__all__ = [
    "Candidate",
    "FusionResult",
    "FusionRule",
    "Perturbation",
    "PerturbationKind",
    "StapleResult",
    "TargetKind",
    "TiePolicy",
    "add_blobs",
    "apply_perturbation",
    "boundary_noise",
    "class_swap",
    "drop_components",
    "erode_dilate",
    "fuse",
    "fused_target",
    "fusion_rules",
    "holes",
    "majority_vote",
    "random_perturbation",
    "replay",
    "sample_candidates",
    "shift",
    "soft_mean",
    "staple",
    "strict_majority",
    "truncate",
]
