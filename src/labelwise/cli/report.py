"""``labelwise report``: one self-contained HTML report from one or more evaluations."""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["report"]


def report(
    eval_dirs: list[Path] = typer.Argument(..., help="Evaluation folders from `labelwise evaluate` (one per method)."),
    data: Path = typer.Option(..., "--data", help="The evaluated dataset folder.", exists=True, file_okay=False),
    pred: list[Path] = typer.Option(
        [], "--pred", help="Prediction folder per evaluation, same order (default: recorded in summary.json)."
    ),
    qa: Path | None = typer.Option(None, "--qa", help="quality.csv from `labelwise qa`.", exists=True, dir_okay=False),
    split: str | None = typer.Option("test", "--split", help="Split whose cases are drawn."),
    max_cases: int = typer.Option(6, "--max-cases", min=0),
    out: Path = typer.Option(Path("report.html"), "--out", help="Output HTML file."),
) -> None:
    """Write an HTML report: metric table, reliability diagrams, rater agreement, quality ranking, case overlays.

    OUT may not be, or lie inside, an input. An evaluation folder whose latest ``labelwise evaluate`` did not
    complete (it holds ``INCOMPLETE.txt``) is refused, and so is a ``--qa`` table that is not a valid quality table.
    """
    from labelwise.cli.common import fail
    from labelwise.data import Dataset
    from labelwise.errors import DataError
    from labelwise.io import STALE_MARKER, check_output_not_input
    from labelwise.quality.qa import read_quality_csv
    from labelwise.report import build_report, load_evaluation

    check_output_not_input(out, [*eval_dirs, data, *pred, qa])
    if out.is_dir():
        raise DataError("is a folder; give a file name such as report.html", out)
    for e in eval_dirs:
        if (e / STALE_MARKER).exists():
            raise DataError(
                f"the latest `labelwise evaluate` into this folder did not complete ({STALE_MARKER}); "
                "its results are from an earlier run - evaluate again",
                e,
            )
    if qa is not None:
        read_quality_csv(qa)
    if pred and len(pred) != len(eval_dirs):
        raise fail(f"got {len(pred)} --pred folders for {len(eval_dirs)} evaluations; give one per evaluation or none")
    results = [load_evaluation(e, pred_dir=pred[i] if pred else None) for i, e in enumerate(eval_dirs)]
    path = build_report(out, Dataset(data), results, split=split, qa_csv=qa, max_cases=max_cases)
    typer.echo(f"report: {path}")
