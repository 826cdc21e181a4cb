"""``labelwise predict --run RUN --data DATASET [--split test] --out PRED_DIR``.

Writes one prediction per case through :func:`labelwise.io.write_prediction` in the case's source geometry and
rewrites ``predictions.json`` as cases finish (at most once a second, and at the end), listing the cases done in
the split's order. The prediction options given (``--tta/--no-tta``, ``--samples``, ``--rater-weights``) are
checked by the method once, before the first case: an option the method does not take is a usage error naming the
options it does take. A case that fails is reported and skipped; the command exits 1 at the end if any failed.
Incompatible datasets (other channels/classes/dims than the model) are rejected before anything is written, and
so is an ``--out`` that is, contains or lies inside the run or the dataset. A run that did not finish (killed, or
still training) is used with a warning.

Each finished case is also appended to a journal beside ``--out`` (``.PRED_DIR.journal.jsonl``): a rerun of a
killed run with the same model, data and options skips the cases done; the journal is removed at the end.

``--num-parts N --part-id K`` predicts one part of the cases (balanced by file size) into the same folder: the
case files are per case, and each part lists its cases in ``PRED_DIR/parts/part-K-of-N/`` instead of writing
``predictions.json``, so parts running at once never write the same file; ``labelwise predict merge --out
PRED_DIR`` then writes ``predictions.json``. ``--scheduler`` runs the cases on Dask, the model loaded once per
worker (docs/scale.md).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from labelwise.cli.common import AllowPartial, NumParts, PartId, Scheduler

if TYPE_CHECKING:
    from labelwise.data import Dataset

__all__ = ["PredictJob", "predict", "predict_case", "predict_merge"]

INDEX_EVERY_S = 1.0
"""``predictions.json`` is rewritten at most this often while cases finish (and always at the end)."""


@dataclass(frozen=True)
class PredictJob:
    """What a worker needs to predict one case (picklable; sent once per worker on Dask)."""

    run_dir: str
    weights: str
    device: str | None
    data: Dataset
    out: str
    options: dict[str, Any]


def predict_case(job: PredictJob, case_id: str) -> str:
    """Predict one case and write its files; the model is loaded once per worker process (keyed by its weights)."""
    from labelwise.engine.cohort import worker_cache
    from labelwise.io import write_prediction
    from labelwise.methods import load_run

    predictor = worker_cache((job.run_dir, job.weights, job.device), lambda: load_run(job.run_dir, job.device)[2])
    case = job.data.load(case_id)
    pred = predictor.predict(case, **job.options)
    write_prediction(job.out, case_id, pred, case.spacing_mm, case.affine)
    return case_id


def predict(
    run: Path | None = typer.Option(None, "--run", help="A run directory written by `labelwise train` (required)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Prediction folder to write."),
    split: str = typer.Option("test", "--split", help="Split to predict: one of the dataset's splits, or all."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Flip test-time augmentation (default: run config)."),
    device: str | None = typer.Option(None, "--device", help="torch device (default: cuda if available)."),
    rater_weights: str | None = typer.Option(
        None,
        "--rater-weights",
        help="mrnet: rater weighting, one weight per training rater summing to 1, e.g. 0.5,0.5,0",
    ),
    samples: int | None = typer.Option(None, "--samples", min=1, help="prob-unet/dpersona: number of samples N."),
    old_run: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --run."),
    num_parts: NumParts = None,
    part_id: PartId = None,
    scheduler: Scheduler = None,
) -> None:
    """Predict the cases of SPLIT of DATASET with the model of RUN.

    With --num-parts/--part-id, predict one part; `labelwise predict merge --out PRED_DIR` writes the index.
    """
    from labelwise.cli.common import cohort_engine, moved, split_ids
    from labelwise.data import Dataset
    from labelwise.engine.cohort import (
        JOURNAL_NAME,
        Journal,
        PartSpec,
        case_files,
        case_sizes,
        part_dir,
        partition,
        run_cases,
        weights_fingerprint,
        worker_cache_put,
        write_part,
    )
    from labelwise.engine.planner import PLAN_NAME, Plan
    from labelwise.errors import DataError
    from labelwise.io import PredictionIndex, check_output_not_input
    from labelwise.methods import load_run
    from labelwise.progress import ProgressBar

    run_dir = moved(run, old_run, option="--run", old="labelwise predict RUN", new="labelwise predict --run RUN")
    check_output_not_input(out, [run_dir, data])
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    ds = Dataset(data)
    all_ids = split_ids(ds, split)
    plan = Plan.load(Path(run_dir) / PLAN_NAME)
    plan.check_dataset(ds)
    part = PartSpec.from_options(num_parts, part_id)
    engine = cohort_engine(1, scheduler, [ds.root, out.parent, run_dir])
    method, _cfg, predictor = load_run(run_dir, device)
    # Only what the user gave; the method checks it once, here, before any case (unknown option: exit 2).
    given: dict[str, Any] = {"tta": tta, "rater_weights": rater_weights, "samples": samples}
    given = {k: v for k, v in given.items() if v is not None}
    predictor.options(**given)
    rater_ids = predictor.rater_ids or ds.rater_ids
    ids = all_ids if part is None else partition(case_sizes(case_files(ds, all_ids)), part.num_parts)[part.part_id]
    out.mkdir(parents=True, exist_ok=True)
    job = PredictJob(str(Path(run_dir).resolve()), weights_fingerprint(run_dir), device, ds, str(out.resolve()), given)
    worker_cache_put((job.run_dir, job.weights, job.device), predictor)  # loaded here already: not again
    # Class names of the model's outputs (a subset of the dataset's when trained with `classes`); per-rater maps
    # come in the order of the raters the model was trained with.
    context = {
        "run": job.run_dir, "weights": job.weights, "data": str(ds.root.resolve()), "out": job.out, "split": split,
        "options": given, "method": method.name, "class_names": list(plan.class_names), "rater_ids": list(rater_ids),
    }  # fmt: skip
    folder = None if part is None else part_dir(out, part)
    journal_path = out.parent / f".{out.name}.journal.jsonl" if folder is None else folder / JOURNAL_NAME
    index = PredictionIndex(method.name, tuple(plan.class_names), tuple(rater_ids), [])
    failed: list[str] = []
    with Journal(journal_path, context) as book:
        done = {c for c in book.succeeded() if c in set(ids) and (out / f"{c}.nii.gz").is_file()}
        last_save = [0.0]

        def save(force: bool = False) -> None:
            if folder is None and (force or time.monotonic() - last_save[0] >= INDEX_EVERY_S):
                index.cases = [c for c in all_ids if c in done]
                index.save(out)
                last_save[0] = time.monotonic()

        with ProgressBar("predict" if part is None else f"predict {part.name}", len(ids)) as bar:
            if done:
                bar.advance(len(done))

            def arrived(case_id: str, value: str | None, error: str | None) -> None:
                bar.advance()
                book.append({"case": case_id, "error": error})
                if error is not None:
                    bar.print(f"case {case_id} failed: {error}")
                    failed.append(case_id)
                    return
                done.add(case_id)
                save()

            run_cases(predict_case, job, [c for c in ids if c not in done], engine, arrived)
        save(force=True)
    if part is not None and folder is not None:
        write_part(folder, "predict", part, ids, all_ids, book.context, "complete")
        typer.echo(
            f"{part.name}: predicted {len(ids) - len(failed)}/{len(ids)} case(s) -> {out}; when every part is "
            f"done: labelwise predict merge --out {out}"
        )
    else:
        journal_path.unlink(missing_ok=True)
        typer.echo(f"predicted {len(index.cases)}/{len(ids)} case(s) -> {out}")
    if failed:
        raise DataError(f"{len(failed)} case(s) failed: {', '.join(failed)}")


def predict_merge(
    out: Path = typer.Option(..., "--out", help="The prediction folder the parts wrote into."),
    allow_partial: AllowPartial = False,
) -> None:
    """Write predictions.json of a prediction folder filled by `labelwise predict --num-parts N --part-id K`.

    The index lists the cases every part predicted, in the split's order, as one run would. Missing, unfinished
    or overlapping parts are refused (named), unless --allow-partial.
    """
    from labelwise.engine.cohort import collect_parts
    from labelwise.errors import DataError
    from labelwise.io import PredictionIndex

    parts = collect_parts(out, "predict", allow_partial=allow_partial)
    ctx = parts.context
    cases = [c for c, rec in parts.records.items() if rec.get("error") is None and (out / f"{c}.nii.gz").is_file()]
    PredictionIndex(ctx["method"], tuple(ctx["class_names"]), tuple(ctx["rater_ids"]), cases).save(out)
    typer.echo(f"indexed {len(cases)}/{len(parts.all_ids)} case(s) in {out / 'predictions.json'}")
    if parts.missing_parts:
        typer.echo(f"partial: parts missing: {', '.join(parts.missing_parts)}", err=True)
    failed = [c for c, rec in parts.records.items() if rec.get("error") is not None]
    if failed:
        raise DataError(f"{len(failed)} case(s) failed: {', '.join(failed[:5])}")
