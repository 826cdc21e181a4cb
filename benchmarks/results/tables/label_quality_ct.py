"""Table ``label_quality_ct``: the Quality Sentinel on model-made label errors (TotalSegmentator fast vs full).

Data: the TotalSegmentator example CT (``example_ct.nii.gz``, 122x101x112 at 3 mm, labels on slices 82..111),
imported with the ``nifti-partial`` importer: rater ``model`` = the full TotalSegmentator model's labels
(``example_seg``, the reference), rater ``fast`` = the 3 mm ``--fast`` model's labels (``example_seg_fast``, the
masks to score). Both are model predictions, not manual labels: the "errors" are the fast model's.

The sentinel is trained with its **current default recipe** and the ``ct`` preset (HU window -200..200) on half of
the labelled slices (``slice_holdout=5``: blocks of 5 slices, every second block held out: trained on z 82-86,
92-96, 102-106), reference ``model``, and without the ``fast`` masks (``rater_candidates=false``: the scored
label map is never a training candidate). No validation split (one volume): the default schedule's last epoch is
kept and nothing is selected. The overrides are the ones of the session-4 run that scored Pearson r = 0.29 with
the then recipe (``docs/results-log.md``, "Label quality", part 2), so the two are comparable. A second sentinel
row (``sentinel_raters``, added after the first row's numbers were read; ``docs/protocol.md``) keeps
``rater_candidates`` at its default, so the ``fast`` masks of the training slices are candidates too.

Scored: every structure of ``fast`` present on the held-out slices, through :func:`labelwise.quality.qa.run_qa`
(the code behind ``labelwise qa --raters --reference model --heldout --baselines``), at two levels: **structure**
(true Dice = 3D Dice over the 15 held-out slices; predicted = the mean of the sentinel's slice scores) and
**slice** (each scored slice of a structure, up to ``slices_per_structure`` = 10 per structure).

Baselines, each fixed on the training slices (the sentinel's half; they read the ``fast`` masks there, which the
sentinel does not, so they are if anything favoured):

* ``constant``: the mean true Dice of ``fast`` on the training slices (per level);
* ``area``: the structure's share of the held-out slab (slice: of the slice), as ``area``, ``-area`` or
  ``-|area - median|``, the transform with the highest Spearman on the training slices;
* ``softmax``, ``entropy``, ``tta_dice``: the uncertainty baselines of the sentinel run's own segmenter.

**Dev only** (``docs/protocol.md``): one volume, and fast-vs-full on these held-out slices was scored before (the
session-4 run), so a run adds no look.

``--quick``: the same code on 4 structures (liver, spleen, both kidneys) with the sentinel's ``smoke`` preset.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results.common import (
    AREA_TRANSFORMS,
    area_score,
    best_of,
    cached_json,
    import_once,
    provenance_line,
    quality_metrics,
    step_dir,
)
from benchmarks.results.tables import Context
from benchmarks.results.tables.label_quality_bubil import BAD_DICE, METRIC_HEAD, METRICS, WORST_FRACTION

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

NAME = "label_quality_ct"
SOURCE = "totalsegmentator_example"
REFERENCE = "model"
CANDIDATE = "fast"
SPLIT = "heldout"
LEVELS = ("structure", "slice")
METHODS = {
    "sentinel": "**Quality Sentinel** (default recipe, `fast` never a candidate)",
    "sentinel_raters": "**Quality Sentinel** + `fast`'s training-slice masks as candidates",
    "constant": "baseline: constant = `fast`'s mean Dice on the training slices",
    "area": "baseline: mask area (transform fixed on the training slices)",
    "softmax": "baseline: mean segmenter probability inside the mask",
    "entropy": "baseline: 1 - mean segmenter entropy inside the mask",
    "tta_dice": "baseline: Dice with the segmenter's flip-TTA mask",
}
SENTINELS = ("sentinel", "sentinel_raters")
BASELINES = tuple(m for m in METHODS if m not in SENTINELS)
DICE_PREDICTORS = (*SENTINELS, "constant", "tta_dice")
SLICE_HOLDOUT = 5
OVERRIDES = (f"reference_rater={REFERENCE}", "rater_candidates=false", f"slice_holdout={SLICE_HOLDOUT}")
RATERS_OVERRIDES = (f"reference_rater={REFERENCE}", f"slice_holdout={SLICE_HOLDOUT}")
OLD_RECIPE_PEARSON = 0.294  # docs/results-log.md, "Label quality" part 2, structure level, 30-epoch run
QUICK_STRUCTURES = ("liver", "spleen", "kidney_left", "kidney_right")


def config(quick: bool = False) -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    structures = list(QUICK_STRUCTURES) if quick else None
    extra = [f"structures={json.dumps(structures)}"] if structures else []
    preset = "smoke" if quick else "ct"
    return {
        "data": {
            "source": SOURCE,
            "importer": "nifti-partial (example_ct + example_seg as 'model' + example_seg_fast as 'fast')",
            "reference": REFERENCE,
            "scored": CANDIDATE,
        },
        "sentinel": {
            "preset": preset,
            "overrides": list(OVERRIDES) + extra,
            "training": "half of the labelled slices (slice_holdout blocks), reference 'model', 'fast' never a "
            "candidate; no validation split: last epoch kept",
        },
        "sentinel_raters": {
            "preset": preset,
            "overrides": list(RATERS_OVERRIDES) + extra,
            "training": "as 'sentinel' with rater_candidates at its default (true): the 'fast' masks of the training "
            "slices are candidates too (the baselines read them as well); added after the first run's numbers were "
            "read (docs/protocol.md)",
        },
        "scoring": {
            "function": "labelwise.quality.qa.run_qa(mode='raters', reference='model', heldout_only=True, "
            "baselines=True)",
            "structures": structures,
            "levels": list(LEVELS),
        },
        "baselines": {
            "constant": "mean true Dice of 'fast' on the training slices (per level)",
            "area": {
                "score": "structure voxels / held-out slab voxels (slice: pixels / slice pixels)",
                "transforms": list(AREA_TRANSFORMS),
                "choice": "highest Spearman with true Dice on the training slices (per level)",
            },
            "uncertainty": "sentinel run's segmenter (flip-TTA probs): softmax, entropy, tta_dice",
        },
        "metrics": {
            "true_dice": "structure: 3D Dice over the held-out slices; slice: Dice on the slice (labelwise.metrics)",
            "pearson": "labelwise.metrics.pearson over the scored masks of a level",
            "spearman": "labelwise.metrics.spearman (average ranks)",
            "mae": "mean |pred - true|, only for scores that predict a Dice",
            "recall_worst10": "benchmarks.results.common.recall_worst (ties at the cut shared)",
            "auroc_lt08": "benchmarks.results.common.auroc_below at 0.8",
        },
        "seed": 0,
    }


def _metrics(method: str, values: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    return quality_metrics(values, predicts_dice=method in DICE_PREDICTORS, bad=BAD_DICE, fraction=WORST_FRACTION)


def _summary_metrics(per_case: Mapping[str, Any]) -> dict[str, Any]:
    return {lvl: {m: _metrics(m, per_case[lvl][m]) for m in METHODS} for lvl in LEVELS}


# ----------------------------------------------------------------------------------------------------- steps


def _train(ctx: Context, ds: Path, variant: str) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) the sentinel ``variant``; returns the run dir and the parts of its meta the record keeps."""
    import labelwise.methods as lm

    cfg = config(ctx.quick)[variant]
    run_dir = step_dir(ctx.work, variant, cfg, ds.name, ctx.seeds[:1]) / "run"
    meta_path = run_dir / "meta.json"
    finished = meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("status") == "finished"
    if not finished:
        lm.train("sentinel", ds, run_dir, overrides=cfg["overrides"], preset=cfg["preset"])
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    keep = ("candidates", "candidate_dice_histogram", "candidate_sources", "heldout_slices", "status")
    return run_dir, {k: meta.get(k) for k in keep}


def _masks(ds: Path) -> tuple[Any, np.ndarray, np.ndarray]:
    """The one case, its ``fast`` map and its ``model`` map."""
    from labelwise.data import Dataset

    d = Dataset(ds)
    (cid,) = d.ids
    case = d[cid]
    return case, case.raters[case.rater_ids.index(CANDIDATE)], case.raters[case.rater_ids.index(REFERENCE)]


def _train_slice_stats(ds: Path, train_slices: Sequence[int], structures: Sequence[str] | None) -> dict[str, Any]:
    """Per level, ``fast`` on the training slices: mean true Dice (constant) and the area transform's choice."""
    from labelwise.metrics import dice, spearman

    case, fast, ref = _masks(ds)
    zs = sorted(int(z) for z in train_slices)
    names = case.class_names
    wanted = range(1, len(names)) if structures is None else [names.index(n) for n in structures]
    f, r = fast[..., zs], ref[..., zs]
    pairs: dict[str, tuple[list[float], list[float]]] = {lvl: ([], []) for lvl in LEVELS}
    for k in wanted:
        fk, rk = f == k, r == k
        if not fk.any():
            continue
        pairs["structure"][0].append(dice(fk, rk))
        pairs["structure"][1].append(float(fk.mean()))
        for i in range(len(zs)):
            if fk[..., i].any():
                pairs["slice"][0].append(dice(fk[..., i], rk[..., i]))
                pairs["slice"][1].append(float(fk[..., i].mean()))
    out: dict[str, Any] = {"slices": zs}
    for lvl, (true, area) in pairs.items():
        med = float(np.median(area))
        rho = {t: spearman(area_score(area, t, med), true) for t in AREA_TRANSFORMS}
        best = max(AREA_TRANSFORMS, key=lambda t: rho[t] if math.isfinite(rho[t]) else -math.inf)
        out[lvl] = {
            "n_masks": len(true),
            "mean_true_dice": float(np.mean(true)),
            "median_area": med,
            "area_spearman": {t: (v if math.isfinite(v) else None) for t, v in rho.items()},
            "area_transform": best,
        }
    return out


def _qa_rows(run_dir: Path, ds: Path, structures: Sequence[str] | None, baselines: bool) -> list[Any]:
    """The scored rows of ``fast`` on the held-out slices (``labelwise qa --raters --reference model --heldout``)."""
    from labelwise.quality.qa import run_qa

    res = run_qa(
        run_dir, ds, mode="raters", reference=REFERENCE, structures=structures, heldout_only=True, baselines=baselines
    )
    if res.failures:
        raise RuntimeError(f"scoring failed: {res.failures}")
    return [r for r in res.rows if r.source == CANDIDATE and not r.empty and r.true_dice is not None]


def _score(
    runs: Mapping[str, Path], ds: Path, stats: Mapping[str, Any], structures: Sequence[str] | None
) -> dict[str, Any]:
    """Per level, per method, per scored mask: ``{"true_dice", "pred"}`` (baselines from the first run's segmenter)."""
    run_dir = runs["sentinel"]
    rows = _qa_rows(run_dir, ds, structures, baselines=True)
    other = {r.structure: r for r in _qa_rows(runs["sentinel_raters"], ds, structures, baselines=False)}
    case, fast, _ref = _masks(ds)
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8"))
    held = sorted(int(z) for z in meta["heldout_slices"][case.id])
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {lvl: {m: {} for m in METHODS} for lvl in LEVELS}
    areas: dict[str, dict[str, float]] = {lvl: {} for lvl in LEVELS}
    for row in rows:
        twin = other[row.structure]
        assert twin.slices == row.slices and twin.true_dice == row.true_dice, row.structure  # the same masks
        k = case.class_names.index(row.structure)
        mk = fast == k
        bl = row.baselines or {}
        out["structure"]["sentinel"][row.structure] = {"true_dice": row.true_dice, "pred": row.predicted_dice}
        out["structure"]["sentinel_raters"][row.structure] = {"true_dice": row.true_dice, "pred": twin.predicted_dice}
        for b in ("softmax", "entropy", "tta_dice"):
            out["structure"][b][row.structure] = {"true_dice": row.true_dice, "pred": bl[b]}
        areas["structure"][row.structure] = float(mk[..., held].mean())
        sbl = row.slice_baselines or {}
        for i, z in enumerate(row.slices):
            assert z is not None, "3D rows carry their slice index"
            key = f"{row.structure}@z{z:03d}"
            t = row.slice_true[i]
            out["slice"]["sentinel"][key] = {"true_dice": t, "pred": row.slice_pred[i]}
            out["slice"]["sentinel_raters"][key] = {"true_dice": t, "pred": twin.slice_pred[i]}
            for b in ("softmax", "entropy", "tta_dice"):
                out["slice"][b][key] = {"true_dice": t, "pred": sbl[b][i]}
            areas["slice"][key] = float(mk[..., z].mean())
    for lvl in LEVELS:
        st = stats[lvl]
        keys = sorted(areas[lvl])
        area = area_score([areas[lvl][k] for k in keys], st["area_transform"], st["median_area"])
        truth = out[lvl]["sentinel"]
        out[lvl]["area"] = {k: {"true_dice": truth[k]["true_dice"], "pred": a} for k, a in zip(keys, area, strict=True)}
        out[lvl]["constant"] = {k: {"true_dice": truth[k]["true_dice"], "pred": st["mean_true_dice"]} for k in keys}
    return out


def run(ctx: Context) -> dict[str, Any]:
    """Train the sentinel on half the slices, score ``fast`` on the other half with it and the baselines."""
    from labelwise.data.slices import labelled_slice_indices

    cfg = config(ctx.quick)
    structures = cfg["scoring"]["structures"]
    ds = import_once("nifti-partial", ctx.data / SOURCE, ctx.work / "import_totalseg")
    trained = {v: _train(ctx, ds, v) for v in SENTINELS}
    meta = trained["sentinel"][1]
    case, _fast, _ref = _masks(ds)
    held = set(meta["heldout_slices"][case.id])
    train_slices = [z for z in labelled_slice_indices(case) if z not in held]
    stats = cached_json(
        step_dir(ctx.work, "trainstats", cfg["baselines"], structures, train_slices) / "stats.json",
        partial(_train_slice_stats, ds, train_slices, structures),
    )
    per_case = cached_json(
        step_dir(ctx.work, "scores", cfg, [trained[v][0].parent.name for v in SENTINELS], stats) / "scores.json",
        partial(_score, {v: t[0] for v, t in trained.items()}, ds, stats, structures),
    )
    runs_meta = {v: t[1] for v, t in trained.items()}
    summary = {"levels": _summary_metrics(per_case), "train": {"slices": stats, "run": meta, "runs": runs_meta}}
    return {
        "title": "Label quality on model-made label errors (TotalSegmentator fast vs full)",
        "config": cfg,
        "seeds": list(ctx.seeds[:1]),
        "splits": {
            SPLIT: {
                "role": "dev",
                "source": f"{SOURCE} (example_ct, held-out slices {sorted(held)})",
                "description": "fast-vs-full on the slices the sentinel did not train on (dev: one volume, scored "
                "before)",
                "n": 1,
                "cases": [case.id],
                "n_masks": {lvl: len(per_case[lvl]["sentinel"]) for lvl in LEVELS},
            }
        },
        "rows": [],
        "per_case": per_case,
        "summary": summary,
    }


# ----------------------------------------------------------------------------------------------------- output


def check(record: Mapping[str, Any]) -> None:
    """Assert that the summary metrics are recomputable from ``per_case``."""
    redo = _summary_metrics(record["per_case"])
    got = record["summary"]["levels"]
    for lvl in LEVELS:
        for m in METHODS:
            for k, want in redo[lvl][m].items():
                have = got[lvl][m][k]
                assert (want is None) == (have is None), (lvl, m, k)
                if want is not None:
                    assert abs(float(have) - float(want)) <= 1e-9, (lvl, m, k, have, want)


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def render(record: Mapping[str, Any]) -> str:
    """Markdown: per level, the sentinel beside each baseline (deterministic)."""
    levels, train = record["summary"]["levels"], record["summary"]["train"]
    head = "| score | level | n | bad (< 0.8) | mean true | mean pred | " + " | ".join(METRIC_HEAD[m] for m in METRICS)
    lines = [head + " |", "|---" * (6 + len(METRICS)) + "|"]
    for lvl in LEVELS:
        for i, m in enumerate(METHODS):
            r = levels[lvl][m]
            cells = " | ".join(_fmt(r[k]) for k in METRICS)
            lines.append(
                f"| {METHODS[m]} | {lvl if i == 0 else ''} | {r['n']} | {r['n_bad']} | {_fmt(r['mean_true'])} | "
                f"{_fmt(r['mean_pred'])} | {cells} |"
            )
    runs = train.get("runs") or {"sentinel": train["run"]}
    cands = "; ".join(
        f"{v}: {(m or {}).get('candidates')} candidates ("
        + ", ".join(f"{k} {n}" for k, n in sorted(((m or {}).get("candidate_sources") or {}).items()))
        + ")"
        for v, m in sorted(runs.items())
    )
    st = train["slices"]
    quick_txt = (
        " **Quick smoke run: 4 structures (liver, spleen, kidneys), sentinel `smoke` preset.**"
        if record.get("quick")
        else ""
    )
    lines += [
        "",
        "The `fast` TotalSegmentator labels of the example CT are scored without their reference; their true quality "
        "is the Dice with the full model's labels (`model`). The Quality Sentinel is trained with its default recipe "
        f"and the `{record['config']['sentinel']['preset']}` preset "
        f"(`overrides={record['config']['sentinel']['overrides']}`) on the training slices "
        f"{st['slices'][0]}..{st['slices'][-1]} (every second block of {SLICE_HOLDOUT}); in the first sentinel row "
        "`fast` is never a training candidate, the second keeps `rater_candidates` at its default, so `fast`'s masks "
        "on the training slices are candidates too (the baselines read them as well; this row was added after the "
        f"first row's numbers were read: a choice on this dev volume). {cands}. No validation split, last epoch kept. "
        "Scored on the held-out slices: structure level = 3D Dice over them (predicted = mean of the sentinel's slice "
        "scores), slice level = each scored slice. Baselines are fixed on the training slices, reading `fast` there "
        f"(the sentinel does not): constant {st['structure']['mean_true_dice']:.3f} (structure) / "
        f"{st['slice']['mean_true_dice']:.3f} (slice), area transform `{st['structure']['area_transform']}` / "
        f"`{st['slice']['area_transform']}`; softmax / entropy / tta_dice come from the sentinel run's own 2D "
        "U-Net. Metrics as in `label_quality_bubil`. One volume, model-made labels on both sides, scored before "
        f"with an older recipe (structure-level Pearson r = {OLD_RECIPE_PEARSON}, `docs/results-log.md`): dev data."
        f"{quick_txt}",
        "",
        provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: Mapping[str, Any]) -> str:
    """One bullet: both sentinels' Pearson / Spearman at structure level beside the best baseline and the old recipe."""
    res = record["summary"]["levels"]["structure"]
    s, s2 = res["sentinel"], res.get("sentinel_raters")
    b_r, v_r = best_of(res, BASELINES, "pearson")
    b_rho, v_rho = best_of(res, BASELINES, "spearman")
    quick = " (**quick smoke run**, 4 structures)" if record.get("quick") else ""
    sents = [x for x in (s, s2) if x is not None]

    def beats(b: str, m: str) -> bool:  # the baseline beats every sentinel row on metric m
        vb = res[b][m]
        return vb is not None and all(x[m] is None or (vb < x[m] if m == "mae" else vb > x[m]) for x in sents)

    beaten = [METRIC_HEAD[m] for m in ("pearson", "spearman", "mae") if any(beats(b, m) for b in BASELINES)]
    lose = (
        "a baseline beats both sentinel rows on " + ", ".join(beaten)
        if beaten
        else "no baseline beats the sentinel on r, Spearman and MAE"
    )
    with_fast = (
        f"; with `fast`'s training-slice masks as candidates r {_fmt(s2['pearson'])}, Spearman {_fmt(s2['spearman'])}, "
        f"MAE {_fmt(s2['mae'])}"
        if s2 is not None
        else ""
    )
    return (
        f"- **Label quality, CT**: Quality Sentinel on TotalSegmentator `fast` vs full labels of {s['n']} structures "
        f"on held-out slices of one CT (dev data{quick}): Pearson r {_fmt(s['pearson'])}, Spearman "
        f"{_fmt(s['spearman'])}, MAE {_fmt(s['mae'])} with `fast` unseen{with_fast}; best simple baseline r "
        f"{_fmt(v_r)} (`{b_r}`), Spearman {_fmt(v_rho)} (`{b_rho}`); {lose}. The older recipe scored r = "
        f"{OLD_RECIPE_PEARSON} here with `fast` unseen."
    )
