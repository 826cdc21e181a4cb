"""Table ``small_data``: 20 training images, several seeds, the training-free central component beside each method.

Issue 17 item 4. Per seed, a 20-image subset is drawn (seeded, case-level) and split 16 train / 4 val (the val cases
choose the checkpoint); ``supervised`` and ``mrnet`` are trained on it as ``labelwise train METHOD`` trains without
options on a CPU: the default config, and the schedule the default time budget
(:func:`labelwise.engine.budget.default_budget_s` of the subset's 16-17 training images) plans for that training on
an idle machine. The plans were measured once by the probe (``python -m benchmarks.results.tables.small_data --probe
--work DIR``: each training is started with the default budget and stopped once its ``schedule.json`` is written)
and are pinned in :data:`PLANNED`, so a rerun on any machine or load trains the same steps (a budgeted run is
bit-identical to an unbudgeted run of its planned schedule, ``tests/engine``). The trainings are scored with the
free baseline on the cases outside the subset:

* **QUBIQ brain growth** (``medical-matting`` import, 7 raters): the subset is drawn from the 31 dev cases (the
  importer's train 25 + val 6); the other 11 dev cases are scored (role dev). The importer's 8 test cases are not
  used.
* **BU-BIL d4** (fluorescence cells, 3 experts + 7 crowd): methods train on the 3 expert masks only (reference =
  expert majority). Crops whose frame windows overlap (``crops.csv``) form one group and are drawn together; the
  groups drawn until 20 crops are reached are the declared dev subset, the remaining d4 crops are the test
  (untouched: scored only by a full run; ``--quick`` scores 3 val crops of the subset instead). d5 is not used.

Baseline "central component": Otsu threshold of the image (bright foreground, or dark: the polarity with the
higher mean Dice on the seed's 20 subset images), then the connected component containing the image centre (or
nearest to it), holes filled. Metrics per case: Dice of the hard mask vs the rater majority, soft Dice (thresholds
0.1..0.9) of the foreground probability vs the raters' mean; rows are means over (seed, case) pairs.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import shutil
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
from benchmarks.results.common import cached_json, import_once, mean_std, provenance_line, step_dir, summary_rows
from benchmarks.results.tables import Context

__all__ = ["NAME", "check", "config", "headline", "render", "run"]

logger = logging.getLogger(__name__)

NAME = "small_data"
SEEDS = (0, 1, 2)
SUBSET = 20
N_VAL = 4
METRICS = ("dice", "soft_dice")
METHODS = {
    "central_component": "central component (Otsu + component at the centre; no training)",
    "supervised": "`supervised` (default config)",
    "mrnet": "`mrnet` (default config)",
}
TRAINED = ("supervised", "mrnet")
PLANNED: dict[str, dict[str, int]] = {
    "bubil_d4/seed0/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "bubil_d4/seed0/supervised": {"epochs": 33, "steps_per_epoch": 100},
    "bubil_d4/seed1/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "bubil_d4/seed1/supervised": {"epochs": 44, "steps_per_epoch": 100},
    "bubil_d4/seed2/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "bubil_d4/seed2/supervised": {"epochs": 39, "steps_per_epoch": 100},
    "qubiq/seed0/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "qubiq/seed0/supervised": {"epochs": 20, "steps_per_epoch": 100},
    "qubiq/seed1/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "qubiq/seed1/supervised": {"epochs": 20, "steps_per_epoch": 100},
    "qubiq/seed2/mrnet": {"epochs": 50, "steps_per_epoch": 20},
    "qubiq/seed2/supervised": {"epochs": 20, "steps_per_epoch": 100},
}
"""``"<dataset>/seed<k>/<method>"`` -> the ``epochs`` and ``steps_per_epoch`` the default CPU time budget planned for
that training on an idle machine (:data:`PROBE`); the full run trains exactly these."""
PROBE: dict[str, Any] = {
    "command": "python -m benchmarks.results.tables.small_data --probe --work DIR",
    "date": "2026-12-04 18:48 UTC",
    "machine": "AMD EPYC, 2 cores, torch 2.13.0+cpu (AVX512, 2 threads), idle",
    "budget_s": {
        "bubil_d4/seed0/mrnet": 460,
        "bubil_d4/seed0/supervised": 460,
        "bubil_d4/seed1/mrnet": 440,
        "bubil_d4/seed1/supervised": 440,
        "bubil_d4/seed2/mrnet": 460,
        "bubil_d4/seed2/supervised": 460,
        "qubiq/seed0/mrnet": 440,
        "qubiq/seed0/supervised": 440,
        "qubiq/seed1/mrnet": 440,
        "qubiq/seed1/supervised": 440,
        "qubiq/seed2/mrnet": 440,
        "qubiq/seed2/supervised": 440,
    },
    "step_seconds": {
        "bubil_d4/seed0/mrnet": 0.208,
        "bubil_d4/seed0/supervised": 0.133,
        "bubil_d4/seed1/mrnet": 0.164,
        "bubil_d4/seed1/supervised": 0.093,
        "bubil_d4/seed2/mrnet": 0.177,
        "bubil_d4/seed2/supervised": 0.113,
        "qubiq/seed0/mrnet": 0.327,
        "qubiq/seed0/supervised": 0.207,
        "qubiq/seed1/mrnet": 0.333,
        "qubiq/seed1/supervised": 0.211,
        "qubiq/seed2/mrnet": 0.331,
        "qubiq/seed2/supervised": 0.210,
    },
}
"""Where :data:`PLANNED` comes from: the probe's command, date and machine, each training's default budget (by its
number of training images) and measured step time."""
QUICK_STEPS = {"epochs": 1, "steps_per_epoch": 2}
QUICK_CASES = 3
DATASETS = {
    # name -> description
    "qubiq": "QUBIQ brain growth (7 raters)",
    "bubil_d4": "BU-BIL d4 (3 experts; methods train on experts only)",
}
SPLITS = {
    # split -> (dataset, role, description)
    "qubiq_dev_rest": ("qubiq", "dev", "QUBIQ: the 11 dev cases outside each seed's 20"),
    "bubil_d4_rest": ("bubil_d4", "test", "BU-BIL d4: the crops outside each seed's 20"),
}
QUICK_SPLIT = ("bubil_d4_val", "bubil_d4", "dev", "BU-BIL d4: 3 val crops of the seed's own 20 (quick run)")


def config() -> dict[str, Any]:
    """Everything that defines this table's numbers (hashed into ``config_hash``)."""
    return {
        "methods": METHODS,
        "overrides": {m: _overrides(m, quick=False) for m in TRAINED},
        "schedule": {
            "rule": "pinned per training (train.epochs, train.steps_per_epoch; no time budget): the plan of "
            "`labelwise train METHOD` without options on an idle CPU, i.e. the steps that fit "
            "default_budget_s(train cases) at the step time measured then (the probe)",
            "default_steps": {m: _default_steps(m) for m in TRAINED},
            "planned": PLANNED,
            "probe": PROBE,
        },
        "quick": {"steps": QUICK_STEPS, "seeds": [SEEDS[0]], "cases_per_split": QUICK_CASES},
        "seeds": list(SEEDS),
        "subset": {"size": SUBSET, "train": SUBSET - N_VAL, "val": N_VAL, "val_use": "checkpoint selection"},
        "datasets": {
            "qubiq": {
                "importer": {"format": "medical-matting", "seed": 0, "source": "qubiq_brain_growth"},
                "pool": "importer's train + val (31 dev cases)",
                "draw": "numpy default_rng(seed).permutation of the sorted ids, first 20; then "
                "assign_splits(counts (16, 4, 0), seed)",
                "scored": "the other 11 dev cases (role dev)",
                "raters": "all 7",
            },
            "bubil_d4": {
                "importer": {"format": "folder", "seed": 0, "source": "bubil_cells/d4"},
                "groups": "crops whose cell boxes in the frame (crops.csv; the crop's central box) overlap, "
                "transitively (20 groups of 1-11 crops)",
                "draw": "groups in numpy default_rng(seed) order, each added while the subset stays <= 20 crops; "
                "val = the added groups in reverse order while they fit in 4 crops (else the smallest)",
                "scored": "the other d4 crops (role test); d5 unused",
                "raters": "experts 1-3 (training and reference); crowd masks unused",
            },
        },
        "baseline": {
            "threshold": "labelwise.postprocess.threshold.otsu_threshold of the image (256 bins)",
            "polarity": "bright or dark foreground, whichever has the higher mean Dice on the seed's 20 subset "
            "images (vs the rater majority)",
            "component": "8-connected component containing the centre pixel, else the nearest one; holes filled",
            "probability": "the binary mask",
        },
        "metrics": {
            "dice": "labelwise.metrics.dice(hard mask, strict majority of the raters); hard mask = argmax",
            "soft_dice": "labelwise.metrics.soft_dice(foreground probability, raters), thresholds 0.1..0.9, '>'",
        },
        "std": "sample std over (seed, case) pairs, ddof 1",
    }


def _default_steps(method: str) -> int:
    """The method's configured schedule (epochs x steps per epoch) that the time budget shortens."""
    from labelwise.methods import get_method

    train = get_method(method).Config().train
    return int(train.epochs * train.steps_per_epoch)


def _overrides(method: str, *, quick: bool, seed: int | str = "<seed>", dataset: str = "<dataset>") -> list[str]:
    """The overrides of a training: its schedule (pinned, :data:`PLANNED`; a quick run's few steps), the seed's own
    weights / data order, no progress bar."""
    key = f"{dataset}/seed{seed}/{method}"
    if quick:
        steps: dict[str, Any] = QUICK_STEPS
    elif isinstance(seed, str):  # the config's description of the overrides
        steps = {"epochs": "<planned>", "steps_per_epoch": "<planned>"}
    elif key in PLANNED:
        steps = PLANNED[key]
    else:
        raise KeyError(f"no pinned schedule for {key}: run the probe (see the module docstring) and pin its plans")
    return [*(f"train.{k}={steps[k]}" for k in ("epochs", "steps_per_epoch")), *_probe_overrides(seed)]


def _probe_overrides(seed: int | str) -> list[str]:
    """What every training sets besides its schedule (the probe starts the trainings with these alone)."""
    return [f"train.seed={seed}", "train.progress=false"]


# ---------------------------------------------------------------------------------------------------- data
def _import(ctx: Context) -> dict[str, Path]:
    from labelwise.data import Dataset
    from labelwise.data.importers import ImportOptions

    qubiq = import_once(
        "medical-matting",
        ctx.data / "qubiq_brain_growth" / "brain_growth_alpha.zip",
        ctx.work / "qubiq",
        ImportOptions(seed=0),
    )
    bubil = import_once("folder", ctx.data / "bubil_cells" / "d4", ctx.work / "bubil_d4_all", ImportOptions(seed=0))
    # the expert masks only (training and reference): a version of the import without the crowd masks
    experts = [r for r in Dataset(bubil).rater_ids if r.startswith("expert")]
    ids = Dataset(bubil).ids
    bubil = _subset_dataset(bubil, ctx.work / "bubil_d4", dict.fromkeys(ids, "test"), experts)
    return {"qubiq": qubiq, "bubil_d4": bubil}


def _cell_box(width: int, height: int, x: int, y: int) -> tuple[int, int, int, int]:
    """The cell's box in the frame: a crop is ``(b + 2 ceil(b / 2) + 1)`` px per axis around a box of ``b`` px."""
    sizes = []
    for total in (width, height):
        b = next(c for c in range(total) if c + 2 * math.ceil(c / 2) + 1 >= total)
        sizes.append((math.ceil(b / 2) + 1, b))
    (ox, bw), (oy, bh) = sizes
    return x + ox, y + oy, x + ox + bw, y + oy + bh


def _bubil_groups(crops_csv: Path, ids: list[str]) -> dict[str, str]:
    """Case id -> group id: crops whose cells' frame boxes overlap (``crops.csv``) are one group, transitively."""
    boxes: dict[str, tuple[int, int, int, int]] = {}
    with crops_csv.open(encoding="utf-8") as f:
        for r in csv.DictReader(f):
            if r["dataset"] == "d4" and r["case"] in ids:
                boxes[r["case"]] = _cell_box(int(r["width"]), int(r["height"]), int(r["frame_x"]), int(r["frame_y"]))
    parent = {i: i for i in ids}

    def find(i: str) -> str:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    order = sorted(boxes)
    for a_i, a in enumerate(order):
        for b in order[a_i + 1 :]:
            ba, bb = boxes[a], boxes[b]
            if ba[0] < bb[2] and bb[0] < ba[2] and ba[1] < bb[3] and bb[1] < ba[3]:
                parent[find(a)] = find(b)
    return {i: min(j for j in ids if find(j) == find(i)) for i in ids}


def _draw(ids: list[str], seed: int, groups: dict[str, str] | None) -> dict[str, str]:
    """Case id -> "train" / "val" / "rest" for one seed (a 20-case subset; 4 val cases inside it)."""
    from labelwise.data.splits import assign_splits

    rng = np.random.default_rng(seed)
    ids = sorted(ids)
    if groups is None:
        chosen = sorted(ids[j] for j in rng.permutation(len(ids))[:SUBSET])
        inner = assign_splits(chosen, counts=(len(chosen) - N_VAL, N_VAL, 0), seed=seed)
        return {i: inner.get(i, "rest") for i in ids}
    units = sorted(set(groups.values()))
    members = {u: [i for i in ids if groups[i] == u] for u in units}
    picked: list[str] = []
    for j in rng.permutation(len(units)):
        if sum(len(members[u]) for u in picked) + len(members[units[j]]) <= SUBSET:
            picked.append(units[j])
    # val: the picked groups in reverse draw order while they fit in N_VAL crops (at least the smallest group)
    val: list[str] = []
    for u in reversed(picked):
        if sum(len(members[v]) for v in val) + len(members[u]) <= N_VAL:
            val.append(u)
    if not val:
        val = [min(picked, key=lambda u: (len(members[u]), u))]
    out = dict.fromkeys(ids, "rest")
    for u in picked:
        for i in members[u]:
            out[i] = "val" if u in val else "train"
    return out


def _subset_dataset(source: Path, dest: Path, splits: dict[str, str], raters: list[str] | None) -> Path:
    """A dataset version of ``source`` holding only the subset (train / val), optionally only some raters."""
    from labelwise.data import Dataset
    from labelwise.data.manifest import MANIFEST_NAME
    from labelwise.io import StagedDir, safe_join, write_json_atomic

    if (dest / MANIFEST_NAME).is_file():
        return dest
    ds = Dataset(source)
    cases = []
    for rec in ds.manifest.cases:
        split = splits.get(rec.id, "rest")
        if split == "rest":
            continue
        labels = {k: v for k, v in rec.labels.items() if raters is None or k in raters}
        cases.append(replace(rec, split=split, labels=labels))
    manifest = replace(
        ds.manifest,
        cases=tuple(cases),
        rater_ids=tuple(r for r in ds.manifest.rater_ids if raters is None or r in raters),
        description=f"{ds.manifest.description} [small-data subset]".strip(),
        source=str(ds.root),
    )
    manifest.validate(dest / MANIFEST_NAME)
    with StagedDir(dest, overwrite=False, marker=MANIFEST_NAME, kind="dataset") as stage:
        for rec in manifest.cases:
            for rel in [rec.image, *rec.labels.values()]:
                target = safe_join(stage.path, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(ds.resolve(rel), target)
                except OSError:
                    shutil.copy2(ds.resolve(rel), target)
        write_json_atomic(stage.path / MANIFEST_NAME, manifest.to_json())
    return dest


def _pool(
    ctx: Context, roots: dict[str, Path], dsname: str
) -> tuple[list[str], dict[str, str] | None, list[str] | None]:
    """The ids a dataset's subsets are drawn from, its groups (BU-BIL) and the raters a subset keeps (None: all)."""
    from labelwise.data import Dataset

    ds = Dataset(roots[dsname])
    if dsname == "qubiq":
        return sorted(i for i in ds.ids if ds.record(i).split in ("train", "val")), None, None
    pool = sorted(ds.ids)
    # experts only (see _import)
    return pool, _bubil_groups(ctx.data / "bubil_cells" / "crops.csv", pool), list(ds.rater_ids)


def _subset_of(ctx: Context, roots: dict[str, Path], dsname: str, draw: dict[str, str], seed: int, raters: Any) -> Path:
    """The training dataset of one seed's draw (built once in the work folder)."""
    return _subset_dataset(roots[dsname], step_dir(ctx.work, f"subset-{dsname}", seed, draw, raters), draw, raters)


# ------------------------------------------------------------------------------------------------- scoring
def _raters(case: Any) -> np.ndarray:
    """The case's rater masks as bool ``(R, *spatial)`` (BU-BIL: the experts; the crowd is not imported)."""
    return np.asarray(case.raters) > 0


def _scores(fg_prob: np.ndarray, hard: np.ndarray, raters: np.ndarray) -> dict[str, float]:
    from labelwise.metrics import dice, soft_dice

    majority = raters.sum(0) * 2 > raters.shape[0]
    return {
        "dice": float(dice(hard, majority)),
        "soft_dice": float(soft_dice(np.clip(fg_prob, 0.0, 1.0), raters)),
    }


def central_component(image: np.ndarray, polarity: str) -> np.ndarray:
    """Otsu mask of ``image`` (``bright`` or ``dark`` foreground), its component at / nearest the centre, filled."""
    from scipy import ndimage

    from labelwise.postprocess.threshold import otsu_threshold

    img = np.asarray(image, dtype=np.float32)
    img = img.mean(0) if img.ndim == 3 else img
    if float(img.max()) == float(img.min()):
        return np.zeros(img.shape, dtype=bool)
    t = otsu_threshold(img)
    mask = img > t if polarity == "bright" else img <= t
    lab, n = ndimage.label(mask, structure=np.ones((3, 3)))
    if n == 0:
        return np.zeros(img.shape, dtype=bool)
    centre = tuple(s // 2 for s in img.shape)
    k = int(lab[centre])
    if k == 0:
        dist = ndimage.distance_transform_edt(lab == 0, return_indices=True)[1]
        k = int(lab[tuple(d[centre] for d in dist)])
    return np.asarray(ndimage.binary_fill_holes(lab == k), dtype=bool)


def _baseline_polarity(ds: Any, ids: list[str]) -> dict[str, Any]:
    """The polarity with the higher mean Dice on ``ids`` (the seed's subset), with both means."""
    means = {}
    for pol in ("bright", "dark"):
        vals = []
        for cid in ids:
            case = ds[cid]
            m = central_component(case.image, pol)
            vals.append(_scores(m.astype(np.float32), m, _raters(case))["dice"])
        means[pol] = float(np.mean(vals))
    return {"polarity": max(means, key=lambda p: (means[p], p == "bright")), "subset_dice": means}


def _score_baseline(ds: Any, ids: list[str], polarity: str) -> dict[str, dict[str, float]]:
    out = {}
    for cid in ids:
        case = ds[cid]
        m = central_component(case.image, polarity)
        out[cid] = _scores(m.astype(np.float32), m, _raters(case))
    return out


def _score_method(run_dir: Path, ds: Any, ids: list[str]) -> dict[str, dict[str, float]]:
    from labelwise.methods import load_run

    _, _, predictor = load_run(run_dir, device="cpu")
    out = {}
    for cid in ids:
        case = ds[cid]
        pred = predictor.predict(case)
        probs = np.asarray(pred.probs)
        out[cid] = _scores(probs[1], np.asarray(pred.label) > 0, _raters(case))
    return out


# --------------------------------------------------------------------------------------------------- run
def run(ctx: Context) -> dict[str, Any]:
    """Draw the subsets, train both methods per seed, score them and the baseline on the cases outside."""
    from labelwise.data import Dataset
    from labelwise.methods import train

    roots = _import(ctx)
    seeds = SEEDS[:1] if ctx.quick else SEEDS
    # a quick (CI) run reads dev data only: 3 QUBIQ remainder cases and 3 val crops of BU-BIL's declared dev subset
    wanted = {k: v for k, v in SPLITS.items() if v[1] == "dev"} if ctx.quick else dict(SPLITS)
    if ctx.quick:
        wanted[QUICK_SPLIT[0]] = QUICK_SPLIT[1:]
    splits: dict[str, Any] = {}
    per_case: dict[str, Any] = {}
    subsets: dict[str, Any] = {}
    polarity: dict[str, Any] = {}
    schedules: dict[str, Any] = {}
    for split, (dsname, role, desc) in wanted.items():
        ds = Dataset(roots[dsname])
        pool, groups, raters = _pool(ctx, roots, dsname)
        cases: list[str] = []
        per_case[split] = {m: {} for m in METHODS}
        for seed in seeds:
            draw = _draw(pool, seed, groups)
            subset = sorted(i for i, s in draw.items() if s != "rest")
            scored = sorted(i for i, s in draw.items() if s == "rest")
            if ctx.quick:
                scored = sorted(
                    i for i, s in draw.items() if s == ("val" if role == "dev" and dsname == "bubil_d4" else "rest")
                )
                scored = scored[:QUICK_CASES]
            subsets[f"{dsname}/seed{seed}"] = {
                k: sorted(i for i, s in draw.items() if s == k) for k in ("train", "val")
            }
            sub_dir = _subset_of(ctx, roots, dsname, draw, seed, raters)
            pol = cached_json(
                step_dir(ctx.work, f"polarity-{dsname}", seed, subset, config()["baseline"]) / "polarity.json",
                partial(_baseline_polarity, ds, subset),
            )
            polarity[f"{dsname}/seed{seed}"] = pol

            base = cached_json(
                step_dir(ctx.work, f"baseline-{dsname}", seed, scored, pol, config()["baseline"]) / "scores.json",
                partial(_score_baseline, ds, scored, pol["polarity"]),
            )
            for cid, v in base.items():
                per_case[split]["central_component"][f"seed{seed}/{cid}"] = v
            for method in TRAINED:
                ov = _overrides(method, quick=ctx.quick, seed=seed, dataset=dsname)
                run_dir = step_dir(ctx.work, f"run-{dsname}-{method}", seed, draw, raters, ov) / "run"
                if not _finished(run_dir):  # a killed training resumes in its run dir
                    train(method, sub_dir, run_dir, overrides=ov, time_budget="none")
                schedules[f"{dsname}/seed{seed}/{method}"] = _schedule(run_dir)
                score_dir = step_dir(ctx.work, f"scores-{dsname}-{method}", seed, draw, ov, scored, config()["metrics"])
                sc = cached_json(
                    score_dir / "scores.json",
                    partial(_score_method, run_dir, ds, scored),
                )
                for cid, v in sc.items():
                    per_case[split][method][f"seed{seed}/{cid}"] = v
            cases += [f"seed{seed}/{c}" for c in scored]
        splits[split] = {"role": role, "source": dsname, "description": desc, "n": len(cases), "cases": cases}
    rows = summary_rows(per_case, splits, list(METHODS), METRICS)
    return {
        "title": "Small data: 20 training images per seed, central component beside every method",
        "config": config(),
        "seeds": list(seeds),
        "splits": splits,
        "rows": rows,
        "per_case": per_case,
        "summary": {"baseline_polarity": polarity, "subsets": subsets, "schedules": schedules},
    }


def _schedule(run_dir: Path) -> dict[str, Any]:
    """The planned schedule of each training stage of a run (``schedule.json``), and its wall time."""
    out: dict[str, Any] = {}
    for path in sorted(run_dir.rglob("schedule.json")):
        plan = json.loads(path.read_text(encoding="utf-8"))
        stage = path.parent.relative_to(run_dir).as_posix()
        out["train" if stage == "." else stage] = {
            "steps": int(plan["epochs"]) * int(plan["steps_per_epoch"]),
            "nominal_steps": int(plan["nominal_epochs"]) * int(plan["nominal_steps_per_epoch"]),
            "time_budget_s": float(plan["time_budget_s"]),
        }
    return out


def _finished(run_dir: Path) -> bool:
    meta = run_dir / "meta.json"
    return meta.is_file() and json.loads(meta.read_text(encoding="utf-8")).get("status") == "finished"


# ------------------------------------------------------------------------------------------------- probe
PROBE_TIMEOUT_S = 900.0


def probe(ctx: Context, datasets: tuple[str, ...] = tuple(DATASETS), seeds: tuple[int, ...] = SEEDS) -> dict[str, Any]:
    """The schedule ``labelwise train METHOD`` without options plans for each full-run training on this machine.

    Each training is started as its own ``labelwise train`` process (default config and time budget, the seed's
    overrides only) and stopped as soon as its ``schedule.json`` is written, before any step is kept. Run it on
    an idle machine: the plan follows the measured step time. ``datasets`` / ``seeds`` narrow it (tests). Returns
    ``{"planned": ..., "measured": ...}`` keyed as :data:`PLANNED`.
    """
    import signal
    import subprocess
    import sys
    import time

    roots = _import(ctx)
    planned: dict[str, Any] = {}
    measured: dict[str, Any] = {}
    for dsname in datasets:
        pool, groups, raters = _pool(ctx, roots, dsname)
        for seed in seeds:
            draw = _draw(pool, seed, groups)
            sub_dir = _subset_of(ctx, roots, dsname, draw, seed, raters)
            for method in TRAINED:
                key = f"{dsname}/seed{seed}/{method}"
                out = ctx.work / "probe" / key.replace("/", "-")
                shutil.rmtree(out, ignore_errors=True)
                cmd = [sys.executable, "-m", "labelwise.cli", "train", method, "--data", str(sub_dir)]
                cmd += ["--out", str(out), *(a for o in _probe_overrides(seed) for a in ("--set", o))]
                proc = subprocess.Popen(cmd, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
                plan_path, t0 = out / "schedule.json", time.monotonic()
                while not plan_path.is_file() and proc.poll() is None and time.monotonic() - t0 < PROBE_TIMEOUT_S:
                    time.sleep(0.2)
                if proc.poll() is None:
                    os.killpg(proc.pid, signal.SIGTERM)
                _, err = proc.communicate()
                if not plan_path.is_file():
                    raise RuntimeError(f"{key}: no schedule.json was written ({' '.join(cmd)}): {err.decode()[-2000:]}")
                plan = json.loads(plan_path.read_text(encoding="utf-8"))
                planned[key] = {"epochs": int(plan["epochs"]), "steps_per_epoch": int(plan["steps_per_epoch"])}
                measured[key] = {k: plan[k] for k in ("time_budget_s", "step_seconds", "val_case_seconds") if k in plan}
                logger.info("%s: %s (%s)", key, planned[key], measured[key])
                shutil.rmtree(out, ignore_errors=True)
    return {"planned": planned, "measured": measured}


def _main(argv: list[str] | None = None) -> int:
    """``python -m benchmarks.results.tables.small_data --probe --work DIR [--data DIR]``: the plans, as JSON."""
    import argparse
    import sys
    from datetime import datetime, timezone

    from benchmarks.results.run import REPO, machine

    ap = argparse.ArgumentParser(description=_main.__doc__)
    ap.add_argument("--probe", action="store_true", required=True, help="measure the default plans (idle machine)")
    ap.add_argument("--work", type=Path, required=True, help="work folder (imports, subsets, the probe's runs)")
    ap.add_argument("--data", type=Path, help="real data folder (default $LABELWISE_DATA or ../shared/data)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    data = args.data or Path(os.environ.get("LABELWISE_DATA") or REPO.parent / "shared" / "data")
    result = probe(Context(work=args.work.resolve(), data=data.resolve()))
    result.update(
        command="python -m benchmarks.results.tables.small_data --probe --work DIR",
        date=datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M"),
        machine=machine(),
    )
    sys.stdout.write(json.dumps(result, indent=2, sort_keys=True) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(_main())


# ------------------------------------------------------------------------------------------------ render
def _cell(row: dict[str, Any] | None, metric: str) -> str:
    if row is None or metric not in row["metrics"]:
        return "-"
    s = row["metrics"][metric]
    return f"{s['mean']:.1f} +- {s['std']:.1f}"


def _row(record: dict[str, Any], method: str, split: str) -> dict[str, Any] | None:
    return next((r for r in record["rows"] if r["method"] == method and r["split"] == split), None)


def _split_order(record: dict[str, Any]) -> list[str]:
    """Test splits first, then by name (the record's JSON keys are sorted, so never rely on their order)."""
    return sorted(record["splits"], key=lambda k: (record["splits"][k]["role"] != "test", k))


def _span(values: list[float], fmt: str) -> str:
    lo, hi = min(values), max(values)
    return format(lo, fmt) if lo == hi else f"{format(lo, fmt)}-{format(hi, fmt)}"


def _steps(record: dict[str, Any], method: str) -> str:
    """How many steps ``method`` trained, as the text under the table says it."""
    cfg = record["config"]["schedule"]
    default = cfg["default_steps"][method]
    if record.get("quick"):
        q = record["config"]["quick"]["steps"]
        return f"{q['epochs'] * q['steps_per_epoch']} steps in this quick run; configured {default}"
    steps = [p["epochs"] * p["steps_per_epoch"] for k, p in cfg["planned"].items() if k.endswith(f"/{method}")]
    return f"{_span(steps, 'd')} steps per training (configured {default})"


def _schedule_text(record: dict[str, Any]) -> str:
    """The sentence on how the methods were trained."""
    sup, mr = _steps(record, "supervised"), _steps(record, "mrnet")
    probe = record["config"]["schedule"]["probe"]
    budget = _span([b / 60 for b in probe["budget_s"].values()], ".1f")
    return (
        "`supervised` and `mrnet` train on it as `labelwise train METHOD` does without options on this 2-core CPU: "
        f"default config, and the schedule the default time budget ({budget} min for the subset's training "
        "images) planned for each training on the idle machine, measured once by the probe "
        f"(`{probe['command']}`, {probe['date']}) and pinned in the table's config, so a rerun trains the same steps "
        f"on any machine: `supervised` {sup}, `mrnet` {mr}; "
    )


def render(record: dict[str, Any]) -> str:
    """The Markdown table of a record: per split, each method with the central component's numbers beside it.

    Records up to 3bf15a5 call the d4 remainder "(untouched)"; the look count under the table says how often it was
    scored, so the word is dropped.
    """
    lines = [
        "| split | role | n (seed, case) | method | Dice vs majority | soft Dice | baseline Dice "
        "| baseline soft Dice |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for split in _split_order(record):
        info = record["splits"][split]
        base = _row(record, "central_component", split)
        for method in TRAINED:
            row = _row(record, method, split)
            if row is None:
                continue
            desc = info["description"].removesuffix(" (untouched)")
            lines.append(
                f"| {desc} | {info['role']} | {info['n']} | {METHODS[method]} | "
                f"{_cell(row, 'dice')} | {_cell(row, 'soft_dice')} | {_cell(base, 'dice')} | "
                f"{_cell(base, 'soft_dice')} |"
            )
    seeds = ", ".join(str(s) for s in record["seeds"])
    lines += [
        "",
        f"Per seed ({seeds}) a 20-image subset is drawn (16 train, 4 val; the val cases choose the checkpoint); "
        + _schedule_text(record)
        + 'and every row is scored on the cases outside that seed\'s subset. Baseline ("central component", no '
        "training, same cases): Otsu threshold "
        "of the image, bright or dark foreground as chosen on the seed's 20 subset images, then the connected "
        "component at (or nearest) the image centre, holes filled. Dice: hard mask vs the raters' strict majority "
        "(BU-BIL: the 3 experts; the crowd masks are not used); soft Dice: foreground probability vs the raters' "
        "mean at thresholds 0.1..0.9 (a hard mask is its own probability). Mean +- sample std over (seed, case) "
        "pairs, %. BU-BIL d4 crops are drawn by group (crops of overlapping cell positions in the frame go "
        "together). QUBIQ's remainder is dev data (the importer's 8 test cases are not used); BU-BIL d4's "
        "remainder is its test: scored only by full runs, never used for a choice, each look counted below "
        "(d5 is not used).",
        "",
        provenance_line(record),
    ]
    return "\n".join(lines)


def headline(record: dict[str, Any]) -> str:
    """One overview bullet: each method vs the central component on BU-BIL d4 (test) and QUBIQ (dev remainder)."""
    parts = []
    for split in _split_order(record):
        info = record["splits"][split]
        base = _row(record, "central_component", split)
        if base is None:
            continue
        name = "BU-BIL d4" if info["source"] == "bubil_d4" else "QUBIQ"
        looks = record["looks"]["test_looks_total"]
        where = "dev data"
        if info["role"] == "test":
            where = "untouched test" if looks <= 1 else f"test, look {looks}, no choice made on it"
        cells, losses = [], []
        for method in TRAINED:
            row = _row(record, method, split)
            if row is None:
                continue
            d, sd = row["metrics"]["dice"]["mean"], row["metrics"]["soft_dice"]["mean"]
            cells.append(f"`{method}` {d:.1f} / {sd:.1f}")
            lost = [m for m in METRICS if row["metrics"][m]["mean"] <= base["metrics"][m]["mean"]]
            if lost:
                losses.append(f"`{method}` on {' and '.join(m.replace('_', ' ') for m in lost)}")
        bd, bsd = base["metrics"]["dice"]["mean"], base["metrics"]["soft_dice"]["mean"]
        verdict = "the baseline beats " + ", ".join(losses) if losses else "both methods beat the baseline"
        parts.append(
            f"{name} ({where}, {info['n']} seed-case pairs): {', '.join(cells)} vs central component "
            f"{bd:.1f} / {bsd:.1f}; {verdict}"
        )
    return (
        "- **Small data (20 training images)**: Dice vs rater majority / soft Dice, %, "
        f"{len(record['seeds'])} seed(s), "
        + "`labelwise train`'s default CPU schedules (planned on an idle 2-core machine, pinned)"
        + ": "
        + "; ".join(parts)
        + "."
    )


def check(record: dict[str, Any]) -> None:
    """Every method is scored on the same (seed, case) pairs; the baseline polarity is the subset's better one; every
    training of a full run trained its pinned schedule."""
    for split, info in record["splits"].items():
        for method in METHODS:
            assert set(record["per_case"][split][method]) == set(info["cases"]), (split, method)
    for key, pol in record["summary"]["baseline_polarity"].items():
        best = max(pol["subset_dice"], key=lambda p: (pol["subset_dice"][p], p == "bright"))
        assert pol["polarity"] == best, key
    if not record.get("quick"):  # every training ran its pinned schedule
        planned = record["config"]["schedule"]["planned"]
        for key, plan in record["summary"]["schedules"].items():
            assert plan["train"]["steps"] == planned[key]["epochs"] * planned[key]["steps_per_epoch"], key
    for row in record["rows"]:
        cases = record["splits"][row["split"]]["cases"]
        vals = [record["per_case"][row["split"]][row["method"]][c]["dice"] for c in cases]
        assert abs(mean_std(vals)["mean"] - row["metrics"]["dice"]["mean"]) < 1e-9
