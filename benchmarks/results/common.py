"""Helpers every results table shares: atomic JSON, resumable steps, imports, summary rows, the provenance line.

A table module (``benchmarks/results/tables/<name>.py``) keeps only what is its own: the config, the methods it
runs and how it renders. Everything here is deliberately small and has one implementation.

Record conventions checked by ``tests/test_results_pipeline.py``:

* ``record["rows"]``: ``{"method", "split", "n", "metrics": {M: {"mean", "std"}}, "scale"?}``; each
  ``metrics[M]["mean"]`` is the mean over the split's cases of ``per_case[split][method][case][M] * scale``
  (``scale`` defaults to 100: per-case values are fractions, rows are percent). A row whose method has no per-case
  values (e.g. a reference line computed from the data) sets ``"per_case": false``.
* ``record["summary"]`` (optional): numbers that are not means over cases (Pearson r, AUROC over masks, ...),
  each recomputable from the per-case values by the table's own ``check(record)`` if it defines one.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "AREA_TRANSFORMS",
    "area_score",
    "auroc_below",
    "best_of",
    "cached_json",
    "import_once",
    "mean_std",
    "provenance_line",
    "quality_metrics",
    "recall_worst",
    "score_predictions",
    "score_rules",
    "score_split",
    "step_dir",
    "summary_rows",
    "train_step",
    "write_json",
]

Scores = Callable[[np.ndarray, Any], dict[str, float]]
"""Per-case values of a predicted boolean mask for a case (a :class:`labelwise.data.Case`)."""


def write_json(path: Path, obj: Any) -> None:
    """Write ``obj`` as JSON atomically (temp file in the same folder, then rename)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    with os.fdopen(fd, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def step_dir(work: Path, label: str, *key: Any) -> Path:
    """A work folder for one step, named by ``label`` and a hash of ``key`` (config, case ids, seed, ...).

    A changed rule, subset or seed gets a new folder, so a resumed run never reuses a stale result.
    """
    digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:12]
    path = work / "steps" / f"{label}-{digest}"
    path.mkdir(parents=True, exist_ok=True)
    return path


def cached_json(path: Path, compute: Callable[[], Any]) -> Any:
    """The JSON at ``path`` if a finished step wrote it, else ``compute()`` written there atomically."""
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    value = compute()
    write_json(path, value)
    return value


def train_step(work: Path, method: str, data: Path, seed: int, how: Mapping[str, Any], *key: Any) -> Path:
    """Train (or resume, or reuse) ``method`` on ``data`` with ``how`` (``preset``, ``overrides``); the run folder.

    The step folder is keyed by the method, ``how`` and ``key`` (what defines the training data), so a changed rule
    trains anew and a killed run resumes.
    """
    from labelwise.methods import train

    run_dir = step_dir(work, f"train-{method}-s{seed}", method, dict(how), *key) / "run"
    train(method, data, run_dir, overrides=how["overrides"], preset=how["preset"])
    return run_dir


def score_predictions(
    run_dir: Path, ds_dir: Path, ids: Sequence[str], options: Mapping[str, Any], score: Scores
) -> dict[str, dict[str, float]]:
    """Case -> ``score(mask, case)`` of the trained run's foreground probability >= 0.5, with prediction ``options``."""
    from labelwise.data import Dataset
    from labelwise.methods import load_run

    _, _, predictor = load_run(run_dir)
    ds = Dataset(ds_dir)
    out = {}
    for cid in ids:
        case = ds[cid]
        out[cid] = score(predictor.predict(case, **options).probs[1] >= 0.5, case)
    return out


def score_rules(
    ds_dir: Path, ids: Sequence[str], rules: Mapping[str, Callable[[np.ndarray], np.ndarray]], score: Scores
) -> dict[str, dict[str, dict[str, float]]]:
    """Rule -> case -> ``score(rule(image), case)`` for training-free rules of a ``(C, *spatial)`` image."""
    from labelwise.data import Dataset

    ds = Dataset(ds_dir)
    out: dict[str, dict[str, dict[str, float]]] = {name: {} for name in rules}
    for cid in ids:
        case = ds[cid]
        for name, rule in rules.items():
            out[name][cid] = score(rule(case.image), case)
    return out


def score_split(
    work: Path,
    split: str,
    ids: Sequence[str],
    rules_key: Any,
    score_rules_fn: Callable[[], dict[str, Any]],
    trained: Mapping[str, tuple[str, Mapping[str, Any]]],
    runs: Mapping[tuple[str, int], Path],
    training_key: Any,
    score_run: Callable[[Path, Mapping[str, Any]], dict[str, Any]],
    per_seed: dict[str, Any],
    seed_mean: Callable[[list[dict[str, float]]], dict[str, float]],
) -> dict[str, Any]:
    """One split's per-case values: the training-free rules, then each trained row per seed, each step cached.

    Args:
        work: The table's work folder.
        split: The split's name (in the step folders' names).
        ids: The split's cases.
        rules_key: What defines the rules (hashed into their step folder).
        score_rules_fn: Computes ``{rule: {case: values}}``.
        trained: Row -> ``(method, prediction options)``.
        runs: ``(method, seed)`` -> the trained run folder; the seeds are taken from it.
        training_key: What defines the trainings (hashed into the scores' step folders).
        score_run: ``(run folder, options) -> {case: values}``.
        per_seed: Filled with ``{seed: {split: {row: {case: values}}}}``.
        seed_mean: A case's values over seeds -> its row values.

    Returns:
        ``{row: {case: values}}`` for the rules and the trained rows.

    """
    seeds = sorted({s for _, s in runs})
    out = dict(cached_json(step_dir(work, f"baselines-{split}", rules_key, list(ids)) / "scores.json", score_rules_fn))
    for row, (method, opts) in trained.items():
        vals = []
        for s in seeds:
            key = (row, opts, training_key, str(runs[(method, s)]), list(ids))
            sdir = step_dir(work, f"scores-{row}-{split}-s{s}", *key)
            v = cached_json(sdir / "scores.json", functools.partial(score_run, runs[(method, s)], opts))
            per_seed.setdefault(str(s), {}).setdefault(split, {})[row] = v
            vals.append(v)
        out[row] = {c: seed_mean([v[c] for v in vals]) for c in ids}
    return out


def import_once(importer: str, src: Path, dest: Path, options: Any = None) -> Path:
    """Import ``src`` with a labelwise importer into ``dest`` unless a finished import is there (resume).

    ``options`` is a ``labelwise.data.importers.ImportOptions`` (None: the importer's defaults).
    """
    from labelwise.data.importers import import_dataset

    if not (dest / "dataset.json").is_file():
        import_dataset(importer, src, dest, options)
    return dest


def mean_std(values: Iterable[float], scale: float = 100.0) -> dict[str, float]:
    """``{"mean", "std"}`` of ``values * scale`` (sample std, ddof 1; 0 for one value)."""
    arr = np.asarray(list(values), dtype=float) * scale
    return {"mean": float(arr.mean()), "std": float(arr.std(ddof=1)) if arr.size > 1 else 0.0}


def summary_rows(
    per_case: Mapping[str, Mapping[str, Mapping[str, Mapping[str, float]]]],
    splits: Mapping[str, Mapping[str, Any]],
    methods: Sequence[str],
    metrics: Sequence[str],
    scale: float = 100.0,
) -> list[dict[str, Any]]:
    """One row per (method, split) present in ``per_case``: mean +- std over the split's cases of each metric.

    A metric that is NaN for a case (e.g. HD95 of an empty mask) is left out of that case's mean, and the row
    says how many cases entered (``n_used``).
    """
    rows = []
    for method in methods:
        for split, info in splits.items():
            if method not in per_case.get(split, {}):
                continue
            vals = per_case[split][method]
            stats: dict[str, dict[str, float]] = {}
            used: dict[str, int] = {}
            for m in metrics:
                col = [vals[c][m] for c in info["cases"] if vals[c].get(m) is not None and np.isfinite(vals[c][m])]
                if col:
                    stats[m] = mean_std(col, scale)
                    used[m] = len(col)
            row: dict[str, Any] = {"method": method, "split": split, "n": len(info["cases"]), "metrics": stats}
            if scale != 100.0:
                row["scale"] = scale
            if any(u != len(info["cases"]) for u in used.values()):
                row["n_used"] = used
            rows.append(row)
    return rows


def provenance_line(record: Mapping[str, Any], extra: str = "") -> str:
    """The sentence under every table: record file, commit, date, config hash, quick flag and test looks."""
    prov, looks = record["provenance"], record["looks"]
    commit = (prov["git_commit"] or "unknown")[:10] + (" (uncommitted changes)" if prov["git_dirty"] else "")
    has_test = any(s["role"] == "test" for s in record["splits"].values())
    text = (
        f"Record `{record['table']}.json`: commit {commit}, {prov['date'][:10]}, config "
        f"`{record['config_hash'][:12]}`, {prov['wall_s'] / 60:.1f} min wall / {prov['cpu_s'] / 60:.1f} min CPU"
        + (", **quick smoke run**" if record.get("quick") else "")
        + "."
    )
    if has_test:
        text += (
            f" Test split looked at {looks['test_looks_this_version']} time(s) with this config, "
            f"{looks['test_looks_total']} in all."
        )
    else:
        text += " Dev data only (no untouched test split in this table)."
    return text + (" " + extra if extra else "")


def recall_worst(pred: Sequence[float], true: Sequence[float], fraction: float = 0.1) -> float:
    """Expected share of the truly worst ``fraction`` among the ``fraction`` ranked worst (ties at the cut shared).

    ``k = max(1, round(fraction * n))``; masks tied with the k-th lowest score share the remaining places, so the
    value is the expected recall under random tie-breaking (a constant score gets the chance value ``k / n``).
    """
    p, t = np.asarray(pred, float), np.asarray(true, float)
    k = max(1, round(fraction * p.size))
    worst = np.argsort(t, kind="stable")[:k]
    cut = np.sort(p)[k - 1]
    below = p < cut
    at = p == cut
    weight = below.astype(float) + at * ((k - below.sum()) / at.sum())
    return float(weight[worst].sum() / k)


def auroc_below(pred: Sequence[float], true: Sequence[float], bad: float) -> float:
    """AUROC of ``-pred`` for flagging the positives ``true < bad`` (Mann-Whitney, ties 1/2); nan without both."""
    from scipy.stats import rankdata

    p, t = np.asarray(pred, float), np.asarray(true, float)
    pos = t < bad
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    ranks = rankdata(-p)
    return float((ranks[pos].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def quality_metrics(
    values: Mapping[str, Mapping[str, float]], *, predicts_dice: bool, bad: float = 0.8, fraction: float = 0.1
) -> dict[str, Any]:
    """Label-quality metrics of one score over masks ``{key: {"true_dice", "pred"}}`` (None where undefined).

    ``pearson`` / ``spearman`` (labelwise.metrics; undefined for a constant score), ``mae`` only when the score
    predicts a Dice (``predicts_dice``), ``recall_worst10`` (:func:`recall_worst`) and ``auroc_lt08``
    (:func:`auroc_below` at ``bad``), beside ``n``, ``n_bad`` and the mean true and predicted values.
    """
    import math

    from labelwise.metrics import mae, pearson, spearman

    keys = sorted(values)
    pred = [values[k]["pred"] for k in keys]
    true = [values[k]["true_dice"] for k in keys]
    out: dict[str, Any] = {
        "n": len(keys),
        "n_bad": int(sum(v < bad for v in true)),
        "mean_true": float(np.mean(true)),
        "mean_pred": float(np.mean(pred)),
        "pearson": pearson(pred, true),
        "spearman": spearman(pred, true),
        "mae": mae(pred, true) if predicts_dice else None,
        "recall_worst10": recall_worst(pred, true, fraction),
        "auroc_lt08": auroc_below(pred, true, bad),
    }
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in out.items()}


AREA_TRANSFORMS = ("area", "-area", "-|area - median|")
"""The transforms of the mask-area baseline of the label-quality tables (one is chosen on training data)."""


def area_score(area: Sequence[float], transform: str, median: float) -> list[float]:
    """The area baseline's scores: ``area``, ``-area`` or ``-|area - median|`` (a key of ``AREA_TRANSFORMS``)."""
    a = np.asarray(area, float)
    b = a if transform == "area" else -a if transform == "-area" else -np.abs(a - median)
    return [float(v) for v in b]


def best_of(res: Mapping[str, Mapping[str, Any]], names: Sequence[str], metric: str) -> tuple[str, float | None]:
    """The name in ``names`` with the highest ``res[name][metric]`` (None values skipped); ``("–", None)`` if none."""
    vals = [(b, res[b][metric]) for b in names if res[b][metric] is not None]
    if not vals:
        return "–", None
    return max(vals, key=lambda x: x[1])
