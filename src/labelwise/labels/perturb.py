"""Seeded, recorded label perturbations, and a sampler of perturbed masks covering Dice 0..1.

Every perturbation is a deterministic function of the label map and explicit parameters; a random draw only
chooses the parameters (TorchIO's pattern). Each public function returns ``(new_map, Perturbation)`` where the
:class:`Perturbation` record (JSON-ready: ``record.to_json()``) replays to the identical map with
:func:`apply_perturbation` / :func:`replay`.

Kinds (all distances in mm, spacing-aware through ``spacing_mm``; a boundary lies half a voxel outside the
outermost foreground voxel, so dilating by ``d`` adds the voxels whose centre is within ``d`` of it, i.e. at
Euclidean distance ``< d + 0.5`` voxel from the foreground):

================== ==============================================================================================
kind               effect
================== ==============================================================================================
``erode_dilate``   move every (or one) class boundary by ``distance_mm`` (> 0 dilates into background, < 0 erodes)
``shift``          translate the whole map by an integer voxel offset (zero fill)
``holes``          punch balls of background (centres in voxels, radii in mm) into the foreground
``drop_components`` remove connected foreground components (by index in :func:`scipy.ndimage.label` order)
``boundary_noise`` displace the boundary by a smooth random field (amplitude, correlation length, seed)
``add_blobs``      over-segmentation: add balls of a class (false-positive components)
``truncate``       under-segmentation: remove the part of the foreground beyond a plane, ``fraction`` of its
                   extent along ``direction``
``class_swap``     exchange two classes of a multi-class map
================== ==============================================================================================

Example:
    >>> import numpy as np
    >>> m = np.zeros((9, 9), dtype=np.uint8); m[3:6, 3:6] = 1
    >>> grown, rec = erode_dilate(m, 0.6)        # the 12 face neighbours (boundary half a voxel out)
    >>> int(grown.sum()), rec.kind, rec.params
    (21, 'erode_dilate', {'distance_mm': 0.6, 'label': None})
    >>> bool((apply_perturbation(m, rec) == grown).all())
    True

"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import NDArray
from scipy import ndimage

from labelwise.data.geometry import shift_zero_fill, signed_distance, smooth_noise
from labelwise.errors import ConfigError, DataError

__all__ = [
    "Candidate",
    "Perturbation",
    "PerturbationKind",
    "add_blobs",
    "apply_perturbation",
    "boundary_noise",
    "class_swap",
    "drop_components",
    "erode_dilate",
    "holes",
    "random_perturbation",
    "replay",
    "sample_candidates",
    "shift",
    "truncate",
]

PerturbationKind = Literal[
    "erode_dilate", "shift", "holes", "drop_components", "boundary_noise", "add_blobs", "truncate", "class_swap"
]
Mask = NDArray[Any]

NO_BOUNDARY_MM = 1e9
"""Signed distance (mm) of a map without boundary (all or no foreground): beyond any perturbation's reach."""


@dataclass(frozen=True)
class Perturbation:
    """A record of one applied perturbation: its kind and the exact parameters (JSON-ready values).

    Attributes:
        kind: One of :data:`PerturbationKind`.
        params: Keyword arguments of the deterministic function of that kind (lists, floats, ints, None).

    """

    kind: PerturbationKind
    params: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``{"kind": ..., "params": {...}}``."""
        return {"kind": self.kind, "params": dict(self.params)}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Perturbation:
        """Inverse of :meth:`to_json`; unknown kinds raise :class:`ConfigError`."""
        kind = data.get("kind")
        if kind not in get_args(PerturbationKind):
            raise ConfigError(f"unknown perturbation kind {kind!r}; expected one of {get_args(PerturbationKind)}")
        params = data.get("params", {})
        return cls(kind=kind, params=dict(params))  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------ helpers


def _spacing(mask: Mask, spacing_mm: Sequence[float] | None) -> tuple[float, ...]:
    sp = tuple(float(s) for s in spacing_mm) if spacing_mm is not None else (1.0,) * mask.ndim
    if len(sp) != mask.ndim or min(sp) <= 0:
        raise DataError(f"spacing_mm {sp} does not fit a mask with {mask.ndim} spatial axes (positive values)")
    return sp


def _as_map(mask: Any) -> Mask:
    arr = np.asarray(mask)
    if arr.ndim not in (2, 3):
        raise DataError(f"expected a 2D or 3D label map, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        raise DataError(f"label maps must be integer or bool arrays, got {arr.dtype}")
    return arr


def _smooth_field(
    seed: int, shape: tuple[int, ...], scale_mm: float, spacing: tuple[float, ...]
) -> NDArray[np.float64]:
    """The boundary-noise field of ``seed``: unit-std noise with correlation length ``scale_mm``."""
    return smooth_noise(np.random.default_rng(seed), shape, [scale_mm / s for s in spacing])


def _signed_distance(fg: NDArray[np.bool_], spacing: tuple[float, ...]) -> NDArray[np.float64]:
    """Signed distance in mm (> 0 inside; the boundary half a voxel out), ``+-NO_BOUNDARY_MM`` without boundary."""
    return signed_distance(fg, spacing, fill_mm=NO_BOUNDARY_MM)


def _grid_mm(shape: tuple[int, ...], spacing: tuple[float, ...]) -> list[NDArray[np.float64]]:
    return [
        np.arange(n, dtype=np.float64).reshape([-1 if a == i else 1 for a in range(len(shape))]) * s
        for i, (n, s) in enumerate(zip(shape, spacing, strict=True))
    ]


def _ball(shape: tuple[int, ...], spacing: tuple[float, ...], center: Sequence[float], radius_mm: float) -> Mask:
    grid = _grid_mm(shape, spacing)
    d2 = sum((g - float(c) * s) ** 2 for g, c, s in zip(grid, center, spacing, strict=True))
    return np.asarray(d2 <= radius_mm**2)


def _fg_dice(a: Mask, b: Mask) -> float:
    """Dice of the foregrounds (label != 0) of two maps, 1.0 when both are empty (:func:`labelwise.metrics.dice`)."""
    from labelwise.metrics import dice  # compiled kernels: loaded on first use, not by `import labelwise.labels`

    return dice(np.asarray(a) != 0, np.asarray(b) != 0)


# ------------------------------------------------------------------------------------------------ kinds


def erode_dilate(
    mask: Mask,
    distance_mm: float,
    spacing_mm: Sequence[float] | None = None,
    label: int | None = None,
    *,
    _sd: dict[int, NDArray[np.float64]] | None = None,
) -> tuple[Mask, Perturbation]:
    """Move class boundaries by ``distance_mm`` (> 0: dilate into background; < 0: erode to background).

    Args:
        mask: ``(*spatial)`` integer or bool label map (0 = background).
        distance_mm: Signed boundary displacement in mm.
        spacing_mm: Voxel size in mm (default 1 per axis).
        label: Only this class (default: every foreground class, in increasing order; a dilated class never
            overwrites another class).

    Returns:
        ``(new map, record)``; same dtype as ``mask``. An empty class stays empty.

    """
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    out = arr.copy()
    classes = [label] if label is not None else [int(c) for c in np.unique(arr) if c != 0]
    for c in classes:
        fg = arr == c
        sd = _sd[c] if _sd is not None and c in _sd else _signed_distance(fg, sp)
        new = sd + float(distance_mm) > 0
        if distance_mm >= 0:
            out[new & (arr == 0) & (out == 0)] = c
        else:
            out[fg & ~new] = 0
    return out, Perturbation("erode_dilate", {"distance_mm": float(distance_mm), "label": label})


def shift(mask: Mask, offset_voxels: Sequence[int]) -> tuple[Mask, Perturbation]:
    """Translate the map by an integer voxel offset per axis; what leaves the grid is lost, new voxels are 0."""
    arr = _as_map(mask)
    off = [int(o) for o in offset_voxels]
    if len(off) != arr.ndim:
        raise DataError(f"offset {off} does not fit a map with {arr.ndim} axes")
    return shift_zero_fill(arr, off), Perturbation("shift", {"offset_voxels": off})


def holes(
    mask: Mask, centers: Sequence[Sequence[float]], radii_mm: Sequence[float], spacing_mm: Sequence[float] | None = None
) -> tuple[Mask, Perturbation]:
    """Set balls (centres in voxel coordinates, radii in mm) to background."""
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    out = arr.copy()
    for c, r in zip(centers, radii_mm, strict=True):
        out[_ball(arr.shape, sp, c, float(r))] = 0
    params = {"centers": [[float(v) for v in c] for c in centers], "radii_mm": [float(r) for r in radii_mm]}
    return out, Perturbation("holes", params)


def drop_components(mask: Mask, components: Sequence[int]) -> tuple[Mask, Perturbation]:
    """Remove foreground connected components (face connectivity), numbered 1.. in ``ndimage.label`` order."""
    arr = _as_map(mask)
    comps, n = ndimage.label(arr != 0)
    out = arr.copy()
    drop = [int(c) for c in components if 1 <= int(c) <= n]
    if drop:
        out[np.isin(comps, drop)] = 0
    return out, Perturbation("drop_components", {"components": [int(c) for c in components]})


def boundary_noise(
    mask: Mask,
    amplitude_mm: float,
    scale_mm: float,
    seed: int,
    spacing_mm: Sequence[float] | None = None,
    *,
    _sd: NDArray[np.float64] | None = None,
    _field: NDArray[np.float64] | None = None,
) -> tuple[Mask, Perturbation]:
    """Displace the foreground boundary by a smooth random field (std ``amplitude_mm``, length ``scale_mm``).

    Multi-class maps: the foreground (label != 0) boundary moves; new foreground voxels take the nearest
    original class, removed ones become background.
    """
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    fg = arr != 0
    if not fg.any():
        return arr.copy(), Perturbation(
            "boundary_noise", {"amplitude_mm": float(amplitude_mm), "scale_mm": float(scale_mm), "seed": int(seed)}
        )
    sd = _sd if _sd is not None else _signed_distance(fg, sp)
    noise = _field if _field is not None else _smooth_field(int(seed), arr.shape, float(scale_mm), sp)
    new = sd + float(amplitude_mm) * noise > 0
    out = np.where(new & fg, arr, 0).astype(arr.dtype)
    grow = new & ~fg
    if grow.any():
        if arr.dtype == np.bool_ or int(arr.max()) == 1:
            out[grow] = 1
        else:
            idx = ndimage.distance_transform_edt(~fg, sampling=sp, return_distances=False, return_indices=True)
            out[grow] = arr[tuple(i[grow] for i in idx)]
    params = {"amplitude_mm": float(amplitude_mm), "scale_mm": float(scale_mm), "seed": int(seed)}
    return out, Perturbation("boundary_noise", params)


def add_blobs(
    mask: Mask,
    centers: Sequence[Sequence[float]],
    radii_mm: Sequence[float],
    label: int = 1,
    spacing_mm: Sequence[float] | None = None,
) -> tuple[Mask, Perturbation]:
    """Over-segmentation: paint balls of class ``label`` (centres in voxels, radii in mm) over the map."""
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    out = arr.copy()
    for c, r in zip(centers, radii_mm, strict=True):
        out[_ball(arr.shape, sp, c, float(r))] = label
    params = {
        "centers": [[float(v) for v in c] for c in centers],
        "radii_mm": [float(r) for r in radii_mm],
        "label": int(label),
    }
    return out, Perturbation("add_blobs", params)


def truncate(
    mask: Mask, direction: Sequence[float], fraction: float, spacing_mm: Sequence[float] | None = None
) -> tuple[Mask, Perturbation]:
    """Under-segmentation: remove the foreground beyond a plane normal to ``direction``.

    The plane sits so that ``fraction`` (0..1) of the foreground's extent along ``direction`` (in mm) is cut
    away from its far end: 0 keeps everything, 1 removes all foreground.
    """
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    d = np.asarray(direction, dtype=np.float64)
    if d.shape != (arr.ndim,) or not np.linalg.norm(d) > 0:
        raise DataError(f"direction {list(d)} must be a non-zero vector with {arr.ndim} entries")
    d = d / np.linalg.norm(d)
    out = arr.copy()
    fg = arr != 0
    if fg.any():
        proj = sum(g * v for g, v in zip(_grid_mm(arr.shape, sp), d, strict=True))
        vals = proj[fg] if isinstance(proj, np.ndarray) else np.zeros(0)
        lo, hi = float(vals.min()), float(vals.max())
        cut = hi - float(fraction) * (hi - lo)
        remove = fg if fraction >= 1 else fg & (proj > cut)
        out[remove] = 0
    return out, Perturbation("truncate", {"direction": [float(v) for v in d], "fraction": float(fraction)})


def class_swap(mask: Mask, a: int, b: int) -> tuple[Mask, Perturbation]:
    """Exchange classes ``a`` and ``b`` everywhere (a multi-class labelling error)."""
    arr = _as_map(mask)
    out = arr.copy()
    out[arr == a] = b
    out[arr == b] = a
    return out, Perturbation("class_swap", {"a": int(a), "b": int(b)})


_NEEDS_SPACING = {"erode_dilate", "holes", "boundary_noise", "add_blobs", "truncate"}


def apply_perturbation(mask: Mask, record: Perturbation, spacing_mm: Sequence[float] | None = None) -> Mask:
    """Re-apply a recorded perturbation (deterministic: the same record gives the same map)."""
    fn: Any = {
        "erode_dilate": erode_dilate,
        "shift": shift,
        "holes": holes,
        "drop_components": drop_components,
        "boundary_noise": boundary_noise,
        "add_blobs": add_blobs,
        "truncate": truncate,
        "class_swap": class_swap,
    }.get(record.kind)
    if fn is None:
        raise ConfigError(f"unknown perturbation kind {record.kind!r}")
    kwargs = dict(record.params)
    if record.kind in _NEEDS_SPACING:
        kwargs["spacing_mm"] = spacing_mm
    out, _ = fn(mask, **kwargs)
    return np.asarray(out)


def replay(mask: Mask, records: Sequence[Perturbation], spacing_mm: Sequence[float] | None = None) -> Mask:
    """Apply a chain of recorded perturbations in order."""
    out = np.asarray(mask)
    for rec in records:
        out = apply_perturbation(out, rec, spacing_mm)
    return out


# ------------------------------------------------------------------------------------------------ random draws


def random_perturbation(
    mask: Mask,
    rng: np.random.Generator,
    kind: PerturbationKind | None = None,
    spacing_mm: Sequence[float] | None = None,
    severity: float | None = None,
) -> tuple[Mask, Perturbation]:
    """Draw one perturbation's parameters and apply it.

    Args:
        mask: ``(*spatial)`` label map.
        rng: Random generator (the only source of randomness).
        kind: The kind (default: drawn uniformly among the kinds that apply; ``class_swap`` needs two classes).
        spacing_mm: Voxel size in mm.
        severity: 0..1, how strong (default: drawn uniformly). Scaled by the object's size: e.g. erosion up to
            its largest inscribed radius, shifts up to its extent.

    Returns:
        ``(new map, record)``.

    """
    arr = _as_map(mask)
    sp = _spacing(arr, spacing_mm)
    fg = arr != 0
    classes = [int(c) for c in np.unique(arr) if c != 0]
    kinds: list[PerturbationKind] = [k for k in get_args(PerturbationKind) if k != "class_swap" or len(classes) > 1]
    k: PerturbationKind = kind if kind is not None else kinds[int(rng.integers(len(kinds)))]
    s = float(rng.uniform(0, 1)) if severity is None else float(severity)
    size = _object_size_mm(fg, sp)
    nd = arr.ndim
    if k == "erode_dilate":
        sign = 1.0 if rng.random() < 0.5 else -1.0
        return erode_dilate(arr, sign * s * size, sp)
    if k == "shift":
        d = rng.standard_normal(nd)
        d /= np.linalg.norm(d)
        return shift(arr, [int(v) for v in np.rint(s * 2 * size * d / np.array(sp))])
    if k == "boundary_noise":
        return boundary_noise(arr, s * size, max(size, 2 * max(sp)), int(rng.integers(2**31)), sp)
    if k == "truncate":
        return truncate(arr, list(rng.standard_normal(nd)), s, sp)
    if k in ("holes", "add_blobs"):
        n = int(rng.integers(1, 4))
        pool = np.argwhere(fg) if (k == "holes" and fg.any()) else np.argwhere(np.ones(arr.shape, dtype=bool))
        centers = [list(map(float, pool[int(rng.integers(len(pool)))])) for _ in range(n)]
        radii = [float(max(s, 0.05) * size) for _ in range(n)]
        if k == "holes":
            return holes(arr, centers, radii, sp)
        lab = classes[int(rng.integers(len(classes)))] if classes else 1
        return add_blobs(arr, centers, radii, lab, sp)
    if k == "drop_components":
        _, n = ndimage.label(fg)
        pick = [i + 1 for i in range(n) if rng.random() < s] if n else []
        return drop_components(arr, pick)
    if len(classes) < 2:
        raise DataError("class_swap needs a map with at least two foreground classes")
    a, b = rng.choice(classes, size=2, replace=False)
    return class_swap(arr, int(a), int(b))


def _object_size_mm(fg: NDArray[np.bool_], spacing: tuple[float, ...]) -> float:
    """Equivalent radius (mm) of a disc/ball with the foreground's area/volume (at least one voxel)."""
    v = float(fg.sum()) * float(np.prod(spacing))
    r = float((v / math.pi) ** 0.5 if fg.ndim == 2 else (3 * v / (4 * math.pi)) ** (1 / 3))
    return max(r, max(spacing))


@dataclass(frozen=True)
class Candidate:
    """A perturbed mask of known quality.

    Attributes:
        mask: ``(*spatial)`` perturbed map (same dtype as the input).
        perturbations: The records that turn the input into ``mask`` (:func:`replay`).
        dice: Dice between ``mask`` and the input (1.0 when both are empty).
        target_dice: The Dice the sampler aimed at.

    """

    mask: Mask = field(repr=False)
    perturbations: tuple[Perturbation, ...]
    dice: float
    target_dice: float


_SEARCH_KINDS: tuple[PerturbationKind, ...] = ("erode_dilate", "shift", "truncate", "boundary_noise")


def sample_candidates(
    mask: Mask,
    n: int,
    *,
    spacing_mm: Sequence[float] | None = None,
    seed: int | np.random.Generator = 0,
    extra_prob: float = 0.3,
    iterations: int = 12,
) -> list[Candidate]:
    """Perturbed versions of a binary mask whose Dice with it covers [0, 1] roughly evenly.

    Candidate ``i`` aims at a target Dice drawn uniformly in the ``i``-th of ``n`` equal bins of [0, 1] (a
    stratified draw, so the targets cover the range evenly). With probability ``extra_prob`` a mild extra
    perturbation (holes, added blobs or dropped components) is applied first; then one of erosion/dilation,
    shift, truncation or boundary noise (drawn at random) is searched by bisection on its strength until the
    Dice is near the target. If a kind cannot reach the target (e.g. dilation cannot go below a floor), erosion
    or a shift is used instead. Each candidate's records replay to its mask exactly.

    Args:
        mask: ``(*spatial)`` binary map (bool or 0/1 integers), 2D or 3D, not empty.
        n: Number of candidates.
        spacing_mm: Voxel size in mm.
        seed: Seed or generator.
        extra_prob: Probability of a mild extra perturbation per candidate.
        iterations: Bisection steps per candidate.

    Returns:
        ``n`` :class:`Candidate` objects, in order of decreasing target Dice.

    Raises:
        DataError: an empty or multi-class mask.

    """
    arr = _as_map(mask)
    if arr.dtype != np.bool_ and arr.size and int(arr.max()) > 1:
        raise DataError("sample_candidates takes one structure's binary mask; split multi-class maps first")
    if int(np.count_nonzero(arr)) == 0:
        raise DataError("cannot sample quality-graded perturbations of an empty mask (every Dice would be 0 or 1)")
    sp = _spacing(arr, spacing_mm)
    rng = seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)
    nd = arr.ndim
    size = _object_size_mm(arr != 0, sp)
    depth = float(_signed_distance(arr != 0, sp).max()) + 0.5 * min(sp)
    diag = float(np.linalg.norm(np.array(arr.shape) * np.array(sp)))
    out: list[Candidate] = []
    for i in range(n):
        target = float(1.0 - (i + rng.random()) / n)
        records: list[Perturbation] = []
        base = arr
        if rng.random() < extra_prob:
            mild: PerturbationKind = ("holes", "add_blobs", "drop_components")[int(rng.integers(3))]
            cand, rec = random_perturbation(arr, rng, mild, sp, severity=float(rng.uniform(0.05, 0.3)))
            if mild != "drop_components" or _fg_dice(arr, cand) > 0:
                if _fg_dice(arr, cand) >= target:
                    base, records = cand, [rec]
        kind = _SEARCH_KINDS[int(rng.integers(len(_SEARCH_KINDS)))]
        direction = rng.standard_normal(nd)
        direction /= np.linalg.norm(direction)
        noise_seed = int(rng.integers(2**31))
        grow = bool(rng.random() < 0.5)
        sd = _signed_distance(base != 0, sp)

        ctx = _Search(base, sd, sp, diag, depth, size, grow, direction, noise_seed)
        best = _bisect(arr, ctx, kind, target, iterations)
        if abs(best[2] - target) > 0.1:
            alt = _bisect(arr, replace(ctx, grow=False), "erode_dilate", target, iterations)
            best = alt if abs(alt[2] - target) < abs(best[2] - target) else best
        records.append(best[1])
        final = replay(arr, records, sp)
        out.append(Candidate(final, tuple(records), _fg_dice(arr, final), target))
    return out


@dataclass(frozen=True)
class _Search:
    """What one candidate's strength search needs (the map it perturbs and the drawn directions)."""

    base: Mask
    sd: NDArray[np.float64]
    spacing: tuple[float, ...]
    diag: float
    depth: float
    size: float
    grow: bool
    direction: NDArray[np.float64]
    noise_seed: int
    noise: NDArray[np.float64] | None = None

    def make(self, k: PerturbationKind, s: float) -> tuple[Mask, Perturbation]:
        """Apply kind ``k`` at strength ``s`` in [0, 1] (0: unchanged; 1: Dice 0 or its floor)."""
        sp = self.spacing
        if k == "erode_dilate":
            dist = s * self.diag if self.grow else -s * (self.depth + max(sp))
            return erode_dilate(self.base, dist, sp, _sd={1: self.sd})
        if k == "shift":
            reach = 2.0 * self.size + max(sp)
            return shift(self.base, [int(v) for v in np.rint(s * reach * self.direction / np.array(sp))])
        if k == "truncate":
            return truncate(self.base, list(self.direction), s, sp)
        scale = max(self.size / 2, 2 * max(sp))
        if self.noise is None:  # computed once per search, not once per bisection step
            object.__setattr__(self, "noise", _smooth_field(self.noise_seed, self.base.shape, scale, sp))
        return boundary_noise(
            self.base, s * 2.0 * self.size, scale, self.noise_seed, sp, _sd=self.sd, _field=self.noise
        )


def _bisect(
    ref: Mask, ctx: _Search, kind: PerturbationKind, target: float, iterations: int
) -> tuple[Mask, Perturbation, float]:
    """Find strength s in [0, 1] with Dice(ref, ctx.make(kind, s)) closest to ``target`` (Dice falls as s grows)."""
    lo, hi = 0.0, 1.0
    m, r = ctx.make(kind, 0.0)
    best = (m, r, _fg_dice(ref, m))
    for _ in range(iterations):
        mid = 0.5 * (lo + hi)
        m, r = ctx.make(kind, mid)
        d = _fg_dice(ref, m)
        if abs(d - target) < abs(best[2] - target):
            best = (m, r, d)
        if d > target:
            lo = mid
        else:
            hi = mid
    m, r = ctx.make(kind, hi)
    d = _fg_dice(ref, m)
    if abs(d - target) < abs(best[2] - target):
        best = (m, r, d)
    return best
