"""``labelwise predict RUN_DIR --data DATASET [--split test] --out PRED_DIR``.

Writes one prediction per case through :func:`labelwise.io.write_prediction` in the case's source geometry and
rewrites ``predictions.json`` after each case. A case that fails is reported and skipped; the command exits
non-zero at the end if any failed. Incompatible datasets (other channels/classes/dims than the model) are
rejected before anything is written, and so is an ``--out`` that is, contains or lies inside the run or the
dataset. A run that did not finish (killed, or still training) is used with a warning.
"""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from labelwise.cli.common import fail, progress

__all__ = ["predict"]

logger = logging.getLogger(__name__)


def predict(
    run_dir: Path = typer.Argument(..., help="A run directory written by `labelwise train`."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Prediction folder to write."),
    split: str | None = typer.Option("test", "--split", help="Split to predict: train, val, test or all."),
    tta: bool | None = typer.Option(None, "--tta/--no-tta", help="Flip test-time augmentation (default: run config)."),
    device: str | None = typer.Option(None, "--device", help="torch device (default: cuda if available)."),
    # --- multi-rater method options (mrnet, prob-unet, dpersona); other methods ignore them ---
    rater_weights: str | None = typer.Option(
        None,
        "--rater-weights",
        help="mrnet: rater weighting, one weight per training rater summing to 1, e.g. 0.5,0.5,0",
    ),
    samples: int | None = typer.Option(None, "--samples", min=1, help="prob-unet/dpersona: number of samples N."),
) -> None:
    """Predict the cases of SPLIT with the model in RUN_DIR."""
    from labelwise.data import Dataset
    from labelwise.engine.planner import PLAN_NAME, Plan
    from labelwise.errors import DataError, LabelwiseError
    from labelwise.io import PredictionIndex, check_output_not_input, write_prediction
    from labelwise.methods import load_run

    check_output_not_input(out, [run_dir, data])
    if out.exists() and not out.is_dir():
        raise DataError("exists and is not a folder", out)
    ds = Dataset(data)
    plan = Plan.load(Path(run_dir) / PLAN_NAME)
    plan.check_dataset(ds)
    method, _cfg, predictor = load_run(run_dir, device)
    ids = ds.split_ids(None if split in (None, "all") else split)
    if not ids:
        raise fail(f"{data}: no cases in split {split!r}")
    out.mkdir(parents=True, exist_ok=True)
    # Class names of the model's outputs (a subset of the dataset's when trained with `classes`).
    # Per-rater maps come in the order of the raters the model was trained with (multi-rater predictors say which).
    rater_ids = tuple(getattr(predictor, "rater_ids", ds.rater_ids))
    index = PredictionIndex(method.name, tuple(plan.class_names), rater_ids, [])
    options: dict[str, object] = {} if tta is None else {"tta": tta}
    # --- multi-rater method options: validated once, before any case is predicted ---
    if rater_weights is not None:
        options["rater_weights"] = rater_weights
    if samples is not None:
        options["samples"] = samples
    check = getattr(predictor, "check_options", None)
    if check is not None:
        check(**options)
    failed: list[str] = []
    for case_id in progress(ids, "predict"):
        try:
            case = ds.load(case_id)
            pred = predictor.predict(case, **options)
            if pred.spatial_shape != case.spatial_shape:
                raise LabelwiseError(
                    f"case {case_id}: prediction shape {pred.spatial_shape} != image {case.spatial_shape}"
                )
            write_prediction(out, case_id, pred, case.spacing_mm, case.affine)
        except (LabelwiseError, ValueError, RuntimeError, OSError) as exc:
            logger.error("case %s failed: %s", case_id, exc)
            typer.secho(f"case {case_id} failed: {exc}", fg=typer.colors.RED, err=True)
            failed.append(case_id)
            continue
        index.cases.append(case_id)
        index.save(out)
    if not index.cases:
        index.save(out)
    typer.echo(f"predicted {len(index.cases)}/{len(ids)} case(s) -> {out}")
    if failed:
        raise fail(f"{len(failed)} case(s) failed: {', '.join(failed)}")
