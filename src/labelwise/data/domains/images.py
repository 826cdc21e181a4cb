"""Image preparation for the weak domains: channel fix, percentile normalisation, resizing to the working size.

torch is imported inside :func:`resize_chw` only, so ``labelwise.data`` stays importable without it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

from labelwise.errors import DataError

__all__ = ["fix_channels", "normalize_intensity", "prepare_image", "resize_chw"]


def normalize_intensity(image: np.ndarray, reference: np.ndarray | None = None) -> np.ndarray:
    """Map each channel's 0.5th..99.5th percentiles linearly to [-1, 1] (clipped).

    Args:
        image: ``(C, *spatial)`` array.
        reference: ``(C, ...)`` array whose percentiles define the map (default: ``image`` itself). The healthy
            versions of ``periphery_mode: inpaint`` use their lesion image, so that the pixels the two share get
            the same values.

    Returns:
        float32 array of the same shape in [-1, 1]; a constant channel becomes 0.

    """
    x = image.astype(np.float32, copy=True)
    ref = x if reference is None else reference
    for c in range(x.shape[0]):
        lo, hi = np.percentile(ref[c], [0.5, 99.5])
        x[c] = 0.0 if hi - lo < 1e-6 else np.clip((x[c] - lo) / (hi - lo) * 2.0 - 1.0, -1.0, 1.0)
    return x


def resize_chw(array: np.ndarray, size: Sequence[int], mode: Literal["bilinear", "nearest"] = "bilinear") -> np.ndarray:
    """Resize ``(C, H, W)`` to ``(C, *size)`` (bilinear with anti-aliasing when shrinking, or nearest).

    Args:
        array: ``(C, H, W)`` array.
        size: Target ``(H', W')``.
        mode: Interpolation.

    Returns:
        float32 ``(C, H', W')``.

    """
    import torch
    import torch.nn.functional as F

    t = torch.from_numpy(np.ascontiguousarray(array, dtype=np.float32))[None]
    if tuple(t.shape[-2:]) == tuple(size):
        return t[0].numpy()
    if mode == "nearest":
        out = F.interpolate(t, size=tuple(size), mode="nearest")
    else:
        out = F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=False, antialias=True)
    return out[0].numpy()


def prepare_image(
    image: np.ndarray, channels: int, size: int, case_id: str = "?", reference: np.ndarray | None = None
) -> np.ndarray:
    """Channel-fix, normalise and resize one image to the working size.

    Args:
        image: ``(C, H, W)`` raw intensities.
        channels: Channels the dataset declares.
        size: Working size S.
        case_id: Named in errors.
        reference: ``(channels, ...)`` raw image whose intensity percentiles normalise ``image`` (default: its own).

    Returns:
        ``(channels, S, S)`` float32 in [-1, 1].

    Raises:
        DataError: a channel count other than ``channels`` that is not grayscale-to-RGB.

    """
    if image.ndim != 3:
        raise DataError(f"case {case_id}: expected a (C, H, W) image, got shape {image.shape}")
    image = fix_channels(image, channels, case_id, "image")
    if reference is not None:
        reference = fix_channels(reference, channels, case_id, "reference image")
    return resize_chw(normalize_intensity(image, reference), (size, size))


def fix_channels(image: np.ndarray, channels: int, case_id: str = "?", what: str = "image") -> np.ndarray:
    """Replicate a grayscale image to RGB when the dataset is RGB; any other channel mismatch is an error.

    Args:
        image: ``(C, *spatial)`` array.
        channels: Channels the dataset (or model) declares.
        case_id: Named in errors.
        what: What ``image`` is, named in errors.

    Returns:
        ``image`` itself when it has ``channels`` channels, else the 1-channel image repeated to 3.

    Raises:
        DataError: a channel count other than ``channels`` that is not grayscale-to-RGB.

    Example:
        >>> fix_channels(np.zeros((1, 2, 2)), 3).shape
        (3, 2, 2)

    """
    if image.shape[0] == channels:
        return image
    if image.shape[0] == 1 and channels == 3:
        return np.repeat(image, 3, axis=0)
    raise DataError(f"case {case_id}: {what} has {image.shape[0]} channel(s), the dataset declares {channels}")
