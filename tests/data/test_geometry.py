"""Mask geometry shared by phantoms and perturbations: signed distance (explicit fill), shifts, smooth noise."""

from __future__ import annotations

import numpy as np
import pytest

from labelwise.data.geometry import shift_zero_fill, signed_distance, smooth_noise


def test_signed_distance_by_hand_with_anisotropic_spacing() -> None:
    m = np.zeros((5, 3), bool)
    m[2, 1] = True
    sd = signed_distance(m, (2.0, 0.5), fill_mm=1e6)
    # inside: distance to the nearest outside voxel (0.5 mm along axis 1) minus half the smallest spacing
    assert sd[2, 1] == pytest.approx(0.5 - 0.25)
    # outside: minus the distance to the nearest inside voxel, plus the half voxel
    assert sd[2, 0] == pytest.approx(-0.5 + 0.25)
    assert sd[0, 1] == pytest.approx(-4.0 + 0.25)
    assert sd.dtype == np.float64


@pytest.mark.parametrize("fill", [1e6, 1e9])
def test_a_mask_without_boundary_gets_the_callers_fill(fill: float) -> None:
    """Phantom raters filled with 1e6 mm and label perturbations with 1e9 mm: the fill is the caller's choice."""
    empty, full = np.zeros((4, 4), bool), np.ones((4, 4), bool)
    assert (signed_distance(empty, (1.0, 1.0), fill_mm=fill) == -fill).all()
    assert (signed_distance(full, (1.0, 1.0), fill_mm=fill) == fill).all()


def test_shift_zero_fill() -> None:
    a = np.arange(1, 10).reshape(3, 3)
    assert shift_zero_fill(a, [1, -1]).tolist() == [[0, 0, 0], [2, 3, 0], [5, 6, 0]]
    assert not shift_zero_fill(a, [3, 0]).any()
    assert shift_zero_fill(a, [0, 0]).tolist() == a.tolist()


def test_smooth_noise_is_seeded_and_unit_std() -> None:
    f = smooth_noise(np.random.default_rng(0), (32, 32), [2.0, 2.0])
    g = smooth_noise(np.random.default_rng(0), (32, 32), [2.0, 2.0])
    assert (f == g).all() and f.std() == pytest.approx(1.0)
