"""``labelwise predict --run RUN --data DATASET [--split test] --out PRED_DIR``.

Writes one prediction per case through :func:`labelwise.io.write_prediction` in the case's source geometry and
rewrites ``predictions.json`` after each case. The prediction options given (``--tta/--no-tta``, ``--samples``,
``--rater-weights``) are checked by the method once, before the first case: an option the method does not take
is a usage error naming the options it does take. A case that fails is reported and skipped; the command exits 1
at the end if any failed. Incompatible datasets (other channels/classes/dims than the model) are rejected before
anything is written, and so is an ``--out`` that is, contains or lies inside the run or the dataset. A run that did
not finish (killed, or still training) is used with a warning.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer

__all__ = ["predict"]


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
) -> None:
    """Predict the cases of SPLIT of DATASET with the model of RUN."""
    from labelwise.cli.common import moved, split_ids
    from labelwise.data import Dataset
    from labelwise.engine.planner import PLAN_NAME, Plan
    from labelwise.errors import DataError, LabelwiseError
    from labelwise.io import PredictionIndex, check_output_not_input, write_prediction
    from labelwise.methods import load_run
    from labelwise.progress import track

    run_dir = moved(run, old_run, option="--run", old="labelwise predict RUN", new="labelwise predict --run RUN")
    check_output_not_input(out, [run_dir, data])
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    ds = Dataset(data)
    ids = split_ids(ds, split)
    plan = Plan.load(Path(run_dir) / PLAN_NAME)
    plan.check_dataset(ds)
    method, _cfg, predictor = load_run(run_dir, device)
    # Only what the user gave; the method checks it once, here, before any case (unknown option: exit 2).
    given: dict[str, Any] = {"tta": tta, "rater_weights": rater_weights, "samples": samples}
    given = {k: v for k, v in given.items() if v is not None}
    predictor.options(**given)
    rater_ids = predictor.rater_ids or ds.rater_ids
    out.mkdir(parents=True, exist_ok=True)
    # Class names of the model's outputs (a subset of the dataset's when trained with `classes`); per-rater maps
    # come in the order of the raters the model was trained with.
    index = PredictionIndex(method.name, tuple(plan.class_names), tuple(rater_ids), [])
    failed: list[str] = []
    for case_id in track(ids, "predict"):
        try:
            case = ds.load(case_id)
            pred = predictor.predict(case, **given)
            write_prediction(out, case_id, pred, case.spacing_mm, case.affine)
        except (LabelwiseError, ValueError, RuntimeError, OSError) as exc:
            typer.secho(f"case {case_id} failed: {exc}", fg=typer.colors.RED, err=True)
            failed.append(case_id)
            continue
        index.cases.append(case_id)
        index.save(out)
    if not index.cases:
        index.save(out)
    typer.echo(f"predicted {len(index.cases)}/{len(ids)} case(s) -> {out}")
    if failed:
        raise DataError(f"{len(failed)} case(s) failed: {', '.join(failed)}")
