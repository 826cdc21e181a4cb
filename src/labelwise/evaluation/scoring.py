"""Per-case scoring: arrays of one case in, one row per class x reference out, driven by name -> function tables.

Each metric name maps to the one function that computes it, in a table per kind of input:

* :data:`COUNTS_METRICS`: from the one-vs-rest confusion counts of a class against a hard reference (each rater
  and the raters' strict majority, :func:`labelwise.labels.strict_majority`);
* :data:`SURFACE_METRICS`: from the surface distances of the same pair, per case (in 3D for 3D cases: a slice
  subset is scored at its slices' true positions, see :func:`_surface_values`);
* :data:`PER_SLICE_METRICS`: Dice and the surface metrics per 2D slice, averaged over the slices (explicit
  ``*_per_slice`` names, never a default);
* :data:`SOFT_METRICS`: from the predicted probability of a class against the mean of the raters' masks;
* :data:`SAMPLE_METRICS`: from the prediction's samples (or its per-rater maps) against the set of raters
  (Dice_max / Dice_match with as many candidates as raters, :data:`CANDIDATES_COLUMN`);
* ``personal_dice``: the index-aligned Dice of the predicted map for rater r against rater r, on r's row.

The rules (references, empty masks, slices) are documented in :mod:`labelwise.evaluation` and ``docs/metrics.md``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwise.errors import ConfigError, DataError
from labelwise.evaluation.slices import SliceSelection
from labelwise.labels import strict_majority
from labelwise.metrics.calibration import brier, ece, nll
from labelwise.metrics.conventions import EmptyMode
from labelwise.metrics.multirater import (
    DEFAULT_SOFT_DICE_THRESHOLDS,
    SelfPairs,
    dice_match,
    dice_max,
    ged,
    n_candidates,
    per_rater_dice,
    sample_diversity,
    soft_dice,
)
from labelwise.metrics.overlap import OverlapMetric, overlap_from_counts, per_class_confusion
from labelwise.metrics.surface import SurfaceDistances, SurfaceMode, surface_distances

__all__ = [
    "ALL_METRICS",
    "CANDIDATES_COLUMN",
    "COUNTS_METRICS",
    "DEFAULT_METRICS",
    "ID_COLUMNS",
    "MAJORITY",
    "MEAN_OF_RATERS",
    "PERSONAL_DICE",
    "PER_SLICE_METRICS",
    "SAMPLE_METRICS",
    "SLICES_COLUMN",
    "SOFT_METRICS",
    "SURFACE_METRICS",
    "CaseArrays",
    "CaseResult",
    "EvaluationConfig",
    "score_case",
]

MAJORITY = "majority"
"""Reference name of the raters' strict majority (hard metrics)."""
MEAN_OF_RATERS = "mean_of_raters"
"""Reference name of the mean of the raters' masks (soft and multi-rater metrics)."""
ID_COLUMNS = ("case", "class", "reference", "pred_voxels", "ref_voxels")
"""Columns of a row that identify it (every other column is a metric)."""
SLICES_COLUMN = "slices"
"""Column with the scored slices (``--slices`` runs only)."""
PERSONAL_DICE = "personal_dice"
CANDIDATES_COLUMN = "dice_candidates"
"""Column with the number of samples that competed in ``dice_max`` / ``dice_match`` (``min(S, R)``)."""


# ------------------------------------------------------------------------------------------------ the tables

CountsMetric = Callable[[NDArray[np.int64], "EvaluationConfig", float], float]
"""``fn(counts (4,) tp/fp/fn/tn, config, voxel volume in mm^3) -> value``."""
SurfaceMetric = Callable[[SurfaceDistances, "EvaluationConfig"], float]
SoftMetric = Callable[[NDArray[np.floating[Any]], NDArray[np.bool_], NDArray[np.float64], "EvaluationConfig"], float]
"""``fn(probability (*spatial), rater masks (R, *spatial), mean of raters (*spatial), config) -> value``."""
SampleMetric = Callable[[NDArray[np.bool_], NDArray[np.bool_], "EvaluationConfig"], float | None]
"""``fn(sample masks (S, *spatial), rater masks (R, *spatial), config) -> value, or None when undefined``."""


def _overlap(name: OverlapMetric) -> CountsMetric:
    def score(counts: NDArray[np.int64], cfg: EvaluationConfig, voxel_mm3: float) -> float:
        return float(overlap_from_counts(counts, name, empty=cfg.empty))

    return score


COUNTS_METRICS: dict[str, CountsMetric] = {
    "dice": _overlap("dice"),
    "iou": _overlap("iou"),
    "precision": _overlap("precision"),
    "sensitivity": _overlap("sensitivity"),
    "specificity": _overlap("specificity"),
    "accuracy": _overlap("accuracy"),
    "volume_similarity": _overlap("volume_similarity"),
    "abs_volume_difference": lambda counts, cfg, voxel_mm3: float(
        overlap_from_counts(counts, "abs_volume_difference", voxel_volume_mm3=voxel_mm3)
    ),
}
SURFACE_METRICS: dict[str, SurfaceMetric] = {
    "hd": lambda sd, cfg: sd.hausdorff(empty=cfg.empty),
    "hd95": lambda sd, cfg: sd.hausdorff_percentile(cfg.percentile, empty=cfg.empty),
    "assd": lambda sd, cfg: sd.assd(empty=cfg.empty),
    "masd": lambda sd, cfg: sd.masd(empty=cfg.empty),
    "nsd": lambda sd, cfg: sd.nsd(cfg.tolerance_mm, empty=cfg.empty),
}
PER_SLICE_SUFFIX = "_per_slice"
PER_SLICE_METRICS: tuple[str, ...] = tuple(f"{m}{PER_SLICE_SUFFIX}" for m in ("dice", *SURFACE_METRICS))
"""``dice_per_slice``, ``hd_per_slice``, ..., ``nsd_per_slice``: the metric on each 2D slice of a 3D case (in-plane
spacing) along the slice axis (``--slice-axis`` with ``--slices``, else the last axis), averaged over the slices
with nan slices left out; a slice where both masks are empty scores by the empty-mask convention (Dice and NSD 1
under ``labelwise``), so empty slices pull the mean up. Not computed for 2D cases."""
SOFT_METRICS: dict[str, SoftMetric] = {
    "soft_dice": lambda prob, rmask, ref, cfg: soft_dice(
        prob, rmask, thresholds=cfg.soft_dice_thresholds, empty=cfg.empty
    ),
    "ece": lambda prob, rmask, ref, cfg: ece(prob, ref, n_bins=cfg.ece_bins, mode="confidence"),
    "ece_fg": lambda prob, rmask, ref, cfg: ece(prob, ref, n_bins=cfg.ece_bins, mode="foreground"),
    "brier": lambda prob, rmask, ref, cfg: brier(prob, ref),
    "nll": lambda prob, rmask, ref, cfg: nll(prob, ref),
}
SAMPLE_METRICS: dict[str, SampleMetric] = {
    "ged": lambda smask, rmask, cfg: ged(smask, rmask, self_pairs=cfg.ged_self_pairs),
    "dice_max": lambda smask, rmask, cfg: dice_max(smask, rmask, candidates="equal", empty=cfg.empty),
    "dice_match": lambda smask, rmask, cfg: dice_match(smask, rmask, candidates="equal", empty=cfg.empty),
    "dice_max_all": lambda smask, rmask, cfg: dice_max(smask, rmask, candidates="all", empty=cfg.empty),
    "dice_match_all": lambda smask, rmask, cfg: dice_match(smask, rmask, candidates="all", empty=cfg.empty),
    "sample_diversity": lambda smask, rmask, cfg: sample_diversity(smask) if smask.shape[0] >= 2 else None,
}

ALL_METRICS: tuple[str, ...] = (
    *COUNTS_METRICS,
    *SURFACE_METRICS,
    *PER_SLICE_METRICS,
    *SOFT_METRICS,
    *SAMPLE_METRICS,
    PERSONAL_DICE,
)
"""Every metric name, in the column order of ``per_case.csv``."""
_ON_REQUEST = ("specificity", "accuracy", *PER_SLICE_METRICS, "dice_max_all", "dice_match_all")
DEFAULT_METRICS: tuple[str, ...] = tuple(m for m in ALL_METRICS if m not in _ON_REQUEST)
"""The metrics of a plain ``labelwise evaluate``: all but specificity, accuracy, the ``*_per_slice`` variants and
``dice_max_all`` / ``dice_match_all`` (ask for those by name)."""


# ------------------------------------------------------------------------------------------------ settings


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one evaluation run (saved into ``summary.json``).

    Attributes:
        metrics: Metric names (subset of :data:`ALL_METRICS`); ``hd95`` means the ``percentile`` HD.
        tolerance_mm: NSD tolerance (mm).
        percentile: Percentile of the ``hd95`` column (directed max, MONAI convention).
        empty: Empty-mask convention (see :mod:`labelwise.metrics.conventions`).
        surface: Surface definition of the surface metrics: ``"voxels"`` (boundary voxels, MONAI) or
            ``"surfels"`` (area-weighted surface elements, DeepMind surface-distance, as FLARE computes NSD); see
            ``docs/metrics.md``.
        soft_dice_thresholds: Thresholds of soft Dice (``>`` comparison).
        ece_bins: Equal-width bins over [0, 1] of both ECEs (``ece``: confidence, Guo et al.; ``ece_fg``:
            foreground probability).
        ged_self_pairs: GED within-set pairs, ``"include"`` or ``"exclude"``.
        n_bootstrap: Bootstrap resamples for the 95% confidence interval of each mean.
        seed: Seed of the bootstrap.
        classes: Score only these foreground classes (names); None: every foreground class of the prediction.
        slices: Score only these slices of 3D cases (see :class:`SliceSelection`); None: the whole volume, or
            the labelled slices of a partially labelled one. Either way surface metrics are per 3D case, the
            scored slices at their true positions (see :func:`_surface_values`).

    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    tolerance_mm: float = 1.0
    percentile: float = 95.0
    empty: EmptyMode = "labelwise"
    surface: SurfaceMode = "voxels"
    soft_dice_thresholds: tuple[float, ...] = DEFAULT_SOFT_DICE_THRESHOLDS
    ece_bins: int = 15
    ged_self_pairs: SelfPairs = "include"
    n_bootstrap: int = 1000
    seed: int = 0
    classes: tuple[str, ...] | None = None
    slices: SliceSelection | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.metrics if m not in ALL_METRICS]
        if unknown:
            raise ConfigError(f"unknown metric(s) {unknown}; available: {', '.join(ALL_METRICS)}")
        if self.tolerance_mm < 0 or not math.isfinite(self.tolerance_mm):
            raise ConfigError(f"tolerance_mm must be finite and >= 0, got {self.tolerance_mm}")
        if not 0 <= self.percentile <= 100:
            raise ConfigError(f"percentile must lie in [0, 100], got {self.percentile}")
        if self.surface not in ("voxels", "surfels"):
            raise ConfigError(f"surface must be 'voxels' or 'surfels', got {self.surface!r}")
        if self.ged_self_pairs not in ("include", "exclude"):
            raise ConfigError(f"ged_self_pairs must be 'include' or 'exclude', got {self.ged_self_pairs!r}")


@dataclass
class CaseResult:
    """Rows of one case (``case``, ``class``, ``reference`` and metric columns) or the reason it failed."""

    case_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    slices: tuple[int, ...] | None = None


@dataclass(frozen=True)
class CaseArrays:
    """One case ready to score: classes matched to the prediction's, slices already selected.

    Attributes:
        case_id: Case id (the ``case`` column).
        label: ``(*spatial)`` integer predicted label map, values in ``[0, len(class_names))``.
        probs: ``(C, *spatial)`` predicted probabilities (classes beyond C get no soft metrics).
        samples: ``(S, *spatial)`` integer predicted samples, or None.
        pred_raters: ``(P, *spatial)`` integer predicted per-rater maps, or None.
        pred_rater_ids: Rater ids of ``pred_raters``, in order.
        raters: ``(R, *spatial)`` integer rater label maps (the references), R >= 1.
        rater_ids: Rater ids of ``raters``, in order.
        class_names: Class names, index 0 background.
        classes: Foreground class indices to score.
        spacing_mm: Voxel size in mm.
        slice_axis: Axis along which slices were gathered (``--slices``, or the labelled slices of a partially
            labelled case), and the axis of the ``*_per_slice`` metrics; None: the last axis for those.
        slice_positions: Indices, in the case's volume along ``slice_axis``, of the gathered slices (increasing);
            None: the arrays are the whole volume.

    """

    case_id: str
    label: NDArray[np.integer[Any]]
    probs: NDArray[np.floating[Any]]
    samples: NDArray[np.integer[Any]] | None
    pred_raters: NDArray[np.integer[Any]] | None
    pred_rater_ids: tuple[str, ...]
    raters: NDArray[np.integer[Any]]
    rater_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    classes: tuple[int, ...]
    spacing_mm: tuple[float, ...]
    slice_axis: int | None = None
    slice_positions: tuple[int, ...] | None = None


# ------------------------------------------------------------------------------------------------ scoring


def _mean_over_slices(values: list[float]) -> float:
    """Mean of per-slice values without the nan ones (undefined); nan if all are nan; inf if any is inf."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _at_true_positions(mask: NDArray[np.bool_], axis: int, positions: tuple[int, ...] | None) -> NDArray[np.bool_]:
    """Put gathered slices back at their positions along ``axis`` (the slices between them blank).

    Positions that run contiguously upwards (or None) return ``mask`` itself: the slices already are a volume.
    """
    if positions is None or list(positions) == list(range(positions[0], positions[0] + len(positions))):
        return mask
    if len(set(positions)) != len(positions):
        raise DataError(f"slice positions repeat a slice: {positions}")
    pos = np.asarray(positions, dtype=np.int64) - min(positions)
    shape = list(mask.shape)
    shape[axis] = int(pos.max()) + 1
    out = np.zeros(shape, dtype=bool)
    index: list[Any] = [slice(None)] * mask.ndim
    index[axis] = pos
    out[tuple(index)] = mask
    return out


def _surface_values(
    pred: NDArray[np.bool_], ref: NDArray[np.bool_], case: CaseArrays, cfg: EvaluationConfig
) -> dict[str, float]:
    """Surface metrics of one pair per case (3D for 3D cases), FLARE's per-case scoring.

    Gathered slices (a slice subset, or the labelled slices of a partially labelled volume) are placed at their
    true positions in the volume, with the slices between them left blank (background in both masks): distances
    are real 3D distances with the case's spacing, slices that are not neighbours in the volume are never
    treated as neighbours, and a blank slice adds no voxel and no boundary. A foreground voxel next to a blank
    slice counts as boundary, as at the image border. FLARE scores whole volumes; for slice-sparse labels it has
    no rule, and this is the choice that keeps its per-case 3D definition.
    """
    want = [name for name in SURFACE_METRICS if name in cfg.metrics]
    if not want:
        return {}
    if case.slice_positions is not None and case.slice_axis is not None:
        pred = _at_true_positions(pred, case.slice_axis, case.slice_positions)
        ref = _at_true_positions(ref, case.slice_axis, case.slice_positions)
    sd = surface_distances(pred, ref, case.spacing_mm, surface=cfg.surface)
    return {name: SURFACE_METRICS[name](sd, cfg) for name in want}


def _per_slice_values(
    pred: NDArray[np.bool_], ref: NDArray[np.bool_], case: CaseArrays, cfg: EvaluationConfig
) -> dict[str, float]:
    """The requested ``*_per_slice`` metrics: per 2D slice (in-plane spacing), mean over slices without nan."""
    want = [name for name in PER_SLICE_METRICS if name in cfg.metrics]
    if not want or pred.ndim != 3:
        return {}
    axis = case.slice_axis if case.slice_axis is not None else pred.ndim - 1
    out: dict[str, float] = {}
    if "dice_per_slice" in want:
        p = np.moveaxis(pred, axis, 0).reshape(pred.shape[axis], -1)
        r = np.moveaxis(ref, axis, 0).reshape(ref.shape[axis], -1)
        tp = np.count_nonzero(p & r, axis=1)
        fp = np.count_nonzero(p & ~r, axis=1)
        fn = np.count_nonzero(~p & r, axis=1)
        counts = np.stack([tp, fp, fn, p.shape[1] - tp - fp - fn], axis=-1).astype(np.int64)
        out["dice_per_slice"] = _mean_over_slices(list(overlap_from_counts(counts, "dice", empty=cfg.empty)))
    surface = [name.removesuffix(PER_SLICE_SUFFIX) for name in want if name != "dice_per_slice"]
    if surface:
        in_plane = tuple(s for i, s in enumerate(case.spacing_mm) if i != axis)
        per_slice = []
        for i in range(pred.shape[axis]):
            sd = surface_distances(np.take(pred, i, axis), np.take(ref, i, axis), in_plane, surface=cfg.surface)
            per_slice.append({m: SURFACE_METRICS[m](sd, cfg) for m in surface})
        for m in surface:
            out[f"{m}{PER_SLICE_SUFFIX}"] = _mean_over_slices([d[m] for d in per_slice])
    return out


def _hard_rows(
    case: CaseArrays, refs: dict[str, NDArray[np.integer[Any]]], cfg: EvaluationConfig
) -> list[dict[str, Any]]:
    """One row per reference x class: counts metrics, surface metrics per case, then the per-slice variants."""
    want = set(cfg.metrics)
    voxel = float(np.prod(case.spacing_mm))
    rows = []
    for ref_name, ref in refs.items():
        counts = per_class_confusion(case.label, ref, list(case.classes))
        for i, c in enumerate(case.classes):
            row: dict[str, Any] = {"case": case.case_id, "class": case.class_names[c], "reference": ref_name}
            tp, fp, fn = (int(v) for v in counts[i, :3])
            row["pred_voxels"], row["ref_voxels"] = tp + fp, tp + fn
            for name, metric in COUNTS_METRICS.items():
                if name in want:
                    row[name] = metric(counts[i], cfg, voxel)
            if want & {*SURFACE_METRICS, *PER_SLICE_METRICS}:
                pm, rm = case.label == c, ref == c
                row.update(_surface_values(pm, rm, case, cfg))
                row.update(_per_slice_values(pm, rm, case, cfg))
            rows.append(row)
    return rows


def _personal_dice(
    case: CaseArrays, c: int, by_ref: dict[tuple[str, str], dict[str, Any]], cfg: EvaluationConfig
) -> None:
    """Write ``personal_dice`` of class ``c`` on each rater's row (the raters the prediction has a map for)."""
    if case.pred_raters is None or not case.pred_rater_ids:
        return
    pidx = {rid: i for i, rid in enumerate(case.pred_rater_ids)}
    common = [rid for rid in case.rater_ids if rid in pidx and pidx[rid] < case.pred_raters.shape[0]]
    if not common:
        return
    pm = np.stack([case.pred_raters[pidx[rid]] == c for rid in common])
    rm = np.stack([case.raters[case.rater_ids.index(rid)] == c for rid in common])
    for rid, v in zip(common, per_rater_dice(pm, rm, empty=cfg.empty), strict=True):
        by_ref[(case.class_names[c], rid)][PERSONAL_DICE] = float(v)


def score_case(case: CaseArrays, cfg: EvaluationConfig) -> list[dict[str, Any]]:
    """Score one case against each rater, their strict majority and the mean of raters.

    Args:
        case: The case's arrays (see :class:`CaseArrays`).
        cfg: Which metrics and their settings.

    Returns:
        Rows (dicts): one per hard reference x class (ids, voxel counts, counts and surface metrics), then one
        ``mean_of_raters`` row per class with its soft and sample metrics when any applies (and
        :data:`CANDIDATES_COLUMN` when ``dice_max`` or ``dice_match`` is scored). ``personal_dice`` lands on
        the rater rows.

    """
    raters = case.raters
    refs: dict[str, NDArray[np.integer[Any]]] = {rid: raters[i] for i, rid in enumerate(case.rater_ids)}
    refs[MAJORITY] = strict_majority(raters, len(case.class_names))
    rows = _hard_rows(case, refs, cfg)
    want = set(cfg.metrics)
    sample_set = case.samples if case.samples is not None else case.pred_raters
    by_ref = {(r["class"], r["reference"]): r for r in rows}
    for c in case.classes:
        rmask = raters == c
        soft: dict[str, Any] = {"case": case.case_id, "class": case.class_names[c], "reference": MEAN_OF_RATERS}
        if c < case.probs.shape[0]:
            prob = np.clip(case.probs[c], 0.0, 1.0)
            ref_soft = rmask.mean(axis=0, dtype=np.float64)
            for name, soft_metric in SOFT_METRICS.items():
                if name in want:
                    soft[name] = soft_metric(prob, rmask, ref_soft, cfg)
        if sample_set is not None:
            smask = sample_set == c
            for name, sample_metric in SAMPLE_METRICS.items():
                if name in want and (value := sample_metric(smask, rmask, cfg)) is not None:
                    soft[name] = value
            if want & {"dice_max", "dice_match"}:
                soft[CANDIDATES_COLUMN] = n_candidates(smask.shape[0], rmask.shape[0], "equal")
        if PERSONAL_DICE in want:
            _personal_dice(case, c, by_ref, cfg)
        if len(soft) > 3:
            rows.append(soft)
    return rows
