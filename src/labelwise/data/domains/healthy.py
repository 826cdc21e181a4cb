"""Healthy-source synthesis for datasets where every image holds a lesion (``healthy_source: periphery``).

Border crops of a lesion image (:func:`periphery_crops`), mirror-tiled to a seamless "healthy-skin mosaic"
(:func:`mirror_tile`) that replaces the image's centre (:func:`inpaint_centre`, weights :func:`centre_weight`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["centre_weight", "inpaint_centre", "mirror_tile", "periphery_crops"]


def periphery_crops(image: np.ndarray, fraction: float, keep: int | None = None) -> list[np.ndarray]:
    """Square crops along the image border: 4 corners, then 4 edge midpoints.

    Args:
        image: ``(C, H, W)`` array.
        fraction: Crop side as a fraction of ``min(H, W)``.
        keep: If given, keep only the ``keep`` crops with the highest mean intensity (in their original order);
            None: the four corners (top-left, top-right, bottom-left, bottom-right).

    Returns:
        ``(C, s, s)`` views with ``s = max(1, round(fraction * min(H, W)))``.

    """
    h, w = image.shape[-2:]
    s = max(1, round(fraction * min(h, w)))
    my, mx = (h - s) // 2, (w - s) // 2
    corners = [image[:, :s, :s], image[:, :s, w - s :], image[:, h - s :, :s], image[:, h - s :, w - s :]]
    if keep is None:
        return corners
    edges = [
        image[:, :s, mx : mx + s],
        image[:, h - s :, mx : mx + s],
        image[:, my : my + s, :s],
        image[:, my : my + s, w - s :],
    ]
    cands = corners + edges
    order = sorted(np.argsort([-float(c.mean()) for c in cands], kind="stable")[: max(1, keep)])
    return [cands[i] for i in order]


def mirror_tile(patch: np.ndarray, shape: Sequence[int]) -> np.ndarray:
    """Tile ``patch`` ``(C, h, w)`` by repeated mirroring to ``(C, *shape)`` (no seams; the patch stays top-left).

    Args:
        patch: ``(C, h, w)`` array.
        shape: Target ``(H, W)``, each at least the patch size.

    Returns:
        ``(C, H, W)`` array of ``patch``'s dtype.

    """
    h, w = patch.shape[1:]
    reps_y, reps_x = -(-int(shape[0]) // h), -(-int(shape[1]) // w)
    rows = [patch if i % 2 == 0 else patch[:, ::-1] for i in range(reps_y)]
    col = np.concatenate(rows, axis=1)
    tiles = [col if j % 2 == 0 else col[:, :, ::-1] for j in range(reps_x)]
    return np.ascontiguousarray(np.concatenate(tiles, axis=2)[:, : int(shape[0]), : int(shape[1])])


def centre_weight(shape: Sequence[int]) -> np.ndarray:
    """Blend weight of :func:`inpaint_centre`: 1 inside the central ellipse, 0 in the corners.

    With ``rho`` the elliptical radius (0 at the centre, 1 on the ellipse inscribed in the image), the weight is
    1 for ``rho <= 0.8``, falls linearly to 0 at ``rho = 1`` and is 0 outside (the four corners).

    Args:
        shape: ``(H, W)``.

    Returns:
        ``(H, W)`` float32 in [0, 1].

    """
    h, w = int(shape[0]), int(shape[1])
    yy = (np.arange(h, dtype=np.float32) + 0.5) / h * 2 - 1
    xx = (np.arange(w, dtype=np.float32) + 0.5) / w * 2 - 1
    rho = np.sqrt(yy[:, None] ** 2 + xx[None, :] ** 2)
    return np.clip((1.0 - rho) / 0.2, 0.0, 1.0).astype(np.float32)


def inpaint_centre(image: np.ndarray, skin: np.ndarray) -> np.ndarray:
    """A "healthy" version of ``image``: its centre replaced by ``skin``, its corners kept.

    ``image * (1 - w) + skin * w`` with ``w`` = :func:`centre_weight`: the central ellipse (where a centred lesion
    lies) shows healthy skin, the corners keep the image's own field-of-view border (a dermoscope's dark
    vignette), so the two domains differ in the centre only and not in their layout.

    Args:
        image: ``(C, H, W)`` lesion image.
        skin: ``(C, H, W)`` healthy-skin mosaic of the same image (:func:`mirror_tile` of a border crop).

    Returns:
        ``(C, H, W)`` float32.

    """
    wgt = centre_weight(image.shape[1:])[None]
    out: np.ndarray = image.astype(np.float32) * (1 - wgt) + skin.astype(np.float32) * wgt
    return out
