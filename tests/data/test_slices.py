from __future__ import annotations

import numpy as np
import pytest

from labelwise.data import Case
from labelwise.data.slices import (
    FLARE_CT_WINDOWS,
    ct_window_channels,
    evenly_spaced,
    k_slice_split,
    labelled_slice_indices,
    nonempty_slices,
    volume_slices,
)
from labelwise.errors import ConfigError, DataError


def _case(depth: int = 10, labelled: tuple[int, ...] | None = (2, 3, 4, 5, 6), raters: int = 1) -> Case:
    return Case(
        id="c",
        image=np.zeros((1, 4, 4, depth), np.float32),
        spacing_mm=(1.0, 1.0, 1.0),
        affine=np.eye(4),
        raters=np.zeros((raters, 4, 4, depth), np.int16),
        labelled_slices=labelled,
    )


def test_ct_windows_hand_values() -> None:
    hu = np.array([[-1000.0, 50.0, 400.0, 1300.0]])
    out = ct_window_channels(hu)
    assert out.shape == (3, 4) and out.dtype == np.float32
    # bone window L400/W1800: [-500, 1300]; abdomen [-150, 250]; chest [-1350, 225]
    np.testing.assert_allclose(out[0], [0.0, 550 / 1800, 900 / 1800, 1.0])
    np.testing.assert_allclose(out[1], [0.0, 0.5, 1.0, 1.0])
    np.testing.assert_allclose(out[2], [350 / 1575, 1400 / 1575, 1.0, 1.0])
    assert len(FLARE_CT_WINDOWS) == 3
    with pytest.raises(ConfigError):
        ct_window_channels(hu, [(0.0, 0.0)])


def test_evenly_spaced() -> None:
    assert evenly_spaced(range(30), 1) == (15,)
    assert evenly_spaced(range(30), 2) == (0, 29)
    assert evenly_spaced([82, 83, 84, 85, 86], 3) == (82, 84, 86)
    assert evenly_spaced([1, 2], 5) == (1, 2)
    with pytest.raises(ConfigError):
        evenly_spaced([1], 0)


def test_k_slice_split_even_and_random() -> None:
    case = _case()
    s = k_slice_split(case, 2)
    assert s.train == (2, 6) and s.test == (3, 4, 5)
    assert s.unlabelled == (0, 1, 3, 4, 5, 7, 8, 9)
    r1, r2 = k_slice_split(case, 3, "random", seed=1), k_slice_split(case, 3, "random", seed=1)
    assert r1 == r2 and len(r1.train) == 3 and set(r1.train) <= {2, 3, 4, 5, 6}
    assert k_slice_split(case, None).test == ()


def test_k_slice_split_errors() -> None:
    with pytest.raises(DataError, match="only 5 are labelled"):
        k_slice_split(_case(), 6)
    with pytest.raises(DataError, match="no labelled slices"):
        k_slice_split(_case(raters=0), 1)
    flat = Case(id="f", image=np.zeros((1, 4, 4)), spacing_mm=(1.0, 1.0), affine=np.eye(4), raters=np.zeros((1, 4, 4)))
    with pytest.raises(DataError, match="3D"):
        k_slice_split(flat, 1)
    with pytest.raises(DataError, match="outside"):
        labelled_slice_indices(_case(labelled=(3, 12)))


def test_nonempty_and_volume_slices() -> None:
    lab = np.zeros((3, 3, 5), np.int16)
    lab[1, 1, [1, 3]] = 2
    assert nonempty_slices(lab) == (1, 3)
    vol = np.arange(2 * 3 * 3 * 5, dtype=np.float32).reshape(2, 3, 3, 5)
    batch = volume_slices(vol, [4, 0])
    assert batch.shape == (2, 2, 3, 3)
    np.testing.assert_array_equal(batch[0], vol[..., 4])
    with pytest.raises(DataError, match="outside"):
        volume_slices(vol, [5])
