"""Slices of 3D volumes for 2D semi-supervised methods: labelled vs unlabelled, k-slice protocols, CT windows.

Slices are always taken along the **last spatial axis** (the axis ``labelled_slices`` indexes). A volume is
``(C, X, Y, Z)``; slice ``z`` is ``(C, X, Y)``.

k-labelled-slice protocol (used by ``cps``, ``propagation`` and the results in ``docs/results.md``): from the
labelled slices of a case, :func:`k_slice_split` keeps ``k`` for training (evenly spaced by default, so
``k = 1`` is the middle labelled slice and the first and last are included for ``k >= 2``; or a seeded random
draw), and every other labelled slice is held out for testing. All slices that are not training slices are
available as *unlabelled* slices (their images only).

CT windowing (documented preprocessing option of the FLARE22 reference model): Hounsfield units are clipped to
each window ``[level - width / 2, level + width / 2]`` and scaled to [0, 1]; the windows become channels.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from labelwise.data.case import Case
from labelwise.errors import ConfigError, DataError

__all__ = [
    "FLARE_CT_WINDOWS",
    "SliceSplit",
    "ct_window_channels",
    "evenly_spaced",
    "k_slice_split",
    "labelled_slice_indices",
    "nonempty_slices",
    "volume_slices",
]

#: The FLARE22 reference model's three CT windows as ``(level, width)`` in HU: bone (W1800/L400),
#: abdomen ([-150, 250] -> L50/W400) and chest ([-1350, 225] -> L-562.5/W1575).
FLARE_CT_WINDOWS: tuple[tuple[float, float], ...] = ((400.0, 1800.0), (50.0, 400.0), (-562.5, 1575.0))


def ct_window_channels(hu: np.ndarray, windows: Sequence[tuple[float, float]] = FLARE_CT_WINDOWS) -> np.ndarray:
    """Stack CT windows as channels.

    Args:
        hu: ``(*spatial)`` or ``(1, *spatial)`` intensities in Hounsfield units.
        windows: ``(level, width)`` pairs in HU; width must be > 0.

    Returns:
        ``(len(windows), *spatial)`` float32 in [0, 1]: ``clip((hu - (level - width/2)) / width, 0, 1)``.

    Example:
        >>> ct_window_channels(np.array([-1000.0, 50.0, 2000.0]), [(50.0, 400.0)]).tolist()
        [[0.0, 0.5, 1.0]]

    """
    x = np.asarray(hu, dtype=np.float32)
    if x.ndim >= 1 and x.shape[0] == 1 and x.ndim > 1:
        x = x[0]
    if not windows:
        raise ConfigError("ct_window_channels needs at least one (level, width) window")
    out = np.empty((len(windows), *x.shape), dtype=np.float32)
    for i, (level, width) in enumerate(windows):
        if width <= 0:
            raise ConfigError(f"CT window width must be > 0, got {width}")
        out[i] = np.clip((x - (level - width / 2.0)) / width, 0.0, 1.0)
    return out


def labelled_slice_indices(case: Case) -> tuple[int, ...]:
    """Indices (last axis) whose labels are valid: ``labelled_slices``, or every slice of a labelled case.

    Returns ``()`` for an unlabelled case (no rater) and for 2D cases.
    """
    if case.spatial_dims != 3 or case.num_raters == 0:
        return ()
    if case.labelled_slices is not None:
        depth = case.spatial_shape[-1]
        bad = [z for z in case.labelled_slices if not 0 <= z < depth]
        if bad:
            raise DataError(f"case {case.id}: labelled slices {bad[:5]} outside 0..{depth - 1}")
        return tuple(sorted(set(case.labelled_slices)))
    return tuple(range(case.spatial_shape[-1]))


def evenly_spaced(items: Sequence[int], k: int) -> tuple[int, ...]:
    """``k`` items evenly spaced over ``items`` (``k = 1``: the middle one; ``k >= 2``: first and last included).

    Example:
        >>> evenly_spaced(range(10), 1), evenly_spaced(range(10), 3), evenly_spaced([4, 5], 5)
        ((5,), (0, 4, 9), (4, 5))

    """
    items = list(items)
    if k < 1:
        raise ConfigError(f"k must be >= 1, got {k}")
    if k >= len(items):
        return tuple(items)
    if k == 1:
        return (items[len(items) // 2],)
    pos = np.unique(np.round(np.linspace(0, len(items) - 1, k)).astype(int))
    return tuple(items[i] for i in pos)


@dataclass(frozen=True)
class SliceSplit:
    """Slice indices (last axis) of one case under a k-labelled-slice protocol.

    Attributes:
        train: Labelled slices used for training (sorted).
        test: Labelled slices held out for testing (sorted).
        unlabelled: Every slice that is not a training slice (its image may be used, never its label).

    """

    train: tuple[int, ...]
    test: tuple[int, ...]
    unlabelled: tuple[int, ...]


def k_slice_split(case: Case, k: int | None, mode: Literal["even", "random"] = "even", seed: int = 0) -> SliceSplit:
    """Choose ``k`` training slices among the labelled slices of ``case``; hold out the others.

    Args:
        case: A 3D case with at least one rater.
        k: Number of training slices (None: all labelled slices, nothing held out).
        mode: ``"even"`` (evenly spaced, deterministic) or ``"random"`` (seeded draw).
        seed: Seed of the random draw.

    Raises:
        DataError: the case is not 3D, has no labelled slice, or fewer labelled slices than ``k``.

    """
    if case.spatial_dims != 3:
        raise DataError(f"case {case.id}: slice protocols need a 3D volume, got {case.spatial_dims}D")
    labelled = labelled_slice_indices(case)
    if not labelled:
        raise DataError(f"case {case.id}: no labelled slices")
    if k is None:
        train = labelled
    elif k > len(labelled):
        raise DataError(f"case {case.id}: asked for {k} labelled slices, only {len(labelled)} are labelled")
    elif mode == "even":
        train = evenly_spaced(labelled, k)
    elif mode == "random":
        rng = np.random.default_rng(seed)
        train = tuple(sorted(int(z) for z in rng.choice(labelled, size=k, replace=False)))
    else:
        raise ConfigError(f"unknown slice selection mode {mode!r} (even or random)")
    chosen = set(train)
    test = tuple(z for z in labelled if z not in chosen)
    unlabelled = tuple(z for z in range(case.spatial_shape[-1]) if z not in chosen)
    return SliceSplit(train=tuple(sorted(train)), test=test, unlabelled=unlabelled)


def nonempty_slices(label: np.ndarray) -> tuple[int, ...]:
    """Indices along the last axis of ``label`` ``(*spatial)`` that contain at least one non-zero voxel."""
    lab = np.asarray(label)
    if lab.ndim < 2:
        raise DataError(f"expected a label map with at least 2 axes, got shape {lab.shape}")
    any_fg = (lab != 0).reshape(-1, lab.shape[-1]).any(axis=0)
    return tuple(int(z) for z in np.flatnonzero(any_fg))


def volume_slices(volume: np.ndarray, indices: Sequence[int]) -> np.ndarray:
    """Gather slices of ``volume`` ``(C, X, Y, Z)`` as a batch ``(len(indices), C, X, Y)`` (a copy)."""
    vol = np.asarray(volume)
    if vol.ndim != 4:
        raise DataError(f"expected a (C, X, Y, Z) volume, got shape {vol.shape}")
    depth = vol.shape[-1]
    bad = [int(z) for z in indices if not 0 <= int(z) < depth]
    if bad:
        raise DataError(f"slice indices {bad[:5]} outside 0..{depth - 1}")
    return np.ascontiguousarray(np.moveaxis(vol[..., list(indices)], -1, 0))
