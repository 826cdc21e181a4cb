"""The evaluation runner: every case of a split, its prediction read and scored, in worker processes.

:func:`evaluate_folder` is the library entry point; ``labelwise evaluate`` is a thin CLI around it. Its worker
processes die with it: they are terminated when the runner is interrupted, and each one exits by itself when the
parent process is gone (killed), so no orphan keeps its memory.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import NDArray

from labelwise.data import Dataset
from labelwise.data.slices import labelled_slice_indices
from labelwise.errors import DataError
from labelwise.evaluation.scoring import (
    PER_SLICE_SUFFIX,
    SLICES_COLUMN,
    SURFACE_METRICS,
    CaseArrays,
    CaseResult,
    EvaluationConfig,
    score_case,
)
from labelwise.evaluation.slices import format_slices, select_slices
from labelwise.evaluation.summary import summarise
from labelwise.io import PREDICTIONS_NAME, PredictionIndex, read_prediction

if TYPE_CHECKING:
    from labelwise.engine.cohort import Engine, PartSpec

__all__ = ["EvaluationResult", "build_result", "evaluate_case", "evaluate_folder", "merge_parts"]

logger = logging.getLogger(__name__)


def _uses_kernels(metric: str) -> bool:
    """Whether a metric runs a compiled surface kernel (the ones worth compiling before workers start)."""
    return metric.removesuffix(PER_SLICE_SUFFIX) in SURFACE_METRICS


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_folder` produced."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: dict[str, str]
    ids: list[str] = field(default_factory=list)
    """The cases scored, in order (a part's cases with ``part``)."""
    context: dict[str, Any] = field(default_factory=dict)
    """Inputs and options of the run (JSON-ready); what the parts of one run share (see :func:`merge_parts`)."""


def evaluate_case(
    pred_dir: str | Path,
    data_root: str | Path | Dataset,
    case_id: str,
    config: EvaluationConfig,
    pred_rater_ids: Sequence[str] = (),
    pred_class_names: Sequence[str] | None = None,
) -> CaseResult:
    """Score one case; any error (missing or unreadable prediction, shape mismatch) is returned, not raised.

    Args:
        pred_dir: Prediction folder (see :mod:`labelwise.io.predictions`).
        data_root: Dataset folder, or an open dataset (its labels view is kept).
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
        data = data_root if isinstance(data_root, Dataset) else Path(data_root)
        return _evaluate_case(Path(pred_dir), data, case_id, config, tuple(pred_rater_ids), names)
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
    data_root: Path | Dataset,
    case_id: str,
    cfg: EvaluationConfig,
    pred_rater_ids: tuple[str, ...],
    pred_class_names: tuple[str, ...] | None = None,
) -> CaseResult:
    """Read one case and its prediction, match classes, select slices, then :func:`score_case`."""
    ds = data_root if isinstance(data_root, Dataset) else Dataset(data_root)
    case = ds.load(case_id, image=False)  # no metric reads the voxels: a NIfTI image costs only its header
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
    keep: tuple[int, ...] | None = None
    axis = -1  # counted from the end, so it names the same spatial axis of label maps and of (N, *spatial) stacks
    if cfg.slices is not None:  # an explicit slice subset (pooled overlap, surface metrics per 3D case)
        slice_axis = cfg.slices.axis
        chosen = keep = select_slices(cfg.slices, case_id, case.spatial_shape, case.labelled_slices, pred_file)
        axis = slice_axis - len(case.spatial_shape)
    elif case.labelled_slices is not None:  # labels are valid on these slices only (last axis): score just them
        keep = labelled_slice_indices(case)
        slice_axis = len(case.spatial_shape) - 1
    if keep is not None:
        idx = np.asarray(keep, dtype=np.int64)
        label = np.take(label, idx, axis=axis)
        raters, probs = np.take(raters, idx, axis=axis), np.take(probs, idx, axis=axis)
        samples = None if samples is None else np.take(samples, idx, axis=axis)
        pred_raters = None if pred_raters is None else np.take(pred_raters, idx, axis=axis)
    arrays = CaseArrays(
        case_id=case_id,
        label=label,
        probs=probs,
        samples=samples,
        pred_raters=pred_raters,
        pred_rater_ids=pred_rater_ids,
        raters=raters,
        rater_ids=tuple(case.rater_ids),
        class_names=class_names,
        classes=tuple(scored),
        spacing_mm=tuple(float(s) for s in case.spacing_mm),
        slice_axis=slice_axis,
        slice_positions=None if keep is None else tuple(int(z) for z in keep),
    )
    rows = score_case(arrays, cfg)
    if chosen is not None:
        text = format_slices(chosen)
        for row in rows:
            row[SLICES_COLUMN] = text
    return CaseResult(case_id, rows=rows, slices=chosen)


def _warm_up_kernels(*, parallel: bool, surfels: bool, dims: tuple[int, ...]) -> threading.Thread | None:
    """Compile the metric kernels a run uses (or load numba's on-disk cache) before the first case needs them.

    With worker processes this runs here, before they start, so that each loads the cache instead of compiling
    the kernels itself. In one process it runs in a background thread while the first cases are read: the
    first call of a kernel then waits only for what is left of its compilation (numba compiles each once, under
    its own lock), and on a fresh install the 5-9 s of compilation overlap the reading. The caller joins the
    thread before returning, so that no compilation is cut off at interpreter exit.
    """
    from labelwise.metrics import warm_up

    if parallel:
        warm_up(surfels=surfels, dims=dims, batch=False)
        return None

    def background() -> None:
        try:
            warm_up(surfels=surfels, dims=dims, batch=False)
        except Exception as exc:  # the first real call compiles (and reports) on its own
            logger.debug("background warm-up of the metric kernels failed: %s", exc)

    thread = threading.Thread(target=background, name="labelwise-metric-warm-up", daemon=True)
    thread.start()
    return thread


def _score(shared: tuple[str, Dataset, EvaluationConfig, tuple[str, ...], tuple[str, ...]], case_id: str) -> CaseResult:
    """One case on an executor (:func:`labelwise.engine.cohort.run_cases`): ``shared`` is sent once per worker."""
    pred_dir, ds, cfg, rater_ids, names = shared
    return evaluate_case(pred_dir, ds, case_id, cfg, rater_ids, names)


def _record(result: CaseResult) -> dict[str, Any]:
    """A case's journal record (JSON keeps every float exactly, nan and inf included)."""
    return {
        "case": result.case_id,
        "rows": result.rows,
        "error": result.error,
        "slices": None if result.slices is None else list(result.slices),
    }


def _from_record(rec: dict[str, Any]) -> CaseResult:
    slices = rec.get("slices")
    return CaseResult(
        rec["case"], rows=rec["rows"], error=rec["error"], slices=None if slices is None else tuple(slices)
    )


def _index_digest(pdir: Path) -> str | None:
    import hashlib

    path = pdir / PREDICTIONS_NAME
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def _context(
    ds: Dataset, index: PredictionIndex, split: str | None, cfg: EvaluationConfig, pdir: Path
) -> dict[str, Any]:
    """Everything the summary needs besides the per-case results (JSON-ready); equal in every part of a run."""
    ctx = {
        "pred": str(pdir.resolve()),
        "pred_index": _index_digest(pdir),
        "data": str(ds.root.resolve()),
        "dataset": ds.name,
        "labels": ds.provenance(),
        "method": index.method,
        "split": split,
        "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
        "class_names": list(index.class_names),
        "dataset_class_names": list(ds.class_names),
    }
    return json.loads(json.dumps(ctx))  # type: ignore[no-any-return]


def build_result(context: dict[str, Any], ids: Sequence[str], results: dict[str, CaseResult]) -> EvaluationResult:
    """The rows and summary of the cases ``ids`` (in this order) from their results: one run's and merge's code.

    Args:
        context: What :func:`evaluate_folder` records of a run (dataset, labels, method, split, config, classes).
        ids: The cases of the run, in order.
        results: Case id -> result, for every id.

    Returns:
        The :class:`EvaluationResult`; statistics and bootstrap intervals are computed from the per-case values.

    """
    config = context["config"]
    rows = [row for cid in ids for row in results[cid].rows]
    failures = {cid: r.error for cid in ids if (r := results[cid]).error is not None}
    summary: dict[str, Any] = {
        "format": "labelwise-evaluation",
        "version": 1,
        "dataset": context["dataset"],
        "labels": context["labels"],
        "method": context["method"],
        "split": context["split"],
        "n_cases": len(ids),
        "n_scored": len(ids) - len(failures),
        "n_failed": len(failures),
        "failures": dict(sorted(failures.items())),
        "config": config,
        "references": {
            "hard": "each rater id and 'majority' (class c where > R/2 raters say c)",
            "soft": "'mean_of_raters' (mean of the raters' one-vs-rest masks)",
            "hd95_mode": "directed_max",
        },
        "metrics": summarise(rows, n_bootstrap=config["n_bootstrap"], seed=config["seed"]),
    }
    if context["class_names"] != context["dataset_class_names"]:
        summary["class_names"] = list(context["class_names"])
    slices = config.get("slices")
    if slices is not None:
        summary["slices"] = {
            "selection": slices["spec"],
            "axis": slices["axis"],
            "overlap": "pooled over the selected slices",
            "surface": "per 3D case: the selected slices at their true positions (slices between them blank), "
            "the case's spacing; *_per_slice metrics: 2D per selected slice, mean over slices (nan left out)",
            "cases": {cid: list(r.slices) for cid in sorted(ids) if (r := results[cid]).slices is not None},
        }
    return EvaluationResult(rows=rows, summary=summary, failures=failures, ids=list(ids), context=context)


def evaluate_folder(
    pred_dir: str | Path,
    data: str | Path | Dataset,
    *,
    split: str | None = "test",
    config: EvaluationConfig | None = None,
    workers: int = 1,
    on_case_done: Callable[[str, str | None], None] | None = None,
    engine: Engine | None = None,
    part: PartSpec | None = None,
    journal: str | Path | None = None,
) -> EvaluationResult:
    """Score every case of ``split`` that the dataset lists, in parallel processes or on a Dask cluster.

    Args:
        pred_dir: Prediction folder with ``predictions.json``. A folder without it (label maps
            ``<case>.nii.gz`` written by another tool, e.g. ``labelwise propagate``) is read as hard predictions
            in the dataset's classes for the cases whose file exists.
        data: Dataset folder, or an open dataset (e.g. ``Dataset(root, labels="reviewed")``: the reviewed labels
            are the reference).
        split: Split to evaluate (None: every case).
        config: Settings; defaults to :class:`EvaluationConfig`.
        workers: Worker processes (1 = in this process); ignored when ``engine`` is given.
        on_case_done: Called with ``(case_id, error or None)`` as each case finishes (for progress bars).
        engine: Where the cases run (:class:`labelwise.engine.cohort.Engine`: local processes or Dask).
        part: Score only this part of the cases (:func:`labelwise.engine.cohort.partition`, by file size).
        journal: A JSON-lines file each case's result is appended to as it finishes; cases already scored
            there by a run with the same inputs and options are not scored again (resume after a crash).

    Returns:
        :class:`EvaluationResult` (of the part's cases with ``part``); failed cases (missing/broken prediction,
        ...) are listed in ``failures`` and the other cases are still scored.

    Raises:
        DataError: The prediction folder or the dataset cannot be read at all, or the split is empty.

    """
    from labelwise.engine.cohort import Engine, Journal, case_files, case_sizes, partition, run_cases

    cfg = config or EvaluationConfig()
    eng = engine or Engine(workers=workers)
    ds = data if isinstance(data, Dataset) else Dataset(data)
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
    if part is not None:
        ids = partition(case_sizes(case_files(ds, ids, pdir, image=False)), part.num_parts)[part.part_id]
    context = _context(ds, index, split, cfg, pdir)
    listed = set(index.cases)
    extra = sorted(set(index.cases) - set(ds.ids))
    if extra:
        logger.warning("%d prediction(s) match no dataset case and are ignored: %s", len(extra), extra[:5])
    warming = None
    if any(_uses_kernels(m) for m in cfg.metrics):
        per_slice = any(_uses_kernels(m) and m.endswith(PER_SLICE_SUFFIX) for m in cfg.metrics)
        dims = (ds.spatial_dims, 2) if per_slice else (ds.spatial_dims,)
        parallel = eng.scheduler is not None or eng.workers > 1
        warming = _warm_up_kernels(parallel=parallel, surfels=cfg.surface == "surfels", dims=dims)
    book = None if journal is None else Journal(journal, context)
    results: dict[str, CaseResult] = {}
    if book is not None:
        results.update({cid: _from_record(r) for cid, r in book.succeeded().items() if cid in set(ids)})
        if results:
            logger.info("%d case(s) already scored in %s; skipping them", len(results), book.path)

    def finish(cid: str, result: CaseResult) -> None:
        results[cid] = result
        if book is not None:
            book.append(_record(result))
        if on_case_done:
            on_case_done(cid, result.error)

    try:
        for cid in ids:
            if cid in results and on_case_done:
                on_case_done(cid, None)
        todo = []
        for cid in ids:
            if cid in results:
                continue
            if cid not in listed:
                finish(cid, CaseResult(cid, error=f"no prediction for case {cid} in {pdir / PREDICTIONS_NAME}"))
            else:
                todo.append(cid)
        shared = (str(pred_dir), ds, cfg, index.rater_ids, index.class_names)  # the open dataset keeps its labels

        def arrived(cid: str, value: CaseResult | None, error: str | None) -> None:
            finish(cid, value if value is not None else CaseResult(cid, error=error))

        run_cases(_score, shared, todo, eng, arrived)
    finally:
        if book is not None:
            book.close()
        if warming is not None:
            warming.join()
    return build_result(context, ids, results)


def merge_parts(out: str | Path, *, allow_partial: bool = False) -> tuple[EvaluationResult, list[str]]:
    """Combine the parts under ``out/parts`` into the result one run over every case would give.

    The per-case rows are the parts' own values (exactly), in the run's case order; the summary and the bootstrap
    intervals are recomputed from them by :func:`build_result`, the code of a single run.

    Args:
        out: The ``--out`` folder the parts wrote into.
        allow_partial: Merge the parts present when some are missing or unfinished (the summary then covers
            their cases only and records the missing parts under ``partial``).

    Returns:
        The result and the names of the missing parts (empty unless ``allow_partial``).

    Raises:
        DataError: No parts, overlapping or mismatched parts, or (without ``allow_partial``) missing ones.

    """
    from labelwise.engine.cohort import collect_parts

    parts = collect_parts(out, "evaluate", allow_partial=allow_partial)
    results = {cid: _from_record(rec) for cid, rec in parts.records.items()}
    ids = [cid for cid in parts.all_ids if cid in results]
    result = build_result(parts.context, ids, results)
    if parts.missing_parts:
        result.summary["partial"] = {
            "missing_parts": parts.missing_parts,
            "n_cases_missing": len(parts.all_ids) - len(ids),
        }
    return result, parts.missing_parts
