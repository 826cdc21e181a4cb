"""``labelwise predict RUN_DIR --data DATASET [--split test] --out PRED_DIR``.

Writes one prediction per case through :func:`labelwise.io.write_prediction` in the case's source geometry and
rewrites ``predictions.json`` after each case. A case that fails is reported and skipped; the command exits
non-zero at the end if any failed. Incompatible datasets (other channels/classes/dims than the model) are
rejected before anything is written.
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
) -> None:
    """Predict the cases of SPLIT with the model in RUN_DIR."""
    from labelwise.data import Dataset
    from labelwise.engine.planner import PLAN_NAME, Plan
    from labelwise.errors import LabelwiseError
    from labelwise.io import PredictionIndex, write_prediction
    from labelwise.methods import load_run

    ds = Dataset(data)
    plan = Plan.load(Path(run_dir) / PLAN_NAME)
    plan.check_dataset(ds)
    method, _cfg, predictor = load_run(run_dir, device)
    ids = ds.split_ids(None if split in (None, "all") else split)
    if not ids:
        raise fail(f"{data}: no cases in split {split!r}")
    out.mkdir(parents=True, exist_ok=True)
    index = PredictionIndex(method.name, tuple(ds.class_names), tuple(ds.rater_ids), [])
    options = {} if tta is None else {"tta": tta}
    failed: list[str] = []
    for case_id in progress(ids, "predict"):
        try:
            case = ds.load(case_id)
            pred = predictor.predict(case, **options)
            if pred.spatial_shape != case.spatial_shape:
                raise LabelwiseError(f"case {case_id}: prediction shape {pred.spatial_shape} != image {case.spatial_shape}")
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
