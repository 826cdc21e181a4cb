"""Evaluate a prediction folder against a dataset: per-case table, summary statistics, failures.

References (also in ``docs/metrics.md``):

* Hard metrics (overlap, surface) are computed against **each rater** (reference = the rater id) and against the
  **majority** vote of the raters present (reference ``"majority"``: a voxel takes class c when more than half of
  the raters say c; otherwise background). With one rater the two coincide. Summaries headline ``"majority"``.
* Soft metrics (soft Dice, calibration) and multi-rater metrics (GED, Dice_max, Dice_match, sample diversity)
  use the set of raters; the soft reference is the **mean of the raters' masks** (reference
  ``"mean_of_raters"``). GED / Dice_max / Dice_match use the prediction's samples, or its per-rater maps when it
  has no samples. ``personal_dice`` is the index-aligned Dice of the predicted map for rater r (matched by
  rater id) against rater r, reported on rater r's row.
* Classes are scored one-vs-rest for every foreground class of the dataset.
* Partially labelled volumes (``Case.labelled_slices``) are scored on their labelled slices only.
* A :class:`SliceSelection` (``labelwise evaluate --slices``) scores a subset of the slices of 3D cases along one
  axis: overlap and soft metrics pool the voxels of the selected slices; surface metrics are computed in 2D on
  each selected slice (in-plane spacing) and averaged over the slices (the k-labelled-slice protocol of
  ``docs/semisupervised.md``).
* A prediction with a class subset (``predictions.json`` ``class_names``, e.g. a model trained with ``classes``)
  is scored on its own classes, matched to the dataset's by name; the other dataset classes count as background.

The runner is a library function (:func:`evaluate_folder`); ``labelwise evaluate`` is a thin CLI around it. Its
worker processes die with it: they are terminated when the runner is interrupted, and each one exits by itself
when the parent process is gone (killed), so no orphan keeps its memory.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import math
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from labelwise.errors import ConfigError, DataError
from labelwise.metrics.calibration import brier, ece, nll
from labelwise.metrics.conventions import EmptyMode
from labelwise.metrics.multirater import (
    DEFAULT_SOFT_DICE_THRESHOLDS,
    SelfPairs,
    dice_match,
    dice_max,
    ged,
    per_rater_dice,
    sample_diversity,
    soft_dice,
)
from labelwise.metrics.overlap import overlap_from_counts, per_class_confusion
from labelwise.metrics.surface import surface_distances

__all__ = [
    "ALL_METRICS",
    "DEFAULT_METRICS",
    "CaseResult",
    "EvaluationConfig",
    "EvaluationResult",
    "SliceSelection",
    "bootstrap_ci",
    "evaluate_case",
    "evaluate_folder",
    "format_slices",
    "majority_vote",
    "parse_slice_indices",
    "select_slices",
    "summarise",
    "write_outputs",
]

logger = logging.getLogger(__name__)

OVERLAP = ("dice", "iou", "precision", "sensitivity", "specificity", "accuracy", "volume_similarity")
VOLUME = ("abs_volume_difference",)
SURFACE = ("hd", "hd95", "assd", "masd", "nsd")
SOFT = ("soft_dice", "ece", "brier", "nll")
MULTI = ("ged", "dice_max", "dice_match", "sample_diversity", "personal_dice")
ALL_METRICS: tuple[str, ...] = OVERLAP + VOLUME + SURFACE + SOFT + MULTI
DEFAULT_METRICS: tuple[str, ...] = (
    "dice",
    "iou",
    "precision",
    "sensitivity",
    "volume_similarity",
    "abs_volume_difference",
    *SURFACE,
    *SOFT,
    *MULTI,
)
MAJORITY = "majority"
_ID_COLUMNS = ("case", "class", "reference", "pred_voxels", "ref_voxels")
MEAN_OF_RATERS = "mean_of_raters"
SLICES_COLUMN = "slices"


@dataclass(frozen=True)
class SliceSelection:
    """Which slices of each 3D case are scored (``labelwise evaluate --slices``).

    Overlap counts (DSC, IoU, ...) and soft metrics pool the voxels of the selected slices; surface metrics (HD,
    HD95, ASSD, MASD, NSD) are computed in 2D on each selected slice with the in-plane spacing and averaged over
    the slices (slices where a distance is undefined, nan, are left out of its mean).

    Attributes:
        mode: ``"labelled"``: the case's labelled slices (``labelled_slices``, or every slice of a fully labelled
            case); ``"indices"``: the explicit ``indices``.
        indices: Slice indices of mode ``"indices"`` (>= 0).
        exclude: Case id -> slices removed from the selection, e.g. the training slices of a run (held-out
            scoring); cases not listed lose nothing.
        axis: Spatial axis of the slices (0, 1 or 2); ``labelled`` mode and partially labelled cases need the
            last axis (2), the axis of ``labelled_slices``.
        spec: The text the selection was parsed from (recorded in ``summary.json``).

    """

    mode: Literal["labelled", "indices"] = "labelled"
    indices: tuple[int, ...] = ()
    exclude: dict[str, tuple[int, ...]] = field(default_factory=dict)
    axis: int = 2
    spec: str = "labelled"

    def __post_init__(self) -> None:
        if self.mode not in ("labelled", "indices"):
            raise ConfigError(f"slice selection mode must be 'labelled' or 'indices', got {self.mode!r}")
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"slice axis must be 0, 1 or 2 (a 3D spatial axis), got {self.axis}")
        if self.mode == "indices" and not self.indices:
            raise ConfigError("slice selection 'indices' needs at least one slice index")
        if any(z < 0 for z in self.indices):
            raise ConfigError(f"slice indices must be >= 0, got {[z for z in self.indices if z < 0]}")
        if self.mode == "labelled" and self.axis != 2:
            raise ConfigError("the labelled slices lie along the last axis (2); use explicit indices on another axis")


def parse_slice_indices(text: str) -> tuple[int, ...]:
    """Sorted unique indices from ``"82-86,90"`` (comma-separated integers and inclusive ``a-b`` ranges).

    Example:
        >>> parse_slice_indices("82-84,90,83")
        (82, 83, 84, 90)

    Raises:
        ConfigError: Empty text, a non-integer, a negative index or a descending range.

    """
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ConfigError(f"slice indices must be integers or ranges like 82-86, got {part!r}") from None
        if lo < 0 or hi < lo:
            raise ConfigError(f"bad slice range {part!r} (indices >= 0, ranges ascending)")
        out.update(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"no slice index in {text!r}")
    return tuple(sorted(out))


def format_slices(indices: Sequence[int]) -> str:
    """Compact text of sorted unique ``indices`` (inverse of :func:`parse_slice_indices`).

    Example:
        >>> format_slices([82, 83, 84, 90])
        '82-84,90'

    """
    zs = sorted(set(int(z) for z in indices))
    parts: list[str] = []
    i = 0
    while i < len(zs):
        j = i
        while j + 1 < len(zs) and zs[j + 1] == zs[j] + 1:
            j += 1
        parts.append(str(zs[i]) if i == j else f"{zs[i]}-{zs[j]}")
        i = j + 1
    return ",".join(parts)


def select_slices(
    selection: SliceSelection,
    case_id: str,
    shape: Sequence[int],
    labelled_slices: Sequence[int] | None,
    path: str | Path | None = None,
) -> tuple[int, ...]:
    """The slice indices of one case that ``selection`` scores.

    Args:
        selection: The selection.
        case_id: Case id (key of ``selection.exclude``).
        shape: Spatial shape ``(X, Y, Z)`` of the case.
        labelled_slices: The case's ``labelled_slices`` (last axis), or None when every slice is labelled.
        path: File named in errors (the prediction or label map).

    Returns:
        Sorted slice indices along ``selection.axis``.

    Raises:
        DataError: The case is not 3D, an index is out of range, an explicit index is not a labelled slice of a
            partially labelled case, or nothing is left after ``exclude``.

    """
    where = Path(path) if path is not None else None
    if len(shape) != 3:
        raise DataError(f"case {case_id}: a slice selection needs a 3D case, got shape {tuple(shape)}", where)
    depth = int(shape[selection.axis])
    if labelled_slices is not None and selection.axis != 2:
        raise DataError(
            f"case {case_id} is labelled on slices of the last axis only; cannot score slices along axis "
            f"{selection.axis}",
            where,
        )
    if selection.mode == "labelled":
        chosen = sorted(set(labelled_slices)) if labelled_slices is not None else list(range(depth))
    else:
        bad = [z for z in selection.indices if z >= depth]
        if bad:
            raise DataError(
                f"case {case_id}: slice index {bad[0]} out of range 0..{depth - 1} along axis {selection.axis}"
                + (f" ({len(bad)} indices out of range)" if len(bad) > 1 else ""),
                where,
            )
        chosen = list(selection.indices)
        if labelled_slices is not None:
            unlabelled = sorted(set(chosen) - set(labelled_slices))
            if unlabelled:
                raise DataError(
                    f"case {case_id}: slice(s) {format_slices(unlabelled)} carry no label "
                    f"(labelled slices: {format_slices(labelled_slices)})",
                    where,
                )
    drop = set(selection.exclude.get(case_id, ()))
    out = tuple(z for z in chosen if z not in drop)
    if not out:
        raise DataError(f"case {case_id}: no slice left to score (selection {selection.spec!r})", where)
    return out


@dataclass(frozen=True)
class EvaluationConfig:
    """Settings of one evaluation run (saved into ``summary.json``).

    Attributes:
        metrics: Metric names (subset of :data:`ALL_METRICS`); ``hd95`` means the ``percentile`` HD.
        tolerance_mm: NSD tolerance (mm).
        percentile: Percentile of the ``hd95`` column (directed max, MONAI convention).
        empty: Empty-mask convention (see :mod:`labelwise.metrics.conventions`).
        soft_dice_thresholds: Thresholds of soft Dice (``>`` comparison).
        ece_bins: Bins of the expected calibration error (confidence mode, Guo et al.).
        ged_self_pairs: GED within-set pairs, ``"include"`` or ``"exclude"``.
        n_bootstrap: Bootstrap resamples for the 95% confidence interval of each mean.
        seed: Seed of the bootstrap.
        classes: Score only these foreground classes (names); None: every foreground class of the prediction.
        slices: Score only these slices of 3D cases (see :class:`SliceSelection`); None: the whole volume, or
            the labelled slices of a partially labelled one (stacked, surface metrics in 3D).

    """

    metrics: tuple[str, ...] = DEFAULT_METRICS
    tolerance_mm: float = 1.0
    percentile: float = 95.0
    empty: EmptyMode = "labelwise"
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
        if self.ged_self_pairs not in ("include", "exclude"):
            raise ConfigError(f"ged_self_pairs must be 'include' or 'exclude', got {self.ged_self_pairs!r}")


@dataclass
class CaseResult:
    """Rows of one case (``case``, ``class``, ``reference`` and metric columns) or the reason it failed."""

    case_id: str
    rows: list[dict[str, Any]] = field(default_factory=list)
    error: str | None = None
    slices: tuple[int, ...] | None = None


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_folder` produced."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: dict[str, str]


def majority_vote(raters: NDArray[np.integer[Any]], num_classes: int) -> NDArray[np.int16]:
    """Fuse ``(R, *spatial)`` label maps: class c where more than R/2 raters say c, else background (0)."""
    r = np.asarray(raters)
    out = np.zeros(r.shape[1:], dtype=np.int16)
    half = r.shape[0] / 2.0
    for c in range(1, num_classes):
        out[(r == c).sum(axis=0) > half] = c
    return out


def _num(x: NDArray[np.float64] | float) -> float:
    return float(x)


def _mean_over_slices(values: list[float]) -> float:
    """Mean of per-slice values without the nan ones (undefined); nan if all are nan; inf if any is inf."""
    v = np.asarray(values, dtype=np.float64)
    v = v[~np.isnan(v)]
    return float(v.mean()) if v.size else float("nan")


def _surface_values(
    pred: NDArray[np.bool_], ref: NDArray[np.bool_], spacing: tuple[float, ...], cfg: EvaluationConfig
) -> dict[str, float]:
    want = set(cfg.metrics)
    sd = surface_distances(pred, ref, spacing)
    out: dict[str, float] = {}
    if "hd" in want:
        out["hd"] = sd.hausdorff(empty=cfg.empty)
    if "hd95" in want:
        out["hd95"] = sd.hausdorff_percentile(cfg.percentile, empty=cfg.empty)
    if "assd" in want:
        out["assd"] = sd.assd(empty=cfg.empty)
    if "masd" in want:
        out["masd"] = sd.masd(empty=cfg.empty)
    if "nsd" in want:
        out["nsd"] = sd.nsd(cfg.tolerance_mm, empty=cfg.empty)
    return out


def _hard_rows(
    case_id: str,
    pred: NDArray[np.integer[Any]],
    refs: dict[str, NDArray[np.integer[Any]]],
    class_names: Sequence[str],
    spacing: tuple[float, ...],
    cfg: EvaluationConfig,
    classes: Sequence[int] | None = None,
    slice_axis: int | None = None,
) -> list[dict[str, Any]]:
    """One row per reference x class; ``slice_axis`` set: surface metrics per 2D slice along it, averaged."""
    want = set(cfg.metrics)
    voxel = float(np.prod(spacing))
    classes = list(range(1, len(class_names))) if classes is None else list(classes)
    rows = []
    for ref_name, ref in refs.items():
        counts = per_class_confusion(pred, ref, classes)
        for i, c in enumerate(classes):
            row: dict[str, Any] = {"case": case_id, "class": class_names[c], "reference": ref_name}
            tp, fp, fn = (int(v) for v in counts[i, :3])
            row["pred_voxels"], row["ref_voxels"] = tp + fp, tp + fn
            for m in OVERLAP:
                if m in want:
                    row[m] = _num(overlap_from_counts(counts[i], m, empty=cfg.empty))  # type: ignore[arg-type]
            if "abs_volume_difference" in want:
                row["abs_volume_difference"] = _num(
                    overlap_from_counts(counts[i], "abs_volume_difference", voxel_volume_mm3=voxel)
                )
            if want & set(SURFACE):
                pm, rm = pred == c, ref == c
                if slice_axis is None:
                    row.update(_surface_values(pm, rm, spacing, cfg))
                else:
                    in_plane = tuple(s for i, s in enumerate(spacing) if i != slice_axis)
                    per_slice = [
                        _surface_values(np.take(pm, i, slice_axis), np.take(rm, i, slice_axis), in_plane, cfg)
                        for i in range(pm.shape[slice_axis])
                    ]
                    for m in per_slice[0] if per_slice else ():
                        row[m] = _mean_over_slices([d[m] for d in per_slice])
            rows.append(row)
    return rows


def evaluate_case(
    pred_dir: str | Path,
    data_root: str | Path,
    case_id: str,
    config: EvaluationConfig,
    pred_rater_ids: Sequence[str] = (),
    pred_class_names: Sequence[str] | None = None,
) -> CaseResult:
    """Score one case; any error (missing or unreadable prediction, shape mismatch) is returned, not raised.

    Args:
        pred_dir: Prediction folder (see :mod:`labelwise.io.predictions`).
        data_root: Dataset folder.
        case_id: Case to score.
        config: Evaluation settings.
        pred_rater_ids: Rater ids of the prediction's per-rater maps (from ``predictions.json``).
        pred_class_names: Class names of the prediction's labels (``predictions.json``; index 0 background),
            matched to the dataset's by name; None: the dataset's classes.

    Returns:
        :class:`CaseResult` with one row per class x reference, or ``error`` set.

    """
    try:
        names = None if pred_class_names is None else tuple(pred_class_names)
        return _evaluate_case(Path(pred_dir), Path(data_root), case_id, config, tuple(pred_rater_ids), names)
    except Exception as exc:  # one bad case must not stop the run; the reason is reported
        msg = str(exc) if isinstance(exc, DataError) else f"{type(exc).__name__}: {exc}"
        logger.info("case %s failed: %s", case_id, msg)
        return CaseResult(case_id, error=msg)


def _class_lut(dataset_names: Sequence[str], pred_names: Sequence[str], where: Path) -> NDArray[np.int16]:
    """Dataset label -> prediction label lookup table (dataset classes absent from the prediction -> 0)."""
    unknown = [n for n in pred_names[1:] if n not in dataset_names[1:]]
    if unknown or not pred_names:
        raise DataError(f"prediction classes {unknown or list(pred_names)} are not classes of the dataset", where)
    lut = np.zeros(len(dataset_names), dtype=np.int16)
    for i, n in enumerate(pred_names[1:], start=1):
        lut[list(dataset_names).index(n)] = i
    return lut


def _evaluate_case(
    pred_dir: Path,
    data_root: Path,
    case_id: str,
    cfg: EvaluationConfig,
    pred_rater_ids: tuple[str, ...],
    pred_class_names: tuple[str, ...] | None = None,
) -> CaseResult:
    from labelwise.data import Dataset
    from labelwise.io import read_prediction

    ds = Dataset(data_root)
    case = ds.load(case_id)
    if case.num_raters == 0:
        raise DataError(f"case {case_id} has no rater labels to evaluate against", ds.root)
    if not (pred_dir / f"{case_id}.nii.gz").exists():
        raise DataError("prediction file is missing", pred_dir / f"{case_id}.nii.gz")
    pred_file = pred_dir / f"{case_id}.nii.gz"
    pred = read_prediction(pred_dir, case_id, ds.spatial_dims)
    assert pred.label is not None
    if pred.label.shape != case.spatial_shape:
        raise DataError(f"prediction shape {pred.label.shape} differs from the case's {case.spatial_shape}", pred_file)
    raters = case.raters
    class_names = tuple(case.class_names)
    if pred_class_names is not None and tuple(pred_class_names) != class_names:
        raters = _class_lut(class_names, pred_class_names, pred_dir / "predictions.json")[raters]
        class_names = tuple(pred_class_names)
    k = len(class_names)
    scored = list(range(1, k))
    if cfg.classes is not None:
        missing = [n for n in cfg.classes if n not in class_names[1:]]
        if missing:
            raise DataError(f"classes {missing} are not foreground classes of the prediction {list(class_names)}")
        scored = [class_names.index(n) for n in cfg.classes]
    label = np.asarray(pred.label)
    if label.size and (label.min() < 0 or label.max() >= k):
        raise DataError(f"prediction labels span {label.min()}..{label.max()}, outside [0, {k})", pred_file)
    probs, samples, pred_raters = pred.probs, pred.samples, pred.raters
    chosen: tuple[int, ...] | None = None
    slice_axis: int | None = None
    if cfg.slices is not None:  # an explicit slice subset (pooled overlap, 2D surface metrics per slice)
        slice_axis = cfg.slices.axis
        chosen = select_slices(cfg.slices, case_id, case.spatial_shape, case.labelled_slices, pred_file)
        keep = np.asarray(chosen, dtype=np.int64)
        label = np.take(label, keep, axis=slice_axis)
        raters, probs = np.take(raters, keep, axis=slice_axis + 1), np.take(probs, keep, axis=slice_axis + 1)
        samples = None if samples is None else np.take(samples, keep, axis=slice_axis + 1)
        pred_raters = None if pred_raters is None else np.take(pred_raters, keep, axis=slice_axis + 1)
    elif case.labelled_slices is not None:  # labels are valid on these slices only (last axis): score just them
        keep = np.asarray(sorted(case.labelled_slices), dtype=np.int64)
        label, raters, probs = label[..., keep], raters[..., keep], probs[..., keep]
        samples = None if samples is None else samples[..., keep]
        pred_raters = None if pred_raters is None else pred_raters[..., keep]
    refs: dict[str, NDArray[np.integer[Any]]] = {rid: raters[i] for i, rid in enumerate(case.rater_ids)}
    refs[MAJORITY] = majority_vote(raters, k)
    spacing = tuple(float(s) for s in case.spacing_mm)
    rows = _hard_rows(case_id, label, refs, class_names, spacing, cfg, scored, slice_axis)
    want = set(cfg.metrics)
    sample_set = samples if samples is not None else pred_raters
    by_ref = {(r["class"], r["reference"]): r for r in rows}
    for c in scored:
        rmask = raters == c
        soft: dict[str, Any] = {"case": case_id, "class": class_names[c], "reference": MEAN_OF_RATERS}
        prob = np.clip(probs[c], 0.0, 1.0) if c < probs.shape[0] else None
        ref_soft = rmask.mean(axis=0, dtype=np.float64)
        if prob is not None:
            if "soft_dice" in want:
                soft["soft_dice"] = soft_dice(prob, rmask, thresholds=cfg.soft_dice_thresholds, empty=cfg.empty)
            if "ece" in want:
                soft["ece"] = ece(prob, ref_soft, n_bins=cfg.ece_bins)
            if "brier" in want:
                soft["brier"] = brier(prob, ref_soft)
            if "nll" in want:
                soft["nll"] = nll(prob, ref_soft)
        if sample_set is not None:
            smask = sample_set == c
            if "ged" in want:
                soft["ged"] = ged(smask, rmask, self_pairs=cfg.ged_self_pairs)
            if "dice_max" in want:
                soft["dice_max"] = dice_max(smask, rmask, empty=cfg.empty)
            if "dice_match" in want:
                soft["dice_match"] = dice_match(smask, rmask, empty=cfg.empty)
            if "sample_diversity" in want and smask.shape[0] >= 2:
                soft["sample_diversity"] = sample_diversity(smask)
        if pred_raters is not None and "personal_dice" in want and pred_rater_ids:
            pidx = {rid: i for i, rid in enumerate(pred_rater_ids)}
            common = [rid for rid in case.rater_ids if rid in pidx and pidx[rid] < pred_raters.shape[0]]
            if common:
                pm = np.stack([pred_raters[pidx[rid]] == c for rid in common])
                rm = np.stack([raters[case.rater_ids.index(rid)] == c for rid in common])
                for rid, v in zip(common, per_rater_dice(pm, rm, empty=cfg.empty), strict=True):
                    by_ref[(class_names[c], rid)]["personal_dice"] = float(v)
        if len(soft) > 3:
            rows.append(soft)
    if chosen is not None:
        text = format_slices(chosen)
        for row in rows:
            row[SLICES_COLUMN] = text
    return CaseResult(case_id, rows=rows, slices=chosen)


def bootstrap_ci(
    values: NDArray[np.float64], *, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of finite ``values`` (nan if fewer than 2)."""
    v = values[np.isfinite(values)]
    if v.size < 2 or n_bootstrap < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_bootstrap, v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def summarise(rows: Sequence[dict[str, Any]], *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per metric x class x reference: mean, std, median, 95% bootstrap CI, n (finite values), n_nan, n_inf.

    Statistics are over the finite values; nan (undefined, e.g. HD with one empty mask) and inf are counted.
    ``n_ref_empty`` counts rows whose reference mask is empty (scored by the empty-mask convention).
    """
    groups: dict[tuple[str, str, str], list[float]] = {}
    ref_empty: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.get("ref_voxels") == 0:
            ref_empty[(row["class"], row["reference"])] = ref_empty.get((row["class"], row["reference"]), 0) + 1
        for key, val in row.items():
            if key in _ID_COLUMNS or key == SLICES_COLUMN or val is None:
                continue
            groups.setdefault((key, row["class"], row["reference"]), []).append(float(val))
    out: dict[str, Any] = {}
    for (metric, cls, ref), vals in sorted(groups.items()):
        v = np.asarray(vals, dtype=np.float64)
        fin = v[np.isfinite(v)]
        lo, hi = bootstrap_ci(v, n_bootstrap=n_bootstrap, seed=seed)
        stats = {
            "mean": float(fin.mean()) if fin.size else None,
            "std": float(fin.std(ddof=1)) if fin.size > 1 else None,
            "median": float(np.median(fin)) if fin.size else None,
            "ci95_low": None if math.isnan(lo) else lo,
            "ci95_high": None if math.isnan(hi) else hi,
            "n": int(fin.size),
            "n_nan": int(np.isnan(v).sum()),
            "n_inf": int(np.isinf(v).sum()),
            "n_ref_empty": ref_empty.get((cls, ref), 0),
        }
        out.setdefault(metric, {}).setdefault(cls, {})[ref] = stats
    return out


def _worker_init(parent_pid: int) -> None:
    """Tie a worker process to its parent: it exits when the parent is gone and leaves Ctrl-C to the parent.

    Linux: ``PR_SET_PDEATHSIG`` kills the worker with the parent. Everywhere (and as a fallback): a daemon thread
    polls the parent pid twice a second.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="labelwise-parent-watch", daemon=True).start()


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel pending cases and terminate the worker processes now (not after their current case)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # stdlib has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def evaluate_folder(
    pred_dir: str | Path,
    data: str | Path,
    *,
    split: str | None = "test",
    config: EvaluationConfig | None = None,
    workers: int = 1,
    on_case_done: Callable[[str, str | None], None] | None = None,
) -> EvaluationResult:
    """Score every case of ``split`` that the dataset lists, in parallel processes.

    Args:
        pred_dir: Prediction folder with ``predictions.json``. A folder without it (label maps
            ``<case>.nii.gz`` written by another tool, e.g. ``labelwise propagate``) is read as hard predictions
            in the dataset's classes for the cases whose file exists.
        data: Dataset folder.
        split: Split to evaluate (None: every case).
        config: Settings; defaults to :class:`EvaluationConfig`.
        workers: Worker processes (1 = in this process).
        on_case_done: Called with ``(case_id, error or None)`` as each case finishes (for progress bars).

    Returns:
        :class:`EvaluationResult`; failed cases (missing/broken prediction, ...) are listed in ``failures``
        and the other cases are still scored.

    Raises:
        DataError: The prediction folder or the dataset cannot be read at all, or the split is empty.

    """
    from labelwise.data import Dataset
    from labelwise.io import PREDICTIONS_NAME, PredictionIndex

    cfg = config or EvaluationConfig()
    ds = Dataset(data)
    pdir = Path(pred_dir)
    if pdir.is_dir() and not (pdir / PREDICTIONS_NAME).exists():
        found = [cid for cid in ds.ids if (pdir / f"{cid}.nii.gz").is_file()]
        if not found:
            raise DataError(f"no {PREDICTIONS_NAME} and no <case>.nii.gz of the dataset's cases", pdir)
        logger.info("%s: no %s; scoring %d label map(s) in the dataset's classes", pdir, PREDICTIONS_NAME, len(found))
        index = PredictionIndex("external", tuple(ds.class_names), (), found)
    else:
        index = PredictionIndex.load(pred_dir)
    ids = ds.split_ids(split)
    if not ids:
        raise DataError(f"no cases in split {split!r}", ds.root)
    listed = set(index.cases)
    extra = sorted(set(index.cases) - set(ds.ids))
    if extra:
        logger.warning("%d prediction(s) match no dataset case and are ignored: %s", len(extra), extra[:5])
    results: dict[str, CaseResult] = {}
    todo = []
    for cid in ids:
        if cid not in listed:
            results[cid] = CaseResult(
                cid, error=f"no prediction for case {cid} in {Path(pred_dir) / 'predictions.json'}"
            )
            if on_case_done:
                on_case_done(cid, results[cid].error)
        else:
            todo.append(cid)
    args = (str(pred_dir), str(ds.root))
    names = index.class_names
    if workers <= 1:
        for cid in todo:
            results[cid] = evaluate_case(*args, cid, cfg, index.rater_ids, names)
            if on_case_done:
                on_case_done(cid, results[cid].error)
    else:
        pool = ProcessPoolExecutor(max_workers=workers, initializer=_worker_init, initargs=(os.getpid(),))
        try:
            futs = {pool.submit(evaluate_case, *args, cid, cfg, index.rater_ids, names): cid for cid in todo}
            for fut in as_completed(futs):
                cid = futs[fut]
                try:
                    results[cid] = fut.result()
                except Exception as exc:  # a crashed worker process
                    results[cid] = CaseResult(cid, error=f"worker failed: {type(exc).__name__}: {exc}")
                if on_case_done:
                    on_case_done(cid, results[cid].error)
        except BaseException:  # Ctrl-C, or an error in on_case_done: no worker may outlive this call
            _stop_pool(pool)
            raise
        pool.shutdown(wait=True)
    rows = [row for cid in ids for row in results[cid].rows]
    failures = {cid: r.error for cid, r in results.items() if r.error is not None}
    summary = {
        "format": "labelwise-evaluation",
        "version": 1,
        "dataset": ds.name,
        "method": index.method,
        "split": split,
        "n_cases": len(ids),
        "n_scored": len(ids) - len(failures),
        "n_failed": len(failures),
        "failures": dict(sorted(failures.items())),
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "references": {
            "hard": "each rater id and 'majority' (class c where > R/2 raters say c)",
            "soft": "'mean_of_raters' (mean of the raters' one-vs-rest masks)",
            "hd95_mode": "directed_max",
        },
        "metrics": summarise(rows, n_bootstrap=cfg.n_bootstrap, seed=cfg.seed),
    }
    if names != tuple(ds.class_names):
        summary["class_names"] = list(names)
    if cfg.slices is not None:
        summary["slices"] = {
            "selection": cfg.slices.spec,
            "axis": cfg.slices.axis,
            "overlap": "pooled over the selected slices",
            "surface": "2D per selected slice (in-plane spacing), mean over the slices (nan slices left out)",
            "cases": {cid: list(r.slices) for cid, r in sorted(results.items()) if r.slices is not None},
        }
    return EvaluationResult(rows=rows, summary=summary, failures=failures)


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else repr(x)
    return str(x)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_outputs(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write ``per_case.csv``, ``summary.json`` and ``summary.md`` atomically into ``out_dir``."""
    from labelwise.io import write_json_atomic, write_text_atomic

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_cols = [m for m in ALL_METRICS if any(m in r for r in result.rows)]
    id_cols = [*_ID_COLUMNS, *((SLICES_COLUMN,) if any(SLICES_COLUMN in r for r in result.rows) else ())]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*id_cols, *metric_cols])
    for r in result.rows:
        w.writerow([_fmt(r.get(k)) for k in id_cols] + [_fmt(r.get(m)) for m in metric_cols])
    paths = [write_text_atomic(out / "per_case.csv", buf.getvalue())]
    paths.append(write_json_atomic(out / "summary.json", _json_safe(result.summary)))
    paths.append(write_text_atomic(out / "summary.md", _markdown(result.summary)))
    return paths


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation: {summary['method']} on {summary['dataset']} ({summary['split'] or 'all'} split)",
        "",
        f"{summary['n_scored']} of {summary['n_cases']} cases scored, {summary['n_failed']} failed.",
        "Hard metrics against the raters' majority vote; soft and multi-rater metrics against the mean of raters.",
        "",
    ]
    if "slices" in summary:
        sl = summary["slices"]
        lines += [
            f"Slices scored (axis {sl['axis']}, selection `{sl['selection']}`): "
            + "; ".join(f"{cid} {format_slices(z)}" for cid, z in sl["cases"].items())
            + ". Overlap pooled over these slices; surface metrics 2D per slice, averaged.",
            "",
        ]
    lines += [
        "| metric | class | reference | mean | std | median | 95% CI | n | n_nan | n_ref_empty |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    for metric, by_class in summary["metrics"].items():
        for cls, by_ref in by_class.items():
            for ref in (MAJORITY, MEAN_OF_RATERS):
                if ref in by_ref:
                    s = by_ref[ref]
                    ci = f"[{f(s['ci95_low'])}, {f(s['ci95_high'])}]"
                    lines.append(
                        f"| {metric} | {cls} | {ref} | {f(s['mean'])} | {f(s['std'])} | {f(s['median'])} | {ci} "
                        f"| {s['n']} | {s['n_nan']} | {s['n_ref_empty']} |"
                    )
    if summary["failures"]:
        lines += ["", "## Failed cases", ""]
        lines += [f"- `{cid}`: {err}" for cid, err in summary["failures"].items()]
    return "\n".join(lines) + "\n"
