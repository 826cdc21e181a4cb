"""Property test: arrays, spacings and affines round-trip unchanged through every writer/reader pair."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from labelwise.io import read_image, read_label, write_image, write_label

SETTINGS = settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])

spacings = st.floats(min_value=0.0625, max_value=10.0, allow_nan=False, width=32)
angles = st.floats(min_value=-np.pi, max_value=np.pi, allow_nan=False)
offsets = st.floats(min_value=-500, max_value=500, allow_nan=False, width=32)


def _affine(spacing: tuple[float, ...], angle: float, offset: tuple[float, float, float]) -> np.ndarray:
    """A rotation about z times the spacing, plus a translation (a valid NIfTI qform/sform)."""
    c, s = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    full = [*spacing, *([1.0] * (3 - len(spacing)))]
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag(full)
    aff[:3, 3] = offset
    return aff


def _shape(nd: int) -> st.SearchStrategy[tuple[int, ...]]:
    return hnp.array_shapes(min_dims=nd, max_dims=nd, min_side=1, max_side=6)


@SETTINGS
@given(
    nd=st.sampled_from([2, 3]),
    channels=st.integers(1, 3),
    data=st.data(),
    angle=angles,
    offset=st.tuples(offsets, offsets, offsets),
    suffix=st.sampled_from([".nii.gz", ".nii", ".npy", ".npz"]),
)
def test_image_round_trip(nd, channels, data, angle, offset, suffix) -> None:
    shape = data.draw(_shape(nd))
    spacing = tuple(float(v) for v in data.draw(st.tuples(*[spacings] * nd)))
    arr = data.draw(
        hnp.arrays(np.float32, (channels, *shape), elements=st.floats(-1e4, 1e4, allow_nan=False, width=32))
    )
    aff = _affine(spacing, angle, offset)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_image(Path(tmp) / f"img{suffix}", arr, spacing, aff)
        back = read_image(path, nd)
    np.testing.assert_array_equal(back.array, arr)
    if suffix == ".npy":  # NPY holds no geometry: unit spacing
        assert back.spacing_mm == (1.0,) * nd
        return
    np.testing.assert_allclose(back.spacing_mm, spacing, rtol=1e-5)
    np.testing.assert_allclose(back.affine, aff, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(
    nd=st.sampled_from([2, 3]),
    data=st.data(),
    angle=angles,
    offset=st.tuples(offsets, offsets, offsets),
    suffix=st.sampled_from([".nii.gz", ".npz", ".npy"]),
    high=st.sampled_from([1, 255, 3000]),
)
def test_label_round_trip(nd, data, angle, offset, suffix, high) -> None:
    shape = data.draw(_shape(nd))
    spacing = tuple(float(v) for v in data.draw(st.tuples(*[spacings] * nd)))
    lab = data.draw(hnp.arrays(np.int16, shape, elements=st.integers(0, high)))
    aff = _affine(spacing, angle, offset)
    with tempfile.TemporaryDirectory() as tmp:
        back = read_label(write_label(Path(tmp) / f"lab{suffix}", lab, spacing, aff), nd)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, lab)
    if suffix != ".npy":
        np.testing.assert_allclose(back.spacing_mm, spacing, rtol=1e-5)
        np.testing.assert_allclose(back.affine, aff, rtol=1e-5, atol=1e-3)


@SETTINGS
@given(arr=hnp.arrays(np.uint8, _shape(2)), rgb=st.booleans(), suffix=st.sampled_from([".png", ".bmp", ".tif"]))
def test_raster_uint8_round_trip(arr, rgb, suffix) -> None:
    image = np.stack([arr, arr[::-1], 255 - arr]) if rgb else arr[None]
    with tempfile.TemporaryDirectory() as tmp:
        back = read_image(write_image(Path(tmp) / f"img{suffix}", image), 2)
        lab = read_label(write_label(Path(tmp) / f"lab{suffix}", arr), 2)
    np.testing.assert_array_equal(back.array, image.astype(np.float32))
    np.testing.assert_array_equal(lab.array, arr)
    assert back.spacing_mm == (1.0, 1.0)


def test_prediction_parts_of_an_earlier_method_are_removed(tmp_path: Path) -> None:
    """A prediction without samples must not be read back with the samples an earlier method left behind."""
    import pytest

    from labelwise.errors import DataError
    from labelwise.io import Prediction, read_prediction, write_prediction

    probs = np.stack([np.full((4, 5), 0.25, np.float32), np.full((4, 5), 0.75, np.float32)])
    samples = np.ones((3, 4, 5), np.int16)
    write_prediction(tmp_path, "c1", Prediction(probs, samples=samples), (1.0, 1.0), np.eye(4))
    assert read_prediction(tmp_path, "c1", 2).samples is not None
    write_prediction(tmp_path, "c1", Prediction(probs), (1.0, 1.0), np.eye(4))
    assert read_prediction(tmp_path, "c1", 2).samples is None
    with pytest.raises(DataError, match="case id"):
        write_prediction(tmp_path, "../c1", Prediction(probs), (1.0, 1.0), np.eye(4))
    write_image(tmp_path / "c1_probs.nii.gz", probs * 2, (1.0, 1.0), np.eye(4))
    with pytest.raises(DataError, match=r"outside \[0, 1\]"):
        read_prediction(tmp_path, "c1", 2)
