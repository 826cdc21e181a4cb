"""``labelwise data import|check|stats``."""

from __future__ import annotations

from pathlib import Path

import typer

from labelwise.cli.common import progress

__all__ = ["app", "check", "import_", "split", "stats"]

app = typer.Typer(help="Import, check and summarise datasets.", no_args_is_help=True)

_FORMATS = "qubiq, medical-matting, lidc-probunet, riga, ph2, nifti-partial, mni152, folder"


@app.command("import")
def import_(
    fmt: str = typer.Argument(..., metavar="FORMAT", help=f"Source layout: {_FORMATS} (see docs/data.md)."),
    src: Path = typer.Argument(..., help="Source file or folder."),
    dest: Path = typer.Argument(..., help="Dataset folder to create."),
    task: str | None = typer.Option(None, "--task", help="Sub-task (qubiq: task01..; nifti-partial: class-map key)."),
    classes: str | None = typer.Option(None, "--classes", help="Comma-separated class names, background first."),
    seed: int = typer.Option(0, "--seed", help="Seed of the case-level split."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at DEST."),
) -> None:
    """Import SRC (layout FORMAT) into a labelwise dataset folder DEST; the manifest is written last."""
    from labelwise.data.importers import ImportOptions, import_dataset

    class_names = tuple(c.strip() for c in classes.split(",") if c.strip()) if classes else None
    options = ImportOptions(task=task, class_names=class_names, seed=seed, overwrite=overwrite)
    manifest = import_dataset(fmt, src, dest, options, track=progress)
    splits = {s: sum(c.split == s for c in manifest.cases) for s in ("train", "val", "test")}
    typer.echo(
        f"imported {len(manifest.cases)} cases ({manifest.spatial_dims}D, {len(manifest.rater_ids)} raters, "
        f"{len(manifest.class_names)} classes; train {splits['train']} / val {splits['val']} / "
        f"test {splits['test']}) into {dest}"
    )


@app.command("check")
def check(dataset: Path = typer.Argument(..., help="Dataset folder (or its dataset.json).")) -> None:
    """Check every file of DATASET; list all problems and exit 1 if there are any."""
    from labelwise.data.check import check_dataset

    report = check_dataset(dataset, track=progress)
    if report.ok:
        typer.echo(f"ok: {report.num_cases} cases in {report.root}, no problems")
        return
    for problem in report.problems:
        typer.secho(f"  {problem}", err=True)
    typer.secho(
        f"error: {len(report.problems)} problem(s) in {report.root} ({report.num_cases} cases)",
        fg=typer.colors.RED,
        err=True,
    )
    raise typer.Exit(1)


@app.command("stats")
def stats(
    dataset: Path = typer.Argument(..., help="Dataset folder (or its dataset.json)."),
    json_out: Path | None = typer.Option(None, "--json", help="Also write the statistics as JSON to this file."),
    max_classes: int = typer.Option(20, "--max-classes", help="Classes listed (most frequent first)."),
) -> None:
    """Print counts, shapes, spacing, class frequencies and inter-rater agreement of DATASET."""
    from labelwise.data.stats import dataset_stats, format_stats
    from labelwise.io import write_json_atomic

    result = dataset_stats(dataset, track=progress)
    typer.echo(format_stats(result, max_classes=max_classes))
    if json_out is not None:
        write_json_atomic(json_out, result.to_json())


@app.command("split")
def split(
    dataset: Path = typer.Argument(..., help="Dataset folder (or its dataset.json)."),
    out: Path = typer.Option(..., "--out", help="New dataset folder (same cases, new splits)."),
    folds: int = typer.Option(..., "--folds", min=2, help="Number of folds."),
    fold: int = typer.Option(..., "--fold", min=0, help="Fold used as the test split (0-based)."),
    stratify: str | None = typer.Option(None, "--stratify", help="Image-level label to stratify by."),
    val_fraction: float = typer.Option(0.2, "--val-fraction", help="Share of the non-test cases put in val."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fold assignment."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at OUT."),
) -> None:
    """Write a copy of DATASET whose splits are fold FOLD of a seeded k-fold (see labelwise.data.splits)."""
    from labelwise.data.splits import write_fold_dataset

    counts = write_fold_dataset(dataset, out, folds, fold, stratify, val_fraction, seed, overwrite)
    typer.echo(f"fold {fold}/{folds}: train {counts['train']} / val {counts['val']} / test {counts['test']} -> {out}")
