"""``labelwise fuse --data DATASET --out DIR``: fuse each case's raters into one label and write a new dataset.

See :mod:`labelwise.labels.dataset_fusion`.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from labelwise.cli.common import LABELS_OPTION, Labels

if TYPE_CHECKING:
    from labelwise.labels.fusion import TiePolicy

__all__ = ["FusionRule", "Tie", "fuse"]


class FusionRule(str, Enum):
    """``--method``: the registered fusion rules of :data:`labelwise.labels.fusion.fusion_rules`."""

    majority = "majority"
    mean = "mean"
    staple = "staple"


class Tie(str, Enum):
    """``--tie``: who wins a tie of the majority vote (``undecided`` is not offered: a dataset needs a label)."""

    lowest = "lowest"
    highest = "highest"


_TIES: dict[Tie, TiePolicy] = {Tie.lowest: "lowest", Tie.highest: "highest"}


def fuse(
    data: Path | None = typer.Option(None, "--data", help="Source dataset folder (with dataset.json) (required)."),
    out: Path = typer.Option(..., "--out", help="Output folder: a new dataset whose single rater is 'fused'."),
    method: FusionRule = typer.Option(FusionRule.majority, "--method", help="Fusion rule."),
    tie: Tie = typer.Option(Tie.lowest, "--tie", help="Tie policy: lowest (background wins 1-1 ties) or highest."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing dataset at --out."),
    labels: Labels = LABELS_OPTION,
    old_data: Path | None = typer.Argument(None, hidden=True, help="Deprecated: use --data."),
) -> None:
    """Fuse raters (majority vote, soft mean or STAPLE) and write fused labels plus reliability.csv.

    OUT becomes a dataset whose single rater is 'fused' (source geometry), with probabilities/ (mean, staple),
    undecided/ masks, and reliability.csv (per rater: STAPLE sensitivity, specificity, Dice vs the fused map).
    With --labels reviewed a corrected case's fused label is its correction, a rejected case is copied without
    labels, and fusion.json records each reviewed case's provenance.

    A case that fails is reported and left out; the others are written, and the exit code is 1.
    """
    from labelwise.cli.common import moved, open_dataset
    from labelwise.errors import DataError
    from labelwise.labels.dataset_fusion import fuse_dataset
    from labelwise.progress import ProgressBar

    dataset = moved(data, old_data, option="--data", old="labelwise fuse DATASET", new="labelwise fuse --data DATASET")
    source = open_dataset(dataset, labels)
    with ProgressBar(f"fusing ({method.value})", len(source)) as bar:
        report = fuse_dataset(
            source, out, method.value, tie=_TIES[tie], overwrite=overwrite, on_case=lambda _cid: bar.advance()
        )
    typer.echo(
        f"fused {len(report.fused)} cases, copied {len(report.unlabelled)} unlabelled -> {report.dest}"
        f" (reliability.csv)",
        err=True,
    )
    for row in report.reliability:
        typer.echo(
            f"  {row['rater']}: cases {row['cases']}, sensitivity {row['sensitivity']:.3f}, "
            f"specificity {row['specificity']:.3f}, Dice vs fused {row['dice_vs_fused']:.3f}",
            err=True,
        )
    if report.failures:
        for cid, msg in report.failures.items():
            typer.secho(f"case {cid}: {msg}", fg=typer.colors.RED, err=True)
        raise DataError(f"{len(report.failures)} case(s) failed; the other cases were written")
