"""One simulated rater's version of a truth mask, and the record of what the rater drew for a case.

A rater labels per class on the truth's signed distance map (in mm, spacing-aware): ``label = sd + bias_mm +
jitter_mm * noise > 0``, then small components are dropped and the map is shifted.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from labelwise.data.geometry import shift_zero_fill, smooth_noise
from labelwise.data.phantoms.styles import RaterStyle

__all__ = ["RaterRecord", "rater_mask"]


@dataclass(frozen=True)
class RaterRecord:
    """What one rater drew for one case (enough to audit or reproduce the rater map).

    Attributes:
        rater: Rater id.
        seed: Seed of the rater's per-case random generator (jitter field, missed components).
        shift_voxels: Integer shift applied, per spatial axis, in voxels.
        missed_components: Number of small components the rater missed.

    """

    rater: str
    seed: int
    shift_voxels: tuple[int, ...]
    missed_components: int


def rater_mask(
    mask: np.ndarray,
    sd_mm: np.ndarray,
    style: RaterStyle,
    rng: np.random.Generator,
    spacing: tuple[float, ...],
    offset: tuple[int, ...],
) -> tuple[np.ndarray, int]:
    """One rater's version of a binary truth mask.

    Args:
        mask: ``(*spatial)`` bool truth mask of one class.
        sd_mm: Its signed distance map in mm (:func:`labelwise.data.geometry.signed_distance`).
        style: How the rater labels.
        rng: The rater's per-case generator (jitter field, then missed components).
        spacing: Voxel size in mm.
        offset: Integer shift in voxels per axis (zero fill).

    Returns:
        ``(rater mask, number of missed components)``; an empty truth gives an empty mask.

    """
    if not mask.any():
        return mask.copy(), 0
    field_mm = sd_mm + style.bias_mm
    if style.jitter_mm > 0:
        sigma = [style.jitter_scale_mm / s for s in spacing]
        field_mm = field_mm + style.jitter_mm * smooth_noise(rng, mask.shape, sigma)
    out = field_mm > 0
    missed = 0
    if style.miss_radius_mm > 0 and style.miss_prob > 0:
        comps, n = ndimage.label(out)
        if n:
            voxel = float(np.prod(spacing))
            sizes = np.bincount(comps.reshape(-1), minlength=n + 1)[1:] * voxel
            nd = mask.ndim
            radius = (sizes / math.pi) ** 0.5 if nd == 2 else (3.0 * sizes / (4.0 * math.pi)) ** (1.0 / 3.0)
            drop = (radius < style.miss_radius_mm) & (rng.random(n) < style.miss_prob)
            if drop.any():
                out &= ~np.concatenate([[False], drop])[comps]
                missed = int(drop.sum())
    if any(offset):
        out = shift_zero_fill(out, offset)
    return out, missed
