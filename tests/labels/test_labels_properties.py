"""Property-based checks of fusion and perturbations on random small label maps (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from labelwise.labels import apply_perturbation, majority_vote, random_perturbation, soft_mean
from labelwise.labels.perturb import PerturbationKind

KINDS: list[PerturbationKind] = [
    "erode_dilate",
    "shift",
    "holes",
    "drop_components",
    "boundary_noise",
    "add_blobs",
    "truncate",
]


@st.composite
def rater_stacks(draw: st.DrawFn) -> np.ndarray:
    r = draw(st.integers(1, 5))
    k = draw(st.integers(2, 4))
    shape = (r, draw(st.integers(1, 6)), draw(st.integers(1, 6)))
    seed = draw(st.integers(0, 2**16))
    return np.random.default_rng(seed).integers(0, k, size=shape).astype(np.int16)


@settings(max_examples=60, deadline=None)
@given(rater_stacks())
def test_vote_properties(raters: np.ndarray) -> None:
    k = int(raters.max()) + 1
    p = soft_mean(raters, num_classes=max(k, 2))
    np.testing.assert_allclose(p.sum(axis=0), 1.0, atol=1e-6)
    low, high = majority_vote(raters, tie="lowest"), majority_vote(raters, tie="highest")
    assert (low <= high).all()
    und = majority_vote(raters, tie="undecided")
    decided = und >= 0
    assert (und[decided] == low[decided]).all() and (low[decided] == high[decided]).all()
    # the winner has the most votes
    votes = np.take_along_axis(p, low[None].astype(np.int64), axis=0)[0]
    assert (votes >= p.max(axis=0) - 1e-6).all()
    assert (majority_vote(np.repeat(raters[:1], 3, axis=0)) == raters[0]).all()


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**16), st.sampled_from(KINDS), st.booleans())
def test_random_perturbations_replay_exactly(seed: int, kind: PerturbationKind, three_d: bool) -> None:
    rng = np.random.default_rng(seed)
    shape = (7, 6, 5) if three_d else (9, 8)
    mask = (rng.random(shape) < 0.4).astype(np.uint8)
    spacing = tuple(float(v) for v in rng.uniform(0.5, 2.0, len(shape)))
    out, rec = random_perturbation(mask, rng, kind, spacing)
    assert out.shape == mask.shape and out.dtype == mask.dtype
    assert (apply_perturbation(mask, rec, spacing) == out).all()
