"""Table ``weak_ct``: weak supervision (slice-level presence labels) on slices of the TotalSegmentator example CT.

Data: ``example_ct_sm.nii.gz`` (122x101x30, 3 mm; slices z = 82..111 of ``example_ct``) with TotalSegmentator's
model prediction ``example_seg.nii.gz`` as its label map (rater ``model``; **pseudo-labels**, not manual ground
truth). :func:`labelwise.data.domains.write_slice_label_dataset` cuts it into the 122 sagittal slices (axis 0,
101 x 30 px, HU window -200..300) with image label ``lesion`` = liver present (liver = the label value of
``"liver"`` in ``class_map.json["total"]``); the slice's liver mask is stored as rater ``mask`` for evaluation
only. Splits are the function's blocks of 8 neighbouring slices (block b: test if b % 4 == 1, val if b % 4 == 3,
train otherwise): train 64, val 26, test 32 slices, all of one volume.

**Dev only**: one volume, and this setting (the same slices, blocks and test block) was scored for ``cam`` and
``cltn`` in sessions 2-3 (``docs/results-log.md``, "CT slice-level weak setting"), so the test block is not
untouched. Both scored splits have role ``dev``; a run adds no look (``docs/protocol.md``).

Rows, all scored by :func:`_score` on the ``mask`` rater:

* trained from the slice labels only, default configs (``selection: last``: no mask is read; ``healthy_source:
  auto`` resolves to ``normal``, the liver-free train slices, and ``gate: auto`` to on): ``cam`` raw map at 0.5
  (``postprocess: none``), ``cam`` with its default clean-up (the one of ``cltn``), ``cltn``;
* training-free: the rules of ``ph2_training_free`` (whole image, centred ellipse with semi-axes W/4 x H/4; called,
  not copied) and intensity Otsu + largest component, adapted to CT (see :data:`OTSU_CT`); and the empty mask.

Per slice: DSC and JA on slices with liver (NaN on liver-free slices, left out of the means), ``FP`` = 1 if a
liver-free slice gets any foreground (NaN on liver slices), and the pixel counts that the pooled DSC of a split
(``2 sum |P & G| / (sum |P| + sum |G|)`` over all its slices, the slices as one structure) is computed from.

``--quick``: the first 2 liver slices and the first liver-free slice (by id, from the slice labels) of val and
test, both methods with the ``smoke`` preset.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results import common
from benchmarks.results.tables import Context, ph2_training_free

__all__ = ["NAME", "check", "config", "headline", "predict_baseline", "render", "run"]

logger = logging.getLogger(__name__)

NAME = "weak_ct"
SOURCE = "totalsegmentator_example"
DATA: dict[str, Any] = {
    "source": SOURCE,
    "image": "example_ct_sm.nii.gz",
    "labels": "example_seg.nii.gz",
    "labels_are": "TotalSegmentator model prediction (pseudo-labels), rater 'model'",
    "class_map": "class_map.json",
    "class_map_key": "total",
    "structure": "liver",
    "slicing": {
        "function": "labelwise.data.domains.write_slice_label_dataset",
        "axis": 0,
        "block": 8,
        "window_hu": [-200.0, 300.0],
        "splits": "blocks of 8 neighbouring slices; block b: test if b % 4 == 1, val if b % 4 == 3, else train",
    },
}
# The rule of ph2_training_free's "luminance Otsu + largest component", adapted to a one-channel CT slice.
OTSU_CT = {
    "intensity": "the slice's one channel (HU clipped to -200..300)",
    "brightness": "(x - min) / max(max - min, 1e-6)",
    "clean_mask": {"threshold": "otsu", "keep": "largest", "fill_holes": True},
    "adaptation": "the foreground is the bright side (PH2: the dark side): liver is soft tissue, brighter than fat "
    "and air in the window; fixed from that, before any number of this table was computed",
}
BASELINES = {
    "whole_image": "whole image = liver",
    "centred_ellipse": "centred ellipse, semi-axes W/4 x H/4",
    "otsu_largest": "intensity Otsu (bright side) + largest component",
    "empty": "empty mask (no liver anywhere)",
}
# row -> (trained method, prediction options, label)
TRAINED: dict[str, tuple[str, dict[str, Any], str]] = {
    "cam_raw": ("cam", {"postprocess": "none"}, "`cam`, raw map at 0.5 (no post-processing)"),
    "cam": ("cam", {}, "`cam` + Otsu, holes, largest component (its default, as `cltn`)"),
    "cltn": ("cltn", {}, "`cltn` (default: Otsu, holes, largest component)"),
}
LABELS = {**BASELINES, **{k: v[2] for k, v in TRAINED.items()}}
ROWS = (*BASELINES, *TRAINED)
METRICS = ("DSC", "JA", "FP")
COUNTS = ("inter", "pred_px", "ref_px")
SPLITS = {
    # split of the slice dataset -> (role, description); rendered in this order (a record's keys come back sorted)
    "test": ("dev", "test blocks, looked at before"),
    "val": ("dev", "val blocks"),
}
QUICK_LIVER, QUICK_FREE = 2, 1
FULL_SEEDS = (0,)
SEEDS_NOTE = (
    "one seed: one volume, and a default `cltn` training took 566 s wall and a `cam` training 175 s on these "
    "slices on the shared 2-core machine (docs/weak.md, docs/results-log.md)"
)


def _train_overrides(seed: int, quick: bool) -> dict[str, Any]:
    """How a weak method is trained: its default config (quick: the ``smoke`` preset), seed ``seed``."""
    return {"preset": "smoke" if quick else None, "overrides": [f"train.seed={seed}", "train.progress=false"]}


def config(quick: bool = False, seeds: tuple[int, ...] = FULL_SEEDS) -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    return {
        "rows": LABELS,
        "data": DATA,
        "baselines": {
            "rules": "benchmarks/results/tables/ph2_training_free.py (whole image, centred ellipse: unchanged)",
            "ellipse_semi_axes_fraction": ph2_training_free.config()["ellipse_semi_axes_fraction"],
            "otsu": OTSU_CT,
            "empty": "no foreground pixel",
        },
        "trained": {
            row: {"method": m, "config": "default", "predict_options": opts} for row, (m, opts, _) in TRAINED.items()
        },
        "training": {
            "data": "the train split of the slice dataset (slice-level labels only)",
            "preset": _train_overrides(0, quick)["preset"],
            "overrides": ["train.seed=<seed>", "train.progress=false"],
            "selection": "last (default; no mask read)",
            "healthy_source": "auto (default): normal = the liver-free train slices",
            "gate": "auto (default): on for a normal healthy domain",
        },
        "seeds": list(seeds),
        "seeds_note": SEEDS_NOTE,
        "seed_pooling": "per-slice value = mean over seeds; row = mean +- sample std over slices of those values",
        "metrics": {
            "DSC": "labelwise.metrics.dice, slices with liver only",
            "JA": "labelwise.metrics.iou, slices with liver only",
            "FP": "1 if a liver-free slice gets any foreground pixel, else 0 (liver-free slices only)",
            "pooled_DSC": "2 sum |P & G| / (sum |P| + sum |G|) over all slices of the split",
            "threshold": "probability >= 0.5",
        },
        "reference": "rater 'mask' > 0 (the slice's liver mask)",
        "splits": {k: {"role": v[0]} for k, v in SPLITS.items()},
        "quick": {"liver_slices": QUICK_LIVER, "liver_free_slices": QUICK_FREE, "preset": "smoke"} if quick else None,
    }


def _slice_dataset(ctx: Context) -> tuple[Path, int]:
    """Write the 3D dataset and its slice dataset into the work folder (once); returns it and the liver label."""
    from labelwise.data import Dataset, DatasetWriter
    from labelwise.data.domains import write_slice_label_dataset
    from labelwise.data.importers.nifti_partial import class_names_from_map
    from labelwise.io import read_image, read_label

    src = ctx.data / SOURCE
    names = class_names_from_map(src / DATA["class_map"], DATA["class_map_key"])
    liver = names.index(DATA["structure"])
    base = common.step_dir(ctx.work, "data", DATA, liver)
    vol_dir, slice_dir = base / "ct3d", base / "ct_slices"
    if not (slice_dir / "dataset.json").is_file():
        img, lab = read_image(src / DATA["image"], 3), read_label(src / DATA["labels"], 3)
        writer = DatasetWriter(vol_dir, "totalsegmentator-example", 3, names, rater_ids=("model",), overwrite=True)
        writer.add_case("ct", img.array, {"model": lab.array}, spacing_mm=img.spacing_mm, affine=img.affine)
        writer.finish()
        sl = DATA["slicing"]
        write_slice_label_dataset(
            Dataset(vol_dir),
            slice_dir,
            structure=[liver],
            axis=sl["axis"],
            rater="model",
            block=sl["block"],
            window=(sl["window_hu"][0], sl["window_hu"][1]),
            overwrite=True,
        )
    return slice_dir, liver


def predict_baseline(method: str, image: np.ndarray) -> np.ndarray:
    """The ``(H, W)`` boolean mask of training-free rule ``method`` (a key of ``BASELINES``) for a ``(C, H, W)`` slice.

    ``whole_image`` and ``centred_ellipse`` are :func:`ph2_training_free.predict_baseline`; ``otsu_largest`` is its
    rule on the bright side (:data:`OTSU_CT`); ``empty`` predicts nothing.
    """
    from labelwise.postprocess import clean_mask

    if method in ("whole_image", "centred_ellipse"):
        return ph2_training_free.predict_baseline(method, image)
    if method == "empty":
        return np.zeros(image.shape[-2:], dtype=bool)
    x = image.astype(np.float32).mean(0)  # one channel: mean over channels is the channel itself
    bright = (x - x.min()) / max(float(x.max() - x.min()), 1e-6)
    return np.asarray(clean_mask(bright, threshold="otsu"), dtype=bool)


def _score(pred: np.ndarray, gt: np.ndarray) -> dict[str, float]:
    """Per-slice values: DSC/JA where the slice has liver, FP where it has none (the other NaN), pixel counts."""
    from labelwise.metrics import dice, iou

    pred, gt = np.asarray(pred, dtype=bool), np.asarray(gt, dtype=bool)
    has_liver = bool(gt.any())
    return {
        "DSC": float(dice(pred, gt)) if has_liver else math.nan,
        "JA": float(iou(pred, gt)) if has_liver else math.nan,
        "FP": math.nan if has_liver else float(pred.any()),
        "inter": float(np.logical_and(pred, gt).sum()),
        "pred_px": float(pred.sum()),
        "ref_px": float(gt.sum()),
    }


def _reference(case: Any) -> np.ndarray:
    return np.asarray(case.raters[list(case.rater_ids).index("mask")] > 0)


def _case_scores(pred: np.ndarray, case: Any) -> dict[str, float]:
    return _score(pred, _reference(case))


def _score_baselines(ds_dir: Path, ids: list[str]) -> dict[str, dict[str, dict[str, float]]]:
    rules = {m: partial(predict_baseline, m) for m in BASELINES}
    return common.score_rules(ds_dir, ids, rules, _case_scores)


def _train(ctx: Context, method: str, ds_dir: Path, seed: int) -> Path:
    return common.train_step(ctx.work, method, ds_dir, seed, _train_overrides(seed, ctx.quick), DATA)


def _score_trained(ds_dir: Path, ids: list[str], run_dir: Path, options: Mapping[str, Any]) -> dict[str, Any]:
    return common.score_predictions(run_dir, ds_dir, ids, options, _case_scores)


def _run_meta(run_dir: Path) -> dict[str, Any]:
    """What a run resolved its defaults to (``meta.json``): healthy domain, gate, selection."""
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    return {k: meta.get(k) for k in ("healthy_source", "gate", "selection")}


def _pick(ds: Any, split: str, quick: bool) -> list[str]:
    """The scored slices of ``split``: all, or (quick) the first liver and liver-free ones by the slice labels."""
    ids = sorted(ds.split_ids(split))
    if not quick:
        return ids
    present = {cid: int(ds[cid].image_labels["lesion"]) for cid in ids}
    liver = [c for c in ids if present[c]][:QUICK_LIVER]
    free = [c for c in ids if not present[c]][:QUICK_FREE]
    return sorted(liver + free)


def run(ctx: Context) -> dict[str, Any]:
    """Write the slice dataset, train ``cam`` and ``cltn`` per seed, score every row per slice; the record body."""
    from labelwise.data import Dataset

    seeds = tuple(ctx.seeds) if ctx.seeds else FULL_SEEDS
    cfg = config(ctx.quick, seeds)
    ds_dir, liver = _slice_dataset(ctx)
    ds = Dataset(ds_dir)
    runs = {(m, s): _train(ctx, m, ds_dir, s) for s in seeds for m in ("cam", "cltn")}
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    per_seed: dict[str, Any] = {str(s): {} for s in seeds}
    for split, (role, desc) in SPLITS.items():
        ids = _pick(ds, split, ctx.quick)
        splits[split] = {"role": role, "source": SOURCE, "description": desc, "n": len(ids), "cases": ids}
        per_case[split] = common.score_split(
            ctx.work,
            split,
            ids,
            cfg["baselines"],
            partial(_score_baselines, ds_dir, ids),
            {row: (method, opts) for row, (method, opts, _) in TRAINED.items()},
            runs,
            cfg["training"],
            partial(_score_trained, ds_dir, ids),
            per_seed,
            _seed_mean,
        )
    train_ids = sorted(ds.split_ids("train"))
    train_liver = sum(int(ds[c].image_labels["lesion"]) for c in train_ids)
    return {
        "title": "Weak supervision (slice-level labels) on TotalSegmentator CT slices",
        "config": cfg,
        "seeds": list(seeds),
        "splits": splits,
        "rows": common.summary_rows(per_case, splits, ROWS, METRICS),
        "per_case": per_case,
        "per_seed": per_seed,
        "summary": _summary(per_case, splits),
        "liver_label": liver,
        "train_cases": train_ids,
        "train_composition": {"liver": train_liver, "liver_free": len(train_ids) - train_liver},
        "runs": {f"{m}-s{s}": _run_meta(r) for (m, s), r in runs.items()},
    }


def _seed_mean(vals: list[dict[str, float]]) -> dict[str, float]:
    return {k: float(np.mean([v[k] for v in vals])) for k in (*METRICS, *COUNTS)}


def _summary(per_case: dict[str, Any], splits: dict[str, Any]) -> dict[str, Any]:
    """Per split and row: pooled DSC (%) over all slices, FP and emptied-liver counts, slice counts."""
    out: dict[str, Any] = {}
    for split, info in splits.items():
        out[split] = {}
        for row in ROWS:
            vals = [per_case[split][row][c] for c in info["cases"]]
            inter = sum(v["inter"] for v in vals)
            denom = sum(v["pred_px"] + v["ref_px"] for v in vals)
            liver = [v for v in vals if v["ref_px"] > 0]
            free = [v for v in vals if v["ref_px"] == 0]
            out[split][row] = {
                "pooled_DSC": float(200.0 * inter / denom) if denom > 0 else math.nan,
                "liver_slices": len(liver),
                "liver_free_slices": len(free),
                "liver_free_with_foreground": int(sum(v["pred_px"] > 0 for v in free)),
                "liver_slices_emptied": int(sum(v["pred_px"] == 0 for v in liver)),
            }
    return out


def check(record: dict[str, Any]) -> None:
    """The summary is recomputable from the per-slice values; per-slice values are the means of the per-seed ones."""

    def same(a: Any, b: Any) -> bool:
        if isinstance(a, float) and isinstance(b, float) and math.isnan(a) and math.isnan(b):
            return True
        return bool(a == b) if not isinstance(a, float) else abs(a - b) < 1e-9

    want = _summary(record["per_case"], record["splits"])
    for split, rows in want.items():
        for row, vals in rows.items():
            assert all(same(record["summary"][split][row][k], v) for k, v in vals.items()), (split, row)
    for split, info in record["splits"].items():
        for row in TRAINED:
            for c in info["cases"]:
                seed_vals = [record["per_seed"][str(s)][split][row][c] for s in record["seeds"]]
                assert all(same(record["per_case"][split][row][c][k], v) for k, v in _seed_mean(seed_vals).items())
            for c in info["cases"]:
                v = record["per_case"][split][row][c]
                assert math.isnan(v["DSC"]) == (v["ref_px"] == 0) and math.isnan(v["FP"]) == (v["ref_px"] > 0)


def _row(record: dict[str, Any], method: str, split: str) -> dict[str, Any] | None:
    return next((r for r in record["rows"] if r["method"] == method and r["split"] == split), None)


def _cell(row: dict[str, Any], metric: str) -> str:
    s = row["metrics"].get(metric)
    return "-" if s is None else f"{s['mean']:.1f} +- {s['std']:.1f}"


def render(record: dict[str, Any]) -> str:
    """The Markdown table of a record (deterministic: a docs block must equal it)."""
    splits = record["splits"]
    lines = [
        "| method | split | slices (liver / liver-free) | DSC, liver slices | JA, liver slices | pooled DSC, all "
        "slices | liver-free slices with foreground | liver slices left empty |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in (s for s in SPLITS if s in splits):
        for m in ROWS:
            r = _row(record, m, split)
            if r is None:
                continue
            s = record["summary"][split][m]
            pooled = "-" if math.isnan(s["pooled_DSC"]) else f"{s['pooled_DSC']:.1f}"
            lines.append(
                f"| {LABELS[m]} | {split} ({splits[split]['description']}) | {r['n']} ({s['liver_slices']} / "
                f"{s['liver_free_slices']}) | {_cell(r, 'DSC')} | {_cell(r, 'JA')} | {pooled} | "
                f"{s['liver_free_with_foreground']} / {s['liver_free_slices']} | "
                f"{s['liver_slices_emptied']} / {s['liver_slices']} |"
            )
    seeds = record["seeds"]
    seed_txt = f"seed {seeds[0]}" if len(seeds) == 1 else f"seeds {', '.join(map(str, seeds))}, pooled per slice"
    if record.get("quick"):
        seed_txt += ", `smoke` preset (quick run)"
    comp = record["train_composition"]
    resolved = sorted(
        {
            f"healthy domain `{v['healthy_source']}`, gate {'on' if v['gate'] else 'off'}"
            for v in record["runs"].values()
        }
    )
    lines += [
        "",
        "DSC and JA: mean +- sample std over the slices with liver, % (`labelwise.metrics` at probability 0.5 "
        "against the slice's liver mask, rater `mask`). Pooled DSC: the split's slices as one structure, "
        "2 sum |P & G| / (sum |P| + sum |G|). Data: the 122 sagittal slices (101 x 30 px, HU -200..300) of the "
        "TotalSegmentator example CT (`example_ct_sm`, one volume), liver = label "
        f"{record['liver_label']} of its model-predicted map (pseudo-labels, not manual ground truth), split by "
        "`write_slice_label_dataset` into blocks of 8 neighbouring slices. **Dev data only**: these slices and this "
        "test block were scored for `cam` and `cltn` before (`docs/results-log.md`), so the test block is not "
        "untouched. `cam` and `cltn` are trained with their default configs from the slice labels only (no mask is "
        f"read; the last epoch is kept) on the {comp['liver'] + comp['liver_free']} train slices ({comp['liver']} "
        f"with liver, {comp['liver_free']} without), {seed_txt}; {record['config']['seeds_note']}. The runs "
        f"resolved their defaults to: {'; '.join(resolved)}. The two `cam` rows are the same trained network: "
        "the raw map at 0.5, and the map through the clean-up `cltn` applies. Training-free rows: whole image and "
        "centred ellipse are the rules of `ph2_training_free`; Otsu is its luminance rule on the CT slice's one "
        "channel with the **bright** side as foreground (PH2: the dark side), fixed before any number; the empty "
        "mask is right on every liver-free slice.",
        "",
        common.provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: dict[str, Any]) -> str:
    """One bullet for the overview: each trained row on the test block beside the best training-free rule."""
    split = "test"
    s = record["summary"][split]
    if "cltn" not in s:
        return ""
    base = {m: s[m]["pooled_DSC"] for m in BASELINES if not math.isnan(s[m]["pooled_DSC"])}
    best = max(base, key=lambda m: base[m])
    trained = {row: s[row]["pooled_DSC"] for row in TRAINED}
    short = {"cam_raw": "`cam` raw", "cam": "`cam` + clean-up", "cltn": "`cltn`"}
    parts = [f"{short[row]} {trained[row]:.1f}" for row in TRAINED]
    beat = [row for row in TRAINED if trained[row] > base[best]]
    verdict = (
        "**the training-free rule wins** over every trained row"
        if not beat
        else "beaten by " + ", ".join(f"{short[r]} (by {trained[r] - base[best]:.1f} points)" for r in beat)
    )
    return (
        f"- **Weak supervision on CT slices (liver present / absent)**: pooled DSC over the test block's "
        f"{s['cltn']['liver_slices'] + s['cltn']['liver_free_slices']} slices: {', '.join(parts)}; best training-free "
        f"rule ({LABELS[best]}) {base[best]:.1f}, {verdict}. One volume, seed(s) "
        f"{', '.join(map(str, record['seeds']))}; dev data (looked at before)."
    )
