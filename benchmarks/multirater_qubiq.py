"""Multi-rater analysis of prediction folders: personalisation matrix and diversity (docs/results.md, QUBIQ).

For each prediction folder (written by ``labelwise predict``) and the cases of a split:

* the R x R Dice matrix ``D[i, j]`` = Dice(predicted map of rater i, rater j's mask), averaged over cases
  (needs per-rater maps: ``mrnet``, ``dpersona``), with the mean of its diagonal and of its off-diagonal;
* the sample diversity (mean pairwise 1 - IoU between samples, distinct pairs; the per-rater maps when the
  prediction has no samples) against the raters' own diversity (same statistic over the rater masks).

With ``--mrnet-run RUN`` it also predicts each case with the one-hot rater condition of every rater and prints the
R x R Dice matrix of (condition i, rater j): MRNet's way of answering "what would rater i draw".

Usage::

    python benchmarks/multirater_qubiq.py --data DATASET --split test [--mrnet-run RUN] [PRED_DIR ...]

Prints markdown; foreground = any non-background class.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from labelwise.data import Dataset
from labelwise.io import read_prediction
from labelwise.metrics import ged, pair_counts, sample_diversity
from labelwise.metrics.overlap import overlap_from_counts


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
    gaps = np.array([np.mean(np.diag(c)) - np.mean(c[~eye]) for c in mats])
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


def mrnet_conditions(data: Path, split: str, run: Path) -> str:
    """Markdown block: Dice of MRNet's one-hot-condition predictions against every rater."""
    from labelwise.methods import load_run

    ds = Dataset(data)
    _, _, pred = load_run(run, "cpu")
    r = len(ds.rater_ids)
    mats = []
    for cid in ds.split_ids(split):
        case = ds.load(cid)
        maps = np.stack([pred.predict(case, rater_weights=np.eye(r)[i]).label > 0 for i in range(r)])
        mats.append(overlap_from_counts(pair_counts(maps, case.raters > 0), "dice"))
    lines = [f"### MRNet one-hot conditions ({run.name}, {len(mats)} {split} cases)", ""]
    return "\n".join(lines + _matrix_lines(mats, "condition-vs-rater Dice")) + "\n"


def analyse(data: Path, split: str, pred_dir: Path) -> str:
    """Markdown block for one prediction folder."""
    ds = Dataset(data)
    ids = ds.split_ids(split)
    mats, div_pred, div_rater, single_ged = [], [], [], []
    for cid in ids:
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
            mats.append(overlap_from_counts(pair_counts(pred.raters > 0, raters), "dice"))
    lines = [f"### {pred_dir.name} ({len(ids)} {split} cases)", ""]
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
        lines += _matrix_lines(mats, "head-vs-rater Dice")
    return "\n".join(lines) + "\n"


def main() -> None:
    """CLI entry point."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--split", default="test")
    ap.add_argument("--mrnet-run", type=Path, default=None)
    ap.add_argument("preds", type=Path, nargs="*")
    args = ap.parse_args()
    if args.mrnet_run is not None:
        print(mrnet_conditions(args.data, args.split, args.mrnet_run))
    for p in args.preds:
        print(analyse(args.data, args.split, p))


if __name__ == "__main__":
    main()
