"""Table ``rater_agreement``: how much the data's own raters disagree, the reference line for every other table.

No method and no training: every number describes the labels themselves.

* **QUBIQ brain growth** (``qubiq_brain_growth/brain_growth_alpha.zip``, imported with ``medical-matting``; 39
  cases x 7 raters). Splits as ``docs/protocol.md``: dev = the importer's train + val (31), test = its test (8,
  "looked at before"). Per case: rater k vs the strict majority of the other 6 (Dice, HD95), the mean over the 7
  raters of that, the mean pairwise Dice over the 21 rater pairs (the ``labelwise data stats`` accumulator
  :class:`labelwise.evaluation.rater_stats.PairwiseAgreement`), and the GED of one rater taken as the prediction
  against the other 6 (:func:`labelwise.metrics.ged`, d = 1 - IoU, self pairs included; mean over the 7 raters).
* **BU-BIL** (``bubil_cells/d4`` and ``d5``, imported with ``folder``; 61 + 58 crops, 3 experts + 7 crowd slots).
  Per case: expert k vs the strict majority of the other 2 experts (= their intersection), the mean pairwise expert
  Dice, each crowd slot vs the strict majority of the 3 experts (Dice, HD95 in px), and per case the fraction of
  the 7 crowd masks with Dice < 0.8 against that majority (the "bad label" rate of the label-quality table).
  Role "test" (it is the untouched test set of the label-quality and multi-rater methods); no choice is made from
  these numbers.
* **TotalSegmentator CT** (``totalsegmentator_example``, 122x101x30 at 3 mm): ``labelwise evaluate`` with the full
  model's map (``example_seg``) as the dataset's one rater and the ``--fast`` model's map (``example_seg_fast``)
  as the prediction; Dice, HD95 and NSD at 3 mm per class, the 4 organs shown and the mean over the classes present
  in both maps. The command is run as a subprocess and timed. Dev data (the protocol has no untouched CT test).

Baselines (QUBIQ and BU-BIL): an empty mask and the whole image (crop), each against the majority of all raters
(QUBIQ, 7) or of the 3 experts (BU-BIL), to show the Dice scale. ``--quick`` reads 3 QUBIQ dev cases only.
"""

from __future__ import annotations

import csv
import math
import resource
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results.common import cached_json, import_once, provenance_line, step_dir, summary_rows
from benchmarks.results.tables import Context

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

NAME = "rater_agreement"
SCALE = 1.0  # rows in the per-case units: Dice and GED as fractions, HD95 in px (2D) or mm (CT)
BAD_DICE = 0.8
QUICK_CASES = 3
QUBIQ_SOURCE = "qubiq_brain_growth/brain_growth_alpha.zip"
QUBIQ_RATERS = tuple(f"rater{k}" for k in range(1, 8))
EXPERTS = ("expert1", "expert2", "expert3")
CROWD = tuple(f"crowd{k}" for k in range(1, 8))
CT_SOURCE = "totalsegmentator_example"
CT_ORGANS = ("liver", "spleen", "kidney_left", "kidney_right")
CT_METRICS = ("dice", "hd95", "nsd")
CT_TOLERANCE_MM = 3.0

SPLITS: dict[str, dict[str, str]] = {
    "qubiq_dev": {
        "role": "dev",
        "source": QUBIQ_SOURCE,
        "description": "QUBIQ dev (importer train + val)",
    },
    "qubiq_test": {
        "role": "test",
        "source": QUBIQ_SOURCE,
        "description": "QUBIQ test (importer test; looked at before)",
    },
    "bubil_d4": {"role": "test", "source": "bubil_cells/d4", "description": "BU-BIL d4"},
    "bubil_d5": {"role": "test", "source": "bubil_cells/d5", "description": "BU-BIL d5"},
    "ct": {"role": "dev", "source": CT_SOURCE, "description": "TotalSegmentator CT, 1 volume"},
}

SHORT = {"qubiq_dev": "dev", "qubiq_test": "test, looked at before", "bubil_d4": "d4", "bubil_d5": "d5"}

QUBIQ_METHODS: dict[str, str] = {
    **{r: f"rater {r[5:]} vs strict majority of the other 6" for r in QUBIQ_RATERS},
    "raters_loo": "mean over the 7 raters of the line above",
    "pairwise": "mean pairwise Dice, 21 rater pairs (`labelwise data stats`)",
    "ged_one_rater": "GED: one rater as the prediction vs the other 6 (mean over raters)",
    "empty": "baseline: empty mask vs majority of all 7",
    "whole": "baseline: whole image vs majority of all 7",
}
BUBIL_METHODS: dict[str, str] = {
    **{e: f"expert {e[6:]} vs strict majority of the other 2 (= their intersection)" for e in EXPERTS},
    "experts_loo": "mean over the 3 experts of the line above",
    "experts_pairwise": "mean pairwise expert Dice, 3 pairs",
    **{c: f"crowd slot {c[5:]} vs expert majority (2 of 3)" for c in CROWD},
    "crowd_all": "mean over the 7 crowd slots",
    "crowd_bad": f"crowd masks with Dice < {BAD_DICE} vs expert majority",
    "empty": "baseline: empty mask vs expert majority",
    "whole": "baseline: whole crop vs expert majority",
}
CT_METHOD = "fast_vs_full"


def config() -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    return {
        "datasets": {
            "qubiq": {
                "importer": "medical-matting",
                "source": QUBIQ_SOURCE,
                "raters": list(QUBIQ_RATERS),
                "splits": {"qubiq_dev": ["train", "val"], "qubiq_test": ["test"]},
            },
            "bubil": {
                "importer": "folder",
                "sources": {"bubil_d4": "bubil_cells/d4", "bubil_d5": "bubil_cells/d5"},
                "experts": list(EXPERTS),
                "crowd": list(CROWD),
                "cases": "all",
            },
            "ct": {
                "source": CT_SOURCE,
                "dataset": "DatasetWriter: example_ct_sm.nii.gz, one rater 'model' = example_seg.nii.gz",
                "prediction": "example_seg_fast.nii.gz (write_label + PredictionIndex)",
                "class_map": "class_map.json key 'total'",
                "command": (
                    "labelwise evaluate --pred PRED --data DATA --out OUT --split all --metrics dice,hd95,nsd "
                    f"--tolerance-mm {CT_TOLERANCE_MM:g} --n-bootstrap 0"
                ),
                "reference": "model",
                "organs": list(CT_ORGANS),
                "mean": "over the classes with voxels in both maps",
            },
        },
        "methods": {"qubiq": QUBIQ_METHODS, "bubil": BUBIL_METHODS, "ct": "--fast map vs full model map"},
        "majority": (
            "labelwise.labels.strict_majority: foreground where more than half of the masks say so "
            "(6 raters: >= 4, 7: >= 4, 3 experts: >= 2, 2 experts: both)"
        ),
        "metrics": {
            "dice": "labelwise.metrics.dice, empty convention 'labelwise' (empty vs non-empty = 0)",
            "hd95": "labelwise.metrics.hausdorff_percentile(95, directed_max), spacing 1 px (2D); nan if a mask is "
            "empty (left out of the mean)",
            "pairwise": "labelwise.evaluation.rater_stats.PairwiseAgreement per case (mean over rater pairs)",
            "ged": "labelwise.metrics.ged(samples=[rater k], raters=other 6), d = 1 - IoU, self pairs included",
            "bad": f"per case, fraction of the 7 crowd masks with Dice < {BAD_DICE} vs expert majority",
            "ct": f"labelwise evaluate per class: dice, hd95 (mm), nsd at {CT_TOLERANCE_MM:g} mm",
        },
        "std": "sample std over cases, ddof 1",
        "quick": f"QUBIQ dev only, first {QUICK_CASES} case ids",
    }


# ------------------------------------------------------------------------------------------------ scoring


def _pair(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Dice and HD95 (px) of two bool masks."""
    from labelwise.metrics import dice, hausdorff_percentile

    return {"dice": float(dice(pred, ref)), "hd95": float(hausdorff_percentile(pred, ref, percentile=95.0))}


def _majority(masks: np.ndarray) -> np.ndarray:
    from labelwise.labels import strict_majority

    return np.asarray(strict_majority(masks.astype(np.int16), 2) > 0)


def _pairwise(case: Any, masks: np.ndarray) -> float:
    """Mean pairwise Dice of the masks of one case, through the ``labelwise data stats`` accumulator."""
    from labelwise.evaluation.rater_stats import PairwiseAgreement

    acc = PairwiseAgreement(len(masks), 2)
    acc(case, masks.astype(np.int16), np.ones(len(masks), dtype=bool))
    return float(acc.result()["mean_pairwise_dice"])


def _baselines(ref: np.ndarray) -> dict[str, dict[str, float]]:
    """The empty mask (Dice only: it has no surface) and the whole image against ``ref``."""
    from labelwise.metrics import dice

    return {"empty": {"dice": float(dice(np.zeros_like(ref), ref))}, "whole": _pair(np.ones_like(ref), ref)}


def _mean(values: Sequence[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else float("nan")


def _score_qubiq(case: Any) -> dict[str, dict[str, float]]:
    from labelwise.metrics import ged

    labels, present = case.rater_stack(QUBIQ_RATERS)
    if not present.all():
        raise ValueError(f"QUBIQ case {case.id} lacks a rater")
    masks = labels > 0
    out: dict[str, dict[str, float]] = {}
    geds = []
    for k, rater in enumerate(QUBIQ_RATERS):
        others = np.delete(masks, k, axis=0)
        out[rater] = _pair(masks[k], _majority(others))
        geds.append(float(ged(masks[k : k + 1], others)))
    out["raters_loo"] = {m: _mean([out[r][m] for r in QUBIQ_RATERS]) for m in ("dice", "hd95")}
    out["pairwise"] = {"dice": _pairwise(case, masks)}
    out["ged_one_rater"] = {"ged": float(np.mean(geds))}
    out.update(_baselines(_majority(masks)))
    return out


def _score_bubil(case: Any) -> dict[str, dict[str, float]]:
    labels, present = case.rater_stack(EXPERTS + CROWD)
    if not present.all():
        raise ValueError(f"BU-BIL case {case.id} lacks a rater")
    masks = labels > 0
    experts, crowd = masks[: len(EXPERTS)], masks[len(EXPERTS) :]
    out: dict[str, dict[str, float]] = {}
    for k, expert in enumerate(EXPERTS):
        out[expert] = _pair(experts[k], _majority(np.delete(experts, k, axis=0)))
    out["experts_loo"] = {m: _mean([out[e][m] for e in EXPERTS]) for m in ("dice", "hd95")}
    out["experts_pairwise"] = {"dice": _pairwise(case, experts)}
    ref = _majority(experts)
    for k, slot in enumerate(CROWD):
        out[slot] = _pair(crowd[k], ref)
    out["crowd_all"] = {m: _mean([out[c][m] for c in CROWD]) for m in ("dice", "hd95")}
    out["crowd_bad"] = {"bad": float(np.mean([out[c]["dice"] < BAD_DICE for c in CROWD]))}
    out.update(_baselines(ref))
    return out


def _per_case(
    ds_dir: Path, ids: list[str], score: Callable[[Any], dict[str, dict[str, float]]]
) -> dict[str, dict[str, dict[str, float]]]:
    """``{method: {case: {metric: value}}}``; a nan (HD95 with an empty mask) stays nan and is left out of means."""
    from labelwise.data import Dataset

    ds = Dataset(ds_dir)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for cid in ids:
        for method, vals in score(ds[cid]).items():
            out.setdefault(method, {})[cid] = vals
    return out


def _evaluate_ct(src: Path, work: Path) -> dict[str, Any]:
    """Build the CT dataset and prediction folders, run ``labelwise evaluate`` on them (timed), read per_case.csv."""
    from labelwise.data import DatasetWriter
    from labelwise.data.importers.nifti_partial import class_names_from_map
    from labelwise.io import PredictionIndex, read_image, read_label, write_label

    names = class_names_from_map(src / "class_map.json", "total")
    img = read_image(src / "example_ct_sm.nii.gz", 3)
    ref = read_label(src / "example_seg.nii.gz", 3).array
    fast = read_label(src / "example_seg_fast.nii.gz", 3).array
    ds_dir, pred_dir, out_dir = work / "ct_dataset", work / "ct_pred", work / "ct_eval"
    for d in (ds_dir, pred_dir, out_dir):
        shutil.rmtree(d, ignore_errors=True)
    writer = DatasetWriter(ds_dir, "totalsegmentator-example", 3, names, rater_ids=("model",))
    writer.add_case("ct", img.array, raters={"model": ref}, affine=img.affine, split="test")
    writer.finish()
    pred_dir.mkdir(parents=True)
    write_label(pred_dir / "ct.nii.gz", fast.astype(np.uint8), img.spacing_mm, img.affine)
    PredictionIndex("TotalSegmentator --fast", names, (), ["ct"]).save(pred_dir)
    exe = Path(sys.executable).with_name("labelwise")
    cli = [str(exe)] if exe.is_file() else [shutil.which("labelwise") or "labelwise"]
    args = ["evaluate", "--pred", str(pred_dir), "--data", str(ds_dir), "--out", str(out_dir), "--split", "all"]
    args += ["--metrics", ",".join(CT_METRICS), "--tolerance-mm", f"{CT_TOLERANCE_MM:g}", "--n-bootstrap", "0"]
    child0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    res = subprocess.run(cli + args, capture_output=True, text=True, timeout=600)
    wall = time.perf_counter() - t0
    child1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    if res.returncode != 0:
        raise RuntimeError(f"labelwise evaluate failed ({res.returncode}): {res.stdout[-2000:]}{res.stderr[-2000:]}")
    cpu = (child1.ru_utime - child0.ru_utime) + (child1.ru_stime - child0.ru_stime)
    with open(out_dir / "per_case.csv", newline="", encoding="utf-8") as fh:
        rows = [r for r in csv.DictReader(fh) if r["case"] == "ct" and r["reference"] == "model"]
    both = [r for r in rows if int(r["pred_voxels"]) > 0 and int(r["ref_voxels"]) > 0]
    one = sorted(r["class"] for r in rows if (int(r["pred_voxels"]) > 0) != (int(r["ref_voxels"]) > 0))
    values: dict[str, float] = {}
    for r in both:
        for m in CT_METRICS:
            values[f"{m}_{r['class']}"] = float(r[m])
    classes = sorted(r["class"] for r in both)
    for m in CT_METRICS:
        values[f"{m}_mean"] = _mean([float(r[m]) for r in both])
    return {
        "values": values,
        "classes_in_both": classes,
        "classes_in_one_only": one,
        "classes_in_neither": sum(int(r["pred_voxels"]) == 0 and int(r["ref_voxels"]) == 0 for r in rows),
        "timing": {
            "command": "labelwise " + " ".join(args).replace(str(work), "WORK"),
            "wall_s": round(wall, 2),
            "cpu_s": round(cpu, 2),
            "note": "one subprocess: Python start-up, imports, reading the NIfTI files, scoring 117 classes, writing",
        },
    }


# ------------------------------------------------------------------------------------------------ run


def _ids_of(ds_dir: Path, splits: Sequence[str]) -> list[str]:
    from labelwise.data import Dataset

    ds = Dataset(ds_dir)
    return sorted(cid for s in splits for cid in ds.split_ids(s))


def _crowd_summary(per_case: Mapping[str, Any], cases: Sequence[str]) -> dict[str, Any]:
    """Distribution of the crowd-vs-expert-majority Dice over every crowd mask of the cases."""
    d = np.array([per_case[c][cid]["dice"] for c in CROWD for cid in cases], dtype=float)
    q = np.quantile(d, [0.0, 0.25, 0.5, 0.75, 1.0])
    return {
        "n_masks": int(d.size),
        "min": float(q[0]),
        "q1": float(q[1]),
        "median": float(q[2]),
        "q3": float(q[3]),
        "max": float(q[4]),
        "n_below_0_8": int((d < BAD_DICE).sum()),
        "n_below_0_5": int((d < 0.5).sum()),
        "fraction_below_0_8": float((d < BAD_DICE).mean()),
    }


def _crowd_summaries(per_case: Mapping[str, Any], splits: Mapping[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    bubil = [s for s in ("bubil_d4", "bubil_d5") if s in splits]
    for s in bubil:
        out[s] = _crowd_summary(per_case[s], splits[s]["cases"])
    if len(bubil) == 2:
        merged = {c: {f"{s}/{k}": v for s in bubil for k, v in per_case[s][c].items()} for c in CROWD}
        out["bubil_both"] = _crowd_summary(merged, sorted(merged[CROWD[0]]))
    return out


# Numbers published before this table (the data READMEs and docs/results.md), checked, not asserted.
EXPECTED: dict[str, Any] = {
    "qubiq_mean_pairwise_dice_all_39": 0.856,
    "bubil_d4": {"experts_pairwise": 0.930, "crowd_median": 0.911, "n_below_0_8": 17},
    "bubil_d5": {"experts_pairwise": 0.934, "crowd_median": 0.930, "n_below_0_8": 24},
    "ct": {"dice_mean": 0.9245, "hd95_mean": 2.98, "nsd_mean": 0.9927, "dice_liver": 0.981, "n_classes": 40},
}


def _checks(ctx: Context, qubiq_dir: Path, per_case: Mapping[str, Any], record: Mapping[str, Any]) -> dict[str, Any]:
    """Compare with the numbers published before (at their printed precision); only ``expected`` when quick."""
    from labelwise.evaluation import dataset_stats

    checks: dict[str, Any] = {"expected": EXPECTED}
    if ctx.quick:
        return checks
    stats = dataset_stats(qubiq_dir)
    vals = [v["dice"] for s in ("qubiq_dev", "qubiq_test") for v in per_case[s]["pairwise"].values()]
    checks["qubiq_data_stats_mean_pairwise_dice"] = stats.mean_pairwise_dice
    checks["qubiq_per_case_mean_equals_data_stats"] = bool(abs(float(np.mean(vals)) - stats.mean_pairwise_dice) < 1e-9)
    checks["qubiq_reproduces_0_856"] = round(stats.mean_pairwise_dice, 3) == EXPECTED["qubiq_mean_pairwise_dice_all_39"]
    for s in ("bubil_d4", "bubil_d5"):
        exp = EXPECTED[s]
        cs = record["summary"]["crowd"][s]
        pw = float(np.mean([v["dice"] for v in per_case[s]["experts_pairwise"].values()]))
        checks[f"{s}_reproduces_readme"] = bool(
            round(pw, 3) == exp["experts_pairwise"]
            and round(cs["median"], 3) == exp["crowd_median"]
            and cs["n_below_0_8"] == exp["n_below_0_8"]
        )
    ct = per_case["ct"][CT_METHOD]["ct"]
    exp_ct = EXPECTED["ct"]
    checks["ct_reproduces_docs"] = bool(
        round(ct["dice_mean"], 4) == exp_ct["dice_mean"]
        and round(ct["hd95_mean"], 2) == exp_ct["hd95_mean"]
        and round(ct["nsd_mean"], 4) == exp_ct["nsd_mean"]
        and round(ct["dice_liver"], 3) == exp_ct["dice_liver"]
        and len(record["ct_classes"]["in_both"]) == exp_ct["n_classes"]
    )
    return checks


def run(ctx: Context) -> dict[str, Any]:
    """Import the data into ``ctx.work``, score the raters against each other, run the CT evaluation; record body."""
    cfg = config()
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    qubiq_dir = import_once("medical-matting", ctx.data / QUBIQ_SOURCE, ctx.work / "qubiq")
    for split, importer_splits in cfg["datasets"]["qubiq"]["splits"].items():
        if ctx.quick and SPLITS[split]["role"] != "dev":
            continue  # a quick (CI) run reads dev data only
        ids = _ids_of(qubiq_dir, importer_splits)
        if ctx.quick:
            ids = ids[:QUICK_CASES]
        path = step_dir(ctx.work, split, cfg, ids) / "per_case.json"
        per_case[split] = cached_json(path, partial(_per_case, qubiq_dir, ids, _score_qubiq))
        splits[split] = {**SPLITS[split], "n": len(ids), "cases": ids}
    ct_info: dict[str, Any] | None = None
    if not ctx.quick:
        for split, source in cfg["datasets"]["bubil"]["sources"].items():
            ds_dir = import_once("folder", ctx.data / source, ctx.work / split)
            ids = _ids_of(ds_dir, ("train", "val", "test"))
            path = step_dir(ctx.work, split, cfg, ids) / "per_case.json"
            per_case[split] = cached_json(path, partial(_per_case, ds_dir, ids, _score_bubil))
            splits[split] = {**SPLITS[split], "n": len(ids), "cases": ids}
        work = step_dir(ctx.work, "ct", cfg["datasets"]["ct"])
        ct_info = cached_json(work / "ct.json", partial(_evaluate_ct, ctx.data / CT_SOURCE, work))
        per_case["ct"] = {CT_METHOD: {"ct": ct_info["values"]}}
        splits["ct"] = {**SPLITS["ct"], "n": 1, "cases": ["ct"]}
    rows = summary_rows(per_case, splits, list(QUBIQ_METHODS), ["dice", "hd95", "ged"], scale=SCALE)
    rows += summary_rows(per_case, splits, list(BUBIL_METHODS), ["dice", "hd95", "bad"], scale=SCALE)
    ct_metrics = [f"{m}_{c}" for c in (*CT_ORGANS, "mean") for m in CT_METRICS]
    rows += summary_rows(per_case, splits, [CT_METHOD], ct_metrics, scale=SCALE)
    record: dict[str, Any] = {
        "title": "How much the raters disagree: the data's own reference line",
        "config": cfg,
        "seeds": [],
        "splits": splits,
        "rows": rows,
        "per_case": per_case,
        "summary": {"crowd": _crowd_summaries(per_case, splits)},
    }
    if ct_info is not None:
        record["ct_classes"] = {
            "in_both": ct_info["classes_in_both"],
            "in_one_only": ct_info["classes_in_one_only"],
            "in_neither": ct_info["classes_in_neither"],
        }
        record["timing"] = {"labelwise_evaluate_ct": ct_info["timing"]}
    record["checks"] = _checks(ctx, qubiq_dir, per_case, record)
    return record


def check(record: Mapping[str, Any]) -> None:
    """The crowd summaries and the CT class means are recomputable from ``per_case``."""
    again = _crowd_summaries(record["per_case"], record["splits"])
    assert set(again) == set(record["summary"]["crowd"]), (sorted(again), sorted(record["summary"]["crowd"]))
    for key, vals in record["summary"]["crowd"].items():
        for k, v in vals.items():
            assert abs(again[key][k] - v) < 1e-12, (key, k, again[key][k], v)
    if "ct" in record["per_case"]:
        vals = record["per_case"]["ct"][CT_METHOD]["ct"]
        for m in CT_METRICS:
            col = [vals[f"{m}_{c}"] for c in record["ct_classes"]["in_both"]]
            assert abs(_mean(col) - vals[f"{m}_mean"]) < 1e-12, m


# ------------------------------------------------------------------------------------------------ render


def _row(record: Mapping[str, Any], method: str, split: str) -> Mapping[str, Any] | None:
    return next((r for r in record["rows"] if r["method"] == method and r["split"] == split), None)


def _cell(record: Mapping[str, Any], method: str, split: str, metric: str, digits: int) -> str:
    row = _row(record, method, split)
    if row is None or metric not in row["metrics"]:
        return "—"
    s = row["metrics"][metric]
    n_used = row.get("n_used", {}).get(metric)
    extra = f" (n = {n_used})" if n_used is not None and n_used != row["n"] else ""
    return f"{s['mean']:.{digits}f} +- {s['std']:.{digits}f}{extra}"


def _bad_cell(record: Mapping[str, Any], split: str) -> str:
    cs = record["summary"]["crowd"].get(split)
    if cs is None:
        return "—"
    return f"{100 * cs['fraction_below_0_8']:.1f} % ({cs['n_below_0_8']} / {cs['n_masks']})"


def _table(record: Mapping[str, Any], methods: Mapping[str, str], splits: list[str], head: str) -> list[str]:
    sp = record["splits"]
    cols = [f"{SHORT[s]} ({sp[s]['n']}): {m}" for s in splits for m in ("Dice", "HD95 px")]
    lines = [f"| {head} | " + " | ".join(cols) + " |", "|---" * (1 + len(cols)) + "|"]
    for method, label in methods.items():
        cells = []
        for s in splits:
            if method == "ged_one_rater":
                cells += ["GED " + _cell(record, method, s, "ged", 3), "—"]
            elif method == "crowd_bad":
                cells += [_bad_cell(record, s), "—"]
            else:
                cells += [_cell(record, method, s, "dice", 3), _cell(record, method, s, "hd95", 2)]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return lines


def _fmt(v: float, digits: int) -> str:
    return f"{v:.{digits}f}" if math.isfinite(v) else "—"


def render(record: dict[str, Any]) -> str:
    """The Markdown of a record (deterministic: the docs block must equal it)."""
    sp = record["splits"]
    lines: list[str] = []
    q = [s for s in ("qubiq_dev", "qubiq_test") if s in sp]
    lines += _table(record, QUBIQ_METHODS, q, "QUBIQ brain growth, 7 raters")
    b = [s for s in ("bubil_d4", "bubil_d5") if s in sp]
    if b:
        lines += ["", *_table(record, BUBIL_METHODS, b, "BU-BIL cells, 3 experts + 7 crowd")]
        cs = record["summary"]["crowd"]
        parts = [
            f"{SHORT[s]} median {cs[s]['median']:.3f} (Q1 {cs[s]['q1']:.3f}, Q3 {cs[s]['q3']:.3f}, "
            f"min {cs[s]['min']:.3f}; {cs[s]['n_below_0_5']} below 0.5)"
            for s in b
        ]
        lines += ["", "Crowd mask vs expert majority, over all masks: " + "; ".join(parts) + "."]
    if "ct" in sp:
        vals = record["per_case"]["ct"][CT_METHOD]["ct"]
        classes = record["ct_classes"]
        lines += [
            "",
            "| TotalSegmentator CT, `--fast` vs full model | Dice | HD95 mm | NSD @ 3 mm |",
            "|---|---|---|---|",
        ]
        for c in (*CT_ORGANS, "mean"):
            label = c if c != "mean" else f"mean over the {len(classes['in_both'])} classes present in both maps"
            cells = [_fmt(vals[f"{m}_{c}"], d) for m, d in zip(CT_METRICS, (4, 2, 4), strict=True)]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        t = record["timing"]["labelwise_evaluate_ct"]
        lines += [
            "",
            f"Classes present in one map only: {', '.join(classes['in_one_only']) or 'none'} (left out of the mean); "
            f"{classes['in_neither']} classes of the class map are in neither. `{t['command']}` took "
            f"{t['wall_s']:.1f} s wall / {t['cpu_s']:.1f} s CPU (one subprocess, start-up included).",
        ]
    lines += [
        "",
        "What the numbers are: the labels compared with each other, no method and no training. Per case, a rater's "
        "mask is scored against the strict majority (`labelwise.labels.strict_majority`: more than half) of the "
        "other raters (leave-one-out; with 2 other experts that is their intersection); crowd masks against the "
        "majority of the 3 experts. Dice (`labelwise.metrics.dice`), HD95 in pixels "
        "(`labelwise.metrics.hausdorff_percentile`, max of the two directed 95th percentiles; an empty mask has "
        "none and is left out, n shown), pairwise Dice with the `labelwise data stats` accumulator, GED with "
        "`labelwise.metrics.ged` (d = 1 - IoU) taking one rater as a one-sample prediction against the other 6 (the "
        "GED of a deterministic prediction as good as one human rater; methods are scored against all 7, so read "
        "it as an approximate line). Mean +- sample std "
        "over cases; the crowd rate below 0.8 is over all crowd masks (7 per case, so it equals the per-case mean). "
        "The empty-mask and whole-image rows show the Dice scale. BU-BIL is the untouched test set of the "
        "label-quality and multi-rater methods: these numbers describe its labels only, and no choice is made "
        "from them. The CT rows are `labelwise evaluate` with the full model's map as the reference and the "
        "`--fast` map as the prediction (both model predictions, not manual labels). Rules: "
        "`benchmarks/results/tables/rater_agreement.py`.",
        "",
        provenance_line(record),
    ]
    return "\n".join(lines)


def _value(record: Mapping[str, Any], method: str, split: str, metric: str = "dice") -> float:
    """The row mean of ``metric`` (nan when the row or the metric is absent, e.g. in a quick run)."""
    row = _row(record, method, split)
    return float(row["metrics"][metric]["mean"]) if row is not None and metric in row["metrics"] else math.nan


def headline(record: dict[str, Any]) -> str:
    """One overview bullet: QUBIQ leave-one-out Dice, BU-BIL crowd vs expert majority, CT fast vs full."""
    sp = record["splits"]
    parts = []
    q = [s for s in ("qubiq_dev", "qubiq_test") if s in sp]
    if q:
        loo = " / ".join(f"{_value(record, 'raters_loo', s):.3f} ({SHORT[s]}, {sp[s]['n']} cases)" for s in q)
        parts.append(
            f"QUBIQ leave-one-out Dice {loo}, GED of one rater vs the other 6 "
            f"{_value(record, 'ged_one_rater', q[0], 'ged'):.3f} ({SHORT[q[0]]})"
        )
    both = record["summary"]["crowd"].get("bubil_both")
    if both is not None:
        parts.append(
            f"BU-BIL (test labels, no method) crowd vs expert majority median Dice {both['median']:.3f} with "
            f"{100 * both['fraction_below_0_8']:.1f} % of crowd masks below {BAD_DICE} "
            f"({both['n_below_0_8']} / {both['n_masks']}; experts vs the other two "
            f"{_value(record, 'experts_loo', 'bubil_d4'):.3f} / {_value(record, 'experts_loo', 'bubil_d5'):.3f} "
            "on d4 / d5)"
        )
    if "ct" in record["per_case"]:
        vals = record["per_case"]["ct"][CT_METHOD]["ct"]
        parts.append(
            f"TotalSegmentator fast vs full mean Dice {vals['dice_mean']:.3f} over "
            f"{len(record['ct_classes']['in_both'])} classes (one volume, dev)"
        )
    scale = [f"{_value(record, 'whole', s):.3f} ({SHORT[s]})" for s in ("qubiq_dev", "bubil_d4") if s in sp]
    quick = " Quick smoke run: 3 dev cases only." if record.get("quick") else ""
    return (
        f"- **How much raters disagree** (reference for all tables): {'; '.join(parts)}. Dice scale: an empty mask "
        f"scores 0 and the whole image {' / '.join(scale)}. No labelwise method is scored here: a method reaching "
        f"these lines is within human disagreement.{quick}"
    )
