"""Spacing-aware mask geometry and smooth random fields, shared by phantom raters and label perturbations.

Example:
    >>> import numpy as np
    >>> m = np.zeros(7, bool); m[2:5] = True
    >>> signed_distance(m, (1.0,), fill_mm=1e6).tolist()
    [-1.5, -0.5, 0.5, 1.5, 0.5, -0.5, -1.5]

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

__all__ = ["shift_zero_fill", "signed_distance", "smooth_noise"]


def signed_distance(mask: NDArray[np.bool_], spacing_mm: Sequence[float], *, fill_mm: float) -> NDArray[np.float64]:
    """Signed distance to the mask's boundary in mm: > 0 inside, < 0 outside.

    The boundary lies half a voxel (``0.5 * min(spacing_mm)``) outside the outermost foreground voxel, so the
    map is ``edt(inside) - edt(outside) - half`` inside and ``... + half`` outside.

    Args:
        mask: ``(*spatial)`` bool mask, 1D to 3D.
        spacing_mm: Voxel size per axis in mm.
        fill_mm: Magnitude used when the mask has no boundary: an empty mask is ``-fill_mm`` everywhere, a full
            one ``+fill_mm``. Callers pick a value larger than any displacement they apply (the phantom raters
            use ``1e6``, the label perturbations ``1e9``).

    Returns:
        ``(*spatial)`` float64 distances in mm.

    """
    if not mask.any():
        return np.full(mask.shape, -float(fill_mm))
    if mask.all():
        return np.full(mask.shape, float(fill_mm))
    inside = ndimage.distance_transform_edt(mask, sampling=spacing_mm)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing_mm)
    half = 0.5 * min(spacing_mm)
    sd: NDArray[np.float64] = np.asarray(inside - outside - np.where(mask, half, -half), dtype=np.float64)
    return sd


def shift_zero_fill(mask: NDArray[Any], offset_voxels: Sequence[int]) -> NDArray[Any]:
    """Translate ``mask`` by an integer voxel offset per axis; what leaves the grid is lost, new voxels are 0.

    Example:
        >>> shift_zero_fill(np.array([1, 2, 3, 4]), [1]).tolist()
        [0, 1, 2, 3]

    """
    out = np.zeros_like(mask)
    if all(abs(o) < n for o, n in zip(offset_voxels, mask.shape, strict=True)):
        src = tuple(slice(max(0, -o), n - max(0, o)) for o, n in zip(offset_voxels, mask.shape, strict=True))
        dst = tuple(slice(max(0, o), n - max(0, -o)) for o, n in zip(offset_voxels, mask.shape, strict=True))
        out[dst] = mask[src]
    return out


def smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: Sequence[float]) -> NDArray[np.float64]:
    """Zero-mean, unit-std smooth random field: white noise blurred by a Gaussian (periodic borders).

    Args:
        rng: The only source of randomness (one ``standard_normal(shape)`` draw).
        shape: Spatial shape.
        sigma_vox: Gaussian standard deviation per axis, in voxels (correlation length / spacing).

    Returns:
        ``shape`` float64 field with standard deviation 1 (0 everywhere if the blurred noise is constant).

    """
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox, mode="wrap")
    s = float(f.std())
    out: NDArray[np.float64] = f / s if s > 0 else f
    return out
