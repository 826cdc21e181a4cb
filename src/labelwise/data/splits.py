"""Seeded case-level train/val/test splits, optionally stratified by an image-level label or grouped by patient.

Every importer assigns its split with :func:`assign_splits`, so the same source data and seed always give the
same split on any machine (numpy's ``default_rng`` with a fixed seed; ids are sorted before shuffling, so the
order in which files were listed does not matter).

Example:
    >>> s = assign_splits([f"c{i:02d}" for i in range(39)], counts=(25, 6, 8), seed=0)
    >>> [sum(v == k for v in s.values()) for k in ("train", "val", "test")]
    [25, 6, 8]

"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from labelwise.data.manifest import SPLITS
from labelwise.errors import ConfigError

__all__ = ["assign_splits", "split_counts"]


def split_counts(n: int, fractions: Sequence[float]) -> tuple[int, ...]:
    """Turn fractions into integer counts summing to ``n`` (largest remainder; ties go to the earlier split).

    Example:
        >>> split_counts(39, (0.65, 0.15, 0.2))
        (25, 6, 8)
        >>> split_counts(30, (0.6, 0.2, 0.2))
        (18, 6, 6)

    """
    f = np.asarray(fractions, dtype=np.float64)
    if f.ndim != 1 or (f < 0).any() or f.sum() <= 0:
        raise ConfigError(f"split fractions must be non-negative with a positive sum, got {tuple(fractions)}")
    ideal = n * f / f.sum()
    base = np.floor(ideal + 1e-9).astype(int)
    rest = n - int(base.sum())
    order = sorted(range(len(f)), key=lambda i: (-(ideal[i] - base[i]), i))
    for i in order[:rest]:
        base[i] += 1
    return tuple(int(v) for v in base)


def assign_splits(
    ids: Sequence[str],
    *,
    counts: Sequence[int] | None = None,
    fractions: Sequence[float] = (0.7, 0.15, 0.15),
    seed: int = 0,
    strata: Mapping[str, int | str] | None = None,
    groups: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Assign each case to ``"train"``, ``"val"`` or ``"test"``.

    Args:
        ids: Case ids (unique).
        counts: Exact number of units per split (train, val, test); must sum to the number of units. Overrides
            ``fractions``.
        fractions: Relative split sizes when ``counts`` is None, rounded by :func:`split_counts`.
        seed: Seed of the shuffle.
        strata: Optional case id -> image-level label (e.g. diagnosis). Each split then gets the label classes
            in (as close as possible to) the same proportions: every stratum is divided with
            :func:`split_counts` and the overall counts are met exactly by moving the fewest cases.
        groups: Optional case id -> group (e.g. patient or series id). Cases of a group always share a split;
            counts then count groups, and a group's stratum is that of its first case.

    Returns:
        Case id -> split name, for every id.

    Raises:
        ConfigError: duplicate ids, or counts that do not add up.

    """
    if len(set(ids)) != len(ids):
        raise ConfigError("case ids passed to assign_splits are not unique")
    units = sorted({groups[i] for i in ids} if groups else set(ids))
    members: dict[str, list[str]] = {u: [] for u in units}
    for i in ids:
        members[groups[i] if groups else i].append(i)
    n = len(units)
    target = tuple(int(c) for c in counts) if counts is not None else split_counts(n, fractions)
    if len(target) != len(SPLITS) or sum(target) != n or min(target) < 0:
        raise ConfigError(f"split counts {target} must be 3 non-negative numbers summing to {n}")
    rng = np.random.default_rng(seed)
    if strata is None:
        order = [units[k] for k in rng.permutation(n)]
        names = [SPLITS[k] for k, c in enumerate(target) for _ in range(c)]
        unit_split = dict(zip(order, names, strict=True))
    else:
        unit_split = _stratified(units, {u: strata[members[u][0]] for u in units}, target, rng)
    return {i: unit_split[groups[i] if groups else i] for i in ids}


def _stratified(
    units: list[str], label: Mapping[str, int | str], target: tuple[int, ...], rng: np.random.Generator
) -> dict[str, str]:
    n = len(units)
    classes = sorted({str(v) for v in label.values()})
    by_class = {c: [u for u in units if str(label[u]) == c] for c in classes}
    out: dict[str, str] = {}
    per_class: dict[str, list[int]] = {}
    for c in classes:
        per_class[c] = list(split_counts(len(by_class[c]), [t / n for t in target]))
    # fix the totals: move one slot at a time from an over-full split to an under-full one inside a class
    totals = [sum(per_class[c][k] for c in classes) for k in range(len(target))]
    while totals != list(target):
        over = next(k for k in range(len(target)) if totals[k] > target[k])
        under = next(k for k in range(len(target)) if totals[k] < target[k])
        c = max((c for c in classes if per_class[c][over] > 0), key=lambda c: per_class[c][over])
        per_class[c][over] -= 1
        per_class[c][under] += 1
        totals[over] -= 1
        totals[under] += 1
    for c in classes:
        shuffled = [by_class[c][k] for k in rng.permutation(len(by_class[c]))]
        names = [SPLITS[k] for k, cnt in enumerate(per_class[c]) for _ in range(cnt)]
        out.update(zip(shuffled, names, strict=True))
    return out
