"""Thresholds of probability maps: Otsu, rescaling a threshold to 0.5."""

from __future__ import annotations

import numpy as np

from labelwise.postprocess import otsu_threshold, rescale_probability


def test_otsu_threshold_splits_two_modes() -> None:
    v = np.concatenate([np.full(60, 0.1), np.full(40, 0.9)])
    t = otsu_threshold(v)
    assert 0.1 <= t < 0.9
    assert otsu_threshold(np.full(5, 0.3)) == 0.3


def test_rescale_probability_sends_threshold_to_half() -> None:
    p = np.array([0.0, 0.1, 0.2, 0.6, 1.0], np.float32)
    out = rescale_probability(p, 0.2)
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)
