"""Seeded synthetic phantoms: organ-like images with lesions, a known truth and simulated raters of distinct styles.

A phantom is a 2D image or 3D volume with a body, an organ (a rotated ellipse/ellipsoid with a wavy boundary),
0 to ``max_lesions`` lesions inside the organ (bright or dark blobs), smooth texture, a multiplicative bias field
and Gaussian noise. Its **truth** label map is known exactly, and R simulated raters label it, each in a
documented :class:`RaterStyle`:

============== ==========================================================================================
style          what the rater does (defaults of :data:`DEFAULT_RATER_STYLES`)
============== ==========================================================================================
``precise``    follows the boundary with little jitter (0.5 mm)
``generous``   over-segments: boundary moved out by 1.5 mm (plus 0.5 mm jitter)
``tight``      under-segments: boundary moved in by 1.5 mm (plus 0.5 mm jitter)
``sloppy``     strong smooth boundary jitter (2 mm, correlation length 6 mm)
``hasty``      misses small components (equivalent radius < 4 mm) with probability 0.8
``shifted``    systematic 2 mm shift in one direction (the same for every case; drawn once per rater)
============== ==========================================================================================

``raters=R`` takes the first R styles of that table (cycling, with a numeric suffix, beyond six);
:func:`random_rater_styles` draws any number of varied styles instead. Each rater is
applied per class on the truth's signed distance map (in mm, spacing-aware): ``label = sd + bias_mm +
jitter_mm * noise > 0``, then small components are dropped and the map is shifted. Everything a rater drew is
recorded per case (:class:`RaterRecord`).

Classes (``structures``): ``"organ"`` -> ``("background", "organ")`` where lesions count as organ (like a
tumour inside a liver mask); ``"lesion"`` -> ``("background", "lesion")``; ``"organ+lesion"`` ->
``("background", "organ", "lesion")`` with lesion drawn over organ. Every case has the image-level label
``lesion`` (1 if it has at least one lesion, else 0); a fraction ``1 - lesion_fraction`` has none.

Example:
    >>> p = make_phantom(seed=0, shape=(32, 32), raters=3)
    >>> p.image.shape, p.image.dtype, p.truth.shape, p.raters.shape, p.rater_ids
    ((1, 32, 32), dtype('float32'), (32, 32), (3, 32, 32), ('precise', 'generous', 'tight'))
    >>> bool((p.raters[1] >= p.truth).all())     # the generous rater covers the whole truth
    True

"""

from __future__ import annotations

import json
import logging
import math
import shutil
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
from scipy import ndimage

from labelwise.data.dataset import Dataset, DatasetWriter
from labelwise.data.manifest import CaseRecord
from labelwise.data.splits import assign_splits
from labelwise.errors import ConfigError, DataError
from labelwise.io import read_label, write_image, write_json_atomic, write_label

__all__ = [
    "DEFAULT_RATER_STYLES",
    "PHANTOM_INFO_NAME",
    "Phantom",
    "RaterRecord",
    "RaterStyle",
    "Structures",
    "make_phantom",
    "make_phantom_dataset",
    "random_rater_styles",
    "read_phantom_info",
    "read_phantom_truth",
]

logger = logging.getLogger(__name__)

PHANTOM_INFO_NAME = "phantoms.json"
Structures = Literal["organ", "lesion", "organ+lesion"]
_CLASSES: dict[str, tuple[str, ...]] = {
    "organ": ("background", "organ"),
    "lesion": ("background", "lesion"),
    "organ+lesion": ("background", "organ", "lesion"),
}


@dataclass(frozen=True)
class RaterStyle:
    """How one simulated rater labels (all distances in mm, so styles mean the same at any spacing).

    Attributes:
        name: Rater id written to the dataset (letters, digits, ``._-``).
        bias_mm: Systematic boundary offset: > 0 over-segments (dilates), < 0 under-segments (erodes).
        jitter_mm: Amplitude (standard deviation) of smooth random boundary displacement, drawn per case.
        jitter_scale_mm: Correlation length of that displacement field.
        shift_mm: Length of a systematic shift; its direction is drawn once per rater and kept for all cases.
        miss_radius_mm: Components whose equivalent radius (of a disc/ball of the same area/volume) is below
            this are each missed with probability ``miss_prob``.
        miss_prob: Probability of missing each such small component.

    """

    name: str
    bias_mm: float = 0.0
    jitter_mm: float = 0.0
    jitter_scale_mm: float = 4.0
    shift_mm: float = 0.0
    miss_radius_mm: float = 0.0
    miss_prob: float = 0.0


DEFAULT_RATER_STYLES: tuple[RaterStyle, ...] = (
    RaterStyle("precise", jitter_mm=0.5),
    RaterStyle("generous", bias_mm=1.5, jitter_mm=0.5),
    RaterStyle("tight", bias_mm=-1.5, jitter_mm=0.5),
    RaterStyle("sloppy", jitter_mm=2.0, jitter_scale_mm=6.0),
    RaterStyle("hasty", jitter_mm=0.5, miss_radius_mm=4.0, miss_prob=0.8),
    RaterStyle("shifted", jitter_mm=0.5, shift_mm=2.0),
)
"""The styles ``raters=R`` cycles through, in order (see the module docstring)."""


def random_rater_styles(n: int, seed: int = 0) -> tuple[RaterStyle, ...]:
    """Draw ``n`` varied rater styles (ids ``rater01``, ``rater02``, ...) for crowds larger than the defaults.

    Each style gets ``bias_mm ~ U(-2, 2)``, ``jitter_mm ~ U(0.3, 2)`` with ``jitter_scale_mm ~ U(3, 8)``; with
    probability 0.3 a shift of ``U(1, 3)`` mm; with probability 0.3 misses components of radius < 4 mm with
    ``miss_prob ~ U(0.5, 1)``. The drawn values are what ``phantoms.json`` records.

    Example:
        >>> [s.name for s in random_rater_styles(3)]
        ['rater01', 'rater02', 'rater03']

    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    styles = []
    for i in range(n):
        u = rng.uniform(size=8)
        styles.append(
            RaterStyle(
                name=f"rater{i + 1:02d}",
                bias_mm=round(float(-2 + 4 * u[0]), 3),
                jitter_mm=round(float(0.3 + 1.7 * u[1]), 3),
                jitter_scale_mm=round(float(3 + 5 * u[2]), 3),
                shift_mm=round(float(1 + 2 * u[4]), 3) if u[3] < 0.3 else 0.0,
                miss_radius_mm=4.0 if u[5] < 0.3 else 0.0,
                miss_prob=round(float(0.5 + 0.5 * u[6]), 3) if u[5] < 0.3 else 0.0,
            )
        )
    return tuple(styles)


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


# ------------------------------------------------------------------------------------------------ helpers


def resolve_styles(raters: int | Sequence[RaterStyle]) -> tuple[RaterStyle, ...]:
    """Turn ``raters`` (a count or explicit styles) into styles with unique names."""
    if isinstance(raters, int):
        if raters < 0:
            raise ConfigError(f"raters must be >= 0, got {raters}")
        n = len(DEFAULT_RATER_STYLES)
        styles = [
            DEFAULT_RATER_STYLES[i % n]
            if i < n
            else replace(DEFAULT_RATER_STYLES[i % n], name=f"{DEFAULT_RATER_STYLES[i % n].name}{i // n + 1}")
            for i in range(raters)
        ]
    else:
        styles = list(raters)
    names = [s.name for s in styles]
    if len(set(names)) != len(names):
        raise ConfigError(f"rater style names must be unique, got {names}")
    for s in styles:
        if not s.name or not all(ch.isalnum() or ch in "._-" for ch in s.name):
            raise ConfigError(f"rater name {s.name!r} must use letters, digits, '.', '_' or '-' only")
        if not 0.0 <= s.miss_prob <= 1.0:
            raise ConfigError(f"rater {s.name}: miss_prob must be in [0, 1], got {s.miss_prob}")
    return tuple(styles)


def _smooth_noise(rng: np.random.Generator, shape: tuple[int, ...], sigma_vox: Sequence[float]) -> np.ndarray:
    """Zero-mean, unit-std smooth random field."""
    f = ndimage.gaussian_filter(rng.standard_normal(shape), sigma=sigma_vox, mode="wrap")
    s = float(f.std())
    out: np.ndarray = f / s if s > 0 else f
    return out


def _signed_distance(mask: np.ndarray, spacing: Sequence[float]) -> np.ndarray:
    """Signed distance in mm: > 0 inside (distance to the nearest outside voxel), <= 0 outside."""
    if not mask.any():
        return np.full(mask.shape, -1e6)
    if mask.all():
        return np.full(mask.shape, 1e6)
    inside = ndimage.distance_transform_edt(mask, sampling=spacing)
    outside = ndimage.distance_transform_edt(~mask, sampling=spacing)
    sd: np.ndarray = np.asarray(inside - outside - 0.5 * np.where(mask, min(spacing), -min(spacing)), dtype=np.float64)
    return sd


def _shift(mask: np.ndarray, offset: Sequence[int]) -> np.ndarray:
    """Integer shift with zero fill."""
    out = np.zeros_like(mask)
    src, dst = [], []
    for o, n in zip(offset, mask.shape, strict=True):
        if abs(o) >= n:
            return out
        src.append(slice(max(0, -o), n - max(0, o)))
        dst.append(slice(max(0, o), n - max(0, -o)))
    out[tuple(dst)] = mask[tuple(src)]
    return out


def _rater_mask(
    mask: np.ndarray,
    sd_mm: np.ndarray,
    style: RaterStyle,
    rng: np.random.Generator,
    spacing: tuple[float, ...],
    offset: tuple[int, ...],
) -> tuple[np.ndarray, int]:
    """One rater's version of a binary truth mask (signed distance ``sd_mm``); returns ``(mask, missed)``."""
    if not mask.any():
        return mask.copy(), 0
    field_mm = sd_mm + style.bias_mm
    if style.jitter_mm > 0:
        sigma = [style.jitter_scale_mm / s for s in spacing]
        field_mm = field_mm + style.jitter_mm * _smooth_noise(rng, mask.shape, sigma)
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
        out = _shift(out, offset)
    return out, missed


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


# ------------------------------------------------------------------------------------------------ one phantom


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
    if structures not in _CLASSES:
        raise ConfigError(f"structures must be one of {sorted(_CLASSES)}, got {structures!r}")
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
    inner = np.flatnonzero(_signed_distance(organ, spacing) > 0.1 * float(extent[:2].min()))
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
    img = img + 0.05 * _smooth_noise(rng, shp, [1.5] * nd) * body
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

    sds = [_signed_distance(m, spacing) for m in masks] if styles else []
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
            rm, nm = _rater_mask(m, sd, st, rrng, spacing, offset)
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
        class_names=_CLASSES[structures],
        image_labels={"lesion": int(has_lesion)},
        spacing_mm=spacing,
        records=tuple(records),
        num_lesions=n_les,
    )


# ------------------------------------------------------------------------------------------------ datasets


def make_phantom_dataset(
    dest: str | Path,
    n_cases: int = 20,
    raters: int | Sequence[RaterStyle] = 3,
    *,
    spatial_dims: Literal[2, 3] = 2,
    shape: Sequence[int] | None = None,
    spacing_mm: Sequence[float] | None = None,
    structures: Structures = "organ",
    lesion_fraction: float = 0.6,
    unlabelled_fraction: float = 0.0,
    missing_rater_fraction: float = 0.0,
    split_fractions: Sequence[float] = (0.6, 0.2, 0.2),
    seed: int = 0,
    name: str = "phantoms",
    overwrite: bool = False,
    image_suffix: str = ".nii.gz",
) -> Dataset:
    """Write a labelwise dataset of synthetic phantoms (with their truth) and return it opened.

    Layout: the usual dataset folder (``dataset.json``, ``images/``, ``labels/<case>_<rater>``) plus
    ``truth/<case><suffix>`` (the exact truth label map of every case, including unlabelled ones) and
    ``phantoms.json`` (generation settings, rater styles and every per-case :class:`RaterRecord`; see
    :func:`read_phantom_info`). Case ids are ``case000``, ``case001``, ...

    Splits come from :func:`labelwise.data.splits.assign_splits` stratified by the ``lesion`` image label.
    Unlabelled cases (no rater map: R = 0) are taken from the train split only, so validation and test stay
    labelled: ``round(unlabelled_fraction * n_cases)`` of them, at most the number of train cases.

    Args:
        dest: Target folder.
        n_cases: Number of cases (>= 1).
        raters: Number of simulated raters (>= 0; styles from :data:`DEFAULT_RATER_STYLES`) or explicit styles.
        spatial_dims: 2 or 3.
        shape: Spatial shape (default ``(64, 64)`` / ``(48, 48, 24)``).
        spacing_mm: Voxel size in mm (default 1 mm / ``(1, 1, 2)``).
        structures: ``"organ"`` (binary), ``"lesion"`` (binary) or ``"organ+lesion"`` (3 classes).
        lesion_fraction: Probability that a case has lesions (image label ``lesion`` = 1).
        unlabelled_fraction: Fraction of all cases written without any rater (from the train split).
        missing_rater_fraction: Probability that a given rater is missing for a labelled case (at least one
            rater is always kept).
        split_fractions: Train/val/test fractions.
        seed: Seed of everything.
        name: Dataset name.
        overwrite: Replace an existing dataset at ``dest``.
        image_suffix: File suffix for images and labels (``.nii.gz`` keeps spacing; ``.nii`` writes faster).

    Returns:
        The written :class:`~labelwise.data.Dataset`.

    Example:
        >>> ds = make_phantom_dataset(tmp / "ph", n_cases=6, raters=2)      # doctest: +SKIP
        >>> len(ds), ds.rater_ids                                           # doctest: +SKIP
        (6, ('precise', 'generous'))

    """
    t0 = time.perf_counter()
    if n_cases < 1:
        raise ConfigError(f"n_cases must be >= 1, got {n_cases}")
    for label, v in (
        ("lesion_fraction", lesion_fraction),
        ("unlabelled_fraction", unlabelled_fraction),
        ("missing_rater_fraction", missing_rater_fraction),
    ):
        if not 0.0 <= v <= 1.0:
            raise ConfigError(f"{label} must be in [0, 1], got {v}")
    styles = resolve_styles(raters)
    rng = np.random.default_rng(seed)
    nd = int(spatial_dims)
    shift_dirs = [rng.standard_normal(nd) for _ in styles]
    ids = [f"case{i:03d}" for i in range(n_cases)]
    phantoms = [
        make_phantom(
            np.random.default_rng([seed, i]),
            spatial_dims=spatial_dims,
            shape=shape,
            spacing_mm=spacing_mm,
            raters=styles,
            structures=structures,
            lesion_fraction=lesion_fraction,
            shift_directions=shift_dirs,
        )
        for i in range(n_cases)
    ]
    strata = {cid: p.image_labels["lesion"] for cid, p in zip(ids, phantoms, strict=True)}
    splits = assign_splits(ids, fractions=split_fractions, seed=seed, strata=strata)
    train = [cid for cid in ids if splits[cid] == "train"]
    n_unl = min(round(unlabelled_fraction * n_cases), len(train))
    unlabelled = set(rng.permutation(train)[:n_unl].tolist()) if styles else set(ids)
    first = phantoms[0]
    description = (
        f"labelwise synthetic phantoms ({nd}D, {structures}, seed {seed}); truth in truth/, rater styles and "
        f"per-case draws in {PHANTOM_INFO_NAME}. Raters: " + "; ".join(f"{s.name}: {_describe(s)}" for s in styles)
    )
    root = Path(dest)
    if overwrite and (root / "dataset.json").exists():
        shutil.rmtree(root / "truth", ignore_errors=True)
    writer = DatasetWriter(
        root,
        name=name,
        spatial_dims=nd,
        class_names=first.class_names,
        rater_ids=[s.name for s in styles],
        image_label_names=("lesion",),
        description=description,
        source="labelwise.data.phantoms.make_phantom_dataset",
        overwrite=overwrite,
        image_suffix=image_suffix,
    )
    cases_info: dict[str, Any] = {}
    records: list[CaseRecord] = []
    suffix = image_suffix
    # Files are written by io's atomic writers in a few threads (each write ends in an fsync, which releases
    # the GIL), then registered; the manifest is still written last, by ``writer.finish()``.
    with ThreadPoolExecutor(max_workers=8) as pool:
        jobs = []
        for cid, p in zip(ids, phantoms, strict=True):
            keep = np.ones(len(styles), dtype=bool)
            if cid in unlabelled:
                keep[:] = False
            elif missing_rater_fraction > 0 and len(styles) > 0:
                keep = rng.random(len(styles)) >= missing_rater_fraction
                if not keep.any():
                    keep[int(rng.integers(len(styles)))] = True
            image_rel, truth_rel = f"images/{cid}{suffix}", f"truth/{cid}{suffix}"
            labels = {rid: f"labels/{cid}_{rid}{suffix}" for j, rid in enumerate(p.rater_ids) if keep[j]}
            jobs.append(pool.submit(write_image, root / image_rel, p.image, p.spacing_mm))
            jobs.append(pool.submit(write_label, root / truth_rel, p.truth, p.spacing_mm))
            for j, rid in enumerate(p.rater_ids):
                if keep[j]:
                    jobs.append(pool.submit(write_label, root / labels[rid], p.raters[j], p.spacing_mm))
            records.append(
                CaseRecord(id=cid, image=image_rel, labels=labels, image_labels=p.image_labels, split=splits[cid])
            )
            cases_info[cid] = {
                "truth": truth_rel,
                "num_lesions": p.num_lesions,
                "raters": [asdict(r) for r, k in zip(p.records, keep, strict=True) if k],
            }
        for job in jobs:
            job.result()
    writer.channels = 1
    for rec in records:
        writer.add_record(rec)
    info = {
        "format": "labelwise-phantoms",
        "version": 1,
        "settings": {
            "n_cases": n_cases,
            "spatial_dims": nd,
            "shape": list(first.truth.shape),
            "spacing_mm": list(first.spacing_mm),
            "structures": structures,
            "lesion_fraction": lesion_fraction,
            "unlabelled_fraction": unlabelled_fraction,
            "missing_rater_fraction": missing_rater_fraction,
            "split_fractions": list(split_fractions),
            "seed": seed,
        },
        "rater_styles": [asdict(s) for s in styles],
        "shift_directions": [list(d / np.linalg.norm(d)) for d in shift_dirs],
        "cases": cases_info,
    }
    write_json_atomic(root / PHANTOM_INFO_NAME, info)
    writer.finish()
    logger.info("wrote %d phantom cases to %s in %.2f s", n_cases, root, time.perf_counter() - t0)
    return Dataset(root)


def _describe(s: RaterStyle) -> str:
    parts = []
    if s.bias_mm:
        parts.append(f"{'over' if s.bias_mm > 0 else 'under'}-segments by {abs(s.bias_mm):g} mm")
    if s.jitter_mm:
        parts.append(f"boundary jitter {s.jitter_mm:g} mm (scale {s.jitter_scale_mm:g} mm)")
    if s.shift_mm:
        parts.append(f"shifted by {s.shift_mm:g} mm")
    if s.miss_prob and s.miss_radius_mm:
        parts.append(f"misses components of radius < {s.miss_radius_mm:g} mm with p={s.miss_prob:g}")
    return ", ".join(parts) or "exact"


def read_phantom_info(root: str | Path) -> dict[str, Any]:
    """Read a phantom dataset's ``phantoms.json`` (settings, rater styles, per-case rater records).

    Raises:
        DataError: the folder is not a phantom dataset or the file is unreadable.

    """
    path = Path(root) / PHANTOM_INFO_NAME
    if not path.is_file():
        raise DataError(f"no {PHANTOM_INFO_NAME}: not a phantom dataset", Path(root))
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"unreadable phantom info ({exc})", path) from None
    if not isinstance(data, dict) or data.get("format") != "labelwise-phantoms":
        raise DataError('not a phantom info file (missing "format": "labelwise-phantoms")', path)
    return data


def read_phantom_truth(root: str | Path, case_id: str) -> np.ndarray:
    """The exact truth label map ``(*spatial)`` int16 of one case of a phantom dataset.

    Raises:
        DataError: unknown case, or not a phantom dataset.

    """
    info = read_phantom_info(root)
    try:
        rel = info["cases"][case_id]["truth"]
    except KeyError:
        raise DataError(f"no case {case_id!r} in the phantom info", Path(root) / PHANTOM_INFO_NAME) from None
    return read_label(Path(root) / rel, int(info["settings"]["spatial_dims"])).array
