"""What Quality Sentinel reads: binary masks, the intensity unit, the model input crop, and which slices.

Slices are taken along the last spatial axis (the axis ``labelled_slices`` indexes); a 2D case has one "slice",
written ``None``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch

from labelwise.data import Case
from labelwise.data.slices import evenly_spaced, labelled_slice_indices, nonempty_slices
from labelwise.errors import DataError

__all__ = [
    "as_binary",
    "case_slices",
    "crop_input",
    "heldout_slices",
    "intensity_unit",
    "slice_indices",
    "structure_names",
    "take_slice",
]


def as_binary(mask: np.ndarray, what: str = "mask") -> np.ndarray:
    """Check that ``mask`` is binary and return it as bool.

    Args:
        mask: Any array with values in {0, 1} (bool or integer).
        what: Name used in the error message (e.g. ``"case 3, rater fast"``).

    Raises:
        DataError: values other than 0 and 1 (a multi-class map where a binary mask is expected).

    """
    m = np.asarray(mask)
    if m.dtype == bool:
        return m
    vals = np.unique(m)
    if not np.isin(vals, (0, 1)).all():
        raise DataError(
            f"{what}: expected a binary mask (values 0/1) but found values {vals[:8].tolist()}; "
            "pass one structure's mask (label_map == k)"
        )
    return m.astype(bool)


def intensity_unit(image: np.ndarray, ct_clip: tuple[float, float] | None = None) -> np.ndarray:
    """Map a ``(C, *spatial)`` image to one ``(*spatial)`` float32 channel in [0, 1].

    Channels are averaged. With ``ct_clip=(lo, hi)`` values are clipped to the window and scaled linearly;
    otherwise by the image's 0.5 and 99.5 percentiles (a constant image gives zeros).
    """
    x = np.asarray(image, dtype=np.float32)
    x = x.mean(axis=0) if x.ndim >= 3 else x
    if ct_clip is not None:
        lo, hi = float(ct_clip[0]), float(ct_clip[1])
    else:
        lo, hi = (float(v) for v in np.percentile(x, [0.5, 99.5]))
    if hi <= lo:
        return np.zeros_like(x, dtype=np.float32)
    return np.asarray(np.clip((x - lo) / (hi - lo), 0.0, 1.0), dtype=np.float32)


def _box(mask: np.ndarray, margin: float) -> tuple[int, int, int]:
    ys, xs = np.nonzero(mask)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    side = max(8, math.ceil(max(y1 - y0, x1 - x0) * (1 + 2 * margin)))
    cy, cx = (y0 + y1) / 2, (x0 + x1) / 2
    return round(cy - side / 2), round(cx - side / 2), side


def _extract(a: np.ndarray, top: int, left: int, side: int, fill: float) -> np.ndarray:
    out = np.full((side, side), fill, dtype=np.float32)
    h, w = a.shape
    ys, ye = max(top, 0), min(top + side, h)
    xs, xe = max(left, 0), min(left + side, w)
    if ys < ye and xs < xe:
        out[ys - top : ye - top, xs - left : xe - left] = a[ys:ye, xs:xe]
    return out


def crop_input(image_unit: np.ndarray, mask: np.ndarray, size: int, margin: float = 0.25) -> np.ndarray:
    """The model input for one 2D slice: image and mask cropped square around the mask, resized, normalised.

    Args:
        image_unit: ``(H, W)`` float32 image in [0, 1] (see :func:`intensity_unit`).
        mask: ``(H, W)`` binary candidate mask; must be non-empty.
        size: Output side in pixels.
        margin: Context per side as a fraction of the mask's larger bounding-box side.

    Returns:
        ``(2, size, size)`` float32: image ``(x - 0.5) / 0.25`` and mask ``(m - 0.5) / 0.5`` (bilinear resize,
        antialiased when shrinking). Outside the image the crop is padded with 0 (image) and 0 (mask).

    Raises:
        DataError: shapes differ or the mask is empty.

    """
    m = as_binary(mask)
    if image_unit.shape != m.shape:
        raise DataError(f"mask shape {m.shape} does not match image shape {image_unit.shape}")
    if not m.any():
        raise DataError("empty mask: there is nothing to crop around (its predicted Dice is defined as 0)")
    top, left, side = _box(m, margin)
    pair = np.stack([_extract(image_unit, top, left, side, 0.0), _extract(m.astype(np.float32), top, left, side, 0.0)])
    t = torch.from_numpy(pair)[None]
    t = torch.nn.functional.interpolate(
        t, size=(size, size), mode="bilinear", align_corners=False, antialias=side > size
    )
    out = t[0].numpy()
    out[0] = (out[0] - 0.5) / 0.25
    out[1] = (np.clip(out[1], 0, 1) - 0.5) / 0.5
    return np.asarray(out, dtype=np.float32)


def take_slice(a: np.ndarray, z: int | None) -> np.ndarray:
    """Slice ``z`` (last axis) of ``a``, or ``a`` itself when ``z`` is None (a 2D case has one slice).

    Example:
        >>> a = np.arange(8).reshape(2, 2, 2)
        >>> take_slice(a, 1).tolist(), take_slice(a[..., 0], None).tolist()
        ([[1, 3], [5, 7]], [[0, 2], [4, 6]])

    """
    return a if z is None else a[..., z]


def case_slices(case: Case, allowed: Sequence[int] | None = None) -> list[int | None]:
    """The slices of a labelled case to train on: ``[None]`` for 2D; else ``allowed`` or its labelled slices."""
    if case.spatial_dims == 2:
        return [None]
    return [int(z) for z in (allowed if allowed is not None else labelled_slice_indices(case))]


def slice_indices(mask: np.ndarray, k: int, allowed: Sequence[int] | None = None) -> list[int]:
    """Up to ``k`` slices (last axis) of a 3D ``mask``, evenly spaced over those where it is non-empty.

    The pick is :func:`labelwise.data.slices.evenly_spaced` over the non-empty slices, so ``k = 1`` is the middle
    of the structure's extent (its most representative slice, not its edge).

    Args:
        mask: ``(*spatial)`` 3D binary mask.
        k: Maximum number of slices (>= 1).
        allowed: Restrict to these slice indices (e.g. the labelled or held-out slices).

    Returns:
        Sorted slice indices (empty list for an empty mask).

    Example:
        >>> m = np.zeros((1, 1, 9), bool); m[..., 2:7] = True
        >>> slice_indices(m, 1), slice_indices(m, 3), slice_indices(m, 3, allowed=[0, 6, 8])
        ([4], [2, 4, 6], [6])

    """
    present = nonempty_slices(mask)
    if allowed is not None:
        keep = {int(z) for z in allowed}
        present = tuple(z for z in present if z in keep)
    return list(evenly_spaced(present, k))


def heldout_slices(labelled: Sequence[int], block: int) -> tuple[list[int], list[int]]:
    """Split labelled slice indices into (train, held out): alternating blocks of ``block`` slices (0: all train)."""
    idx = sorted(int(v) for v in labelled)
    if block <= 0:
        return idx, []
    train = [z for i, z in enumerate(idx) if (i // block) % 2 == 0]
    chosen = set(train)
    return train, [z for z in idx if z not in chosen]


def structure_names(dataset_classes: Sequence[str], wanted: Sequence[str] | None) -> list[tuple[int, str]]:
    """(class index, name) of the structures to use; unknown names raise :class:`DataError` listing the classes."""
    classes = list(dataset_classes)
    if wanted is None:
        return [(i, n) for i, n in enumerate(classes) if i > 0]
    out = []
    for n in wanted:
        if n not in classes:
            raise DataError(f"unknown structure {n!r}; the dataset's structures are {classes[1:]}")
        out.append((classes.index(n), n))
    return out
