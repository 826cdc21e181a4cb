"""``labelwise evaluate --pred PRED_DIR --data DATASET --out OUT``: score predictions (thin wrapper of the runner).

``--classes`` takes class names of the dataset (label values work too, e.g. ``--classes 1,3``; an item that names
one class and is the value of another is refused as ambiguous).

``--slices`` scores a subset of the slices of 3D cases (``labelwise.evaluation.SliceSelection``):
``82-86,90`` (explicit indices and inclusive ranges), ``labelled`` (each case's labelled slices) or
``held-out:RUN_DIR`` (each case's labelled slices minus the slices the run trained on, read from the run's
``plan.json`` ``train_slices``: the test slices of the k-labelled-slice protocol).

``--out`` may not be, contain or lie inside an input. The results are written to a hidden sibling of ``--out`` and
swapped in at the end; while that runs, an earlier evaluation in ``--out`` carries an ``INCOMPLETE.txt`` that stays
if this run fails or is killed, so old results never pass for the latest ones. Each case's result is also appended
to a journal beside ``--out`` (``.OUT.journal.jsonl``) as it finishes: a rerun of a killed run with the same inputs
and options skips the cases already scored; the journal is removed when the results are in place.

``--num-parts N --part-id K`` scores part K of the cases only (balanced by file size, the same split in every
part), into ``OUT/parts/part-K-of-N/``; ``labelwise evaluate merge --out OUT`` then writes exactly the tables one
run would. ``--scheduler`` runs the cases on Dask (docs/scale.md).
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, AllowPartial, Labels, NumParts, PartId, Scheduler

if TYPE_CHECKING:
    from labelwise.evaluation import SliceSelection
    from labelwise.metrics.conventions import EmptyMode

__all__ = ["EmptyConvention", "evaluate", "evaluate_merge", "run_train_slices", "slice_selection"]

HELD_OUT = "held-out:"


class SurfaceChoice(str, Enum):
    """``--surface``: the surface definitions of :data:`labelwise.metrics.surface.SurfaceMode`."""

    voxels = "voxels"
    surfels = "surfels"


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
    surface: SurfaceChoice = typer.Option(
        SurfaceChoice.voxels,
        "--surface",
        help="Surface definition of hd/hd95/assd/masd/nsd: voxels (boundary voxels, as MONAI; default) or surfels "
        "(area-weighted surface elements, as DeepMind surface-distance and FLARE's NSD); see docs/metrics.md.",
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
    num_parts: NumParts = None,
    part_id: PartId = None,
    scheduler: Scheduler = None,
) -> None:
    """Score predictions against each rater and the majority vote; write per-case and summary tables.

    With --num-parts/--part-id, score one part into OUT/parts/ and combine the parts with
    `labelwise evaluate merge --out OUT`.

    With --labels reviewed the reference of a corrected case is its correction (rater 'reviewed'), a case rejected
    and not corrected since is outside every split, and summary.json records the provenance.

    Exit code 1 when any case failed (missing or broken prediction); the other cases are still scored.
    """
    from labelwise.cli.common import class_indices, cohort_engine, open_dataset, split_ids
    from labelwise.engine.cohort import PartSpec, part_dir, write_part
    from labelwise.errors import DataError
    from labelwise.evaluation import DEFAULT_METRICS, EvaluationConfig, EvaluationResult, evaluate_folder, write_outputs
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
        surface=surface.value,
    )
    part = PartSpec.from_options(num_parts, part_id)
    engine = cohort_engine(workers, scheduler, [pred, ds.root])
    the_split = None if split == "all" else split

    def run(journal: Path, bar: ProgressBar) -> EvaluationResult:
        def done(case_id: str, error: str | None) -> None:
            bar.advance()
            if error:
                bar.print(f"failed {case_id}: {error}")

        return evaluate_folder(
            pred, ds, split=the_split, config=cfg, on_case_done=done, engine=engine, part=part, journal=journal
        )

    if part is not None:
        folder = part_dir(out, part)
        if out.exists() and not out.is_dir():
            raise DataError("exists and is not a folder", out)
        with ProgressBar(f"evaluating {part.name}", None) as bar:
            result = run(folder / "cases.jsonl", bar)
        write_part(folder, "evaluate", part, result.ids, ds.split_ids(the_split), result.context, "complete")
        s = result.summary
        typer.echo(
            f"{part.name}: scored {s['n_scored']}/{s['n_cases']} cases into {folder}; when every part is done: "
            f"labelwise evaluate merge --out {out}",
            err=True,
        )
    else:
        journal = out.parent / f".{out.name}.journal.jsonl"
        with StagedDir(out, overwrite=True, marker="summary.json", kind="evaluation", mark_stale=True) as stage:
            with ProgressBar("evaluating", n_cases) as bar:
                result = run(journal, bar)
            paths = write_outputs(result, stage.path)
        journal.unlink(missing_ok=True)
        s = result.summary
        typer.echo(
            f"scored {s['n_scored']}/{s['n_cases']} cases; wrote {', '.join(p.name for p in paths)} to {out}", err=True
        )
    if result.failures:
        raise DataError(f"{len(result.failures)} case(s) failed (see summary.json)")


def evaluate_merge(
    out: Path = typer.Option(..., "--out", help="The --out folder the parts wrote into (OUT/parts/part-K-of-N/)."),
    allow_partial: AllowPartial = False,
) -> None:
    """Combine the parts of `labelwise evaluate --num-parts N --part-id K` into OUT's per_case.csv and summaries.

    The per-case table is exactly the one a single run writes; the summary and its bootstrap intervals are
    recomputed from the per-case values. Missing, unfinished or overlapping parts are refused (named), unless
    --allow-partial. Exit code 1 when any case failed, as for a single run.
    """
    from labelwise.errors import DataError
    from labelwise.evaluation import merge_parts, write_outputs

    result, missing = merge_parts(out, allow_partial=allow_partial)
    paths = write_outputs(result, out)
    s = result.summary
    typer.echo(
        f"merged {s['n_cases']} cases ({s['n_scored']} scored); wrote {', '.join(p.name for p in paths)} to {out}",
        err=True,
    )
    if missing:
        typer.echo(f"partial: parts missing: {', '.join(missing)}", err=True)
    if result.failures:
        raise DataError(f"{len(result.failures)} case(s) failed (see summary.json)")
