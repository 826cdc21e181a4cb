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

import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np

from labelwise.data.manifest import SPLITS
from labelwise.errors import ConfigError, DataError

__all__ = ["assign_splits", "kfold_splits", "split_counts", "write_fold_dataset"]


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


def kfold_splits(
    ids: Sequence[str],
    folds: int,
    fold: int,
    *,
    seed: int = 0,
    strata: Mapping[str, int | str] | None = None,
    val_fraction: float = 0.2,
) -> dict[str, str]:
    """Seeded (optionally stratified) k-fold split: fold ``fold`` is test, a val subset is cut from the others.

    Cases are sorted, then shuffled per stratum with ``default_rng(seed)`` and dealt round-robin into ``folds``
    folds, one stratum after the other (strata sorted), so every fold gets each stratum in nearly equal shares and
    the same ``seed`` gives the same folds for every ``fold``. The cases of fold ``fold`` become ``test``; of the
    remaining cases ``round(val_fraction * n)`` become ``val`` (stratified by :func:`assign_splits` with
    ``seed + 1000 + fold``) and the rest ``train``.

    Args:
        ids: Case ids (unique).
        folds: Number of folds (>= 2, at most the number of cases).
        fold: Which fold is the test set (0-based).
        seed: Seed of the fold assignment.
        strata: Optional case id -> image-level label to stratify by (e.g. diagnosis).
        val_fraction: Share of the non-test cases that go to ``val`` (0 allowed).

    Returns:
        Case id -> ``train``, ``val`` or ``test``.

    Raises:
        ConfigError: bad ``folds``/``fold``/``val_fraction`` or duplicate ids.

    Example:
        >>> ids = [f"c{i:02d}" for i in range(30)]
        >>> s = kfold_splits(ids, 3, 0, strata={i: int(i[1:]) % 3 for i in ids})
        >>> [sum(v == k for v in s.values()) for k in ("train", "val", "test")]
        [16, 4, 10]
        >>> tests = [{i for i, v in kfold_splits(ids, 3, f).items() if v == "test"} for f in range(3)]
        >>> len(set().union(*tests)), sum(len(t) for t in tests)
        (30, 30)

    """
    if len(set(ids)) != len(ids):
        raise ConfigError("case ids passed to kfold_splits are not unique")
    if not 2 <= folds <= len(ids):
        raise ConfigError(f"folds must be between 2 and the number of cases ({len(ids)}), got {folds}")
    if not 0 <= fold < folds:
        raise ConfigError(f"fold must be in 0..{folds - 1}, got {fold}")
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    rng = np.random.default_rng(seed)
    label = {i: str(strata[i]) if strata is not None else "" for i in ids}
    fold_of: dict[str, int] = {}
    k = 0
    for c in sorted(set(label.values())):
        members = sorted(i for i in ids if label[i] == c)
        for j in rng.permutation(len(members)):
            fold_of[members[j]] = k % folds
            k += 1
    rest = [i for i in ids if fold_of[i] != fold]
    n_val = round(val_fraction * len(rest))
    inner = assign_splits(
        rest,
        counts=(len(rest) - n_val, n_val, 0),
        seed=seed + 1000 + fold,
        strata={i: label[i] for i in rest} if strata is not None else None,
    )
    return {i: "test" if fold_of[i] == fold else inner[i] for i in ids}


def write_fold_dataset(
    source: str | Path,
    dest: str | Path,
    folds: int,
    fold: int,
    stratify: str | None = None,
    val_fraction: float = 0.2,
    seed: int = 0,
    overwrite: bool = False,
) -> dict[str, int]:
    """Write a new dataset version of ``source`` whose splits are fold ``fold`` of :func:`kfold_splits`.

    Image and label files are hard-linked (copied where linking fails); the manifest is the source's with the
    new splits, written last. The source is never modified: ``dest`` may not be, contain or lie inside it, and
    the new dataset is built beside ``dest`` and swapped in when complete (:class:`labelwise.io.StagedDir`), so
    ``overwrite`` keeps the old dataset until the new one exists.

    Args:
        source: Dataset folder.
        dest: New dataset folder (must not hold a dataset unless ``overwrite``).
        folds: Number of folds.
        fold: Test fold (0-based).
        stratify: Image-level label to stratify by (every case must have it), or None.
        val_fraction: Share of the non-test cases that go to ``val``.
        seed: Seed of the fold assignment.
        overwrite: Replace an existing dataset at ``dest``.

    Returns:
        Number of cases per split.

    Raises:
        DataError: ``stratify`` missing on some case, ``dest`` overlapping the source, or ``dest`` already holds
            a dataset (without ``overwrite``) or other files.

    """
    from labelwise.data.dataset import Dataset
    from labelwise.data.manifest import MANIFEST_NAME
    from labelwise.io import StagedDir, check_output_not_input, safe_join, write_json_atomic

    ds = Dataset(source)
    dest = Path(dest)
    check_output_not_input(dest, [ds.root], "--out")
    ids = ds.ids
    strata = None
    if stratify is not None:
        missing = [i for i in ids if stratify not in ds.record(i).image_labels]
        if missing:
            raise DataError(
                f"{len(missing)} case(s) have no image-level label {stratify!r} (e.g. {missing[0]})", ds.root
            )
        strata = {i: ds.record(i).image_labels[stratify] for i in ids}
    splits = kfold_splits(ids, folds, fold, seed=seed, strata=strata, val_fraction=val_fraction)
    how = f"stratified by {stratify}" if stratify else "not stratified"
    manifest = replace(
        ds.manifest,
        cases=tuple(replace(r, split=splits[r.id]) for r in ds.manifest.cases),
        description=f"{ds.manifest.description} [fold {fold} of {folds}, seed {seed}, {how}, "
        f"val fraction {val_fraction}]".strip(),
        source=str(ds.root),
    )
    manifest.validate(dest / MANIFEST_NAME)
    with StagedDir(dest, overwrite=overwrite, marker=MANIFEST_NAME, kind="dataset") as stage:
        for rec in ds.manifest.cases:
            for rel in [rec.image, *rec.labels.values()]:
                target = safe_join(stage.path, rel)
                target.parent.mkdir(parents=True, exist_ok=True)
                try:
                    os.link(ds.resolve(rel), target)
                except OSError:
                    shutil.copy2(ds.resolve(rel), target)
        write_json_atomic(stage.path / MANIFEST_NAME, manifest.to_json())
    return {k: sum(v == k for v in splits.values()) for k in SPLITS}
