"""Multi-rater analysis of prediction folders: personalisation matrix and diversity (docs/results-log.md, QUBIQ).

For each prediction folder (written by ``labelwise predict``) and the cases of a split:

* the R x R Dice matrix ``D[i, j]`` = Dice(predicted map of rater i, rater j's mask), averaged over cases
  (needs per-rater maps: ``mrnet``, ``dpersona``), with the mean of its diagonal and of its off-diagonal;
* the sample diversity (mean pairwise 1 - IoU between samples, distinct pairs; the per-rater maps when the
  prediction has no samples) against the raters' own diversity (same statistic over the rater masks).

With ``--mrnet-run RUN`` it also predicts each case with the one-hot rater condition of every rater and prints the
R x R Dice matrix of (condition i, rater j): MRNet's way of answering "what would rater i draw".

Usage::

    python benchmarks/multirater_qubiq.py --data DATASET --split test [--mrnet-run RUN] [PRED_DIR ...]
    # cross-validation: pool the folds' predictions (fold i's dataset with fold i's predictions) and evaluations
    python benchmarks/multirater_qubiq.py --data F0 F1 F2 --pool PRED_F0 PRED_F1 PRED_F2 --evals EVAL_F0 EVAL_F1 EVAL_F2

Prints markdown; foreground = any non-background class.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path

import numpy as np

from labelwise.data import Dataset
from labelwise.io import read_prediction
from labelwise.metrics import ged, pair_counts, sample_diversity
from labelwise.metrics.overlap import overlap_from_counts


def head_rater_dice(maps: np.ndarray, raters: np.ndarray) -> np.ndarray:
    """R x R matrix ``D[i, j]`` = Dice(binary map i, binary rater mask j) of one case."""
    return np.asarray(overlap_from_counts(pair_counts(maps, raters), "dice"), dtype=float)


def personal_gap(matrix: np.ndarray) -> float:
    """Mean of the diagonal minus mean of the off-diagonal of a per-rater Dice matrix (personalisation of a case)."""
    eye = np.eye(matrix.shape[0], dtype=bool)
    return float(np.mean(matrix[eye]) - np.mean(matrix[~eye]))


def _matrix_lines(mats: list[np.ndarray], label: str) -> list[str]:
    """Markdown for per-case R x R matrices ``D[i, j]`` = Dice(map i, rater j): mean matrix and the two readings.

    Row reading (the issue's): map i against its own rater vs against the other raters. Column reading: rater j
    predicted by its own map vs by the other maps; it removes how easy rater j is to match (a conservative or
    generous rater scores low against every map), so it isolates what the rater-specific map adds.
    """
    m = np.mean(mats, axis=0)
    r = m.shape[0]
    eye = np.eye(r, dtype=bool)
    off = m[~eye]
    wins = sum(m[i, i] > np.mean(np.delete(m[i], i)) for i in range(r))
    col_wins = sum(m[j, j] > np.mean(np.delete(m[:, j], j)) for j in range(r))
    gaps = np.array([personal_gap(c) for c in mats])
    col_gap = np.mean([m[j, j] - np.mean(np.delete(m[:, j], j)) for j in range(r)])
    lines = [
        f"- {label}: diagonal mean {np.mean(np.diag(m)):.4f}, off-diagonal mean {off.mean():.4f} "
        f"(per case: gap {gaps.mean():+.4f} +- {gaps.std():.4f}, positive in {int((gaps > 0).sum())}/{len(gaps)} "
        f"cases); row i's diagonal beats its off-diagonal mean for {wins}/{r} maps",
        f"- column reading: rater j is matched better by map j than by the other maps on average for "
        f"{col_wins}/{r} raters (mean margin {col_gap:+.4f})",
        "",
        "| map \\ rater | " + " | ".join(str(j + 1) for j in range(r)) + " |",
        "|---" * (r + 1) + "|",
    ]
    for i in range(r):
        cells = [f"**{m[i, j]:.3f}**" if i == j else f"{m[i, j]:.3f}" for j in range(r)]
        lines.append(f"| {i + 1} | " + " | ".join(cells) + " |")
    return lines


def mrnet_conditions(folds: list[tuple[Path, Path]], split: str) -> str:
    """Markdown block: Dice of MRNet's one-hot-condition predictions against every rater.

    Args:
        folds: ``(dataset, MRNet run)`` pairs, pooled (one per CV fold; one pair for a fixed split).
        split: Split scored in each dataset.

    """
    from labelwise.methods import load_run

    mats = []
    for data, run in folds:
        ds = Dataset(data)
        _, _, pred = load_run(run, "cpu")
        r = len(ds.rater_ids)
        for cid in ds.split_ids(split):
            case = ds.load(cid)
            maps = np.stack([np.asarray(pred.predict(case, rater_weights=np.eye(r)[i]).label) > 0 for i in range(r)])
            mats.append(head_rater_dice(maps, case.raters > 0))
    names = ", ".join(run.name for _, run in folds)
    lines = [f"### MRNet one-hot conditions ({names}, {len(mats)} {split} cases)", ""]
    return "\n".join(lines + _matrix_lines(mats, "condition-vs-rater Dice")) + "\n"


def analyse(folds: list[tuple[Path, Path]], split: str) -> str:
    """Markdown block for prediction folders pooled over ``(dataset, prediction folder)`` pairs (one per CV fold)."""
    mats, div_pred, div_rater, single_ged = [], [], [], []
    map_areas: list[np.ndarray] = []
    rater_areas: list[np.ndarray] = []
    n = 0
    for data, pred_dir in folds:
        ds = Dataset(data)
        for cid in ds.split_ids(split):
            n += 1
            case = ds.load(cid)
            pred = read_prediction(pred_dir, cid, case.spatial_dims)
            raters = case.raters > 0
            div_rater.append(sample_diversity(raters))
            sset = pred.samples if pred.samples is not None else pred.raters
            if sset is not None:
                div_pred.append(sample_diversity(sset > 0))
            else:  # a single-map model (supervised): its hard map is its only sample
                assert pred.label is not None
                single_ged.append(ged(pred.label[None] > 0, raters))
            if pred.raters is not None and pred.raters.shape[0] == raters.shape[0]:
                mats.append(head_rater_dice(pred.raters > 0, raters))
                mean_area = raters.reshape(raters.shape[0], -1).sum(1).mean()
                map_areas.append((pred.raters > 0).reshape(raters.shape[0], -1).sum(1) / mean_area)
                rater_areas.append(raters.reshape(raters.shape[0], -1).sum(1) / mean_area)
    names = ", ".join(p.name for _, p in folds)
    lines = [f"### {names} ({n} {split} cases)", ""]
    rd = float(np.mean(div_rater))
    if div_pred:
        pdiv = float(np.mean(div_pred))
        lines.append(
            f"- diversity (mean pairwise 1 - IoU): predictions {pdiv:.4f} +- {np.std(div_pred):.4f}, raters "
            f"{rd:.4f} +- {np.std(div_rater):.4f} (ratio {pdiv / rd:.2f})"
        )
    if single_ged:
        lines.append(
            f"- GED with the hard map as the only sample: {np.mean(single_ged):.4f} +- {np.std(single_ged):.4f}"
        )
    if mats:
        lines.append(
            "- area of map i / mean rater area: "
            + " / ".join(f"{v:.2f}" for v in np.mean(map_areas, axis=0))
            + " (rater i's own: "
            + " / ".join(f"{v:.2f}" for v in np.mean(rater_areas, axis=0))
            + ")"
        )
        lines += _matrix_lines(mats, "head-vs-rater Dice")
    return "\n".join(lines) + "\n"


def pooled_metrics(eval_dirs: list[Path], metrics: list[str]) -> str:
    """One markdown row: mean +- std over the cases of several ``labelwise evaluate`` folders (CV folds), with the
    per-folder means; overlap metrics against the majority vote, soft/multi-rater ones against the mean of raters."""
    per_case: dict[str, list[float]] = {m: [] for m in metrics}
    per_fold: dict[str, list[float]] = {m: [] for m in metrics}
    for d in eval_dirs:
        with open(d / "per_case.csv", newline="") as fh:
            rows = list(csv.DictReader(fh))
        for m in metrics:
            vals = [float(r[m]) for r in rows if r["reference"] in ("majority", "mean_of_raters") and r.get(m)]
            per_case[m] += vals
            per_fold[m].append(float(np.mean(vals)) if vals else float("nan"))
    cells = [
        f"{np.mean(per_case[m]):.3f} +- {np.std(per_case[m]):.3f} ({' / '.join(f'{v:.3f}' for v in per_fold[m])})"
        for m in metrics
    ]
    return f"| {eval_dirs[0].name} ... ({len(per_case[metrics[0]])} cases) | " + " | ".join(cells) + " |"


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, nargs="+", required=True, help="dataset(s); one per PRED_DIR with --pool")
    ap.add_argument("--split", default="test")
    ap.add_argument("--mrnet-run", type=Path, nargs="*", default=[], help="MRNet run(s); one per --data with --pool")
    ap.add_argument("--pool", action="store_true", help="pool PRED_DIR i (on --data i) into one analysis (CV folds)")
    ap.add_argument("--evals", type=Path, nargs="*", default=[], help="evaluate folders to pool into one table row")
    ap.add_argument("--metrics", default="soft_dice,ged,dice_match,ece,dice")
    ap.add_argument("preds", type=Path, nargs="*")
    args = ap.parse_args()
    if args.mrnet_run:
        data = args.data if args.pool else args.data[:1]
        if len(data) != len(args.mrnet_run):
            ap.error("give one --mrnet-run per --data (with --pool) or one run")
        print(mrnet_conditions(list(zip(data, args.mrnet_run, strict=True)), args.split))
    if args.pool and args.preds:
        if len(args.data) != len(args.preds):
            ap.error("--pool needs one --data per PRED_DIR")
        print(analyse(list(zip(args.data, args.preds, strict=True)), args.split))
    else:
        for p in args.preds:
            print(analyse([(args.data[0], p)], args.split))
    if args.evals:
        metrics = args.metrics.split(",")
        print("| runs | " + " | ".join(metrics) + " |\n" + "|---" * (len(metrics) + 1) + "|")
        print(pooled_metrics(args.evals, metrics))


if __name__ == "__main__":
    main()
