"""One self-contained HTML report (images embedded as base64 PNG) from evaluations, predictions and QA scores."""

from __future__ import annotations

import base64
import csv
import datetime as _dt
import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data import Dataset
from labelwise.errors import DataError
from labelwise.evaluation import MAJORITY, MEAN_OF_RATERS
from labelwise.io import PredictionIndex, read_prediction, write_text_atomic
from labelwise.quality.loop import ROUND_FILE, RoundRecord, read_round, rounds_table
from labelwise.report.figures import agreement_png, case_panel_png, reliability_png

__all__ = ["REPORT_METRICS", "MethodResult", "build_report", "case_panels", "load_evaluation", "rounds_section"]

logger = logging.getLogger(__name__)


@dataclass
class MethodResult:
    """What the report shows for one method.

    Attributes:
        name: Method label in tables and figures.
        summary: metric name -> statistics (``mean``, ``std``, ``median``, ``ci_low``, ``ci_high``; any subset).
        pred_dir: Prediction folder (``labelwise predict`` layout), or None.
        notes: Free-text notes.
        round: The loop round this evaluation scored (``labelwise loop``: the ``round.json`` beside the folder),
            or None.

    """

    name: str
    summary: Mapping[str, Mapping[str, float]]
    pred_dir: Path | None = None
    notes: list[str] = field(default_factory=list)
    round: RoundRecord | None = None


def load_evaluation(
    eval_dir: str | Path,
    name: str | None = None,
    pred_dir: str | Path | None = None,
    references: Sequence[str] = (MAJORITY, MEAN_OF_RATERS),
) -> MethodResult:
    """Read ``summary.json`` written by ``labelwise evaluate`` into a :class:`MethodResult`.

    Only the consensus references (``majority`` for hard metrics, ``mean_of_raters`` for soft ones, by default)
    are kept; per-rater references stay in ``per_case.csv``. With several foreground classes, metric names get a
    ``[class]`` suffix.

    Args:
        eval_dir: Folder holding ``summary.json``.
        name: Label of the method (default: the method recorded in the summary).
        pred_dir: Prediction folder for figures (default: the one recorded in the summary, if it exists).
        references: Reference names to keep, in order of preference.

    """
    path = Path(eval_dir) / "summary.json"
    try:
        summary = json.loads(path.read_text(encoding="utf-8"))
        metrics = summary["metrics"]
    except (OSError, json.JSONDecodeError, KeyError) as exc:
        raise DataError(f"not a labelwise evaluation summary ({exc})", path) from None
    classes = sorted({c for by_class in metrics.values() for c in by_class})
    flat: dict[str, dict[str, float]] = {}
    for metric, by_class in metrics.items():
        for cls, by_ref in by_class.items():
            ref = next((r for r in references if r in by_ref), None)
            if ref is None:
                continue
            stats = by_ref[ref]
            key = metric if len(classes) == 1 else f"{metric}[{cls}]"
            flat[key] = {
                k: v
                for k, v in {
                    "mean": stats.get("mean"),
                    "std": stats.get("std"),
                    "ci_low": stats.get("ci95_low"),
                    "ci_high": stats.get("ci95_high"),
                }.items()
                if v is not None
            }
    recorded = summary.get("pred_dir")
    pdir = Path(pred_dir) if pred_dir else Path(recorded) if recorded and Path(recorded).is_dir() else None
    loop_round = _round_of(Path(eval_dir))
    label = name or str(summary.get("method", Path(eval_dir).name))
    if loop_round is not None and name is None:
        label = f"{label} (round {loop_round.round})"
    return MethodResult(label, flat, pdir, round=loop_round)


def _round_of(eval_dir: Path) -> RoundRecord | None:
    """The round record of a ``labelwise loop`` round whose evaluation folder is ``eval_dir``, else None."""
    folder = eval_dir.resolve().parent
    if not (folder / ROUND_FILE).is_file():
        return None
    record = read_round(folder)
    return record if (folder / record.eval).resolve() == eval_dir.resolve() else None


def rounds_section(results: Sequence[MethodResult]) -> dict[str, Any] | None:
    """The rounds table of the report (metrics by loop round), or None when no result is a loop round.

    Rows come from :func:`labelwise.quality.loop.rounds_table`: the round's metrics as recorded by
    ``labelwise loop``, the change since the previous round shown, and the warm-start lineage read from each run's
    ``meta.json``.
    """
    records = [r.round for r in results if r.round is not None]
    if not records:
        return None
    rows = rounds_table(records)
    metrics = [m for m in ("dice", "nsd", "hd95") if any(m in r.metrics for r in rows)]
    out_rows = []
    for r in rows:
        cells = []
        for m in metrics:
            value = r.metrics.get(m)
            change = None if r.delta is None else r.delta.get(m)
            cells.append(
                {
                    "text": "-" if value is None else f"{value:.4f}",
                    "change": "" if change is None else f"{change:+.4f}",
                }
            )
        out_rows.append(
            {
                "round": r.round,
                "corrected": r.corrected,
                "cells": cells,
                "init": "-" if r.init_from is None else Path(r.init_from).name,
                "lineage_ok": r.lineage_ok,
                "proposed": r.proposed,
            }
        )
    return {"metrics": metrics, "rows": out_rows}


_TEMPLATE = Path(__file__).with_name("templates") / "report.html.j2"

#: Metrics shown in the report's table by default, in this order (everything else stays in summary.md/per_case.csv).
REPORT_METRICS = (
    "dice",
    "soft_dice",
    "ged",
    "dice_match",
    "dice_max",
    "ece",
    "brier",
    "hd95",
    "nsd",
    "jaccard",
    "iou",
    "sensitivity",
    "specificity",
    "accuracy",
)

_LOWER_BETTER = ("ged", "ece", "brier", "nll", "hd", "hd95", "assd", "masd", "avd", "mae")


def _lower_is_better(metric: str) -> bool:
    key = metric.lower()
    return any(key == m or key.startswith(m + "_") or key.endswith("_" + m) for m in _LOWER_BETTER)


def _fmt(stats: Mapping[str, float]) -> str:
    mean = stats.get("mean")
    if mean is None or not np.isfinite(mean):
        return "–"
    text = f"{mean:.3f}"
    if stats.get("std") is not None and np.isfinite(stats["std"]):
        text += f" ± {stats['std']:.3f}"
    return text


def _fmt_ci(stats: Mapping[str, float]) -> str:
    if stats.get("ci_low") is None or stats.get("ci_high") is None:
        return ""
    return f"[{stats['ci_low']:.3f}, {stats['ci_high']:.3f}]"


def _b64(png: bytes) -> str:
    return base64.b64encode(png).decode("ascii")


def case_panels(dataset: Dataset, case_id: str, results: Sequence[MethodResult]) -> list[tuple[str, np.ndarray, str]]:
    """Overlay panels for one case.

    Each rater, the soft consensus, then per method: foreground probability, samples, per-rater maps, uncertainty.
    """
    case = dataset.load(case_id)
    panels: list[tuple[str, np.ndarray, str]] = [
        (f"rater {r}", m, "label") for r, m in zip(case.rater_ids, case.raters, strict=True)
    ]
    if case.num_raters > 1:
        panels.append(("consensus (mean)", (case.raters > 0).mean(axis=0), "prob"))
    for res in results:
        if res.pred_dir is None or not (res.pred_dir / f"{case_id}.nii.gz").exists():
            continue
        pred = read_prediction(res.pred_dir, case_id, dataset.spatial_dims)
        fg = pred.probs[1:].sum(axis=0) if pred.probs.shape[0] > 1 else pred.probs[0]
        panels.append((f"{res.name}: p(fg)", fg, "prob"))
        for k, s in enumerate((pred.samples if pred.samples is not None else [])[:4]):
            panels.append((f"{res.name}: sample {k}", s, "label"))
        rater_maps = list(pred.raters) if pred.raters is not None else []
        names = PredictionIndex.load(res.pred_dir).rater_ids or tuple(str(i) for i in range(len(rater_maps)))
        for rid, m in zip(names, rater_maps, strict=False):
            panels.append((f"{res.name}: as {rid}", m, "label"))
        if pred.uncertainty is not None:
            panels.append((f"{res.name}: uncertainty", pred.uncertainty, "heat"))
    return panels


def _reliability(dataset: Dataset, ids: Sequence[str], res: MethodResult) -> bytes | None:
    from labelwise.metrics import reliability

    probs, targets = [], []
    for case_id in ids:
        if res.pred_dir is None or not (res.pred_dir / f"{case_id}.nii.gz").exists():
            continue
        case = dataset.load(case_id)
        if case.num_raters == 0:
            continue
        pred = read_prediction(res.pred_dir, case_id, dataset.spatial_dims)
        fg = pred.probs[1:].sum(axis=0) if pred.probs.shape[0] > 1 else pred.probs[0]
        probs.append(np.clip(fg, 0, 1).ravel())
        targets.append((case.raters > 0).mean(axis=0).ravel())
    if not probs:
        return None
    rel = reliability(np.concatenate(probs), np.concatenate(targets), n_bins=15, mode="foreground")
    return reliability_png(rel.confidence, rel.accuracy, rel.counts, title=f"{res.name} (ECE {rel.ece():.3f})")


def _agreement(dataset: Dataset, ids: Sequence[str]) -> bytes | None:
    from labelwise.metrics import pairwise_dice

    mats = []
    for case_id in ids:
        case = dataset.load(case_id)
        labels, present = case.rater_stack(dataset.rater_ids)
        if present.all() and len(dataset.rater_ids) > 1:
            mats.append(pairwise_dice(labels > 0))
    if not mats:
        return None
    return agreement_png(np.mean(mats, axis=0), list(dataset.rater_ids), vmin=max(0.0, float(np.min(mats)) - 0.05))


def _quality_rows(qa_csv: Path, limit: int) -> tuple[list[str], list[list[str]]]:
    with qa_csv.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    if not rows:
        return [], []
    rows.sort(key=lambda r: float(r.get("predicted_dice", "nan")))
    header = list(rows[0])
    out = []
    for r in rows[:limit]:
        out.append([f"{float(v):.3f}" if _is_float(v) and "." in v else v for v in r.values()])
    return header, out


def _is_float(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def build_report(
    out_html: str | Path,
    dataset: Dataset,
    results: Sequence[MethodResult],
    *,
    split: str | None = None,
    qa_csv: str | Path | None = None,
    max_cases: int = 6,
    title: str = "labelwise report",
    intro: Sequence[str] = (),
) -> Path:
    """Write one self-contained HTML report and return its path.

    Args:
        out_html: Output file (written atomically).
        dataset: The evaluated dataset (for images and raters).
        results: One entry per method (metrics summary + prediction folder).
        split: The split that was evaluated (case figures are drawn from it).
        qa_csv: Optional ``quality.csv`` from ``labelwise qa`` (review-queue table).
        max_cases: Number of cases drawn as overlay panels.
        title: Page title.
        intro: Paragraphs shown under the title.

    """
    from jinja2 import Environment

    import labelwise

    ids = dataset.split_ids(split) or dataset.ids
    present = {name for res in results for name in res.summary}
    keep = [m for m in REPORT_METRICS if m in present or any(p.startswith(m + "[") for p in present)]
    metric_names = [name for m in keep for name in sorted(present) if name == m or name.startswith(m + "[")] or sorted(
        present
    )
    rows: list[dict[str, Any]] = []
    for res in results:
        cells: list[dict[str, Any]] = []
        for m in metric_names:
            stats = res.summary.get(m, {})
            cells.append({"text": _fmt(stats), "ci": _fmt_ci(stats), "mean": stats.get("mean")})
        rows.append({"name": res.name, "cells": cells})
    for j, m in enumerate(metric_names):
        vals = [r["cells"][j]["mean"] for r in rows]
        finite = [v for v in vals if v is not None and np.isfinite(v)]
        best = (min if _lower_is_better(m) else max)(finite) if len(finite) > 1 else None
        for r in rows:
            r["cells"][j]["cls"] = "best" if best is not None and r["cells"][j]["mean"] == best else ""

    reliability_figs = []
    for res in results:
        png = _reliability(dataset, ids, res)
        if png is not None:
            reliability_figs.append((res.name, _b64(png)))
    agreement = _agreement(dataset, ids)
    case_figs = []
    for case_id in ids[:max_cases]:
        case = dataset.load(case_id)
        z = None
        if case.spatial_dims == 3 and case.num_raters:
            z = int(np.argmax((case.raters > 0).sum(axis=tuple(range(case.raters.ndim - 1)))))
        png = case_panel_png(case.image, case_panels(dataset, case_id, results), slice_index=z, title=case_id)
        case_figs.append((case_id, _b64(png)))
    q_header, q_rows = _quality_rows(Path(qa_csv), 20) if qa_csv else ([], [])
    html = (
        Environment(autoescape=True)
        .from_string(_TEMPLATE.read_text(encoding="utf-8"))
        .render(
            title=title,
            version=labelwise.__version__,
            created=_dt.datetime.now().strftime("%Y-%m-%d %H:%M"),
            dataset_name=dataset.name,
            n_cases=len(dataset),
            n_raters=len(dataset.rater_ids),
            classes=", ".join(dataset.class_names[1:]),
            split=split,
            intro=list(intro),
            metric_names=metric_names,
            metric_rows=rows,
            has_ci=any("ci_low" in s for r in results for s in r.summary.values()),
            lower_better=[m for m in metric_names if _lower_is_better(m)],
            figures={"reliability": reliability_figs, "agreement": _b64(agreement) if agreement else None},
            quality_header=q_header,
            quality_rows=q_rows,
            case_figures=case_figs,
            rounds=rounds_section(results),
        )
    )
    path = write_text_atomic(out_html, html)
    logger.info("wrote %s", path)
    return path
