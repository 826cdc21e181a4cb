"""``labelwise next --data DATASET [--strategy mix] [--qa QA] [--pred PRED_DIR] [-n 10] [--out queue.json]``.

Proposes the next cases to review or annotate and says why for each (a table on stdout; ``--out`` writes it as JSON
or CSV, atomically). Cases already reviewed in ``DATASET/review`` are left out unless ``--include-reviewed``. The
strategies and their rules are in :mod:`labelwise.quality.select` and ``docs/lifecycle.md``.
"""

from __future__ import annotations

from enum import Enum
from pathlib import Path

import typer

__all__ = ["StrategyChoice", "next_cases"]


class StrategyChoice(str, Enum):
    """``--strategy`` values (see :data:`labelwise.quality.select.STRATEGIES`)."""

    quality = "quality"
    uncertainty = "uncertainty"
    disagreement = "disagreement"
    diversity = "diversity"
    mix = "mix"
    random = "random"


def next_cases(
    data: Path = typer.Option(..., "--data", help="Dataset folder (with dataset.json)."),
    strategy: StrategyChoice = typer.Option(
        StrategyChoice.mix,
        "--strategy",
        help="quality (needs --qa), uncertainty (needs --pred), disagreement (raters), diversity (images), "
        "mix (rank average of the signals available, spread over the images), random (baseline).",
    ),
    qa: Path | None = typer.Option(None, "--qa", help="A `labelwise qa` output: quality.csv or its folder."),
    pred: Path | None = typer.Option(
        None, "--pred", help="A `labelwise predict` folder with <case>_probs, _samples or _uncertainty files."
    ),
    number: int = typer.Option(10, "-n", "--number", min=1, help="How many cases to propose."),
    split: str = typer.Option("all", "--split", help="Propose from one of the dataset's splits, or all."),
    include_reviewed: bool = typer.Option(
        False, "--include-reviewed", help="Propose cases that already have a review decision or correction too."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of the random strategy."),
    out: Path | None = typer.Option(None, "--out", help="Write the proposal to this .json or .csv file."),
) -> None:
    """Propose the next cases of DATASET to review or annotate, with the reason for each."""
    from rich.console import Console
    from rich.table import Table

    from labelwise.cli.common import split_ids
    from labelwise.data import Dataset
    from labelwise.errors import UsageError
    from labelwise.progress import track
    from labelwise.quality.select import select_cases

    if out is not None and out.suffix.lower() not in (".json", ".csv"):
        raise UsageError(f"--out {out}: give a .json or a .csv file")
    if out is not None and out.is_dir():
        raise UsageError(f"--out {out} is a folder; give a .json or a .csv file")
    ds = Dataset(data)
    ids = split_ids(ds, split)
    selection = select_cases(
        ds,
        strategy.value,
        number,
        qa=qa,
        pred=pred,
        case_ids=ids,
        include_reviewed=include_reviewed,
        seed=seed,
        track=track,
    )
    table = Table(title=f"next {len(selection.proposals)} case(s) of {ds.name} by {selection.strategy}")
    for column in ("rank", "case", "split", "reason"):
        table.add_column(column, overflow="fold")
    for p in selection.proposals:
        table.add_row(str(p.rank), p.case, p.split or "", p.reason)
    console = Console(width=160)
    if selection.proposals:
        console.print(table)
    skipped = len(selection.skipped_reviewed)
    typer.echo(
        f"proposed {len(selection.proposals)} of {selection.candidates} candidate case(s)"
        + (f"; {skipped} reviewed case(s) left out (--include-reviewed keeps them)" if skipped else "")
    )
    if out is not None:
        selection.write(out)
        typer.echo(f"wrote {out}")
