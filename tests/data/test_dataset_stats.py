"""Dataset statistics with hand-derived expectations."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import DatasetWriter
from labelwise.data.stats import dataset_counts
from labelwise.evaluation import dataset_stats, format_stats


def _masks(*boxes: tuple[int, int, int, int], shape=(6, 6)) -> np.ndarray:
    m = np.zeros(shape, np.uint8)
    for r0, r1, c0, c1 in boxes:
        m[r0:r1, c0:c1] = 1
    return m


def test_pairwise_dice_by_hand(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path, "t", 2, ("background", "fg"), ("a", "b", "c"), ("lesion",))
    img = np.arange(36, dtype=np.float32).reshape(1, 6, 6)
    # case 1: a = 4 px, b = 2 px inside a, c = 4 px disjoint from a
    #   Dice(a,b) = 2*2/6 = 2/3, Dice(a,c) = 0, Dice(b,c) = 0
    w.add_case(
        "one",
        img,
        {"a": _masks((0, 2, 0, 2)), "b": _masks((0, 1, 0, 2)), "c": _masks((4, 6, 4, 6))},
        image_labels={"lesion": 1},
        split="train",
    )
    # case 2: a and b identical (Dice 1), c missing for this case
    w.add_case("two", img, {"a": _masks((2, 4, 2, 4)), "b": _masks((2, 4, 2, 4))}, split="val")
    # case 3: both raters empty: the pair is skipped, not counted as 1
    w.add_case("three", img, {"a": _masks(), "b": _masks()}, spacing_mm=(0.5, 2.0))
    # case 4: a single rater: nothing to compare
    w.add_case("four", img * 2, {"a": _masks((0, 6, 0, 6))}, spacing_mm=(0.5, 2.0), split="test")
    w.add_case("five", img, None, image_labels={"lesion": 0}, split="test")
    w.finish()
    s = dataset_stats(tmp_path)
    assert s.num_cases == 5 and s.num_raters == 3
    assert s.split_counts == {"train": 1, "val": 1, "test": 2, "none": 1}
    assert s.raters_per_case == {0: 1, 1: 1, 2: 2, 3: 1}
    assert s.num_compared_cases == 3 and s.min_pairwise_dice == 0.0
    assert s.class_pairwise_dice[1] == pytest.approx((2 / 3 + 0 + 0 + 1) / 4)
    assert math.isnan(s.class_pairwise_dice[0])
    assert s.mean_pairwise_dice == pytest.approx(5 / 12)
    assert s.pair_dice[0, 1] == pytest.approx((2 / 3 + 1) / 2) and s.pair_dice[0, 2] == 0.0
    assert s.pair_dice[1, 2] == 0.0 and np.all(np.diag(s.pair_dice) == 1)
    # voxels over the 8 rater maps present (3+2+2+1): fg = 4+2+4 + 4+4 + 0+0 + 36 = 54 of 8*36
    assert s.class_frequency[1] == pytest.approx(54 / 288)
    assert s.spacing_min_mm == (0.5, 1.0) and s.spacing_max_mm == (1.0, 2.0) and s.spacing_median_mm == (1.0, 1.0)
    assert s.image_label_counts == {"lesion": {0: 1, 1: 1}}
    assert s.shapes == {(6, 6): 5}
    text = format_stats(s)
    assert "5 x 3 raters" in text and "mean pairwise inter-rater Dice 0.417" in text
    js = s.to_json()
    assert js["class_pairwise_dice"][0] is None and js["shapes"] == {"6x6": 5}


def test_partial_labels_use_labelled_slices_only(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path, "p", 3, ("background", "organ"), ("m", "f"))
    a = np.zeros((2, 2, 4), np.uint8)
    b = np.zeros((2, 2, 4), np.uint8)
    a[..., 1] = 1
    b[..., 1] = 1
    a[..., 3] = 1  # outside the labelled slices: must not count
    w.add_case("v", np.ones((1, 2, 2, 4), np.float32), {"m": a, "f": b}, labelled_slices=(0, 1))
    w.finish()
    s = dataset_stats(tmp_path)
    assert s.class_pairwise_dice[1] == 1.0
    assert s.class_frequency[1] == pytest.approx(8 / 16)


def test_data_stats_imports_nothing_above_the_data_floor() -> None:
    """``data/stats.py`` imported ``labelwise.metrics`` (a floor up) for the inter-rater Dice."""
    import labelwise.data.stats as module

    tree = ast.parse(Path(module.__file__).read_text(encoding="utf-8"))
    names = [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    names += [n.module or "" for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and not n.level]
    allowed = ("labelwise.data", "labelwise.io", "labelwise.errors")
    inside = [n for n in names if any(n == a or n.startswith(a + ".") for a in allowed)]
    assert [n for n in names if n.startswith("labelwise") and n not in inside] == []


def test_counts_read_each_case_once_and_hand_it_to_the_visitor(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path, "p", 3, ("background", "organ"), ("m", "f"))
    a = np.zeros((2, 2, 4), np.uint8)
    a[..., 1] = 1
    a[..., 3] = 1  # outside the labelled slices
    w.add_case("v", np.ones((1, 2, 2, 4), np.float32), {"m": a}, labelled_slices=(1, 0), split="train")
    w.add_case("u", np.ones((1, 2, 2, 4), np.float32), None)
    w.finish()
    seen: list[tuple[str, tuple[int, ...], list[bool]]] = []
    c = dataset_counts(
        tmp_path, visit=lambda case, labels, present: seen.append((case.id, labels.shape, list(present)))
    )
    assert sorted(seen) == [("u", (2, 2, 2, 4), [False, False]), ("v", (2, 2, 2, 2), [True, False])]
    assert c.num_cases == 2 and c.raters_per_case == {0: 1, 1: 1} and c.split_counts["none"] == 1
    assert c.class_frequency == pytest.approx((0.5, 0.5))  # slices 0 and 1 of rater m: 4 of 8 voxels organ
    assert "class_pairwise_dice" not in c.to_json()
