"""Thresholds of foreground probability maps: Otsu's threshold and a monotone rescaling that moves one to 0.5."""

from __future__ import annotations

import numpy as np

__all__ = ["otsu_threshold", "rescale_probability"]


def otsu_threshold(values: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (maximal between-class variance over a ``bins`` histogram).

    Args:
        values: Any array of finite numbers.
        bins: Histogram bins.

    Returns:
        The threshold (a bin edge); for a constant array, that constant.

    """
    v = np.asarray(values, dtype=np.float64).ravel()
    lo, hi = float(v.min()), float(v.max())
    if hi - lo < 1e-12:
        return lo
    hist, edges = np.histogram(v, bins=bins, range=(lo, hi))
    w0 = np.cumsum(hist)[:-1].astype(np.float64)
    w1 = v.size - w0
    centres = (edges[:-1] + edges[1:]) / 2
    s0 = np.cumsum(hist * centres)[:-1]
    m0 = s0 / np.maximum(w0, 1)
    m1 = (s0[-1] + hist[-1] * centres[-1] - s0) / np.maximum(w1, 1)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[1:-1][int(np.argmax(between))])


def rescale_probability(prob: np.ndarray, threshold: float) -> np.ndarray:
    """Monotone piecewise-linear map of [0, 1] onto [0, 1] sending ``threshold`` to 0.5.

    Args:
        prob: Values in [0, 1].
        threshold: The value that should become 0.5 (clipped to [1e-3, 1 - 1e-3]).

    Returns:
        float32 array of ``prob``'s shape: ``p >= threshold`` exactly where the output is ``>= 0.5``.

    """
    t = float(np.clip(threshold, 1e-3, 1 - 1e-3))
    p = np.clip(prob.astype(np.float32), 0.0, 1.0)
    return np.where(p < t, 0.5 * p / t, 0.5 + 0.5 * (p - t) / (1 - t)).astype(np.float32)
