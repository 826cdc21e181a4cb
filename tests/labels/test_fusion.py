"""Fusion rules: hand-derived votes, tie policies, missing raters, STAPLE (binary and multi-label), registry."""

from __future__ import annotations

import numpy as np
import pytest

from labelwise.data.phantoms import make_phantom
from labelwise.errors import ConfigError, DataError
from labelwise.labels import FusionResult, fuse, fusion_rules, majority_vote, soft_mean, staple, strict_majority
from labelwise.registry import Registry

# 3 raters x 5 voxels; votes for class 1 per voxel: 1, 1, 2, 3, 1
THREE = np.array([[0, 1, 1, 1, 0], [0, 0, 1, 1, 1], [1, 0, 0, 1, 0]], dtype=np.int16)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / max(float(a.sum() + b.sum()), 1.0)


def test_majority_three_raters_hand_votes() -> None:
    assert majority_vote(THREE).tolist() == [0, 0, 1, 1, 0]
    assert majority_vote(THREE).dtype == np.int16


def test_soft_mean_three_raters() -> None:
    p = soft_mean(THREE)
    assert p.shape == (2, 5) and p.dtype == np.float32
    np.testing.assert_allclose(p[1] * 3, [1, 1, 2, 3, 1])
    np.testing.assert_allclose(p.sum(axis=0), 1.0)


def test_tie_policies_binary() -> None:
    two = np.array([[0, 1, 1, 0], [1, 0, 1, 0]])  # voxels 0, 1 are 1-1 ties
    assert majority_vote(two, tie="lowest").tolist() == [0, 0, 1, 0]
    assert majority_vote(two, tie="highest").tolist() == [1, 1, 1, 0]
    assert majority_vote(two, tie="undecided").tolist() == [-1, -1, 1, 0]
    assert majority_vote(two, tie="undecided", undecided_value=9).tolist() == [9, 9, 1, 0]
    res = fuse("majority", two)
    assert res.undecided.tolist() == [True, True, False, False]


def test_multiclass_votes_and_three_way_tie() -> None:
    # voxel 0: (1, 2, 2) -> 2; voxel 1: (0, 1, 2) -> 3-way tie; voxel 2: (2, 2, 2) -> 2; voxel 3: (1, 1, 0) -> 1
    r = np.array([[1, 0, 2, 1], [2, 1, 2, 1], [2, 2, 2, 0]])
    assert majority_vote(r).tolist() == [2, 0, 2, 1]
    assert majority_vote(r, tie="highest").tolist() == [2, 2, 2, 1]
    assert majority_vote(r, tie="undecided").tolist() == [2, -1, 2, 1]
    p = soft_mean(r, num_classes=4)
    assert p.shape == (4, 4)
    np.testing.assert_allclose(p[:, 1] * 3, [1, 1, 1, 0])
    assert p[3].sum() == 0  # a class nobody used


def test_present_mask_leaves_absent_raters_out() -> None:
    present = np.array([True, True, False])
    # raters 1 and 2 only: votes for class 1 are 0, 1, 2, 2, 1 out of 2 -> 1-1 ties at voxels 1 and 4
    assert majority_vote(THREE, present).tolist() == [0, 0, 1, 1, 0]
    assert majority_vote(THREE, present, tie="highest").tolist() == [0, 1, 1, 1, 1]
    np.testing.assert_allclose(soft_mean(THREE, present)[1], [0.0, 0.5, 1.0, 1.0, 0.5])
    res = staple(THREE, present)
    assert np.isnan(res.sensitivity[2]) and np.isnan(res.specificity[2])
    assert np.isfinite(res.sensitivity[:2]).all()


def test_bad_input_is_a_clear_error() -> None:
    with pytest.raises(DataError, match="no rater is present"):
        majority_vote(THREE, [False, False, False])
    with pytest.raises(DataError, match="one flag per rater"):
        majority_vote(THREE, [True, False])
    with pytest.raises(DataError, match="negative"):
        majority_vote(np.array([[0, -1]]))
    with pytest.raises(DataError, match="num_classes is 2"):
        soft_mean(np.array([[0, 2]]), num_classes=2)
    with pytest.raises(DataError, match="integer"):
        majority_vote(np.array([[0.5, 1.0]]))
    with pytest.raises(DataError, match="shape"):
        majority_vote(np.array([1, 0]))
    with pytest.raises(ConfigError, match="tie policy"):
        majority_vote(THREE, tie="coin")  # type: ignore[arg-type]


def test_staple_binary_specificity_of_a_sloppy_rater() -> None:
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[5:15, 5:15] = 1  # 100 foreground, 300 background voxels
    sloppy = truth.copy()
    sloppy[0:2, 0:15] = 1  # 30 false positives
    res = staple(np.stack([truth, truth, sloppy]))
    assert (res.label == truth).all()
    np.testing.assert_allclose(res.sensitivity, [1.0, 1.0, 1.0], atol=1e-3)
    np.testing.assert_allclose(res.specificity, [1.0, 1.0, 1 - 30 / 300], atol=2e-3)
    assert res.probabilities.shape == (2, 20, 20)
    np.testing.assert_allclose(res.probabilities.sum(axis=0), 1.0, atol=1e-6)
    np.testing.assert_allclose(res.confusion[2, 0], [0.9, 0.1], atol=2e-3)  # truth 0: says 0 / says 1


def test_staple_unanimous_and_single_rater() -> None:
    m = np.zeros((2, 6, 6), dtype=np.int16)
    m[:, 2:4, 2:4] = 1
    for stack in (m, m[:1]):
        res = staple(stack)
        assert (res.label == m[0]).all()
        assert (res.sensitivity == 1).all() and (res.specificity == 1).all()
    empty = staple(np.zeros((2, 4, 4), dtype=np.int16))
    assert empty.label.sum() == 0 and np.isnan(empty.sensitivity).all() and (empty.specificity == 1).all()


def test_staple_multilabel_recovers_truth_and_reports_confusion() -> None:
    rng = np.random.default_rng(0)
    truth = np.zeros((3, 30, 30), dtype=np.int16)
    truth[:, 5:15, 5:15] = 1
    truth[:, 18:28, 18:28] = 2
    raters = []
    for rate in (0.02, 0.05, 0.3):  # the third rater relabels 30% of voxels at random
        r = truth[0].copy()
        flip = rng.random(r.shape) < rate
        r[flip] = rng.integers(0, 3, int(flip.sum()))
        raters.append(r)
    res = staple(np.stack(raters), num_classes=3)
    assert res.label.shape == (30, 30)
    assert (res.label == truth[0]).mean() > 0.99
    assert res.confusion.shape == (3, 3, 3)
    np.testing.assert_allclose(res.confusion.sum(axis=2), 1.0, atol=1e-6)
    assert res.sensitivity[2] < res.sensitivity[1] < res.sensitivity[0] + 1e-9
    assert res.specificity[2] < res.specificity[0]
    np.testing.assert_allclose(res.probabilities.sum(axis=0), 1.0, atol=1e-5)
    assert (np.argmax(res.probabilities, axis=0) == res.label).mean() > 0.99


def test_staple_beats_the_worst_rater_on_phantoms() -> None:
    for seed in range(4):
        p = make_phantom(seed, shape=(64, 64), raters=6, lesion=True)
        truth = p.truth > 0
        rater_dice = [_dice(r > 0, truth) for r in p.raters]
        fused = staple(p.raters).label > 0
        assert _dice(fused, truth) > min(rater_dice)
        assert _dice(majority_vote(p.raters) > 0, truth) > min(rater_dice)


def test_staple_3d_multiclass_phantom() -> None:
    p = make_phantom(1, spatial_dims=3, shape=(24, 24, 12), raters=4, structures="organ+lesion", lesion=True)
    res = staple(p.raters, num_classes=3)
    assert res.label.shape == (24, 24, 12) and res.probabilities.shape == (3, 24, 24, 12)
    assert _dice(res.label > 0, p.truth > 0) > 0.8


def test_registry_lists_rules_and_fuse_dispatches() -> None:
    assert {"majority", "mean", "staple"} <= set(fusion_rules.available())
    assert isinstance(fusion_rules, Registry)
    for name in ("majority", "mean", "staple"):
        res = fuse(name, THREE)
        assert isinstance(res, FusionResult)
        assert res.label.shape == (5,)
    assert fuse("majority", THREE).probabilities is None
    assert fuse("mean", THREE).probabilities is not None
    assert fuse("staple", THREE).sensitivity is not None
    with pytest.raises(ConfigError, match="unknown fusion rule"):
        fuse("median", THREE)
    with pytest.raises(ValueError, match="twice"):
        fusion_rules.register("majority")(lambda *a, **k: None)  # type: ignore[arg-type,return-value]


def test_strict_majority_is_a_different_rule_under_a_different_name() -> None:
    """``metrics/evaluation.py`` had a stricter vote under the fusion rule's name ``majority_vote``."""
    one_voxel = np.array([[1], [1], [2], [3], [0]])  # class 1 leads with 2 of 5 votes: a plurality, no majority
    assert majority_vote(one_voxel).tolist() == [1]
    assert strict_majority(one_voxel, 4).tolist() == [0]
    r = np.array([[1, 1, 0, 2], [1, 0, 0, 2], [0, 0, 2, 1]])
    assert strict_majority(r, 3).tolist() == [1, 0, 0, 2]
    assert strict_majority(r, 3).dtype == np.int16
    rng = np.random.default_rng(0)
    for n in (2, 3, 4, 5):  # on binary maps the two rules agree (ties go to background under both)
        binary = rng.integers(0, 2, size=(n, 50))
        assert (strict_majority(binary, 2) == majority_vote(binary)).all()
