"""Label-quality review: score every mask of a dataset with a trained Quality Sentinel and rank them.

:func:`run_qa` is what ``labelwise qa`` calls. Candidates come from one of

* ``raters``: every rater map of every case (minus the reference rater, if one is named);
* ``masks``: the label maps ``<case>.nii.gz`` of a prediction folder (``labelwise predict`` output or any
  tool's label maps in the case geometry);
* ``perturb``: N seeded perturbations of the reference per (slice, structure) (for evaluating the estimator).

Outputs (in ``out``)::

    quality.csv        case, structure, source, predicted_dice, rank (1 = worst), n_slices, empty
                       [, true_dice] [, softmax, entropy, tta_dice]   one row per (case, structure, source)
    review_queue.csv   the same rows sorted worst first (rank, case, structure, source, predicted_dice, ...)
    case_quality.csv   case, source, predicted_dice (mean over structures), n_structures
    slices.csv         case, structure, source, slice, predicted_dice [, true_dice] [, baselines]
    evaluation.json    only with a reference: Pearson, Spearman, Kendall, MAE, top-10% worst-case recall of
                       the sentinel and of each baseline, at structure and at slice level

With a reference the true Dice of a structure is computed over all allowed slices (3D) with both-empty = 1
(:func:`labelwise.metrics.dice`); per slice over that slice. ``reference="others"`` scores each rater against the
majority vote of the *other* raters (:func:`labelwise.labels.majority_vote` with ``tie="lowest"``: a tie goes to
the lowest tied class index, so a tie with background goes to background).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.errors import ConfigError, DataError
from labelwise.labels import majority_vote
from labelwise.metrics import dice

if TYPE_CHECKING:
    from labelwise.engine.cohort import Engine, PartSpec
    from labelwise.methods.sentinel import SegProbs, SentinelPredictor

__all__ = [
    "QAJob",
    "QAResult",
    "QARow",
    "merge_qa_parts",
    "qa_case",
    "read_quality_csv",
    "row_from_json",
    "row_to_json",
    "run_qa",
    "write_qa",
]

logger = logging.getLogger(__name__)

CandidateMode = Literal["raters", "masks", "perturb"]
BASELINES = ("softmax", "entropy", "tta_dice")


@dataclass
class QARow:
    """One scored (case, structure, source)."""

    case: str
    structure: str
    source: str
    predicted_dice: float
    n_slices: int
    empty: bool
    true_dice: float | None = None
    baselines: dict[str, float] | None = None
    slices: tuple[int | None, ...] = ()
    slice_pred: tuple[float, ...] = ()
    slice_true: tuple[float, ...] = ()
    slice_baselines: dict[str, tuple[float, ...]] | None = None


@dataclass
class QAResult:
    """All rows plus, with a reference, the evaluation of the sentinel and the baselines."""

    rows: list[QARow]
    evaluation: dict[str, Any] | None = None
    failures: dict[str, str] = field(default_factory=dict)
    """Case id -> why it could not be scored."""
    ids: list[str] = field(default_factory=list)
    """The cases of the run (a part's cases with ``part``), in order."""
    context: dict[str, Any] = field(default_factory=dict)
    """Inputs and options (JSON-ready): what the parts of one run share."""


def _reference(case: Case, reference: str | None, source: str) -> np.ndarray | None:
    """The reference label map for the candidate ``source`` (a rater id for ``reference="others"``)."""
    from labelwise.methods.sentinel import reference_map

    if reference is None:
        return None
    if reference == "others":  # leave-one-rater-out majority
        others = [case.raters[i] for i, r in enumerate(case.rater_ids) if r != source]
        if not others:
            raise DataError(f"case {case.id}: reference 'others' needs at least two raters")
        return majority_vote(np.stack(others), tie="lowest")
    if reference == "majority":
        return reference_map(case, None)
    if reference not in case.rater_ids:
        raise DataError(f"case {case.id}: reference rater {reference!r} is not among {list(case.rater_ids)}")
    return reference_map(case, reference)


def _candidates(
    case: Case, mode: CandidateMode, masks: Path | None, reference: str | None
) -> Iterable[tuple[str, np.ndarray]]:
    if mode == "raters":
        skip = reference if reference not in (None, "majority", "others") else None
        for i, rid in enumerate(case.rater_ids):
            if rid != skip:
                yield rid, np.asarray(case.raters[i])
    elif mode == "masks":
        from labelwise.io import read_label

        assert masks is not None
        path = masks / f"{case.id}.nii.gz"
        if not path.is_file():
            logger.warning("no mask for case %s in %s", case.id, masks)
            return
        yield f"masks:{masks.name}", read_label(path, case.spatial_dims).array


def run_qa(
    model: str | Path,
    data: str | Path | Dataset,
    mode: CandidateMode = "raters",
    masks: str | Path | None = None,
    split: str | None = None,
    reference: str | None = None,
    structures: Sequence[str] | None = None,
    heldout_only: bool = False,
    baselines: bool = False,
    perturbations: int = 10,
    seed: int = 0,
    device: str | None = None,
    track: Callable[[Iterable[Any], str, int], Iterable[Any]] | None = None,
    *,
    engine: Engine | None = None,
    part: PartSpec | None = None,
    journal: str | Path | None = None,
    on_case_done: Callable[[str, str | None], None] | None = None,
) -> QAResult:
    """Score masks with a trained sentinel run.

    Args:
        model: Sentinel run directory.
        data: Dataset folder (or a loaded :class:`Dataset`).
        mode: Candidate source (see the module docstring).
        masks: Prediction folder for ``mode="masks"``.
        split: Only cases of this split (default: all).
        reference: Ground truth for evaluation: a rater id, ``"majority"`` or ``"others"`` (None: no truth).
            Required for ``mode="perturb"``.
        structures: Structure names to score (unknown names raise :class:`DataError`).
        heldout_only: 3D: only the slices the run held out of training (``slice_holdout``).
        baselines: Also compute the segmentation model's uncertainty baselines.
        perturbations: Perturbations per (slice, structure) for ``mode="perturb"``.
        seed: Seed of the perturbations.
        device: Torch device.
        track: Progress wrapper ``track(cases, description, total)``.
        engine: Where the cases run (:class:`labelwise.engine.cohort.Engine`; default: this process). Each
            worker loads the sentinel once (:func:`labelwise.engine.cohort.worker_cache`).
        part: Score only this part of the cases (:func:`labelwise.engine.cohort.partition`, by file size).
        journal: JSON-lines file each case's rows are appended to as it finishes; a rerun with the same inputs
            and options skips the cases found there.
        on_case_done: Called with ``(case_id, error or None)`` as each case finishes.

    Returns:
        The rows (and the evaluation when ``reference`` is given); a case that fails (an unreadable or
        mis-shaped mask, ...) is listed in ``failures`` and the other cases are still scored. ``perturb`` mode
        runs in this process only (one random stream over the cases).

    """
    from labelwise.engine import RunDir
    from labelwise.engine.cohort import worker_cache_put
    from labelwise.engine.config import resolve_device
    from labelwise.methods.base import open_run
    from labelwise.methods.sentinel import SentinelConfig, SentinelPredictor, structure_names

    rd = RunDir(model)
    method_name, _ = rd.read_config()
    if method_name != "sentinel":
        raise ConfigError(
            f"{model}: this run is a {method_name!r} model, not a sentinel model (train one with "
            "`labelwise train sentinel`)"
        )
    torch_device = resolve_device(device)
    ds = data if isinstance(data, Dataset) else Dataset(data)
    if mode == "masks" and masks is None:
        raise ConfigError("mode 'masks' needs a prediction folder (--masks)")
    if mode == "perturb" and reference is None:
        raise ConfigError("mode 'perturb' needs a reference (--reference RATER|majority)")
    if reference == "others" and mode != "raters":
        raise ConfigError("reference 'others' (leave-one-rater-out majority) only applies to --raters")
    if structures is not None:
        structure_names(ds.class_names, structures)
    masks_path = Path(masks) if masks is not None else None
    if masks_path is not None and not masks_path.is_dir():
        raise DataError("prediction folder not found", masks_path)
    rd.warn_if_unfinished()
    predictor = SentinelPredictor(open_run(model, SentinelConfig, torch_device))
    held = rd.read_meta().get("heldout_slices", {}) if heldout_only else {}
    if heldout_only and not held:
        raise ConfigError(f"{model}: the run held no slices out (train with slice_holdout > 0)")
    if baselines and predictor.segmenter is None:
        raise ConfigError(f"{model}: no segmentation model in this run, so no uncertainty baselines")
    cases_ids = ds.split_ids(split)
    if mode == "perturb":  # one random stream over the cases in order: run here, case after case
        if engine is not None or part is not None or journal is not None:
            raise ConfigError("--perturb draws one random stream over the cases; it runs in one process, unsharded")
        cases: Iterable[Any] = (ds[c] for c in cases_ids)
        if track is not None:
            cases = track(cases, "scoring", len(cases_ids))
        rows: list[QARow] = []
        rng = np.random.default_rng(seed)
        for case in cases:
            scored, allowed = _allowed(case, heldout_only, held)
            if not scored:
                continue
            seg = predictor.segmenter_probs(case, allowed) if baselines else None
            rows.extend(_perturb_rows(predictor, case, reference, structures, allowed, perturbations, rng, seg))
        return QAResult(rows, _evaluate(rows) if reference is not None else None, ids=list(cases_ids))
    from labelwise.engine.cohort import (
        Engine,
        Journal,
        case_files,
        case_sizes,
        partition,
        run_cases,
        weights_fingerprint,
    )

    if part is not None:
        sizes = case_sizes(case_files(ds, cases_ids, masks_path))
        cases_ids = partition(sizes, part.num_parts)[part.part_id]
    job = QAJob(
        model=str(Path(model).resolve()),
        weights=weights_fingerprint(model),
        device=str(torch_device),
        data=ds,
        mode=mode,
        masks=None if masks_path is None else str(masks_path.resolve()),
        reference=reference,
        structures=None if structures is None else tuple(structures),
        held={c: tuple(z) for c, z in held.items()} if heldout_only else None,
        baselines=baselines,
    )
    context = json.loads(json.dumps({
        "model": job.model, "weights": job.weights, "data": str(ds.root.resolve()), "labels": ds.provenance(),
        "mode": mode, "masks": job.masks, "split": split, "reference": reference,
        "structures": None if structures is None else list(structures), "heldout": heldout_only,
        "baselines": baselines,
    }))  # fmt: skip
    predictor_key = (job.model, job.weights, job.device)
    worker_cache_put(predictor_key, predictor)  # this process already holds the model: no second load here
    book = None if journal is None else Journal(journal, context)
    per_case: dict[str, list[QARow]] = {}
    failures: dict[str, str] = {}
    if book is not None:
        per_case.update({c: [row_from_json(r) for r in rec["rows"]] for c, rec in book.succeeded().items()})
    todo = [c for c in cases_ids if c not in per_case]
    listed: Iterable[str] = todo if track is None else track(todo, "scoring", len(todo))

    def arrived(cid: str, value: list[QARow] | None, error: str | None) -> None:
        if value is not None:
            per_case[cid] = value
        else:
            failures[cid] = error or "failed"
            logger.warning("case %s failed: %s", cid, failures[cid])
        if book is not None:
            book.append({"case": cid, "rows": [row_to_json(r) for r in value or []], "error": error})
        if on_case_done is not None:
            on_case_done(cid, error)

    try:
        run_cases(qa_case, job, listed, engine or Engine(), arrived)
    finally:
        if book is not None:
            book.close()
    rows = [r for c in cases_ids for r in per_case.get(c, [])]
    return QAResult(
        rows,
        _evaluate(rows) if reference is not None else None,
        failures=failures,
        ids=list(cases_ids),
        context=context,
    )


def _allowed(case: Case, heldout_only: bool, held: dict[str, Any]) -> tuple[bool, list[int] | None]:
    """Whether a case is scored (not when only held-out slices are and it has none) and its slices (None: all)."""
    allowed: list[int] | None = None
    if case.spatial_dims == 3:
        allowed = list(case.labelled_slices) if case.labelled_slices is not None else None
        if heldout_only:
            if case.id not in held:
                return False, None
            allowed = list(held[case.id])
    return True, allowed


@dataclass(frozen=True)
class QAJob:
    """What a worker needs to score one case (picklable; sent once per worker on Dask)."""

    model: str
    weights: str
    device: str
    data: Dataset
    mode: CandidateMode
    masks: str | None
    reference: str | None
    structures: tuple[str, ...] | None
    held: dict[str, tuple[int, ...]] | None
    baselines: bool


def _load_sentinel(job: QAJob) -> SentinelPredictor:
    from labelwise.methods.base import open_run
    from labelwise.methods.sentinel import SentinelConfig, SentinelPredictor

    return SentinelPredictor(open_run(job.model, SentinelConfig, job.device))


def qa_case(job: QAJob, case_id: str) -> list[QARow]:
    """The rows of one case (``raters`` or ``masks`` mode); the sentinel is loaded once per worker process."""
    from labelwise.engine.cohort import worker_cache
    from labelwise.methods.sentinel import score_label_map, take_slice

    predictor = worker_cache((job.model, job.weights, job.device), lambda: _load_sentinel(job))
    case = job.data[case_id]
    scored, allowed = _allowed(case, job.held is not None, job.held or {})
    if not scored:
        return []
    seg = predictor.segmenter_probs(case, allowed) if job.baselines else None
    structures = None if job.structures is None else list(job.structures)
    masks = None if job.masks is None else Path(job.masks)
    rows: list[QARow] = []
    for source, lab in _candidates(case, job.mode, masks, job.reference):
        if lab.shape != case.spatial_shape:
            raise DataError(f"case {case.id}: mask {source} has shape {lab.shape}, image {case.spatial_shape}")
        ref = _reference(case, job.reference, source)
        scores = score_label_map(predictor, case, lab, structures, allowed, seg)
        for s in scores:
            row = QARow(
                case.id,
                s.structure,
                source,
                s.predicted_dice,
                len(s.slices),
                s.empty,
                baselines=s.baselines or None,
                slices=s.slices,
                slice_pred=s.slice_scores,
                slice_baselines=s.slice_baselines or None,
            )
            if ref is not None:
                k = case.class_names.index(s.structure)
                c3, r3 = lab == k, ref == k
                if allowed is not None:
                    c3, r3 = c3[..., allowed], r3[..., allowed]
                row.true_dice = dice(c3, r3)
                row.slice_true = tuple(dice(take_slice(lab == k, z), take_slice(ref == k, z)) for z in s.slices)
            rows.append(row)
    return rows


def row_to_json(row: QARow) -> dict[str, Any]:
    """A :class:`QARow` as a JSON-ready dict (a journal record; floats kept exactly)."""
    return asdict(row)


def row_from_json(d: dict[str, Any]) -> QARow:
    """The inverse of :func:`row_to_json`."""
    sb = d.get("slice_baselines")
    return QARow(
        **{
            **d,
            "slices": tuple(d["slices"]),
            "slice_pred": tuple(d["slice_pred"]),
            "slice_true": tuple(d["slice_true"]),
            "slice_baselines": None if sb is None else {k: tuple(v) for k, v in sb.items()},
        }
    )


def merge_qa_parts(out: str | Path, *, allow_partial: bool = False) -> tuple[QAResult, list[str]]:
    """Combine the parts under ``out/parts`` of ``labelwise qa --num-parts N`` into one run's result.

    The rows are the parts' own (exactly), in the run's case order; the ranks, the per-case table and the
    evaluation against the reference are recomputed from them by the code of a single run.

    Raises:
        DataError: No parts, overlapping or mismatched parts, or (without ``allow_partial``) missing ones.

    """
    from labelwise.engine.cohort import collect_parts

    parts = collect_parts(out, "qa", allow_partial=allow_partial)
    rows = [row_from_json(r) for rec in parts.records.values() for r in rec["rows"]]
    failures = {c: rec["error"] for c, rec in parts.records.items() if rec.get("error") is not None}
    evaluation = _evaluate(rows) if parts.context.get("reference") is not None else None
    return QAResult(rows, evaluation, failures=failures, ids=list(parts.records)), parts.missing_parts


def _perturb_rows(
    predictor: SentinelPredictor,
    case: Case,
    reference: str | None,
    structures: Sequence[str] | None,
    allowed: list[int] | None,
    n: int,
    rng: np.random.Generator,
    seg: SegProbs | None,
) -> list[QARow]:
    """Rows for ``n`` perturbations of the reference per (slice, structure) of ``case`` (``--perturb``)."""
    from labelwise.methods.sentinel import (
        crop_input,
        intensity_unit,
        perturb_mask,
        seg_slice,
        slice_indices,
        structure_names,
        take_slice,
        uncertainty_scores,
    )

    ref = _reference(case, reference, "")
    if ref is None:
        return []
    cfg = predictor.config
    unit = intensity_unit(case.image, cfg.ct_clip)
    out: list[QARow] = []
    todo = structure_names(case.class_names, structures)
    for k, name in todo:
        r3 = ref == k
        if not r3.any():
            continue
        zs: list[int | None] = (
            [None] if case.spatial_dims == 2 else list(slice_indices(r3, cfg.slices_per_structure, allowed))
        )
        for z in zs:
            gt = take_slice(r3, z)
            if not gt.any():
                continue
            for i, (cand, rec, d) in enumerate(perturb_mask(take_slice(ref, z), k, n, rng, case.spacing_mm[:2])):
                src = f"perturb:{i}:" + "+".join(str(o["kind"]) for o in rec)
                if not cand.any():
                    out.append(
                        QARow(case.id, name, src, 0.0, 0, True, d, slices=(z,), slice_pred=(0.0,), slice_true=(d,))
                    )
                    continue
                x = crop_input(take_slice(unit, z), cand, cfg.crop_size, cfg.crop_margin)
                p = float(predictor.score_inputs(x[None], [name])[0])
                bl = None
                if seg is not None:
                    bl = uncertainty_scores(seg_slice(seg, z), cand, k)
                out.append(
                    QARow(
                        case.id,
                        name,
                        src,
                        p,
                        1,
                        False,
                        d,
                        bl,
                        (z,),
                        (p,),
                        (d,),
                        {kk: (v,) for kk, v in bl.items()} if bl else None,
                    )
                )
    return out


def _report(pred: Sequence[float], true: Sequence[float]) -> dict[str, float]:
    from labelwise.metrics import quality_report

    if len(pred) < 2:
        return {"n": float(len(pred))}
    rep = quality_report(pred, true)
    return {"n": float(len(pred)), **rep}


def _evaluate(rows: Sequence[QARow]) -> dict[str, Any]:
    """Quality metrics of the sentinel and each baseline, at structure and slice level (non-empty rows only)."""
    scored = [r for r in rows if not r.empty and r.true_dice is not None]
    out: dict[str, Any] = {"structure": {}, "slice": {}}
    true = [float(r.true_dice) for r in scored if r.true_dice is not None]
    out["structure"]["sentinel"] = _report([r.predicted_dice for r in scored], true)
    st_pred = [p for r in scored for p in r.slice_pred]
    st_true = [t for r in scored for t in r.slice_true]
    out["slice"]["sentinel"] = _report(st_pred, st_true)
    if scored and scored[0].baselines:
        for b in BASELINES:
            out["structure"][b] = _report([r.baselines[b] for r in scored if r.baselines], true)
            out["slice"][b] = _report([v for r in scored if r.slice_baselines for v in r.slice_baselines[b]], st_true)
    out["empty_candidates"] = sum(r.empty for r in rows)
    out["true_dice_mean"] = float(np.mean(true)) if true else float("nan")
    return out


def read_quality_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a ``quality.csv`` (or ``review_queue.csv``) written by :func:`write_qa`, checking it on the way.

    Args:
        path: The CSV file.

    Returns:
        One dict per row (every column as text, except ``predicted_dice`` and ``true_dice`` as floats; an empty
        ``true_dice`` is None), in file order.

    Raises:
        DataError: unreadable file, no ``case`` or ``predicted_dice`` column, a row of the wrong length, or a
            score that is not a number in [0, 1] (the message names the line).

    """
    p = Path(path)
    try:
        with p.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            rows = list(reader)
            fields = list(reader.fieldnames or [])
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise DataError(f"cannot read the quality table ({exc})", p) from None
    missing = [c for c in ("case", "predicted_dice") if c not in fields]
    if missing:
        raise DataError(f"quality table needs columns 'case' and 'predicted_dice' (missing {missing})", p)
    out: list[dict[str, Any]] = []
    for n, row in enumerate(rows, start=2):
        if None in row or any(v is None for v in row.values()):
            raise DataError(f"line {n}: the row has a different number of cells than the header", p)
        parsed: dict[str, Any] = dict(row)
        for col in ("predicted_dice", "true_dice"):
            if col not in row:
                continue
            text = row[col].strip()
            if col == "true_dice" and not text:
                parsed[col] = None
                continue
            try:
                value = float(text)
            except ValueError:
                raise DataError(f"line {n}: {col} {text!r} is not a number", p) from None
            if not (np.isnan(value) or 0.0 <= value <= 1.0):
                raise DataError(f"line {n}: {col} {value} is outside [0, 1]", p)
            parsed[col] = value
        out.append(parsed)
    return out


def _fmt(v: float | None) -> str:
    return "" if v is None else f"{v:.4f}"


def write_qa(result: QAResult, out: str | Path) -> list[Path]:
    """Write ``quality.csv``, ``review_queue.csv``, ``case_quality.csv``, ``slices.csv`` (+ ``evaluation.json``).

    Each file is written atomically; returns the written paths.
    """
    import io
    import json

    from labelwise.io.atomic import write_json_atomic, write_text_atomic

    dest = Path(out)
    dest.mkdir(parents=True, exist_ok=True)
    rows = result.rows
    order = sorted(range(len(rows)), key=lambda i: (rows[i].predicted_dice, rows[i].case, rows[i].structure))
    rank = {i: r + 1 for r, i in enumerate(order)}
    has_true = any(r.true_dice is not None for r in rows)
    has_base = any(r.baselines for r in rows)
    head = ["case", "structure", "source", "predicted_dice", "rank", "n_slices", "empty"]
    head += ["true_dice"] if has_true else []
    head += list(BASELINES) if has_base else []

    def line(i: int) -> list[str]:
        r = rows[i]
        vals = [r.case, r.structure, r.source, _fmt(r.predicted_dice), str(rank[i]), str(r.n_slices), str(int(r.empty))]
        if has_true:
            vals.append(_fmt(r.true_dice))
        if has_base:
            vals += [_fmt(r.baselines[b]) if r.baselines else "" for b in BASELINES]
        return vals

    def table(header: list[str], body: Iterable[list[str]]) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(header)
        w.writerows(body)
        return buf.getvalue()

    paths = [dest / "quality.csv", dest / "review_queue.csv", dest / "case_quality.csv", dest / "slices.csv"]
    write_text_atomic(paths[0], table(head, (line(i) for i in range(len(rows)))))
    q_head = ["rank", *[h for h in head if h != "rank"]]
    write_text_atomic(
        paths[1],
        table(q_head, ([str(rank[i]), *[v for h, v in zip(head, line(i), strict=True) if h != "rank"]] for i in order)),
    )
    per_case: dict[tuple[str, str], list[float]] = {}
    for r in rows:
        per_case.setdefault((r.case, r.source), []).append(r.predicted_dice)
    write_text_atomic(
        paths[2],
        table(
            ["case", "source", "predicted_dice", "n_structures"],
            ([c, s, _fmt(float(np.mean(v))), str(len(v))] for (c, s), v in sorted(per_case.items())),
        ),
    )
    s_head = ["case", "structure", "source", "slice", "predicted_dice"] + (["true_dice"] if has_true else [])
    s_head += list(BASELINES) if has_base else []
    body = []
    for r in rows:
        for j, z in enumerate(r.slices):
            v = [r.case, r.structure, r.source, "" if z is None else str(z), _fmt(r.slice_pred[j])]
            if has_true:
                v.append(_fmt(r.slice_true[j]) if j < len(r.slice_true) else "")
            if has_base:
                v += [_fmt(r.slice_baselines[b][j]) if r.slice_baselines else "" for b in BASELINES]
            body.append(v)
    write_text_atomic(paths[3], table(s_head, body))
    if result.evaluation is not None:
        paths.append(dest / "evaluation.json")
        write_json_atomic(paths[-1], json.loads(json.dumps(result.evaluation, default=float)))
    return paths
