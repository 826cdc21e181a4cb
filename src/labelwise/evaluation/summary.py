"""Summary statistics over the per-case rows: mean, spread, bootstrap confidence interval, nan/inf counts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray

from labelwise.evaluation.scoring import ID_COLUMNS, SLICES_COLUMN

__all__ = ["bootstrap_ci", "summarise"]


def bootstrap_ci(
    values: NDArray[np.float64], *, n_bootstrap: int = 1000, seed: int = 0, level: float = 0.95
) -> tuple[float, float]:
    """Percentile bootstrap confidence interval of the mean of finite ``values`` (nan if fewer than 2)."""
    v = values[np.isfinite(values)]
    if v.size < 2 or n_bootstrap < 1:
        return float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, v.size, size=(n_bootstrap, v.size))
    means = v[idx].mean(axis=1)
    a = (1.0 - level) / 2.0
    return float(np.quantile(means, a)), float(np.quantile(means, 1.0 - a))


def summarise(rows: Sequence[dict[str, Any]], *, n_bootstrap: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Per metric x class x reference: mean, std, median, 95% bootstrap CI, n (finite values), n_nan, n_inf.

    Statistics are over the finite values; nan (undefined, e.g. HD with one empty mask) and inf are counted.
    ``n_ref_empty`` counts rows whose reference mask is empty (scored by the empty-mask convention).
    """
    groups: dict[tuple[str, str, str], list[float]] = {}
    ref_empty: dict[tuple[str, str], int] = {}
    for row in rows:
        if row.get("ref_voxels") == 0:
            ref_empty[(row["class"], row["reference"])] = ref_empty.get((row["class"], row["reference"]), 0) + 1
        for key, val in row.items():
            if key in ID_COLUMNS or key == SLICES_COLUMN or val is None:
                continue
            groups.setdefault((key, row["class"], row["reference"]), []).append(float(val))
    out: dict[str, Any] = {}
    for (metric, cls, ref), vals in sorted(groups.items()):
        v = np.asarray(vals, dtype=np.float64)
        fin = v[np.isfinite(v)]
        lo, hi = bootstrap_ci(v, n_bootstrap=n_bootstrap, seed=seed)
        stats = {
            "mean": float(fin.mean()) if fin.size else None,
            "std": float(fin.std(ddof=1)) if fin.size > 1 else None,
            "median": float(np.median(fin)) if fin.size else None,
            "ci95_low": None if math.isnan(lo) else lo,
            "ci95_high": None if math.isnan(hi) else hi,
            "n": int(fin.size),
            "n_nan": int(np.isnan(v).sum()),
            "n_inf": int(np.isinf(v).sum()),
            "n_ref_empty": ref_empty.get((cls, ref), 0),
        }
        out.setdefault(metric, {}).setdefault(cls, {})[ref] = stats
    return out
