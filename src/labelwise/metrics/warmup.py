"""Compile the metric kernels ahead of the first real call (or load them from numba's on-disk cache).

The compiled kernels (``labelwise.metrics._kernels``) are compiled on first use and cached on disk. In a fresh
environment the first HD95 + NSD call pays about 5 s of compilation; :func:`warm_up` pays it on tiny inputs at a
moment of the caller's choosing: before starting worker processes (so that they load the cache instead of each
compiling), or in a background thread while the first case is read (numba releases the GIL while LLVM compiles).
With the cache built it returns in well under a second.

Example:
    >>> seconds = warm_up()
    >>> seconds >= 0.0
    True

"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import numpy as np

from labelwise.metrics.overlap import batch_confusion, confusion_matrix, dice
from labelwise.metrics.surface import batch_surface_scores, surface_distances

__all__ = ["warm_up"]

logger = logging.getLogger(__name__)


def warm_up(*, surfels: bool = False, dims: Sequence[int] = (2, 3), batch: bool = True) -> float:
    """Compile (or load from the on-disk cache) the kernels of Dice, confusion counts and the surface metrics.

    Args:
        surfels: Also compile the ``surface="surfels"`` path (DeepMind surface-distance's definition).
        dims: The spatial dimensions whose surface kernels to compile (each is its own compilation).
        batch: Also compile :func:`~labelwise.metrics.batch_surface_scores` (2-D stacks), the slowest kernel to
            compile (several seconds); ``labelwise evaluate`` does not use it.

    Returns:
        Seconds spent.

    """
    t0 = time.perf_counter()
    a = np.zeros((4, 6, 8), dtype=bool)
    a[1:3, 1:5, 2:6] = True
    b = np.roll(a, 1, axis=2)
    dice(a, b)
    batch_confusion(a, b)
    confusion_matrix(a.astype(np.uint8), b.astype(np.uint8), 2)
    pairs = {3: (a, b, (1.0, 1.0, 2.0)), 2: (a[1], b[1], (1.0, 2.0))}
    for surface in ("voxels", "surfels") if surfels else ("voxels",):
        for nd in sorted(set(dims)):
            p, t, spacing = pairs[nd]
            sd = surface_distances(p, t, spacing, surface=surface)
            sd.hausdorff(), sd.hausdorff_percentile(95.0), sd.assd(), sd.masd(), sd.nsd(1.0)
        if batch:
            batch_surface_scores(a, b, (1.0, 2.0), surface=surface)
    seconds = time.perf_counter() - t0
    logger.debug("metric kernels ready in %.2f s", seconds)
    return seconds
