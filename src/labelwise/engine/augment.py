"""Augmentation whose random draws are recorded: draw parameters with a generator, then apply them.

:func:`draw_augment` returns a plain dict (JSON-able) of what will be applied; :func:`apply_augment` is
deterministic given that dict. The engine stores the dict with each sample (``logs/samples.rank<r>.jsonl``),
so any batch can be replayed exactly. Implemented with NumPy/SciPy rather than MONAI's random transforms
because MONAI draws from its own per-transform ``RandomState`` and does not return what it drew.

Geometric transforms (flips, in-plane 90-degree rotations, small in-plane rotations) act on every array of a
sample; intensity transforms (scale, shift, gamma) only on the image.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

__all__ = ["AugmentConfig", "apply_augment", "draw_augment"]


@dataclass(frozen=True)
class AugmentConfig:
    """Augmentation probabilities and ranges.

    Attributes:
        enabled: Master switch.
        flip_p: Probability of flipping each spatial axis.
        rot90_p: Probability of a random multiple of 90 degrees in the first two spatial axes (square patches).
        rotate_p: Probability of a small in-plane rotation.
        rotate_deg: Maximum absolute angle of that rotation, degrees.
        scale_p: Probability of multiplying intensities by ``U(1 - scale, 1 + scale)``.
        scale: Intensity scale range.
        shift_p: Probability of adding ``U(-shift, shift)`` (normalised units).
        shift: Intensity shift range.
        gamma_p: Probability of a gamma transform ``exp(U(-gamma, gamma))`` on min-max rescaled intensities.
        gamma: Log-gamma range.

    """

    enabled: bool = True
    flip_p: float = 0.5
    rot90_p: float = 0.25
    rotate_p: float = 0.2
    rotate_deg: float = 15.0
    scale_p: float = 0.3
    scale: float = 0.15
    shift_p: float = 0.3
    shift: float = 0.1
    gamma_p: float = 0.3
    gamma: float = 0.3


def draw_augment(rng: np.random.Generator, spatial_shape: tuple[int, ...], cfg: AugmentConfig) -> dict[str, Any]:
    """Draw augmentation parameters for one sample of spatial shape ``spatial_shape``.

    Returns:
        ``{"flip": [axes], "rot90": k, "rotate_deg": float, "scale": float, "shift": float, "gamma": float}``
        with identity values (``[]``, 0, 0.0, 1.0, 0.0, 1.0) for what was not drawn.

    """
    params: dict[str, Any] = {"flip": [], "rot90": 0, "rotate_deg": 0.0, "scale": 1.0, "shift": 0.0, "gamma": 1.0}
    if not cfg.enabled:
        return params
    # Always draw the same number of values so parameters stay aligned across configs.
    u = rng.random(16)
    nd = len(spatial_shape)
    params["flip"] = [a for a in range(nd) if u[a] < cfg.flip_p]
    if spatial_shape[0] == spatial_shape[1] and u[3] < cfg.rot90_p:
        params["rot90"] = int(1 + np.floor(u[4] * 3))
    if u[5] < cfg.rotate_p and cfg.rotate_deg > 0:
        params["rotate_deg"] = float((2 * u[6] - 1) * cfg.rotate_deg)
    if u[7] < cfg.scale_p:
        params["scale"] = float(1 + (2 * u[8] - 1) * cfg.scale)
    if u[9] < cfg.shift_p:
        params["shift"] = float((2 * u[10] - 1) * cfg.shift)
    if u[11] < cfg.gamma_p:
        params["gamma"] = float(np.exp((2 * u[12] - 1) * cfg.gamma))
    return params


def _geometric(arr: np.ndarray, params: Mapping[str, Any], order: int) -> np.ndarray:
    """Apply flips/rotations to ``(K, *spatial)``; ``order`` 0 for label maps, 1 for intensities/soft maps."""
    for a in params["flip"]:
        arr = np.flip(arr, axis=1 + a)
    if params["rot90"]:
        arr = np.rot90(arr, k=params["rot90"], axes=(1, 2))
    if params["rotate_deg"]:
        from scipy.ndimage import rotate

        arr = rotate(arr, params["rotate_deg"], axes=(1, 2), reshape=False, order=order, mode="nearest")
    return np.ascontiguousarray(arr)


def apply_augment(
    sample: Mapping[str, np.ndarray],
    params: Mapping[str, Any],
    image_key: str = "image",
    nearest_keys: tuple[str, ...] = (),
) -> dict[str, np.ndarray]:
    """Apply recorded parameters to every ``(K, *spatial)`` array of ``sample``.

    Args:
        sample: Arrays sharing the spatial shape; channel axis first.
        params: Output of :func:`draw_augment`.
        image_key: The intensity image (the only array intensity transforms touch).
        nearest_keys: Integer label arrays, resampled with nearest neighbour (others: linear).

    Returns:
        New dict with the same keys; dtypes preserved.

    """
    out: dict[str, np.ndarray] = {}
    for key, arr in sample.items():
        order = 0 if key in nearest_keys or not np.issubdtype(arr.dtype, np.floating) else 1
        out[key] = _geometric(arr, params, order).astype(arr.dtype, copy=False)
    img = out[image_key]
    if params["gamma"] != 1.0:
        lo = img.min(axis=tuple(range(1, img.ndim)), keepdims=True)
        hi = img.max(axis=tuple(range(1, img.ndim)), keepdims=True)
        rng_ = np.maximum(hi - lo, 1e-8)
        img = ((img - lo) / rng_) ** params["gamma"] * rng_ + lo
    if params["scale"] != 1.0:
        img = img * params["scale"]
    if params["shift"]:
        img = img + params["shift"]
    out[image_key] = img.astype(np.float32, copy=False)
    return out
