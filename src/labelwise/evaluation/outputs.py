"""Evaluation outputs: ``per_case.csv``, ``summary.json`` and ``summary.md``, written atomically."""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any

from labelwise.evaluation.runner import EvaluationResult
from labelwise.evaluation.scoring import (
    ALL_METRICS,
    CANDIDATES_COLUMN,
    ID_COLUMNS,
    MAJORITY,
    MEAN_OF_RATERS,
    SLICES_COLUMN,
)
from labelwise.evaluation.slices import format_slices
from labelwise.io import write_json_atomic, write_text_atomic

__all__ = ["write_outputs"]


def _fmt(x: Any) -> str:
    if x is None:
        return ""
    if isinstance(x, float):
        return "nan" if math.isnan(x) else repr(x)
    return str(x)


def _json_safe(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj


def write_outputs(result: EvaluationResult, out_dir: str | Path) -> list[Path]:
    """Write ``per_case.csv``, ``summary.json`` and ``summary.md`` atomically into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    metric_cols = [m for m in (*ALL_METRICS, CANDIDATES_COLUMN) if any(m in r for r in result.rows)]
    id_cols = [*ID_COLUMNS, *((SLICES_COLUMN,) if any(SLICES_COLUMN in r for r in result.rows) else ())]
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow([*id_cols, *metric_cols])
    for r in result.rows:
        w.writerow([_fmt(r.get(k)) for k in id_cols] + [_fmt(r.get(m)) for m in metric_cols])
    paths = [write_text_atomic(out / "per_case.csv", buf.getvalue())]
    paths.append(write_json_atomic(out / "summary.json", _json_safe(result.summary)))
    paths.append(write_text_atomic(out / "summary.md", _markdown(result.summary)))
    return paths


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        f"# Evaluation: {summary['method']} on {summary['dataset']} ({summary['split'] or 'all'} split)",
        "",
        f"{summary['n_scored']} of {summary['n_cases']} cases scored, {summary['n_failed']} failed.",
        "Hard metrics against the raters' majority vote; soft and multi-rater metrics against the mean of raters.",
        "",
    ]
    if "slices" in summary:
        sl = summary["slices"]
        lines += [
            f"Slices scored (axis {sl['axis']}, selection `{sl['selection']}`): "
            + "; ".join(f"{cid} {format_slices(z)}" for cid, z in sl["cases"].items())
            + ". Overlap pooled over these slices; surface metrics per 3D case (slices at their true positions);"
            " `*_per_slice`: 2D per slice, averaged.",
            "",
        ]
    lines += [
        "| metric | class | reference | mean | std | median | 95% CI | n | n_nan | n_ref_empty |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]

    def f(x: Any) -> str:
        return "-" if x is None else f"{x:.4f}"

    for metric, by_class in summary["metrics"].items():
        for cls, by_ref in by_class.items():
            for ref in (MAJORITY, MEAN_OF_RATERS):
                if ref in by_ref:
                    s = by_ref[ref]
                    ci = f"[{f(s['ci95_low'])}, {f(s['ci95_high'])}]"
                    lines.append(
                        f"| {metric} | {cls} | {ref} | {f(s['mean'])} | {f(s['std'])} | {f(s['median'])} | {ci} "
                        f"| {s['n']} | {s['n_nan']} | {s['n_ref_empty']} |"
                    )
    if summary["failures"]:
        lines += ["", "## Failed cases", ""]
        lines += [f"- `{cid}`: {err}" for cid, err in summary["failures"].items()]
    return "\n".join(lines) + "\n"
