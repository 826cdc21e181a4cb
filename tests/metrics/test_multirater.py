from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from labelwise.errors import DataError
from labelwise.metrics import (
    dice,
    dice_match,
    dice_max,
    fleiss_kappa,
    ged,
    n_candidates,
    pairwise_dice,
    pairwise_iou,
    per_rater_dice,
    sample_diversity,
    soft_dice,
)

# four voxels; rater A = {0, 1}, rater B = {0}, empty rater E
A = np.array([1, 1, 0, 0], bool)
B = np.array([1, 0, 0, 0], bool)
E = np.zeros(4, bool)


def test_pairwise_dice_hand() -> None:
    m = pairwise_dice(np.stack([A, B, E]))
    expect = np.array([[1, 2 / 3, 0], [2 / 3, 1, 0], [0, 0, 1]])
    np.testing.assert_allclose(m, expect)
    m_nan = pairwise_dice(np.stack([E, E]), empty="nnunet")
    assert np.isnan(m_nan).all()


def test_ged_hand_and_conventions() -> None:
    # samples {A, B}, raters {A}: d(A,A)=0, d(B,A)=1-1/2=0.5
    s = np.stack([A, B])
    r = np.stack([A])
    # include: cross = (0 + 0.5)/2 = 0.25; within samples = mean of [[0,.5],[.5,0]] = 0.25; within raters = 0
    assert ged(s, r) == pytest.approx(2 * 0.25 - 0.25 - 0.0)
    # exclude: within samples = 0.5; within raters undefined (R=1) -> nan
    assert math.isnan(ged(s, r, self_pairs="exclude"))
    r2 = np.stack([A, A])
    assert ged(s, r2, self_pairs="exclude") == pytest.approx(2 * 0.25 - 0.5 - 0.0)
    # empty/empty IoU: samples {E, E}, raters {E}: one -> 0; zero -> 2*1 - 1 - 1 = 0; drop -> nan
    ee = np.stack([E, E])
    assert ged(ee, np.stack([E])) == 0.0
    assert ged(ee, np.stack([E]), empty_iou="zero") == 0.0
    assert math.isnan(ged(ee, np.stack([E]), empty_iou="drop"))
    # samples {A, E}, raters {A}: with empty_iou one vs zero differs only in d(E,E) self pair
    se = np.stack([A, E])
    one = ged(se, np.stack([A]))  # cross (0+1)/2=.5, within S [[0,1],[1,0]] mean .5 -> 1 - .5 = .5
    zero = ged(se, np.stack([A]), empty_iou="zero")  # within S [[0,1],[1,1]] mean .75 -> 1 - .75 = .25
    assert (one, zero) == (pytest.approx(0.5), pytest.approx(0.25))


def test_ged_matches_bruteforce() -> None:
    rng = np.random.default_rng(0)
    s = rng.random((4, 6, 7)) < 0.4
    r = rng.random((3, 6, 7)) < 0.4

    def d(a: np.ndarray, b: np.ndarray) -> float:
        u = (a | b).sum()
        return 0.0 if u == 0 else 1 - (a & b).sum() / u

    cross = np.mean([d(a, b) for a in s for b in r])
    ss = np.mean([d(a, b) for a, b in itertools.permutations(s, 2)])
    rr = np.mean([d(a, b) for a, b in itertools.permutations(r, 2)])
    assert ged(s, r, self_pairs="exclude") == pytest.approx(2 * cross - ss - rr)
    assert sample_diversity(s) == pytest.approx(ss)
    np.testing.assert_allclose(pairwise_iou(s, r), [[1 - d(a, b) for b in r] for a in s])


def test_soft_dice_thresholds_and_comparison() -> None:
    # two raters over 4 voxels: mean = [1, .5, 0, 0]
    r = np.stack([A, B])
    prob = np.array([0.9, 0.5, 0.2, 0.0])
    # '>' at 0.5: pred {0}, ref {0} -> 1; '>=' at 0.5: pred {0,1}, ref {0,1} -> 1
    assert soft_dice(prob, r, thresholds=[0.5]) == 1.0
    # at 0.15: pred {0,1,2}, ref {0,1} -> 4/5
    assert soft_dice(prob, r, thresholds=[0.15]) == pytest.approx(0.8)
    # threshold 0.5 with prob exactly .5 but ref .5 too: '>=' vs '>' agree here; use prob .5 on voxel 2
    prob2 = np.array([0.9, 0.6, 0.5, 0.0])
    assert soft_dice(prob2, r, thresholds=[0.5], comparison=">") == pytest.approx(2 / 3)  # {0,1} vs {0}
    assert soft_dice(prob2, r, thresholds=[0.5], comparison=">=") == pytest.approx(0.8)  # {0,1,2} vs {0,1}
    assert soft_dice(prob, r, thresholds=[0.15, 0.5]) == pytest.approx(0.9)
    with pytest.raises(DataError, match="NaN"):
        soft_dice(np.array([np.nan, 0, 0, 0]), r)
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        soft_dice(np.array([1.5, 0, 0, 0]), r)


def test_dice_max_match_per_rater() -> None:
    s = np.stack([B, A])  # sample 0 = B, sample 1 = A
    r = np.stack([A, B])
    assert dice_max(s, r) == 1.0
    assert dice_match(s, r) == 1.0
    np.testing.assert_allclose(per_rater_dice(s, r), [2 / 3, 2 / 3])  # index aligned: B vs A, A vs B
    # samples {A, A} vs raters {A, B}: max = (1 + 2/3)/2, match = (1 + 2/3)/2 too; single sample A: match 1
    s2 = np.stack([A, A])
    assert dice_max(s2, r) == pytest.approx((1 + 2 / 3) / 2)
    assert dice_match(np.stack([A]), r) == pytest.approx(1.0)
    with pytest.raises(DataError):
        per_rater_dice(np.stack([A]), r)


def test_dice_max_match_compete_with_as_many_samples_as_raters() -> None:
    r = np.stack([A])  # one rater
    s = np.stack([B, A, A])  # three samples; only the first (B) competes by default
    assert n_candidates(3, 1) == 1 and n_candidates(3, 1, "all") == 3 and n_candidates(2, 5) == 2
    assert dice_max(s, r) == pytest.approx(2 / 3)  # B vs A
    assert dice_match(s, r) == pytest.approx(2 / 3)
    # all three samples compete (D-Persona's protocol): the best sample, A, wins
    assert dice_max(s, r, candidates="all") == 1.0
    assert dice_match(s, r, candidates="all") == 1.0
    # fewer samples than raters: every sample competes, both rules agree
    r2 = np.stack([A, B])
    assert dice_max(np.stack([A]), r2) == dice_max(np.stack([A]), r2, candidates="all") == pytest.approx(5 / 6)
    with pytest.raises(DataError, match="candidates"):
        dice_max(s, r, candidates="some")  # type: ignore[arg-type]


def test_fleiss_kappa_hand() -> None:
    # 2 raters, 4 subjects: agree on 3 ([1,1],[0,0],[0,0]), disagree on one
    r = np.stack([A, B]).astype(np.uint8)
    # P_i = [1, 0, 1, 1] -> P_bar = .75; p1 = 3/8, p0 = 5/8 -> P_e = 34/64
    pe = (3 / 8) ** 2 + (5 / 8) ** 2
    assert fleiss_kappa(r) == pytest.approx((0.75 - pe) / (1 - pe))
    assert math.isnan(fleiss_kappa(np.zeros((3, 5), np.uint8)))
    assert fleiss_kappa(np.stack([A, A, A])) == pytest.approx(1.0)


def test_pairwise_dice_matches_dice() -> None:
    rng = np.random.default_rng(1)
    m = rng.random((4, 9, 10, 11)) < 0.3
    pd = pairwise_dice(m)
    for i, j in itertools.product(range(4), range(4)):
        assert pd[i, j] == pytest.approx(dice(m[i], m[j]))
