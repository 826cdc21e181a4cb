from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from scipy.ndimage import binary_dilation

from labelwise.errors import DataError
from labelwise.metrics import (
    assd,
    boundary_points,
    hausdorff,
    hausdorff_percentile,
    masd,
    nsd,
    surface_distances,
)


def test_two_voxels_2mm_apart_2d_and_3d() -> None:
    a = np.zeros((1, 5), bool)
    b = a.copy()
    a[0, 0] = b[0, 1] = True
    # neighbours along axis 1, spacing 2 mm there
    for metric in (hausdorff, hausdorff_percentile, assd, masd):
        assert metric(a, b, (1.0, 2.0)) == pytest.approx(2.0)
    assert nsd(a, b, (1.0, 2.0), tolerance_mm=1.0) == 0.0
    assert nsd(a, b, (1.0, 2.0), tolerance_mm=2.0) == 1.0  # d <= tau counts
    v = np.zeros((4, 3, 3), bool)
    w = v.copy()
    v[0, 1, 1] = w[1, 1, 1] = True  # 1 voxel apart along axis 0 at 2 mm
    assert hausdorff(v, w, (2.0, 0.5, 0.5)) == pytest.approx(2.0)
    w2 = v.copy()
    w2[1, 2, 2] = True  # diagonal neighbour: sqrt(2^2 + 0.5^2 + 0.5^2)
    assert hausdorff(v, w2, (2.0, 0.5, 0.5)) == pytest.approx(math.sqrt(4.5))


def test_asymmetric_hand_case_all_scores() -> None:
    # one row of 5: pred {0, 1}, target {0}; every foreground voxel is boundary (rows above/below are outside)
    pred = np.zeros((1, 5), bool)
    target = pred.copy()
    pred[0, :2] = True
    target[0, 0] = True
    sd = surface_distances(pred, target)
    np.testing.assert_allclose(sd.pred_to_target, [0.0, 1.0])
    np.testing.assert_allclose(sd.target_to_pred, [0.0])
    assert sd.hausdorff() == 1.0
    assert sd.hausdorff_percentile(95) == pytest.approx(0.95)  # max(0.95 of [0, 1], 0.95 of [0])
    assert sd.hausdorff_percentile(95, mode="pooled") == pytest.approx(0.9)  # sorted [0, 0, 1] at rank 1.9
    assert sd.assd() == pytest.approx(1 / 3)  # (0 + 1 + 0) / 3
    assert sd.masd() == pytest.approx(0.25)  # (0.5 + 0) / 2
    assert sd.nsd(0.5) == pytest.approx(2 / 3)
    assert sd.hausdorff_percentile(100) == sd.hausdorff()


def test_boundary_definition_interior_and_image_border() -> None:
    m = np.zeros((5, 5), bool)
    m[1:4, 1:4] = True
    assert len(boundary_points(m)) == 8  # centre voxel is interior
    full = np.ones((3, 4), bool)
    assert len(boundary_points(full)) == 10  # image border counts as boundary: only (1,1), (1,2) interior
    cube = np.zeros((5, 5, 5), bool)
    cube[1:4, 1:4, 1:4] = True
    assert len(boundary_points(cube)) == 26


def test_empty_conventions_surface() -> None:
    e = np.zeros((4, 4), bool)
    f = e.copy()
    f[1, 1] = True
    assert hausdorff(e, e) == 0.0 and nsd(e, e) == 1.0
    assert math.isnan(hausdorff(f, e)) and nsd(f, e) == 0.0 and math.isnan(assd(e, f))
    assert math.isnan(hausdorff(e, e, empty="monai"))
    assert assd(f, e, empty="monai") == math.inf
    assert math.isnan(hausdorff(f, e, empty="monai"))
    assert nsd(e, e, empty="flare") == 1.0 and nsd(f, e, empty="flare") == 0.0


def test_bad_inputs() -> None:
    a = np.zeros((3, 3))
    with pytest.raises(DataError, match="spacing"):
        hausdorff(a, a, (1.0, -1.0))
    with pytest.raises(DataError, match="spacing_mm has 3"):
        hausdorff(a, a, (1.0, 1.0, 1.0))
    with pytest.raises(DataError, match="2-D or 3-D"):
        hausdorff(np.zeros((2, 2, 2, 2)), np.zeros((2, 2, 2, 2)))
    b = a.copy()
    b[0, 0] = np.inf
    with pytest.raises(DataError, match="NaN/inf"):
        nsd(a, b)


def _random_blobs(shape: tuple[int, ...], seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    p = binary_dilation(rng.random(shape) < 0.01, iterations=2)
    t = binary_dilation(rng.random(shape) < 0.01, iterations=2)
    if p.ndim == 3:  # touch the image border to exercise border boundary voxels
        p[0, :3, :3] = True
    return p, t


CASES = [((33, 41, 27), (0.8, 1.1, 2.5), 0), ((64, 70), (0.5, 1.3), 1), ((20, 25, 30), (1.0, 1.0, 1.0), 2)]


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_matches_medpy(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int) -> None:
    from medpy.metric import binary as mb

    p, t = _random_blobs(shape, seed)
    sd = surface_distances(p, t, spacing)
    assert sd.hausdorff() == pytest.approx(mb.hd(p, t, spacing), abs=1e-9)
    assert sd.hausdorff_percentile(95, mode="pooled") == pytest.approx(mb.hd95(p, t, spacing), abs=1e-9)
    assert sd.assd() == pytest.approx(mb.assd(p, t, spacing), abs=1e-9)
    assert sd.masd() == pytest.approx(0.5 * (mb.asd(p, t, spacing) + mb.asd(t, p, spacing)), abs=1e-9)


@pytest.mark.parametrize(("shape", "spacing", "seed"), CASES)
def test_matches_monai(shape: tuple[int, ...], spacing: tuple[float, ...], seed: int) -> None:
    import torch
    from monai.metrics import compute_average_surface_distance, compute_hausdorff_distance, compute_surface_dice

    p, t = _random_blobs(shape, seed)
    sd = surface_distances(p, t, spacing)
    tp, tt = torch.from_numpy(p)[None, None].float(), torch.from_numpy(t)[None, None].float()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hd95 = float(compute_hausdorff_distance(tp, tt, percentile=95, spacing=spacing))
        hd = float(compute_hausdorff_distance(tp, tt, spacing=spacing))
        asd = float(compute_average_surface_distance(tp, tt, symmetric=True, spacing=spacing))
        onehot = lambda x: torch.cat([1 - x, x], 1)  # noqa: E731
        nsd_m = float(compute_surface_dice(onehot(tp), onehot(tt), [1.5], spacing=spacing))
    # MONAI returns float32: agree to 1e-6 relative
    assert sd.hausdorff_percentile(95) == pytest.approx(hd95, rel=1e-6)
    assert sd.hausdorff() == pytest.approx(hd, rel=1e-6)
    assert sd.assd() == pytest.approx(asd, rel=1e-6)
    assert sd.nsd(1.5) == pytest.approx(nsd_m, rel=1e-6)
    for q in (50.0, 90.0, 99.0):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ref = float(compute_hausdorff_distance(tp, tt, percentile=q, spacing=spacing))
        assert sd.hausdorff_percentile(q) == pytest.approx(ref, rel=1e-6)


def test_kdtree_and_edt_agree() -> None:
    p, t = _random_blobs((30, 31, 32), 5)
    a = surface_distances(p, t, (0.7, 1.0, 2.0), method="kdtree")
    b = surface_distances(p, t, (0.7, 1.0, 2.0), method="edt")
    np.testing.assert_allclose(a.pred_to_target, b.pred_to_target, rtol=1e-6)
    np.testing.assert_allclose(a.target_to_pred, b.target_to_pred, rtol=1e-6)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_documented_difference_with_surface_distance_package() -> None:
    # DeepMind surface-distance measures between surface elements on voxel corners, not voxel centres.
    # Two single voxels 2 voxels apart (1 mm spacing): the facing corners are 1 mm apart, the far ones 2 mm.
    import surface_distance as sdl

    a = np.zeros((5, 5, 5), bool)
    b = a.copy()
    a[1, 2, 2] = b[3, 2, 2] = True
    ref = sdl.compute_surface_distances(b, a, (1.0, 1.0, 1.0))
    assert sdl.compute_robust_hausdorff(ref, 100) == pytest.approx(2.0)
    assert sdl.compute_average_surface_distance(ref) == pytest.approx((1.5, 1.5))  # corners: half at 1, half at 2
    assert sdl.compute_surface_dice_at_tolerance(ref, 1.0) == pytest.approx(0.5)
    assert hausdorff(a, b) == 2.0 and assd(a, b) == 2.0 and nsd(a, b, tolerance_mm=1.0) == 0.0  # centres


def test_local_search_matches_kdtree_including_far_fallback() -> None:
    # a distant false-positive blob forces the KD-tree fallback for its boundary points
    p, t = _random_blobs((40, 45, 50), 7)
    p[30:38, 35:43, 40:48] = True
    t[30:38, 35:43, 40:48] = False
    t[:3, :3, :3] = False
    for spacing in [(0.8, 0.8, 2.5), (1.0, 1.0, 1.0), (3.0, 0.5, 0.7)]:
        a = surface_distances(p, t, spacing)
        b = surface_distances(p, t, spacing, method="kdtree")
        np.testing.assert_allclose(a.pred_to_target, b.pred_to_target, rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(a.target_to_pred, b.target_to_pred, rtol=1e-12, atol=1e-12)
    q, u = _random_blobs((60, 70), 8)
    a2 = surface_distances(q, u, (0.6, 1.7))
    b2 = surface_distances(q, u, (0.6, 1.7), method="kdtree")
    np.testing.assert_allclose(a2.pred_to_target, b2.pred_to_target, rtol=1e-12, atol=1e-12)


def _hyp_masks():  # type: ignore[no-untyped-def]
    from hypothesis import strategies as st
    from hypothesis.extra.numpy import arrays

    shapes = st.one_of(
        st.tuples(st.integers(1, 9), st.integers(1, 9)),
        st.tuples(st.integers(1, 6), st.integers(1, 6), st.integers(1, 6)),
    )
    return shapes.flatmap(
        lambda s: st.tuples(
            arrays(bool, s),
            arrays(bool, s),
            st.lists(st.sampled_from([0.5, 0.8, 1.0, 2.5]), min_size=len(s), max_size=len(s)),
        )
    )


def test_random_small_masks_match_medpy_and_kdtree() -> None:
    from hypothesis import given, settings
    from medpy.metric import binary as mb

    @settings(max_examples=60, deadline=None)
    @given(_hyp_masks())
    def check(case: tuple[np.ndarray, np.ndarray, list[float]]) -> None:
        p, t, spacing = case
        sd = surface_distances(p, t, spacing)
        if not p.any() or not t.any():
            assert sd.pred_to_target.size == 0 and sd.target_to_pred.size == 0
            return
        kd = surface_distances(p, t, spacing, method="kdtree")
        np.testing.assert_allclose(sd.pred_to_target, kd.pred_to_target, atol=1e-12)
        assert sd.hausdorff() == pytest.approx(mb.hd(p, t, spacing), abs=1e-9)
        assert sd.assd() == pytest.approx(mb.assd(p, t, spacing), abs=1e-9)

    check()
