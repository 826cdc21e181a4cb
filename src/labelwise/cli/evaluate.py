"""``labelwise evaluate --pred PRED_DIR --data DATASET --out OUT``: score predictions (thin wrapper of the runner).

``--classes`` takes class names of the dataset (label values work too, e.g. ``--classes 1,3``; an item that names
one class and is the value of another is refused as ambiguous).

``--slices`` scores a subset of the slices of 3D cases (``labelwise.evaluation.SliceSelection``):
``82-86,90`` (explicit indices and inclusive ranges), ``labelled`` (each case's labelled slices) or
``held-out:RUN_DIR`` (each case's labelled slices minus the slices the run trained on, read from the run's
``plan.json`` ``train_slices``: the test slices of the k-labelled-slice protocol).

``--out`` may not be, contain or lie inside an input. The results are written to a hidden sibling of ``--out`` and
swapped in at the end; while that runs, an earlier evaluation in ``--out`` carries an ``INCOMPLETE.txt`` that stays
if this run fails or is killed, so old results never pass for the latest ones.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, Labels

if TYPE_CHECKING:
    from labelwise.evaluation import SliceSelection
    from labelwise.metrics.conventions import EmptyMode

__all__ = ["EmptyConvention", "evaluate", "run_train_slices", "slice_selection"]

HELD_OUT = "held-out:"


class EmptyConvention(str, Enum):
    """``--empty``: the empty-mask conventions of :data:`labelwise.metrics.conventions.CONVENTIONS`."""

    labelwise = "labelwise"
    flare = "flare"
    nnunet = "nnunet"
    monai = "monai"
    metricsreloaded = "metricsreloaded"


_EMPTY: dict[EmptyConvention, EmptyMode] = {
    EmptyConvention.labelwise: "labelwise",
    EmptyConvention.flare: "flare",
    EmptyConvention.nnunet: "nnunet",
    EmptyConvention.monai: "monai",
    EmptyConvention.metricsreloaded: "metricsreloaded",
}


def run_train_slices(run_dir: Path) -> dict[str, tuple[int, ...]]:
    """Case id -> training slices recorded by a run (``plan.json`` ``train_slices``; ``cps``, ``propagation``).

    Raises:
        ConfigError: The run recorded no training slices (not a slice-wise 3D run).

    """
    from labelwise.engine.planner import PLAN_NAME, Plan
    from labelwise.errors import ConfigError

    plan = Plan.load(Path(run_dir) / PLAN_NAME)
    if not plan.train_slices:
        raise ConfigError(f"{run_dir}: the run recorded no training slices (plan.json train_slices)")
    return {cid: tuple(int(z) for z in zs) for cid, zs in plan.train_slices.items()}


def slice_selection(text: str, axis: int = 2) -> SliceSelection:
    """Parse ``--slices``: ``labelled``, ``held-out:RUN_DIR`` or indices/ranges such as ``82-86,90``."""
    from labelwise.evaluation import SliceSelection, parse_slice_indices

    text = text.strip()
    if text == "labelled":
        return SliceSelection("labelled", axis=axis, spec=text)
    if text.startswith(HELD_OUT):
        run = Path(text[len(HELD_OUT) :])
        return SliceSelection("labelled", exclude=run_train_slices(run), axis=axis, spec=text)
    return SliceSelection("indices", indices=parse_slice_indices(text), axis=axis, spec=text)


def evaluate(
    pred: Path = typer.Option(..., "--pred", help="Prediction folder (with predictions.json)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder for per_case.csv, summary.json, summary.md."),
    split: str = typer.Option("test", "--split", help="Split to evaluate: one of the dataset's splits, or all."),
    metrics: str = typer.Option(
        "", "--metrics", help="Comma-separated metric names (default: all applicable). E.g. dice,hd95,nsd."
    ),
    tolerance_mm: float = typer.Option(1.0, "--tolerance-mm", min=0.0, help="NSD tolerance in mm."),
    percentile: float = typer.Option(95.0, "--percentile", min=0.0, max=100.0, help="Percentile of the hd95 column."),
    empty: EmptyConvention = typer.Option(
        EmptyConvention.labelwise, "--empty", help="Empty-mask convention (see docs/metrics.md)."
    ),
    workers: int = typer.Option(1, "--workers", min=1, help="Parallel worker processes."),
    n_bootstrap: int = typer.Option(1000, "--n-bootstrap", min=0, help="Bootstrap resamples for the 95% CI."),
    classes: str = typer.Option(
        "",
        "--classes",
        help="Comma-separated class names (or label values) to score (default: every class of the prediction).",
    ),
    slices: str | None = typer.Option(
        None,
        "--slices",
        help="3D: score only these slices: e.g. 82-86,90, 'labelled', or 'held-out:RUN_DIR' (labelled slices "
        "minus the run's training slices). Metrics per 3D case: overlap pooled over them, surface metrics in 3D "
        "with the slices at their true positions; 2D per-slice means: dice_per_slice, nsd_per_slice, ...",
    ),
    slice_axis: int = typer.Option(
        2, "--slice-axis", min=0, max=2, help="Spatial axis of --slices (2 = last, the labelled-slice axis)."
    ),
    labels: Labels = LABELS_OPTION,
) -> None:
    """Score predictions against each rater and the majority vote; write per-case and summary tables.

    With --labels reviewed the reference of a corrected case is its correction (rater 'reviewed'), a case rejected
    and not corrected since is outside every split, and summary.json records the provenance.

    Exit code 1 when any case failed (missing or broken prediction); the other cases are still scored.
    """
    from labelwise.cli.common import class_indices, open_dataset, split_ids
    from labelwise.errors import DataError
    from labelwise.evaluation import DEFAULT_METRICS, EvaluationConfig, evaluate_folder, write_outputs
    from labelwise.io import StagedDir, check_output_not_input
    from labelwise.progress import ProgressBar

    held_out_run = Path(slices.strip()[len(HELD_OUT) :]) if slices and slices.strip().startswith(HELD_OUT) else None
    check_output_not_input(out, [pred, data, held_out_run])
    ds = open_dataset(data, labels)
    n_cases = len(split_ids(ds, split))
    names = tuple(m.strip() for m in metrics.split(",") if m.strip()) or DEFAULT_METRICS
    class_list = None
    if classes.strip():
        class_list = tuple(ds.class_names[i] for i in class_indices(classes, ds.class_names))
    cfg = EvaluationConfig(
        metrics=names,
        tolerance_mm=tolerance_mm,
        percentile=percentile,
        empty=_EMPTY[empty],
        n_bootstrap=n_bootstrap,
        classes=class_list,
        slices=None if slices is None else slice_selection(slices, slice_axis),
    )
    with StagedDir(out, overwrite=True, marker="summary.json", kind="evaluation", mark_stale=True) as stage:
        with ProgressBar("evaluating", n_cases) as bar:

            def done(case_id: str, error: str | None) -> None:
                bar.advance()
                if error:
                    bar.print(f"failed {case_id}: {error}")

            result = evaluate_folder(
                pred, ds, split=None if split == "all" else split, config=cfg, workers=workers, on_case_done=done
            )
        paths = write_outputs(result, stage.path)
    s = result.summary
    typer.echo(
        f"scored {s['n_scored']}/{s['n_cases']} cases; wrote {', '.join(p.name for p in paths)} to {out}", err=True
    )
    if result.failures:
        raise DataError(f"{len(result.failures)} case(s) failed (see summary.json)")
