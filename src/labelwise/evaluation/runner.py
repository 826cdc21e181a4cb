"""The evaluation runner: every case of a split, its prediction read and scored, in worker processes.

:func:`evaluate_folder` is the library entry point; ``labelwise evaluate`` is a thin CLI around it. Its worker
processes die with it: they are terminated when the runner is interrupted, and each one exits by itself when the
parent process is gone (killed), so no orphan keeps its memory.
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwise.data import Dataset
from labelwise.data.slices import labelled_slice_indices
from labelwise.errors import DataError
from labelwise.evaluation.scoring import SLICES_COLUMN, CaseArrays, CaseResult, EvaluationConfig, score_case
from labelwise.evaluation.slices import format_slices, select_slices
from labelwise.evaluation.summary import summarise
from labelwise.io import PREDICTIONS_NAME, PredictionIndex, read_prediction

__all__ = ["EvaluationResult", "evaluate_case", "evaluate_folder"]

logger = logging.getLogger(__name__)


@dataclass
class EvaluationResult:
    """Everything :func:`evaluate_folder` produced."""

    rows: list[dict[str, Any]]
    summary: dict[str, Any]
    failures: dict[str, str]


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
    data: str | Path | Dataset,
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
        data: Dataset folder, or an open dataset (e.g. ``Dataset(root, labels="reviewed")``: the reviewed labels
            are the reference).
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
    cfg = config or EvaluationConfig()
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
    args = (str(pred_dir), ds)  # the open dataset (picklable) keeps its labels view in the workers
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
        "labels": ds.provenance(),
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
            "surface": "per 3D case: the selected slices at their true positions (slices between them blank), "
            "the case's spacing; *_per_slice metrics: 2D per selected slice, mean over slices (nan left out)",
            "cases": {cid: list(r.slices) for cid, r in sorted(results.items()) if r.slices is not None},
        }
    return EvaluationResult(rows=rows, summary=summary, failures=failures)
