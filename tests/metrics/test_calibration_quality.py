from __future__ import annotations

import math

import numpy as np
import pytest

from labelwise.errors import DataError
from labelwise.metrics import (
    brier,
    ece,
    kendall,
    mae,
    nll,
    pearson,
    quality_report,
    reliability,
    spearman,
    worst_case_recall,
)


def test_brier_nll_hand() -> None:
    prob = np.array([0.8, 0.4])
    y = np.array([1.0, 0.0])
    assert brier(prob, y) == pytest.approx((0.04 + 0.16) / 2)
    assert nll(prob, y) == pytest.approx(-(math.log(0.8) + math.log(0.6)) / 2)
    assert nll(np.array([0.0]), np.array([1.0])) == pytest.approx(-math.log(1e-7))  # clipped, finite
    soft = np.array([0.5, 0.5])
    assert brier(soft, np.array([0.5, 1.0])) == pytest.approx(0.125)


def test_ece_modes_hand() -> None:
    prob = np.array([0.9, 0.9, 0.2, 0.2])
    y = np.array([1, 0, 0, 0])
    # confidence mode: conf [0.9, 0.9, 0.8, 0.8], correct [1, 0, 1, 1]; bins (10): 0.9 -> acc .5, 0.8 -> acc 1
    assert ece(prob, y, n_bins=10) == pytest.approx((2 * 0.4 + 2 * 0.2) / 4)
    # foreground mode: bin 0.9 -> acc .5 conf .9; bin 0.2 -> acc 0 conf .2
    assert ece(prob, y, n_bins=10, mode="foreground") == pytest.approx((2 * 0.4 + 2 * 0.2) / 4)
    # foreground-restricted: only voxels with p >= .5 or y > 0 (the first two)
    assert ece(prob, y, n_bins=10, mode="foreground", foreground_only=True) == pytest.approx(0.4)
    rel = reliability(prob, y, n_bins=10, mode="foreground")
    assert rel.counts.sum() == 4 and rel.counts[9] == 2 and rel.counts[2] == 2
    assert np.isnan(rel.accuracy[0])
    assert math.isnan(ece(prob, y, region=np.zeros(4, bool)))


def test_ece_confidence_and_foreground_binning_hand() -> None:
    # 4 equal-width bins [0, .25), [.25, .5), [.5, .75), [.75, 1] (1.0 falls in the last); empty bins skipped
    prob = np.array([0.3, 0.3, 0.6, 1.0])
    y = np.array([1, 0, 1, 1])
    # confidence (Guo et al.): conf [.7, .7, .6, 1], decisions [0, 0, 1, 1] right on [0, 1, 1, 1]
    # bin 2: conf 2/3, acc 2/3; bin 3: conf 1, acc 1 -> ECE 0
    assert ece(prob, y, n_bins=4) == pytest.approx(0.0)
    rel = reliability(prob, y, n_bins=4)
    assert rel.counts.tolist() == [0, 0, 3, 1]
    # foreground: bin 1 holds .3, .3 (mean target .5, gap .2), bin 2 holds .6 (target 1, gap .4), bin 3 holds
    # 1.0 (gap 0) -> (2 * .2 + .4 + 0) / 4
    assert ece(prob, y, n_bins=4, mode="foreground") == pytest.approx(0.2)
    assert reliability(prob, y, n_bins=4, mode="foreground").counts.tolist() == [0, 2, 1, 1]


def test_ece_matches_monai() -> None:
    import torch
    from monai.metrics import CalibrationErrorMetric

    rng = np.random.default_rng(0)
    prob = rng.random((1, 1, 20, 30))
    y = (rng.random((1, 1, 20, 30)) < prob).astype(np.float64)
    m = CalibrationErrorMetric(num_bins=20, include_background=True)
    m(torch.from_numpy(prob), torch.from_numpy(y))
    ref = float(m.aggregate())
    assert ece(prob, y, n_bins=20, mode="foreground") == pytest.approx(ref, abs=1e-6)


def test_calibration_rejects_bad_input() -> None:
    with pytest.raises(DataError, match="NaN"):
        brier(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        ece(np.array([1.2]), np.array([1.0]))
    with pytest.raises(DataError, match="shape"):
        nll(np.zeros(3), np.zeros(4))


def test_quality_hand() -> None:
    pred = [1.0, 2.0, 3.0, 4.0]
    true = [1.0, 3.0, 2.0, 4.0]
    assert spearman(pred, true) == pytest.approx(0.8)  # d^2 = 2 -> 1 - 6*2/(4*15)
    assert kendall(pred, true) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert pearson(pred, true) == pytest.approx(0.8)
    assert mae(pred, true) == pytest.approx(0.5)
    assert math.isnan(pearson([1.0, 1.0], [1.0, 2.0]))
    # worst 2 by true Dice: cases 1 (0.1), 3 (0.3); predicted worst 2: cases 1 (0.2), 2 (0.5)
    assert worst_case_recall([0.9, 0.2, 0.5, 0.8], [0.95, 0.1, 0.7, 0.3], k=2) == 0.5
    assert worst_case_recall([9.0, 1.0, 5.0], [8.0, 2.0, 7.0], k=1, higher_is_worse=True) == 1.0
    with pytest.raises(DataError):
        worst_case_recall([1.0], [1.0], k=2)
    rep = quality_report(pred, true)
    assert set(rep) == {"pearson", "spearman", "kendall", "mae", "worst_1_recall"}
    with pytest.raises(DataError, match="NaN"):
        mae([math.nan], [1.0])
