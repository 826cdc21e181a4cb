"""Binary clean-up of a foreground probability map: threshold, hole filling, largest connected component."""

from __future__ import annotations

from typing import Literal

import numpy as np

from labelwise.postprocess.threshold import otsu_threshold

__all__ = ["clean_mask"]


def clean_mask(
    prob: np.ndarray,
    threshold: float | Literal["otsu"] = 0.5,
    keep: Literal["largest", "all"] = "largest",
    fill_holes: bool = True,
) -> np.ndarray:
    """Binary clean-up of a foreground probability map.

    Args:
        prob: ``(H, W)`` foreground probability in [0, 1].
        threshold: A fixed threshold, or ``"otsu"`` (Otsu's threshold of ``prob``).
        keep: ``largest``: keep only the largest 8-connected component; ``all``: keep every component.
        fill_holes: Fill enclosed holes.

    Returns:
        ``(H, W)`` bool mask; empty when nothing exceeds the threshold.

    """
    from scipy import ndimage

    t = otsu_threshold(prob) if threshold == "otsu" else float(threshold)
    mask = prob > t if threshold == "otsu" else prob >= t
    if fill_holes:
        mask = ndimage.binary_fill_holes(mask)
    if keep == "largest" and mask.any():
        lab, n = ndimage.label(mask, structure=np.ones((3, 3), dtype=bool))
        if n > 1:
            sizes = np.bincount(lab.ravel())[1:]
            mask = lab == (int(np.argmax(sizes)) + 1)
    return np.asarray(mask, dtype=bool)
