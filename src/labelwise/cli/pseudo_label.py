"""``labelwise pseudo-label --pred PRED_DIR [--pred ...] --data DATASET --out NEW_DATASET``: keep certain pseudo-labels.

Each PRED_DIR is a prediction folder (``labelwise predict``). For every case present in all of them, the label
maps (plus the ``samples`` of each folder with ``--with-samples``, e.g. the two CPS networks) are the predictions
whose agreement gives the certainty: mean per-class IoU of each prediction to the plurality vote, per chunk of
``--chunk`` slices (whole cases without it). Units with certainty >= ``--threshold`` (0.9) are kept, or, with
``--scores FILE``, cases whose external score (e.g. a label-quality estimator's predicted Dice) is >= threshold.
The vote on kept units is written as a new dataset (rater ``pseudo``; DATASET is not modified) with
``pseudo_report.json`` listing every unit, its score and whether it was kept. OUT may not be, contain or lie
inside an input; it is built in a hidden sibling folder and swapped in when complete, so ``--overwrite`` keeps the
previous OUT until the new one exists.
"""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.common import LABELS_OPTION, Labels

__all__ = ["pseudo_label"]


def pseudo_label(
    pred: list[Path] | None = typer.Option(
        None, "--pred", help="Prediction folder of DATASET (required; repeat for several, e.g. two methods)."
    ),
    data: Path = typer.Option(..., "--data", help="The dataset the predictions belong to."),
    out: Path = typer.Option(..., "--out", help="New dataset folder for the selected pseudo-labels."),
    threshold: float = typer.Option(0.9, "--threshold", help="Keep units with score >= threshold."),
    chunk: int | None = typer.Option(None, "--chunk", help="3D: slices per certainty chunk (default: whole case)."),
    scores: Path | None = typer.Option(None, "--scores", help="JSON/CSV of external per-case scores to select on."),
    with_samples: bool = typer.Option(
        False, "--with-samples", help="Also use each folder's sample maps as predictions (e.g. both CPS networks)."
    ),
    skip_labelled: bool = typer.Option(
        True, "--skip-labelled/--keep-labelled", help="Leave slices/cases that already have labels alone."
    ),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at OUT."),
    labels: Labels = LABELS_OPTION,
    old_pred_dirs: list[Path] | None = typer.Argument(None, hidden=True, help="Deprecated: use --pred."),
    old_samples: bool = typer.Option(False, "--samples", hidden=True, help="Deprecated: use --with-samples."),
) -> None:
    """Select pseudo-labels by agreement certainty (or external scores) and write them as a new dataset.

    With --labels reviewed a corrected case counts as labelled and a case rejected (not corrected since) as
    unlabelled, so --skip-labelled leaves the corrections alone and can pseudo-label the rejected cases.
    """
    import math

    import numpy as np

    from labelwise.cli.common import deprecated, moved, open_dataset
    from labelwise.data.manifest import MANIFEST_NAME
    from labelwise.errors import DataError, UsageError
    from labelwise.io import PredictionIndex, StagedDir, check_output_not_input, read_prediction
    from labelwise.progress import track
    from labelwise.uncertainty import load_quality_scores, write_pseudo_labels

    pred_dirs = moved(
        pred or None,
        old_pred_dirs or None,
        option="--pred",
        old="labelwise pseudo-label PRED_DIR...",
        new="labelwise pseudo-label --pred PRED_DIR [--pred ...]",
    )
    if old_samples:
        deprecated("labelwise pseudo-label --samples", "labelwise pseudo-label --with-samples")
    samples = with_samples or old_samples
    check_output_not_input(out, [*pred_dirs, data, scores])
    if not math.isfinite(threshold):
        raise UsageError(f"--threshold must be a finite number, got {threshold}")
    if chunk is not None and chunk < 1:
        raise UsageError(f"--chunk must be >= 1, got {chunk}")
    ds = open_dataset(data, labels)
    with StagedDir(out, overwrite=overwrite, marker=MANIFEST_NAME, kind="dataset") as stage:
        indexes = [PredictionIndex.load(p) for p in pred_dirs]
        names = indexes[0].class_names
        for p, ix in zip(pred_dirs, indexes, strict=True):
            if ix.class_names != names:
                problem = f"class names {list(ix.class_names)} differ from {pred_dirs[0]}'s {list(names)}"
                raise DataError(problem, p)
        common = [c for c in indexes[0].cases if all(c in ix.cases for ix in indexes[1:])]
        if not common:
            raise DataError("no case is present in every prediction folder", pred_dirs[0])
        preds: dict[str, list[np.ndarray]] = {}
        for case_id in track(common, "reading predictions"):
            maps = []
            for p in pred_dirs:
                pr = read_prediction(p, case_id, ds.spatial_dims)
                assert pr.label is not None
                maps.append(pr.label)
                if samples and pr.samples is not None:
                    maps.extend(list(pr.samples))
            preds[case_id] = maps
        ext = load_quality_scores(scores) if scores is not None else None
        report = write_pseudo_labels(
            ds,
            preds,
            stage.path,
            names,
            threshold=threshold,
            chunk_size=chunk,
            scores=ext,
            skip_labelled=skip_labelled,
        )
    typer.echo(
        f"kept {report.kept_units}/{len(report.decisions)} unit(s) ({report.signal} >= {threshold}); "
        f"wrote {len(report.cases_written)} case(s) -> {out}"
    )
