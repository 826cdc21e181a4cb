"""``labelwise fuse``: fuse each case's raters into one label and write a new dataset (see labels.dataset_fusion)."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["fuse"]


def fuse(
    dataset: Path = typer.Argument(..., help="Source dataset folder (with dataset.json)."),
    out: Path = typer.Option(..., "--out", help="Output folder: a new dataset whose single rater is 'fused'."),
    method: str = typer.Option("majority", "--method", help="Fusion rule: majority, mean or staple."),
    tie: str = typer.Option("lowest", "--tie", help="Tie policy: lowest (background wins 1-1 ties) or highest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
) -> None:
    """Fuse raters (majority vote, soft mean or STAPLE) and write fused labels plus reliability.csv.

    OUT becomes a dataset whose single rater is 'fused' (source geometry), with probabilities/ (mean, staple),
    undecided/ masks, and reliability.csv (per rater: STAPLE sensitivity, specificity, Dice vs the fused map).

    A case that fails is reported and left out; the others are written, and the exit code is 1.
    """
    from rich.console import Console

    from labelwise.cli.common import fail
    from labelwise.data import Dataset
    from labelwise.errors import ConfigError
    from labelwise.labels.dataset_fusion import fuse_dataset
    from labelwise.labels.fusion import fusion_rules

    if method not in fusion_rules:
        raise ConfigError(f"--method must be one of {', '.join(fusion_rules.available())}, got {method!r}")
    if tie not in ("lowest", "highest"):
        raise ConfigError(f"--tie must be lowest or highest, got {tie!r}")
    n = len(Dataset(dataset))
    console = Console(stderr=True)
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    cols = (TextColumn(f"fusing ({method})"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    with Progress(*cols, console=console) as bar:
        task = bar.add_task("fuse", total=n)
        report = fuse_dataset(
            dataset,
            out,
            method,
            tie=tie,  # type: ignore[arg-type]
            overwrite=overwrite,
            on_case=lambda _cid: bar.advance(task),
        )
    console.print(
        f"fused {len(report.fused)} cases, copied {len(report.unlabelled)} unlabelled -> {report.dest}"
        f" (reliability.csv)"
    )
    for row in report.reliability:
        console.print(
            f"  {row['rater']}: cases {row['cases']}, sensitivity {row['sensitivity']:.3f}, "
            f"specificity {row['specificity']:.3f}, Dice vs fused {row['dice_vs_fused']:.3f}"
        )
    if report.failures:
        for cid, msg in report.failures.items():
            console.print(f"[red]case {cid}: {msg}[/red]")
        raise fail(f"{len(report.failures)} case(s) failed; the other cases were written")
