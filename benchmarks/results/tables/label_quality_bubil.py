"""Table ``label_quality_bubil``: label-quality scores on real crowd label errors (BU-BIL d4 / d5), with baselines.

The masks to score are the **crowd masks** of BU-BIL (7 per crop); their true quality is the Dice against the
expert majority (a pixel marked by >= 2 of the 3 experts). The Quality Sentinel (``labelwise.methods.sentinel``,
default recipe) is trained on one dataset and scored on the other: fold A trains on d4 and scores d5, fold B
trains on d5 and scores d4. Both datasets are untouched test data (``docs/protocol.md``), so each is the test
split of one fold, and a full run is one look at both.

Training data of a fold: every crop of the training dataset (split ``train``; no validation split, so the
default schedule's last epoch is kept and nothing is selected), reference = the expert majority, written as the
rater ``expert_majority`` (``reference_rater``). The sentinel's default recipe uses the other raters' masks as
candidates (``rater_candidates=True``), so the training dataset's 3 expert and 7 crowd masks are candidates
beside the default perturbations and segmenter checkpoints. Nothing of the test dataset is seen in training.

Baselines, each fixed on the training fold only:

* ``constant``: the training fold's mean true Dice of its crowd masks, for every mask (MAE meaningful; Pearson
  and Spearman undefined; AUROC 0.5; worst-10 % recall the chance value).
* ``area``: the mask's area relative to the crop, as ``area``, ``-area`` or ``-|area - median|`` (the training
  fold's median): the transform with the highest Spearman on the training fold's crowd masks.
* ``softmax``, ``entropy``, ``tta_dice``: the uncertainty baselines of the sentinel run's own segmentation model
  (trained on the training fold), from :func:`labelwise.methods.sentinel.uncertainty_scores`.

A ``--quick`` run never opens BU-BIL: it runs the same code on 6 QUBIQ dev cases (the importer's train split, two
folds of 3), with raters 1-3 as "experts", raters 4-7 as "crowd" and the sentinel's ``smoke`` preset.
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

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

NAME = "label_quality_bubil"
REFERENCE = "expert_majority"
STRUCTURE = "cell"
BAD_DICE = 0.8
WORST_FRACTION = 0.1
METHODS = {
    "sentinel": "**Quality Sentinel** (default recipe)",
    "constant": "baseline: constant = training fold's mean crowd Dice",
    "area": "baseline: mask area (transform fixed on training fold)",
    "softmax": "baseline: mean segmenter probability inside the mask",
    "entropy": "baseline: 1 - mean segmenter entropy inside the mask",
    "tta_dice": "baseline: Dice with the segmenter's flip-TTA mask",
}
BASELINES = tuple(m for m in METHODS if m != "sentinel")
DICE_PREDICTORS = ("sentinel", "constant", "tta_dice")  # methods whose score is a predicted Dice (MAE reported)
METRICS = ("pearson", "spearman", "mae", "recall_worst10", "auroc_lt08")
METRIC_HEAD = {
    "pearson": "Pearson r",
    "spearman": "Spearman",
    "mae": "MAE",
    "recall_worst10": "worst-10 % recall",
    "auroc_lt08": "AUROC (Dice < 0.8)",
}
PAPER_PEARSON = 0.902

FULL = {
    "source": "bubil_cells",
    "datasets": ("d4", "d5"),
    "experts": ("expert1", "expert2", "expert3"),
    "crowd": tuple(f"crowd{i}" for i in range(1, 8)),
    # test split -> (training dataset, test dataset, fold name)
    "folds": {"d5": ("d4", "d5", "A"), "d4": ("d5", "d4", "B")},
    "sentinel_preset": None,
}
QUICK = {
    "source": "qubiq_brain_growth/brain_growth_alpha.zip",
    "datasets": ("qa", "qb"),
    "experts": ("rater1", "rater2", "rater3"),
    "crowd": ("rater4", "rater5", "rater6", "rater7"),
    "folds": {"qb": ("qa", "qb", "A"), "qa": ("qb", "qa", "B")},
    "sentinel_preset": "smoke",
}
QUICK_CASES = 3


def _setup(quick: bool) -> dict[str, Any]:
    return QUICK if quick else FULL


def config(quick: bool = False) -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    s = _setup(quick)
    return {
        "data": {
            "source": s["source"],
            "datasets": list(s["datasets"]),
            "importer": "medical-matting (QUBIQ dev: train split, first 6 ids, 3 per fold)"
            if quick
            else "folder, class names (background, cell)",
            "experts": list(s["experts"]),
            "crowd": list(s["crowd"]),
            "reference": f"{REFERENCE}: majority_vote of the experts (>= 2 of 3)",
        },
        "folds": {k: {"train": v[0], "test": v[1], "name": v[2]} for k, v in s["folds"].items()},
        "sentinel": {
            "preset": s["sentinel_preset"],
            "overrides": [f"reference_rater={REFERENCE}"],
            "training_cases": "every crop of the training dataset, split train (no val split: last epoch kept)",
            "training_raters": [REFERENCE, *s["experts"], *s["crowd"]],
            "scored": "each crowd mask of the test dataset (score_label_map, structure 'cell')",
        },
        "baselines": {
            "constant": "mean true Dice of the training fold's crowd masks",
            "area": {
                "score": "mask pixels / crop pixels",
                "transforms": list(AREA_TRANSFORMS),
                "choice": "highest Spearman with true Dice on the training fold's crowd masks",
            },
            "uncertainty": "sentinel run's segmenter (flip-TTA probs): softmax, entropy, tta_dice",
        },
        "metrics": {
            "true_dice": "labelwise.metrics.dice(crowd mask, expert majority)",
            "pearson": "labelwise.metrics.pearson over the masks of a test split (nan for a constant)",
            "spearman": "labelwise.metrics.spearman (average ranks)",
            "mae": "mean |pred - true|, only for scores that predict a Dice",
            "recall_worst10": "share of the k = max(1, round(0.1 n)) truly worst masks among the k ranked worst; "
            "ties at the cut share the remaining places (expected recall under random tie-breaking)",
            "auroc_lt08": "AUROC of -score for flagging true Dice < 0.8 (Mann-Whitney, ties count 1/2)",
            "pooled": "the masks of both test splits together (two models)",
        },
        "seed": 0,
    }


# ---------------------------------------------------------------------------------------------------- metrics


def _metrics(method: str, values: Mapping[str, Mapping[str, float]]) -> dict[str, Any]:
    return quality_metrics(values, predicts_dice=method in DICE_PREDICTORS, bad=BAD_DICE, fraction=WORST_FRACTION)


def _summary_metrics(per_case: Mapping[str, Any], split_order: Sequence[str]) -> dict[str, Any]:
    folds = {s: {m: _metrics(m, per_case[s][m]) for m in METHODS} for s in split_order}
    pooled = {m: _metrics(m, {f"{s}/{k}": v for s in split_order for k, v in per_case[s][m].items()}) for m in METHODS}
    return {"folds": folds, "pooled": pooled}


# ------------------------------------------------------------------------------------------------------- data


def _derive(src_ds: Path, dest: Path, ids: Sequence[str], experts: Sequence[str], crowd: Sequence[str]) -> Path:
    """A dataset of ``ids`` with raters ``expert_majority`` + experts + crowd, every case in split ``train``."""
    from labelwise.data import Dataset, DatasetWriter
    from labelwise.labels import majority_vote

    if (dest / "dataset.json").is_file():
        return dest
    ds = Dataset(src_ds)
    raters = [REFERENCE, *experts, *crowd]
    writer = DatasetWriter(
        dest,
        name=dest.name,
        spatial_dims=2,
        class_names=(ds.class_names[0], STRUCTURE),
        rater_ids=raters,
        description=f"{src_ds.name}: {len(ids)} cases, reference {REFERENCE} = majority of {list(experts)}",
        source=str(src_ds),
        overwrite=True,
    )
    for cid in ids:
        case = ds[cid]
        maps = {r: np.asarray(case.raters[case.rater_ids.index(r)], np.int16) for r in (*experts, *crowd)}
        maps[REFERENCE] = np.asarray(majority_vote(np.stack([maps[r] for r in experts]), tie="lowest"), np.int16)
        writer.add_case(cid, case.image, maps, spacing_mm=case.spacing_mm, split="train")
    writer.finish()
    return dest


def _datasets(ctx: Context) -> dict[str, Path]:
    """Import the data (BU-BIL d4 / d5, or for ``--quick`` 6 QUBIQ dev cases) and derive the fold datasets."""
    from labelwise.data import Dataset
    from labelwise.data.importers import ImportOptions

    s = _setup(ctx.quick)
    out: dict[str, Path] = {}
    if ctx.quick:
        # dev data only: the importer's train split of QUBIQ (never BU-BIL, all of which is test data)
        raw = import_once("medical-matting", ctx.data / s["source"], ctx.work / "import_qubiq")
        ids = sorted(Dataset(raw).split_ids("train"))[: 2 * QUICK_CASES]
        for i, name in enumerate(s["datasets"]):
            part = ids[i * QUICK_CASES : (i + 1) * QUICK_CASES]
            dest = step_dir(ctx.work, f"data-{name}", raw.name, part, s["experts"], s["crowd"]) / "dataset"
            out[name] = _derive(raw, dest, part, s["experts"], s["crowd"])
        return out
    opts = ImportOptions(class_names=("background", STRUCTURE), seed=0)
    for name in s["datasets"]:
        raw = import_once("folder", ctx.data / s["source"] / name, ctx.work / f"import_{name}", opts)
        ids = sorted(Dataset(raw).ids)
        dest = step_dir(ctx.work, f"data-{name}", name, ids, s["experts"], s["crowd"]) / "dataset"
        out[name] = _derive(raw, dest, ids, s["experts"], s["crowd"])
    return out


# ----------------------------------------------------------------------------------------------------- steps


def _train(ctx: Context, ds: Path, train_name: str) -> tuple[Path, dict[str, Any]]:
    """Train (or resume) the sentinel on the dataset ``train_name``; returns the run dir and its meta."""
    import labelwise.methods as lm

    s = _setup(ctx.quick)
    cfg = config(ctx.quick)["sentinel"]
    run_dir = step_dir(ctx.work, f"sentinel-{train_name}", cfg, ds.parent.name, ctx.seeds[:1]) / "run"
    meta_path = run_dir / "meta.json"
    finished = meta_path.is_file() and json.loads(meta_path.read_text(encoding="utf-8")).get("status") == "finished"
    if not finished:
        lm.train("sentinel", ds, run_dir, overrides=cfg["overrides"], preset=s["sentinel_preset"])
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    keep = ("candidates", "candidate_dice_histogram", "candidate_sources", "status")
    return run_dir, {k: meta.get(k) for k in keep}


def _train_fold_stats(ds: Path, crowd: Sequence[str]) -> dict[str, Any]:
    """The training fold's crowd masks: mean true Dice (constant baseline) and the area transform choice."""
    from labelwise.data import Dataset
    from labelwise.metrics import dice, spearman

    d = Dataset(ds)
    true, area = [], []
    for cid in sorted(d.ids):
        case = d[cid]
        ref = case.raters[case.rater_ids.index(REFERENCE)] == 1
        for r in crowd:
            m = case.raters[case.rater_ids.index(r)] == 1
            true.append(dice(m, ref))
            area.append(float(m.mean()))
    med = float(np.median(area))
    scores = {t: area_score(area, t, med) for t in AREA_TRANSFORMS}
    rho = {t: spearman(v, true) for t, v in scores.items()}
    best = max(AREA_TRANSFORMS, key=lambda t: rho[t] if math.isfinite(rho[t]) else -math.inf)
    rho_json = {t: (v if math.isfinite(v) else None) for t, v in rho.items()}
    return {
        "n_masks": len(true),
        "mean_true_dice": float(np.mean(true)),
        "median_area": med,
        "area_spearman": rho_json,
        "area_transform": best,
    }


def _score(run_dir: Path, ds: Path, crowd: Sequence[str], stats: Mapping[str, Any]) -> dict[str, Any]:
    """Per method, per crowd mask of ``ds``: ``{"true_dice", "pred"}``."""
    import labelwise.methods as lm
    from labelwise.data import Dataset
    from labelwise.methods.sentinel import SentinelPredictor, score_label_map
    from labelwise.metrics import dice

    _method, _cfg, predictor = lm.load_run(run_dir, device="cpu")
    assert isinstance(predictor, SentinelPredictor), f"{run_dir} is not a sentinel run"
    d = Dataset(ds)
    out: dict[str, dict[str, dict[str, float]]] = {m: {} for m in METHODS}
    areas: dict[str, float] = {}
    for cid in sorted(d.ids):
        case = d[cid]
        ref = case.raters[case.rater_ids.index(REFERENCE)] == 1
        probs = predictor.segmenter_probs(case)
        for r in crowd:
            lab = np.asarray(case.raters[case.rater_ids.index(r)], np.int16)
            key = f"{cid}_{r}"
            true = dice(lab == 1, ref)
            (sc,) = score_label_map(predictor, case, lab, [STRUCTURE], seg_probs=probs)
            pred = {"sentinel": sc.predicted_dice, "constant": stats["mean_true_dice"]}
            for b in ("softmax", "entropy", "tta_dice"):
                pred[b] = sc.baselines[b] if sc.baselines else 0.0
            areas[key] = float((lab == 1).mean())
            for m, v in pred.items():
                out[m][key] = {"true_dice": float(true), "pred": float(v)}
    keys = sorted(areas)
    area = area_score([areas[k] for k in keys], stats["area_transform"], stats["median_area"])
    out["area"] = {
        k: {"true_dice": out["sentinel"][k]["true_dice"], "pred": a} for k, a in zip(keys, area, strict=True)
    }
    return out


def run(ctx: Context) -> dict[str, Any]:
    """Train the sentinel per fold, score the test fold's crowd masks with it and the baselines; the record body."""
    from labelwise.data import Dataset

    s = _setup(ctx.quick)
    cfg = config(ctx.quick)
    data = _datasets(ctx)
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    train_info: dict[str, Any] = {}
    for split, (train_name, test_name, fold) in s["folds"].items():
        stats = cached_json(
            step_dir(ctx.work, f"trainstats-{train_name}", cfg["baselines"], data[train_name].parent.name)
            / "stats.json",
            partial(_train_fold_stats, data[train_name], s["crowd"]),
        )
        run_dir, meta = _train(ctx, data[train_name], train_name)
        key = (cfg, data[test_name].parent.name, run_dir.parent.name, stats)
        per_case[split] = cached_json(
            step_dir(ctx.work, f"scores-{split}", *key) / "scores.json",
            partial(_score, run_dir, data[test_name], s["crowd"], stats),
        )
        ids = sorted(Dataset(data[test_name]).ids)
        if ctx.quick:
            source, desc = (
                f"{s['source']} (train split)",
                f"quick fold {fold}: QUBIQ dev cases, trained on {train_name}",
            )
        else:
            source = f"{s['source']}/{test_name}"
            desc = f"fold {fold}: {test_name}, sentinel trained on {train_name}"
        splits[split] = {
            "role": "dev" if ctx.quick else "test",
            "source": source,
            "description": desc,
            "n": len(ids),
            "cases": ids,
            "n_masks": len(ids) * len(s["crowd"]),
        }
        train_info[split] = {"fold": fold, "train": train_name, "test": test_name, "train_fold": stats, "run": meta}
    summary = _summary_metrics(per_case, list(splits))
    summary["train"] = train_info
    return {
        "title": "Label quality on real crowd label errors (BU-BIL)",
        "config": cfg,
        "seeds": list(ctx.seeds[:1]),
        "splits": splits,
        "rows": [],
        "per_case": per_case,
        "summary": summary,
    }


# ----------------------------------------------------------------------------------------------------- output


def check(record: Mapping[str, Any]) -> None:
    """Assert that the summary metrics are recomputable from ``per_case``."""
    redo = _summary_metrics(record["per_case"], list(record["splits"]))
    summ = record["summary"]
    for part in ("folds", "pooled"):
        a, b = json.dumps(redo[part], sort_keys=True), json.dumps(summ[part], sort_keys=True)
        if a != b:
            got, want = json.loads(b), json.loads(a)
            _close(got, want, part)


def _close(got: Any, want: Any, where: str) -> None:
    if isinstance(want, dict):
        assert isinstance(got, dict) and set(got) == set(want), where
        for k in want:
            _close(got[k], want[k], f"{where}.{k}")
    elif want is None or got is None:
        assert want is None and got is None, where
    else:
        assert abs(float(got) - float(want)) <= 1e-9, (where, got, want)


def _sources(counts: Mapping[str, int] | None) -> str:
    """``checkpoint 3, perturb 8, rater 9`` (sorted: the record's JSON does not keep dict order)."""
    return ", ".join(f"{k} {v}" for k, v in sorted((counts or {}).items()))


def _fmt(v: Any, digits: int = 3) -> str:
    return "–" if v is None else f"{v:.{digits}f}"


def render(record: Mapping[str, Any]) -> str:
    """Markdown: per test fold and pooled, the sentinel beside each baseline (deterministic)."""
    summ, splits = record["summary"], record["splits"]
    head = "| score | test masks (trained on) | n | bad (< 0.8) | " + " | ".join(METRIC_HEAD[m] for m in METRICS)
    lines = [head + " |", "|---" * (4 + len(METRICS)) + "|"]
    blocks: list[tuple[str, Mapping[str, Any]]] = []
    for split in sorted(splits, key=lambda k: summ["train"][k]["fold"]):  # JSON sorts keys: order by fold
        t = summ["train"][split]
        blocks.append((f"{split} crowd, fold {t['fold']} ({t['train']})", summ["folds"][split]))
    blocks.append(("pooled, both folds", summ["pooled"]))
    for label, res in blocks:
        for i, m in enumerate(METHODS):
            r = res[m]
            cells = " | ".join(_fmt(r[k]) for k in METRICS)
            lines.append(f"| {METHODS[m]} | {label if i == 0 else ''} | {r['n']} | {r['n_bad']} | {cells} |")
    cfg = record["config"]
    tr = summ["train"]
    fold_txt = "; ".join(
        f"fold {t['fold']} (train {t['train']}): {(t['run'] or {}).get('candidates')} sentinel candidates "
        f"({_sources((t['run'] or {}).get('candidate_sources'))}), constant {t['train_fold']['mean_true_dice']:.3f}, "
        f"area transform `{t['train_fold']['area_transform']}`"
        for t in sorted(tr.values(), key=lambda t: t["fold"])
    )
    quick_txt = (
        " **Quick smoke run: 2 x 3 QUBIQ dev cases (raters 1-3 as experts, 4-7 as crowd), sentinel `smoke` preset; "
        "not BU-BIL.**"
        if record.get("quick")
        else ""
    )
    lines += [
        "",
        "Each crowd mask of the test dataset is scored without its reference; its true quality is the Dice with "
        "the expert majority (>= 2 of 3 experts). The Quality Sentinel is trained with its default recipe "
        f"(`labelwise.methods.train('sentinel', ..., overrides={cfg['sentinel']['overrides']})`) on every crop of "
        "the other dataset: reference = its expert majority, candidates = default perturbations, segmenter "
        "checkpoints and (default `rater_candidates`) that dataset's 3 expert and 7 crowd masks; no validation "
        "split, the last epoch is kept. Baselines are fixed on the training fold only: the constant is its mean "
        "crowd Dice; the area score is the mask's share of the crop, transformed as the training fold's Spearman "
        "chose; softmax / entropy / tta_dice come from the sentinel run's own 2D U-Net. Metrics over the masks of "
        "a test fold: Pearson r and Spearman (– where the score is constant), MAE only for scores that predict a "
        "Dice, worst-10 % recall = share of the truly worst 10 % among the 10 % ranked worst (ties at the cut "
        "shared), AUROC for flagging true Dice < 0.8. Pooled = the masks of both folds together (two models; "
        "the pooled constant takes one value per fold, so its pooled r is defined but only tells the folds "
        "apart). "
        f"{fold_txt}.{quick_txt}",
        "",
        provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: Mapping[str, Any]) -> str:
    """One bullet: sentinel AUROC / Spearman on the unseen dataset's crowd masks beside the best baseline."""
    pooled = record["summary"]["pooled"]
    s = pooled["sentinel"]
    looks = record["looks"]["test_looks_this_version"]
    if record.get("quick"):
        masks = f"{s['n']} QUBIQ dev masks (raters 4-7; quick smoke run, not BU-BIL; both folds pooled)"
    elif looks > 1:
        masks = f"{s['n']} real crowd masks of BU-BIL (test, looked at before: {looks} looks with this config; pooled)"
    else:
        masks = f"{s['n']} real crowd masks of BU-BIL (untouched test, both folds pooled)"
    b_auc, v_auc = best_of(pooled, BASELINES, "auroc_lt08")
    b_rho, v_rho = best_of(pooled, BASELINES, "spearman")
    losses = [
        METRIC_HEAD[m]
        for m in METRICS
        if s[m] is not None
        and any(
            pooled[b][m] is not None and (pooled[b][m] < s[m] if m == "mae" else pooled[b][m] > s[m]) for b in BASELINES
        )
    ]
    lose_txt = (
        "labelwise loses to a baseline on " + ", ".join(losses) if losses else "no baseline beats it on any metric"
    )
    return (
        f"- **Label quality**: Quality Sentinel (default recipe, trained on the other dataset) on the "
        f"{masks}: AUROC {_fmt(s['auroc_lt08'])} for "
        f"Dice < {BAD_DICE}, Spearman {_fmt(s['spearman'])}; best simple baseline AUROC {_fmt(v_auc)} "
        f"(`{b_auc}`), Spearman {_fmt(v_rho)} (`{b_rho}`); {lose_txt}. Paper anchor: Pearson r = {PAPER_PEARSON} "
        "on model predictions of a different dataset (not comparable)."
    )
