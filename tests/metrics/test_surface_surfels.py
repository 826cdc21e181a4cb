"""``surface="surfels"``: DeepMind surface-distance's definition, cross-checked against the installed package."""

from __future__ import annotations

import math
import os
from types import ModuleType

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from labelwise.errors import ConfigError
from labelwise.metrics import EmptyConvention, hausdorff, hausdorff_percentile, masd, nsd, surface_distances

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")  # surface-distance uses scipy.ndimage.filters


@pytest.fixture(scope="module")
def sdl() -> ModuleType:
    """DeepMind's ``surface_distance`` package; skips (or fails when CI=true) if it is not installed."""
    try:
        import surface_distance
    except ImportError:
        msg = "surface_distance (DeepMind surface-distance) not installed: pip install surface-distance"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return surface_distance


def _blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = binary_dilation(rng.random(shape) < 0.01, iterations=2)
    t = binary_dilation(rng.random(shape) < 0.01, iterations=2)
    p[(0,) * (len(shape) - 1)][:3] = True  # touch the image border
    return p, t


def _check_against_package(
    sdl: ModuleType, p: np.ndarray, t: np.ndarray, spacing: tuple[float, ...], tolerances: tuple[float, ...]
) -> None:
    # surface-distance's argument order is (gt, pred)
    ref = sdl.compute_surface_distances(t, p, spacing)
    sd = surface_distances(p, t, spacing, surface="surfels")
    assert sd.surface == "surfels"
    np.testing.assert_allclose(np.sort(sd.target_to_pred), ref["distances_gt_to_pred"], rtol=0, atol=1e-9)
    np.testing.assert_allclose(np.sort(sd.pred_to_target), ref["distances_pred_to_gt"], rtol=0, atol=1e-9)
    assert sd.target_weights is not None and sd.pred_weights is not None
    assert sd.target_weights.sum() == pytest.approx(ref["surfel_areas_gt"].sum(), rel=1e-12)
    assert sd.pred_weights.sum() == pytest.approx(ref["surfel_areas_pred"].sum(), rel=1e-12)
    for q in (0.0, 50.0, 90.0, 95.0, 99.0, 100.0):
        assert sd.hausdorff_percentile(q) == pytest.approx(sdl.compute_robust_hausdorff(ref, q), abs=1e-6)
    assert sd.hausdorff() == pytest.approx(sdl.compute_robust_hausdorff(ref, 100), abs=1e-6)
    for tol in tolerances:
        assert sd.nsd(tol) == pytest.approx(sdl.compute_surface_dice_at_tolerance(ref, tol), abs=1e-6)
    gt_to_pred, pred_to_gt = sdl.compute_average_surface_distance(ref)
    assert sd.masd() == pytest.approx(0.5 * (gt_to_pred + pred_to_gt), abs=1e-6)
    a_gt, a_pred = ref["surfel_areas_gt"], ref["surfel_areas_pred"]
    pooled = (gt_to_pred * a_gt.sum() + pred_to_gt * a_pred.sum()) / (a_gt.sum() + a_pred.sum())
    assert sd.assd() == pytest.approx(pooled, abs=1e-6)


CASES = [
    ((33, 41, 27), (0.8, 1.1, 2.5), 0),
    ((64, 70), (0.5, 1.3), 1),
    ((20, 25, 30), (1.0, 1.0, 1.0), 2),
    ((40, 12, 50), (3.0, 0.5, 0.7), 3),
    ((90, 31), (1.0, 1.0), 4),
]


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_matches_surface_distance_package(
    sdl: ModuleType, shape: tuple[int, ...], spacing: tuple[float, ...], seed: int
) -> None:
    p, t = _blobs(shape, seed)
    _check_against_package(sdl, p, t, spacing, (0.0, 0.5, 1.0, 1.5, 3.0))


def test_odd_shapes_and_far_fallback(sdl: ModuleType) -> None:
    # one-voxel-thick masks, a line, single voxels, a mask filling the image, and a far false positive (KD-tree)
    line = np.zeros((1, 9), bool)
    line2 = line.copy()
    line[0, 1:5] = True
    line2[0, 3:8] = True
    _check_against_package(sdl, line, line2, (1.0, 0.7), (0.5, 1.0))
    a = np.zeros((5, 5, 5), bool)
    b = a.copy()
    a[1, 2, 2] = b[3, 2, 2] = True
    _check_against_package(sdl, a, b, (1.0, 1.0, 1.0), (1.0, 2.0))
    full = np.ones((4, 6, 3), bool)
    part = full.copy()
    part[1:3, 2:5, 1] = False
    _check_against_package(sdl, full, part, (0.9, 1.2, 2.0), (0.5, 1.0))
    p, t = _blobs((40, 45, 50), 7)
    p[30:38, 35:43, 40:48] = True
    t[30:38, 35:43, 40:48] = False
    _check_against_package(sdl, p, t, (0.8, 0.8, 2.5), (1.0, 2.0))


def test_random_small_masks_match_package(sdl: ModuleType) -> None:
    from hypothesis import given, settings
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    shapes = st.one_of(
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    )
    cases = shapes.flatmap(
        lambda s: st.tuples(
            arrays(bool, s),
            arrays(bool, s),
            st.lists(st.sampled_from([0.5, 0.8, 1.0, 2.5]), min_size=len(s), max_size=len(s)),
        )
    )

    @settings(max_examples=60, deadline=None)
    @given(cases)
    def check(case: tuple[np.ndarray, np.ndarray, list[float]]) -> None:
        p, t, spacing = case
        if p.any() and t.any():
            _check_against_package(sdl, p, t, tuple(spacing), (0.5, 1.0, 2.0))

    check()


def test_hand_case_two_voxels() -> None:
    # corners of two single voxels 2 voxels apart (1 mm): half of each cube's corners are 1 mm from the other cube,
    # half 2 mm; every corner of a single voxel carries the same area
    a = np.zeros((5, 5, 5), bool)
    b = a.copy()
    a[1, 2, 2] = b[3, 2, 2] = True
    assert hausdorff(a, b, surface="surfels") == 2.0
    assert masd(a, b, surface="surfels") == pytest.approx(1.5)
    assert nsd(a, b, tolerance_mm=1.0, surface="surfels") == pytest.approx(0.5)
    assert hausdorff_percentile(a, b, percentile=50, surface="surfels") == 1.0  # no interpolation
    assert nsd(a, b, tolerance_mm=1.0) == 0.0  # boundary voxels (MONAI): centres are 2 mm apart


def test_empty_masks_follow_the_empty_convention(sdl: ModuleType, monkeypatch: pytest.MonkeyPatch) -> None:
    e = np.zeros((6, 7, 5), bool)
    f = e.copy()
    f[2:4, 2:5, 1:3] = True
    sd = surface_distances(f, e, (1.0, 1.0, 2.0), surface="surfels")
    assert sd.pred_weights is not None and sd.pred_weights.size == 0 and sd.target_empty
    assert math.isnan(sd.hausdorff()) and sd.nsd() == 0.0 and math.isnan(sd.masd())  # labelwise
    both = surface_distances(e, e, (1.0, 1.0, 2.0), surface="surfels")
    assert both.hausdorff() == 0.0 and both.nsd() == 1.0
    # surface-distance 0.1 itself uses np.Inf (removed in NumPy 2); patched, its values are reproduced by an
    # EmptyConvention: one empty -> distances inf, NSD 0; both empty -> HD inf, NSD nan (0/0)
    monkeypatch.setattr(np, "Inf", np.inf, raising=False)
    inf, nan = math.inf, math.nan
    like_package = EmptyConvention(nan, 0.0, 0.0, inf, inf, nan, 0.0)
    for p, t in ((f, e), (e, f), (e, e)):
        with np.errstate(invalid="ignore", divide="ignore"):
            ref = sdl.compute_surface_distances(t, p, (1.0, 1.0, 2.0))
            ref_hd = sdl.compute_robust_hausdorff(ref, 95)
            ref_nsd = sdl.compute_surface_dice_at_tolerance(ref, 1.0)
        sd = surface_distances(p, t, (1.0, 1.0, 2.0), surface="surfels")
        assert sd.hausdorff_percentile(95, empty=like_package) == ref_hd
        got = sd.nsd(1.0, empty=like_package)
        assert got == ref_nsd or (math.isnan(got) and math.isnan(ref_nsd))


def test_unknown_surface_is_a_config_error() -> None:
    a = np.ones((3, 3), bool)
    with pytest.raises(ConfigError, match="surfels"):
        surface_distances(a, a, surface="corners")  # type: ignore[arg-type]
