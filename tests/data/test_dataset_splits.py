"""Seeded case-level splits."""

from __future__ import annotations

import pytest

from labelwise.data.splits import assign_splits, split_counts
from labelwise.errors import ConfigError


def test_split_counts_by_hand() -> None:
    assert split_counts(39, (0.65, 0.15, 0.2)) == (25, 6, 8)
    assert split_counts(10, (0.7, 0.15, 0.15)) == (7, 2, 1)  # 7 / 1.5 / 1.5: the tie goes to the earlier split
    assert split_counts(3, (1, 1, 1)) == (1, 1, 1)
    assert split_counts(0, (0.7, 0.15, 0.15)) == (0, 0, 0)
    with pytest.raises(ConfigError):
        split_counts(5, (0, 0, 0))


def test_counts_seed_and_order_independence() -> None:
    ids = [f"c{i:02d}" for i in range(39)]
    a = assign_splits(ids, counts=(25, 6, 8), seed=3)
    assert [sum(v == s for v in a.values()) for s in ("train", "val", "test")] == [25, 6, 8]
    assert assign_splits(list(reversed(ids)), counts=(25, 6, 8), seed=3) == a
    assert assign_splits(ids, counts=(25, 6, 8), seed=4) != a
    with pytest.raises(ConfigError, match="summing to 39"):
        assign_splits(ids, counts=(25, 6, 7))
    with pytest.raises(ConfigError, match="not unique"):
        assign_splits(["a", "a"])


def test_stratified_keeps_class_proportions() -> None:
    ids = [f"IMD{i:03d}" for i in range(30)]
    strata = {c: i // 10 for i, c in enumerate(ids)}  # 10 per class
    s = assign_splits(ids, fractions=(0.6, 0.2, 0.2), seed=0, strata=strata)
    for cls in range(3):
        got = [s[c] for c in ids if strata[c] == cls]
        assert (got.count("train"), got.count("val"), got.count("test")) == (6, 2, 2)


def test_stratified_meets_totals_with_uneven_classes() -> None:
    ids = [f"c{i}" for i in range(11)]
    strata = {c: (0 if i < 7 else 1) for i, c in enumerate(ids)}
    s = assign_splits(ids, counts=(7, 2, 2), seed=1, strata=strata)
    assert [sum(v == k for v in s.values()) for k in ("train", "val", "test")] == [7, 2, 2]
    minority = [s[c] for c in ids if strata[c] == 1]
    assert "train" in minority and len(set(minority)) >= 2  # the 4-case class is spread, not lumped


def test_groups_share_a_split() -> None:
    ids = [f"p{p}_s{k}" for p in range(10) for k in range(4)]
    groups = {c: c.split("_")[0] for c in ids}
    s = assign_splits(ids, counts=(6, 2, 2), seed=0, groups=groups)
    for p in range(10):
        assert len({s[f"p{p}_s{k}"] for k in range(4)}) == 1
    assert sum(v == "train" for v in s.values()) == 6 * 4
