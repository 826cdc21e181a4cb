"""``labelwise qa --run RUN --data DATASET (--raters | --masks PRED_DIR | --perturb N) --out OUT``.

Ranks a dataset's masks by the Dice a trained Quality Sentinel (RUN) predicts for them.

``--out`` may not be, contain or lie inside an input; the tables are written to a hidden sibling and swapped in at
the end (an earlier result in ``--out`` carries ``INCOMPLETE.txt`` until then, and keeps it if this run fails).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, Labels

if TYPE_CHECKING:
    from labelwise.quality.qa import CandidateMode

__all__ = ["qa"]


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
) -> None:
    """Write quality.csv (case, structure, source, predicted Dice, rank) and review_queue.csv (worst first).

    With --labels reviewed, --raters scores a corrected case's correction (source 'reviewed') and leaves out the
    cases rejected and not corrected since.
    """
    import torch

    from labelwise.cli.common import moved, open_dataset, split_ids
    from labelwise.errors import UsageError
    from labelwise.io import StagedDir, check_output_not_input
    from labelwise.progress import track
    from labelwise.quality import run_qa, write_qa

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
    with StagedDir(out, overwrite=True, marker="quality.csv", kind="quality table", mark_stale=True) as stage:
        result = run_qa(
            model,
            ds,
            mode,
            masks=masks,
            split=None if split == "all" else split,
            reference=reference,
            structures=[s.strip() for s in structures.split(",") if s.strip()] or None,
            heldout_only=heldout,
            baselines=baselines,
            perturbations=perturb,
            seed=seed,
            device=device,
            track=track,
        )
        paths = [out / p.name for p in write_qa(result, stage.path)]
    typer.echo(f"scored {len(result.rows)} masks; wrote {', '.join(p.name for p in paths)} to {out}")
    if result.evaluation is not None:
        s = result.evaluation["structure"]["sentinel"]
        typer.echo(
            "sentinel vs reference: "
            + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float) and k != "n")
        )
