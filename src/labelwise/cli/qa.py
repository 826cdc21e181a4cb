"""``labelwise qa``: rank a dataset's masks by the Dice a trained Quality Sentinel predicts for them.

``--out`` may not be, contain or lie inside an input; the tables are written to a hidden sibling and swapped in at
the end (an earlier result in ``--out`` carries ``INCOMPLETE.txt`` until then, and keeps it if this run fails).
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["qa"]


def qa(
    model: Path = typer.Option(..., "--model", help="Sentinel run directory (labelwise train sentinel ...)."),
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder for quality.csv, review_queue.csv, ..."),
    masks: Path | None = typer.Option(None, "--masks", help="Prediction folder whose <case>.nii.gz maps to score."),
    raters: bool = typer.Option(False, "--raters", help="Score every rater's label map of every case."),
    perturb: int = typer.Option(0, "--perturb", min=0, help="Score N seeded perturbations of the reference instead."),
    split: str = typer.Option("all", "--split", help="train, val, test or all."),
    reference: str | None = typer.Option(
        None, "--reference", help="Ground truth for evaluation.json: a rater id, 'majority' or 'others' (--raters)."
    ),
    structures: str = typer.Option("", "--structures", help="Comma-separated structure names (default: all present)."),
    heldout: bool = typer.Option(False, "--heldout", help="3D: only the slices the run held out of training."),
    baselines: bool = typer.Option(False, "--baselines", help="Add the segmentation model's uncertainty baselines."),
    seed: int = typer.Option(0, "--seed", help="Seed of --perturb."),
    device: str | None = typer.Option(None, "--device", help="Torch device (default: CUDA if available)."),
) -> None:
    """Write quality.csv (case, structure, source, predicted Dice, rank) and review_queue.csv (worst first)."""
    import torch

    from labelwise.cli.common import progress
    from labelwise.errors import ConfigError
    from labelwise.io import StagedDir, check_output_not_input
    from labelwise.quality import run_qa, write_qa

    check_output_not_input(out, [model, data, masks])
    chosen = [n for n, on in (("--masks", masks is not None), ("--raters", raters), ("--perturb", perturb > 0)) if on]
    if len(chosen) != 1:
        raise ConfigError(f"give exactly one of --masks PRED_DIR, --raters or --perturb N (got {chosen or 'none'})")
    if not torch.cuda.is_available():
        torch.set_num_threads(max(1, torch.get_num_threads()))
    mode = "masks" if masks is not None else ("raters" if raters else "perturb")
    with StagedDir(out, overwrite=True, marker="quality.csv", kind="quality table", mark_stale=True) as stage:
        result = run_qa(
            model,
            data,
            mode,  # type: ignore[arg-type]
            masks=masks,
            split=None if split == "all" else split,
            reference=reference,
            structures=[s.strip() for s in structures.split(",") if s.strip()] or None,
            heldout_only=heldout,
            baselines=baselines,
            perturbations=perturb,
            seed=seed,
            device=device,
            track=progress,
        )
        paths = [out / p.name for p in write_qa(result, stage.path)]
    typer.echo(f"scored {len(result.rows)} masks; wrote {', '.join(p.name for p in paths)} to {out}")
    if result.evaluation is not None:
        s = result.evaluation["structure"]["sentinel"]
        typer.echo(
            "sentinel vs reference: "
            + ", ".join(f"{k} {v:.3f}" for k, v in s.items() if isinstance(v, float) and k != "n")
        )
