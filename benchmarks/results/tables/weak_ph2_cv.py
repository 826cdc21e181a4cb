"""Table ``weak_ph2_cv``: the frozen weak-supervision rules cross-validated over all 70 PH2 images.

Issue 18 asks for this once, after the rules are frozen: ``cam`` and ``cltn`` with the default configs of
``weak_ph2`` (image-level labels only, ``selection: last``, seed 0), trained and scored by **3-fold
cross-validation over the 70 PH2 images** (the 30 old of ``ph2_dermoscopy`` and the 40 new of
``ph2_dermoscopy_more``, imported together with the public ``ph2`` importer from a folder that links both), folds
stratified by diagnosis (:func:`labelwise.data.splits.write_fold_dataset`, seed 0, no val cases: nothing is
selected). Every image is scored once, by the fold model that did not train on it; each model trains on about 47
images instead of ``weak_ph2``'s 18.

Rows and metrics are ``weak_ph2``'s (called, not copied): the three training-free rules, ``cam`` raw, ``cam`` with
the clean-up of ``cltn``, and ``cltn``. Splits of the record: ``old30`` (dev: the rules were chosen on these
images), ``new40`` (test, looked at before by ``weak_ph2`` and ``ph2_training_free``) and ``all70`` (both).

``--quick``: 2 folds over 6 of the 30 old images (dev only), the ``smoke`` preset; only fold 0 is trained and
scored (3 images).
"""

from __future__ import annotations

import json
import os
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results import common
from benchmarks.results.tables import Context, weak_ph2

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

NAME = "weak_ph2_cv"
METRICS = weak_ph2.METRICS
FOLDS = 3
QUICK_FOLDS = 2
QUICK_IMAGES = 6
SEED = 0
STRATIFY = "diagnosis"
SOURCES = {"old30": "ph2_dermoscopy", "new40": "ph2_dermoscopy_more"}
SPLITS = {
    # split -> (role, description)
    "old30": ("dev", "30 old images (rules chosen here)"),
    "new40": ("test", "40 new images (looked at before)"),
    "all70": ("test", "all 70"),
}
RECORDS = Path(__file__).resolve().parents[3] / "docs" / "results"
PRIOR_TABLES = ("ph2_training_free", "weak_ph2")  # tables whose full runs looked at the 40 new images before
IMAGES_DIR = "PH2 Dataset images"
TABLE_FILE = "PH2_dataset.txt"


def config(quick: bool = False) -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    base = weak_ph2.config(quick, (SEED,))
    return {
        "rows": base["rows"],
        "baselines": base["baselines"],
        "trained": base["trained"],
        "training": {**base["training"], "data": "the other folds' images (image-level labels only)"},
        "cv": {
            "folds": QUICK_FOLDS if quick else FOLDS,
            "function": "labelwise.data.splits.write_fold_dataset",
            "stratify": STRATIFY,
            "val_fraction": 0.0,
            "seed": SEED,
            "images": f"first {QUICK_IMAGES} of the 30 old (quick)" if quick else "30 old + 40 new = 70",
        },
        "sources": SOURCES,
        "seed": SEED,
        "metrics": base["metrics"],
        "reference": base["reference"],
        "importer": base["importer"],
        "paper_anchor": base["paper_anchor"],
    }


def prior_looks(records: Path = RECORDS) -> list[dict[str, Any]]:
    """Every earlier look at the 40 new images: the looks logs of ``PRIOR_TABLES``' records, each look once.

    Without those records (a fresh checkout's quick run reads them too; they are committed) ``weak_ph2``'s own
    list of prior looks is used.
    """
    seen: dict[tuple[Any, Any], dict[str, Any]] = {}
    for name in PRIOR_TABLES:
        path = records / f"{name}.json"
        if path.is_file():
            for e in json.loads(path.read_text(encoding="utf-8"))["looks"]["log"]:
                if not e.get("quick"):
                    seen.setdefault((e.get("date"), e.get("table")), e)
    return sorted(seen.values(), key=lambda e: str(e.get("date"))) if seen else list(weak_ph2.PRIOR_LOOKS)


def _linked_source(ctx: Context, names: tuple[str, ...]) -> Path:
    """A folder in the PH2 layout whose files link to those of ``names`` (the data is never copied)."""
    dest = ctx.work / ("ph2_src_quick" if ctx.quick else "ph2_src_70")
    cases = dest / IMAGES_DIR
    cases.mkdir(parents=True, exist_ok=True)
    for name in names:
        src = ctx.data / name
        for f in sorted((src / IMAGES_DIR).rglob("*")):  # real folders, linked files (rglob skips linked folders)
            if f.is_file():
                link = cases / f.relative_to(src / IMAGES_DIR)
                link.parent.mkdir(parents=True, exist_ok=True)
                if not link.exists():
                    os.symlink(f.resolve(), link)
    table = dest / TABLE_FILE
    if not table.exists():
        os.symlink((ctx.data / names[0] / TABLE_FILE).resolve(), table)
    return dest


def _folds(ctx: Context, ds_dir: Path, ids: list[str]) -> list[tuple[Path, list[str]]]:
    """Per fold: its dataset (the fold's images = test, the others = train) and the fold's image ids."""
    from labelwise.data import Dataset
    from labelwise.data.splits import write_fold_dataset

    cfg = config(ctx.quick)["cv"]
    out = []
    for fold in range(cfg["folds"]):
        dest = common.step_dir(ctx.work, f"fold{fold}", cfg, ids) / "dataset"
        if not (dest / "dataset.json").is_file():
            write_fold_dataset(ds_dir, dest, cfg["folds"], fold, STRATIFY, cfg["val_fraction"], cfg["seed"])
        test = sorted(Dataset(dest).split_ids("test"))
        out.append((dest, test))
    return out


def _subset(ctx: Context, ds_dir: Path, ids: list[str]) -> Path:
    """``ds_dir`` restricted to ``ids`` (quick runs), written once into the work folder."""
    from labelwise.data import Dataset, DatasetWriter

    dest = common.step_dir(ctx.work, "subset", ids) / "dataset"
    if (dest / "dataset.json").is_file():
        return dest
    ds = Dataset(ds_dir)
    w = DatasetWriter(
        dest,
        name="ph2_quick",
        spatial_dims=2,
        class_names=ds.class_names,
        rater_ids=ds.rater_ids,
        image_label_names=tuple(ds[ids[0]].image_labels),
        overwrite=True,
    )
    for cid in ids:
        c = ds[cid]
        raters = dict(zip(c.rater_ids, c.raters, strict=True))
        w.add_case(cid, c.image, raters, c.spacing_mm, image_labels=c.image_labels)
    w.finish()
    return dest


def run(ctx: Context) -> dict[str, Any]:
    """Import the 70 images, train ``cam`` and ``cltn`` per fold, score every image with its fold's models."""
    from labelwise.data import Dataset

    cfg = config(ctx.quick)
    names = (SOURCES["old30"],) if ctx.quick else tuple(SOURCES.values())
    src = _linked_source(ctx, names)
    ds_dir = common.import_once("ph2", src, ctx.work / ("ph2_quick" if ctx.quick else "ph2_70"))
    all_ids = sorted(Dataset(ds_dir).ids)
    if ctx.quick:
        all_ids = all_ids[:QUICK_IMAGES]
        ds_dir = _subset(ctx, ds_dir, all_ids)
    old_ids = {p.name for p in (ctx.data / SOURCES["old30"] / IMAGES_DIR).iterdir()}
    per_case: dict[str, Any] = {}
    per_seed: dict[str, Any] = {str(SEED): {}}
    fold_info: list[dict[str, Any]] = []
    folds = _folds(ctx, ds_dir, all_ids)
    for i, (fold_dir, test_ids) in enumerate(folds[:1] if ctx.quick else folds):  # quick: fold 0 only
        key = ("cv", cfg["cv"], i, all_ids)
        how = weak_ph2.train_overrides(SEED, ctx.quick)
        runs = {(m, SEED): common.train_step(ctx.work, m, fold_dir, SEED, how, key) for m in ("cam", "cltn")}
        fold_seed: dict[str, Any] = {str(SEED): {}}
        scores = common.score_split(
            ctx.work,
            f"fold{i}",
            test_ids,
            cfg["baselines"],
            partial(weak_ph2.score_baselines, fold_dir, test_ids),
            {row: (method, opts) for row, (method, opts, _) in weak_ph2.TRAINED.items()},
            runs,
            (cfg["training"], key),
            partial(weak_ph2.score_trained, fold_dir, test_ids),
            fold_seed,
            lambda vals: {k: float(np.mean([v[k] for v in vals])) for k in METRICS},
        )
        for row, vals in scores.items():
            per_case.setdefault("all70", {}).setdefault(row, {}).update(vals)
        for row, vals in fold_seed[str(SEED)][f"fold{i}"].items():
            per_seed[str(SEED)].setdefault("all70", {}).setdefault(row, {}).update(vals)
        train_n = len(Dataset(fold_dir).split_ids("train"))
        fold_info.append({"fold": i, "test": test_ids, "train_n": train_n})
    scored = sorted(c for f in fold_info for c in f["test"])
    groups = {"old30": [c for c in scored if c in old_ids], "new40": [c for c in scored if c not in old_ids]}
    groups["all70"] = scored
    splits: dict[str, Any] = {}
    for split, ids in groups.items():
        if not ids:
            continue
        role, desc = SPLITS[split]
        splits[split] = {
            "role": "dev" if ctx.quick else role,
            "source": "+".join(names) if split == "all70" else SOURCES[split],
            "description": desc if not ctx.quick else f"{len(ids)} old images (quick)",
            "n": len(ids),
            "cases": ids,
        }
        if split != "all70":
            per_case[split] = {row: {c: v[c] for c in ids} for row, v in per_case["all70"].items()}
            pooled = per_seed[str(SEED)]["all70"]
            per_seed[str(SEED)][split] = {row: {c: v[c] for c in ids} for row, v in pooled.items()}
    per_case = {s: per_case[s] for s in splits}
    per_seed[str(SEED)] = {s: per_seed[str(SEED)][s] for s in splits}
    return {
        "title": "Weak supervision on PH2, 3-fold cross-validation over 70 images",
        "config": cfg,
        "seeds": [SEED],
        "splits": splits,
        "rows": common.summary_rows(per_case, splits, weak_ph2.ROWS, METRICS),
        "per_case": per_case,
        "per_seed": per_seed,
        "folds": fold_info,
        "summary": weak_ph2.otsu_summary(per_case, splits),
        "prior_looks": prior_looks(),
    }


def check(record: dict[str, Any]) -> None:
    """The summary and the per-seed values agree with the per-image values; every image is in exactly one fold."""
    weak_ph2.check(record)
    tested = [c for f in record["folds"] for c in f["test"]]
    assert sorted(tested) == sorted(record["splits"]["all70"]["cases"]) and len(set(tested)) == len(tested)


def render(record: dict[str, Any]) -> str:
    """The Markdown table (``weak_ph2``'s layout) with the cross-validation stated."""
    cv = record["config"]["cv"]
    folds = ", ".join(f"fold {f['fold']}: train {f['train_n']} / test {len(f['test'])}" for f in record["folds"])
    lines = weak_ph2.render_table(record)
    lines += [
        "",
        f"{cv['folds']}-fold cross-validation over {cv['images']} PH2 images, stratified by diagnosis "
        f"(`write_fold_dataset`, seed {cv['seed']}, no val cases; {folds}): every image is scored by the `cam` / "
        "`cltn` of the fold that did not train on it, default configs as in `weak_ph2` (image-level labels only, "
        "last epoch kept, seed 0). The training-free rows need no training; they are the same rules on the same "
        "images. `old30` are the images the rules were chosen on (dev), `new40` were scored before by `weak_ph2` "
        "and `ph2_training_free` (looked at before), `all70` is both. " + weak_ph2.otsu_gap_text(record),
        "",
        common.provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: dict[str, Any]) -> str:
    """One bullet: the cross-validated ``cltn`` / ``cam`` over the 70 images beside luminance Otsu."""
    split = "all70" if "all70" in record["splits"] else next(iter(record["splits"]))
    get = {m: weak_ph2.row_of(record, m, split) for m in ("cltn", "cam", "otsu_largest")}
    if any(v is None for v in get.values()):
        return ""
    ja = {k: v["metrics"]["JA"]["mean"] for k, v in get.items() if v is not None}
    best = max(("cltn", "cam"), key=lambda m: ja[m])
    verdict = (
        f"**luminance Otsu wins** by {ja['otsu_largest'] - ja[best]:.1f} points"
        if ja["otsu_largest"] >= ja[best]
        else f"`{best}` beats luminance Otsu by {ja[best] - ja['otsu_largest']:.1f} points"
    )
    quick = " (**quick smoke run**)" if record.get("quick") else ""
    return (
        f"- **Weak supervision, cross-validated**: over {record['splits'][split]['n']} PH2 images "
        f"({record['config']['cv']['folds']}-fold CV{quick}, images looked at before) `cltn` JA {ja['cltn']:.1f}, "
        f"`cam` + clean-up {ja['cam']:.1f}, luminance Otsu (no training) {ja['otsu_largest']:.1f}: {verdict}."
    )
