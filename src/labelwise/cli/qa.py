"""``labelwise qa --run RUN --data DATASET (--raters | --masks PRED_DIR | --perturb N) --out OUT``.

Ranks a dataset's masks by the Dice a trained Quality Sentinel (RUN) predicts for them.

``--out`` may not be, contain or lie inside an input; the tables are written to a hidden sibling and swapped in at
the end (an earlier result in ``--out`` carries ``INCOMPLETE.txt`` until then, and keeps it if this run fails).
Each case's rows are appended to a journal beside ``--out`` as they arrive, so a rerun of a killed run skips the
cases done. ``--num-parts N --part-id K`` scores one part into ``OUT/parts/part-K-of-N/`` and ``labelwise qa merge
--out OUT`` combines the parts; ``--scheduler`` runs the cases on Dask, the sentinel loaded once per worker
(docs/scale.md). ``--perturb`` runs in one process (one random stream over the cases).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, AllowPartial, Labels, NumParts, PartId, Scheduler

if TYPE_CHECKING:
    from labelwise.quality.qa import CandidateMode

__all__ = ["qa", "qa_merge"]


def qa(
    run: Path | None = typer.Option(
        None, "--run", help="Sentinel run directory (labelwise train sentinel ...) (required)."
    ),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder for quality.csv, review_queue.csv, ..."),
    masks: Path | None = typer.Option(None, "--masks", help="Prediction folder whose <case>.nii.gz maps to score."),
    raters: bool = typer.Option(False, "--raters", help="Score every rater's label map of every case."),
    perturb: int = typer.Option(0, "--perturb", min=0, help="Score N seeded perturbations of the reference instead."),
    split: str = typer.Option("all", "--split", help="One of the dataset's splits, or all."),
    reference: str | None = typer.Option(
        None, "--reference", help="Ground truth for evaluation.json: a rater id, 'majority' or 'others' (--raters)."
    ),
    structures: str = typer.Option("", "--structures", help="Comma-separated structure names (default: all present)."),
    heldout: bool = typer.Option(False, "--heldout", help="3D: only the slices the run held out of training."),
    baselines: bool = typer.Option(False, "--baselines", help="Add the segmentation model's uncertainty baselines."),
    seed: int = typer.Option(0, "--seed", help="Seed of --perturb."),
    device: str | None = typer.Option(None, "--device", help="Torch device (default: CUDA if available)."),
    labels: Labels = LABELS_OPTION,
    old_model: Path | None = typer.Option(None, "--model", hidden=True, help="Deprecated: use --run."),
    num_parts: NumParts = None,
    part_id: PartId = None,
    scheduler: Scheduler = None,
) -> None:
    """Write quality.csv (case, structure, source, predicted Dice, rank) and review_queue.csv (worst first).

    With --num-parts/--part-id, score one part into OUT/parts/ and combine the parts with `labelwise qa merge`.
    Exit code 1 when a case could not be scored (the others are).

    With --labels reviewed, --raters scores a corrected case's correction (source 'reviewed') and leaves out the
    cases rejected and not corrected since.
    """
    import torch

    from labelwise.cli.common import cohort_engine, moved, open_dataset, split_ids
    from labelwise.engine.cohort import PartSpec, part_dir, write_part
    from labelwise.errors import DataError, UsageError
    from labelwise.io import StagedDir, check_output_not_input
    from labelwise.progress import track
    from labelwise.quality import QAResult, run_qa, write_qa

    model = moved(run, old_model, option="--run", old="labelwise qa --model RUN", new="labelwise qa --run RUN")
    check_output_not_input(out, [model, data, masks])
    chosen = [n for n, on in (("--masks", masks is not None), ("--raters", raters), ("--perturb", perturb > 0)) if on]
    if len(chosen) != 1:
        raise UsageError(f"give exactly one of --masks PRED_DIR, --raters or --perturb N (got {chosen or 'none'})")
    ds = open_dataset(data, labels)
    split_ids(ds, split)
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    mode: CandidateMode = "masks" if masks is not None else ("raters" if raters else "perturb")
    part = PartSpec.from_options(num_parts, part_id)
    engine = None if scheduler is None else cohort_engine(1, scheduler, [ds.root, masks, model])
    the_split = None if split == "all" else split

    def score(journal: Path | None) -> QAResult:
        return run_qa(
            model,
            ds,
            mode,
            masks=masks,
            split=the_split,
            reference=reference,
            structures=[s.strip() for s in structures.split(",") if s.strip()] or None,
            heldout_only=heldout,
            baselines=baselines,
            perturbations=perturb,
            seed=seed,
            device=device,
            track=track,
            engine=engine,
            part=part,
            journal=journal,
        )

    if part is not None:
        if mode == "perturb":
            raise UsageError("--perturb draws one random stream over the cases; it cannot be split into parts")
        folder = part_dir(out, part)
        if out.exists() and not out.is_dir():
            raise DataError("exists and is not a folder", out)
        result = score(folder / "cases.jsonl")
        write_part(folder, "qa", part, result.ids, ds.split_ids(the_split), result.context, "complete")
        typer.echo(
            f"{part.name}: scored {len(result.rows)} masks of {len(result.ids)} cases into {folder}; when every "
            f"part is done: labelwise qa merge --out {out}"
        )
    else:
        journal = None if mode == "perturb" else out.parent / f".{out.name}.journal.jsonl"
        with StagedDir(out, overwrite=True, marker="quality.csv", kind="quality table", mark_stale=True) as stage:
            result = score(journal)
            paths = [out / p.name for p in write_qa(result, stage.path)]
        if journal is not None:
            journal.unlink(missing_ok=True)
        typer.echo(f"scored {len(result.rows)} masks; wrote {', '.join(p.name for p in paths)} to {out}")
    if result.evaluation is not None:
        s = result.evaluation["structure"]["sentinel"]
        typer.echo(
            "sentinel vs reference: "
            + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float) and k != "n")
        )
    for cid, err in sorted(result.failures.items()):
        typer.secho(f"case {cid} failed: {err}", fg=typer.colors.RED, err=True)
    if result.failures:
        raise DataError(f"{len(result.failures)} case(s) failed: {', '.join(sorted(result.failures)[:5])}")


def qa_merge(
    out: Path = typer.Option(..., "--out", help="The --out folder the parts wrote into (OUT/parts/part-K-of-N/)."),
    allow_partial: AllowPartial = False,
) -> None:
    """Combine the parts of `labelwise qa --num-parts N --part-id K` into OUT's quality tables.

    The rows are the parts' own; ranks, the per-case table and evaluation.json are recomputed from them, so the
    files are exactly those of a single run. Missing, unfinished or overlapping parts are refused (named), unless
    --allow-partial.
    """
    from labelwise.errors import DataError
    from labelwise.quality import merge_qa_parts, write_qa

    result, missing = merge_qa_parts(out, allow_partial=allow_partial)
    paths = write_qa(result, out)
    typer.echo(f"merged {len(result.rows)} masks of {len(result.ids)} cases; wrote {', '.join(p.name for p in paths)}")
    if missing:
        typer.echo(f"partial: parts missing: {', '.join(missing)}", err=True)
    if result.failures:
        raise DataError(f"{len(result.failures)} case(s) failed: {', '.join(sorted(result.failures)[:5])}")
