"""``labelwise report EVAL_DIR... --data DATASET --out report.html``: one self-contained HTML report.

EVAL_DIR are evaluation folders (``labelwise evaluate --out``), one per method.
"""

from __future__ import annotations

from pathlib import Path

import typer

__all__ = ["report"]


def report(
    eval_dirs: list[Path] = typer.Argument(..., help="Evaluation folders from `labelwise evaluate` (one per method)."),
    data: Path = typer.Option(..., "--data", help="The evaluated dataset folder."),
    pred: list[Path] = typer.Option(
        [], "--pred", help="Prediction folder per evaluation, same order (default: recorded in summary.json)."
    ),
    qa: Path | None = typer.Option(None, "--qa", help="quality.csv from `labelwise qa`."),
    split: str | None = typer.Option(
        None,
        "--split",
        help="Split whose cases are drawn: one of the dataset's, or all (default: test, else every case).",
    ),
    max_cases: int = typer.Option(6, "--max-cases", min=0),
    out: Path = typer.Option(Path("report.html"), "--out", help="Output HTML file."),
) -> None:
    """Write an HTML report: metric table, reliability diagrams, rater agreement, quality ranking, case overlays.

    OUT may not be, or lie inside, an input. An evaluation folder whose latest ``labelwise evaluate`` did not
    complete (it holds ``INCOMPLETE.txt``) is refused, and so is a ``--qa`` table that is not a valid quality table.
    """
    from labelwise.cli.common import split_ids
    from labelwise.data import Dataset
    from labelwise.errors import DataError, UsageError
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
        raise UsageError(
            f"got {len(pred)} --pred folders for {len(eval_dirs)} evaluations; give one per evaluation or none"
        )
    ds = Dataset(data)
    if split is not None:
        split_ids(ds, split)
    drawn = "test" if split is None else (None if split == "all" else split)
    results = [load_evaluation(e, pred_dir=pred[i] if pred else None) for i, e in enumerate(eval_dirs)]
    path = build_report(out, ds, results, split=drawn, qa_csv=qa, max_cases=max_cases)
    typer.echo(f"report: {path}")
