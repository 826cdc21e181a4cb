"""One synthetic case in memory: body, organ, lesions, intensities, the truth and the simulated raters' maps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from labelwise.data.geometry import signed_distance, smooth_noise
from labelwise.data.phantoms.raters import RaterRecord, rater_mask
from labelwise.data.phantoms.styles import RaterStyle, resolve_styles
from labelwise.errors import ConfigError

__all__ = ["CLASSES", "NO_BOUNDARY_MM", "Phantom", "Structures", "make_phantom"]

Structures = Literal["organ", "lesion", "organ+lesion"]
CLASSES: dict[str, tuple[str, ...]] = {
    "organ": ("background", "organ"),
    "lesion": ("background", "lesion"),
    "organ+lesion": ("background", "organ", "lesion"),
}
"""Class names of each ``structures`` mode (index 0 background)."""

NO_BOUNDARY_MM = 1e6
"""Signed distance (mm) of a mask without boundary (all or nothing): no rater displacement reaches it."""


@dataclass(frozen=True)
class Phantom:
    """One synthetic case in memory.

    Attributes:
        image: ``(1, *spatial)`` float32 intensities, roughly in [0, 1] (air ~0, body ~0.3, organ ~0.6, lesions
            ~0.95 or ~0.35), with texture, bias field and noise.
        truth: ``(*spatial)`` int16 true class map (classes of ``class_names``).
        raters: ``(R, *spatial)`` int16 rater maps (R may be 0).
        rater_ids: Ids of the raters, in order.
        class_names: Class names, index 0 background.
        image_labels: ``{"lesion": 1 or 0}``.
        spacing_mm: Voxel size in mm.
        records: One :class:`RaterRecord` per rater.
        num_lesions: Number of lesions drawn.

    """

    image: np.ndarray = field(repr=False)
    truth: np.ndarray = field(repr=False)
    raters: np.ndarray = field(repr=False)
    rater_ids: tuple[str, ...]
    class_names: tuple[str, ...]
    image_labels: dict[str, int]
    spacing_mm: tuple[float, ...]
    records: tuple[RaterRecord, ...]
    num_lesions: int


# ------------------------------------------------------------------------------------------------ shapes


def _ellipsoid(
    coords: np.ndarray, center: np.ndarray, radii: np.ndarray, rot: np.ndarray, wave: float, k: int, phase: float
) -> np.ndarray:
    """Bool mask of a rotated ellipse/ellipsoid whose radius is modulated by ``1 + wave * sin(k * angle)``."""
    local = (coords - center) @ rot
    rho = np.sqrt(((local / radii) ** 2).sum(axis=-1))
    ang = np.arctan2(local[..., 1], local[..., 0])
    return np.asarray(rho < 1.0 + wave * np.sin(k * ang + phase))


def _rotation(rng: np.random.Generator, nd: int) -> np.ndarray:
    """Random rotation matrix (2D: any angle; 3D: about the last axis plus a small tilt)."""
    a = rng.uniform(0, math.pi)
    c, s = math.cos(a), math.sin(a)
    if nd == 2:
        return np.array([[c, -s], [s, c]])
    t = rng.uniform(-0.3, 0.3)
    ct, st = math.cos(t), math.sin(t)
    rz = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    rx = np.array([[1.0, 0.0, 0.0], [0.0, ct, -st], [0.0, st, ct]])
    rot: np.ndarray = rz @ rx
    return rot


def make_phantom(
    seed: int | np.random.Generator = 0,
    *,
    spatial_dims: Literal[2, 3] = 2,
    shape: Sequence[int] | None = None,
    spacing_mm: Sequence[float] | None = None,
    raters: int | Sequence[RaterStyle] = 3,
    structures: Structures = "organ",
    lesion: bool | None = None,
    lesion_fraction: float = 0.6,
    max_lesions: int = 3,
    shift_directions: Sequence[Sequence[float]] | Sequence[np.ndarray] | None = None,
) -> Phantom:
    """Make one synthetic case: image, truth and rater maps.

    Args:
        seed: Seed or generator; the same seed gives the same phantom.
        spatial_dims: 2 or 3.
        shape: Spatial shape (default ``(64, 64)`` in 2D, ``(48, 48, 24)`` in 3D).
        spacing_mm: Voxel size in mm (default 1 mm in 2D; ``(1, 1, 2)`` in 3D).
        raters: Number of raters (styles from :data:`DEFAULT_RATER_STYLES`) or explicit styles; 0 for none.
        structures: ``"organ"``, ``"lesion"`` or ``"organ+lesion"`` (see the module docstring).
        lesion: Force a lesion (True) or none (False); None draws with probability ``lesion_fraction``.
        lesion_fraction: Probability of at least one lesion when ``lesion`` is None.
        max_lesions: Largest number of lesions in a case with lesions (at least 1).
        shift_directions: Unit direction per rater for ``shift_mm`` (default: drawn from the generator; a
            dataset passes fixed ones so shifts are systematic across cases).

    Returns:
        A :class:`Phantom`. A case without lesions in ``structures="lesion"`` has an all-background truth and
        (all-background) rater maps.

    """
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    if spatial_dims not in (2, 3):
        raise ConfigError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if structures not in CLASSES:
        raise ConfigError(f"structures must be one of {sorted(CLASSES)}, got {structures!r}")
    nd = int(spatial_dims)
    shp = tuple(int(v) for v in (shape or ((64, 64) if nd == 2 else (48, 48, 24))))
    spacing = tuple(float(v) for v in (spacing_mm or ((1.0, 1.0) if nd == 2 else (1.0, 1.0, 2.0))))
    if len(shp) != nd or len(spacing) != nd or min(shp) < 8 or min(spacing) <= 0:
        raise ConfigError(f"shape {shp} / spacing_mm {spacing} must have {nd} entries, sizes >= 8, spacing > 0")
    styles = resolve_styles(raters)
    extent = np.array(shp) * np.array(spacing)
    grids = np.meshgrid(*[(np.arange(n) + 0.5) * s for n, s in zip(shp, spacing, strict=True)], indexing="ij")
    coords = np.stack(grids, axis=-1)  # (*spatial, nd) in mm

    def ellipsoid(center: np.ndarray, radii: np.ndarray, rot: np.ndarray, wave: float, k: int, phase: float) -> Any:
        return _ellipsoid(coords, center, radii, rot, wave, k, phase)

    centre = extent / 2 + rng.uniform(-0.05, 0.05, nd) * extent
    body = ellipsoid(extent / 2, extent * np.array([0.46] * nd), np.eye(nd), 0.03, 3, rng.uniform(0, 6.3))
    radii = rng.uniform(0.2, 0.32, nd) * extent
    organ = ellipsoid(centre, radii, _rotation(rng, nd), rng.uniform(0.0, 0.12), int(rng.integers(2, 5)), 0.0)
    organ &= body
    has_lesion = bool(rng.random() < lesion_fraction) if lesion is None else bool(lesion)
    n_les = int(rng.integers(1, max(1, max_lesions) + 1)) if has_lesion else 0
    lesions = np.zeros(shp, dtype=bool)
    inner = np.flatnonzero(signed_distance(organ, spacing, fill_mm=NO_BOUNDARY_MM) > 0.1 * float(extent[:2].min()))
    pick = inner if inner.size else np.flatnonzero(organ)
    for _ in range(n_les):
        if not pick.size:
            break
        c = coords.reshape(-1, nd)[pick[rng.integers(pick.size)]]
        r = rng.uniform(0.04, 0.1) * float(extent[:2].min()) * rng.uniform(0.75, 1.25, nd)
        lesions |= ellipsoid(c, np.maximum(r, 1.5 * np.array(spacing)), _rotation(rng, nd), 0.0, 2, 0.0)
    lesions &= body
    n_les = int(ndimage.label(lesions)[1]) if n_les else 0
    has_lesion = n_les > 0

    # intensities: tissue classes, texture, bias field, noise
    img = np.where(body, 0.3, 0.0) + np.where(organ, 0.3, 0.0)
    bright = rng.random() < 0.5
    img = np.where(lesions, 0.95 if bright else 0.35, img)
    img = img + 0.05 * smooth_noise(rng, shp, [1.5] * nd) * body
    direction = rng.standard_normal(nd)
    direction /= np.linalg.norm(direction)
    ramp = ((coords - extent / 2) @ direction) / float(extent.max())
    img = img * (1.0 + 0.3 * ramp) + 0.03 * rng.standard_normal(shp)
    image = img.astype(np.float32)[None]

    # truth per structures mode; masks in precedence order (later overrides earlier)
    if structures == "organ":
        masks = [organ | lesions]
    elif structures == "lesion":
        masks = [lesions]
    else:
        masks = [organ & ~lesions, lesions]
    truth = np.zeros(shp, dtype=np.int16)
    for c, m in enumerate(masks, start=1):
        truth[m] = c

    sds = [signed_distance(m, spacing, fill_mm=NO_BOUNDARY_MM) for m in masks] if styles else []
    maps, records = [], []
    dirs = list(shift_directions) if shift_directions is not None else []
    for i, st in enumerate(styles):
        if i < len(dirs):
            d = np.asarray(dirs[i], dtype=np.float64)
        else:
            d = rng.standard_normal(nd)
        d = d / max(float(np.linalg.norm(d)), 1e-12)
        offset = tuple(int(v) for v in np.rint(st.shift_mm * d / np.array(spacing)))
        rseed = int(rng.integers(2**31))
        rrng = np.random.default_rng(rseed)
        out = np.zeros(shp, dtype=np.int16)
        missed = 0
        for c, (m, sd) in enumerate(zip(masks, sds, strict=True), start=1):
            rm, nm = rater_mask(m, sd, st, rrng, spacing, offset)
            out[rm] = c
            missed += nm
        maps.append(out)
        records.append(RaterRecord(st.name, rseed, offset, missed))
    stack = np.stack(maps) if maps else np.zeros((0, *shp), dtype=np.int16)
    return Phantom(
        image=image,
        truth=truth,
        raters=stack,
        rater_ids=tuple(s.name for s in styles),
        class_names=CLASSES[structures],
        image_labels={"lesion": int(has_lesion)},
        spacing_mm=spacing,
        records=tuple(records),
        num_lesions=n_les,
    )
