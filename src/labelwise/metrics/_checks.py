"""Input validation shared by the metric functions (private)."""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import DataError

__all__ = ["as_mask", "as_masks_pair", "as_prob", "check_finite", "check_spacing"]


def check_finite(arr: NDArray[np.generic], name: str) -> None:
    """Raise :class:`DataError` if a floating array holds NaN or inf."""
    if np.issubdtype(arr.dtype, np.floating) or np.issubdtype(arr.dtype, np.complexfloating):
        if not np.isfinite(arr).all():
            bad = int(np.count_nonzero(~np.isfinite(arr)))
            raise DataError(f"{name} holds {bad} NaN/inf value(s); metrics need finite input")


def as_mask(arr: ArrayLike, name: str) -> NDArray[np.bool_]:
    """Return a C-contiguous boolean view/copy of ``arr`` (nonzero = foreground); NaN/inf raise DataError."""
    a = np.asarray(arr)
    if a.dtype == np.bool_:
        return np.ascontiguousarray(a)
    if a.dtype.kind not in "biuf":
        raise DataError(f"{name} has unsupported dtype {a.dtype}; expected bool or numbers")
    check_finite(a, name)
    return np.ascontiguousarray(a != 0)


def as_masks_pair(pred: ArrayLike, target: ArrayLike) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """Validate two masks of the same shape; returns C-contiguous bool arrays."""
    p = as_mask(pred, "pred")
    t = as_mask(target, "target")
    if p.shape != t.shape:
        raise DataError(f"pred shape {p.shape} differs from target shape {t.shape}")
    return p, t


def as_prob(arr: ArrayLike, name: str) -> NDArray[np.float64]:
    """Return ``arr`` as float64 probabilities; NaN/inf or values outside [0, 1] raise DataError."""
    a = np.asarray(arr, dtype=np.float64)
    check_finite(a, name)
    if a.size and (a.min() < 0.0 or a.max() > 1.0):
        raise DataError(f"{name} must hold probabilities in [0, 1], got range [{a.min():.4g}, {a.max():.4g}]")
    return a


def check_spacing(spacing_mm: ArrayLike | None, ndim: int) -> NDArray[np.float64]:
    """Return spacing as a float64 vector of length ``ndim`` (default 1 mm); non-positive/NaN raise DataError."""
    if spacing_mm is None:
        return np.ones(ndim, dtype=np.float64)
    s = np.asarray(spacing_mm, dtype=np.float64).reshape(-1)
    if s.size == 1:
        s = np.repeat(s, ndim)
    if s.size != ndim:
        raise DataError(f"spacing_mm has {s.size} values for {ndim}-D masks")
    if not np.isfinite(s).all() or (s <= 0).any():
        raise DataError(f"spacing_mm must be finite and positive, got {tuple(s.tolist())}")
    return s
