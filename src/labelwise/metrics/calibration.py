"""Calibration of soft predictions: reliability data, ECE, Brier score, NLL (binary / one-vs-rest).

The reference ``target`` may be a hard mask (0/1) or a soft label in [0, 1] (e.g. the mean of the raters'
masks); the choice changes the values, so state it with every result.

Example:
    >>> import numpy as np
    >>> prob = np.array([0.9, 0.9, 0.1, 0.1]); target = np.array([1, 0, 0, 0])
    >>> round(brier(prob, target), 6)
    0.21
    >>> round(ece(prob, target, n_bins=10, mode="foreground"), 6)  # (2 * |0.5 - 0.9| + 2 * |0 - 0.1|) / 4
    0.25

"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import DataError
from labelwise.metrics._checks import as_mask, as_prob

__all__ = ["CalibrationMode", "ReliabilityData", "brier", "ece", "nll", "reliability"]

CalibrationMode = Literal["confidence", "foreground"]


@dataclass(frozen=True)
class ReliabilityData:
    """Binned calibration statistics (the data behind a reliability diagram).

    Attributes:
        bin_edges: ``(n_bins + 1,)`` equal-width edges over [0, 1].
        confidence: ``(n_bins,)`` mean predicted probability (or confidence) per bin; nan for empty bins.
        accuracy: ``(n_bins,)`` mean observed frequency (or correctness) per bin; nan for empty bins.
        counts: ``(n_bins,)`` int64 number of voxels per bin.

    """

    bin_edges: NDArray[np.float64]
    confidence: NDArray[np.float64]
    accuracy: NDArray[np.float64]
    counts: NDArray[np.int64]

    def ece(self) -> float:
        """Return the expected calibration error ``sum_b n_b / N * |acc_b - conf_b|``; nan when no voxel was binned."""
        n = int(self.counts.sum())
        if n == 0:
            return float("nan")
        used = self.counts > 0
        gap = np.abs(self.accuracy[used] - self.confidence[used])
        return float((self.counts[used] * gap).sum() / n)


def _pair(prob: ArrayLike, target: ArrayLike, region: ArrayLike | None) -> tuple[NDArray[np.float64], ...]:
    p = as_prob(prob, "prob")
    y = as_prob(target, "target")
    if p.shape != y.shape:
        raise DataError(f"prob shape {p.shape} differs from target shape {y.shape}")
    if region is not None:
        r = as_mask(region, "region")
        if r.shape != p.shape:
            raise DataError(f"region shape {r.shape} differs from prob shape {p.shape}")
        p, y = p[r], y[r]
    return p.reshape(-1), y.reshape(-1)


def reliability(
    prob: ArrayLike,
    target: ArrayLike,
    *,
    n_bins: int = 15,
    mode: CalibrationMode = "confidence",
    region: ArrayLike | None = None,
    foreground_only: bool = False,
) -> ReliabilityData:
    """Bin voxels by predicted probability and compare with observed frequency.

    Args:
        prob: ``(*spatial)`` foreground probability in [0, 1].
        target: ``(*spatial)`` reference in [0, 1]: hard mask or soft (mean-of-raters) label.
        n_bins: Number of equal-width bins over [0, 1] (the value 1.0 falls in the last bin).
        mode: ``"confidence"`` (Guo et al. 2017): bin ``max(p, 1-p)``, accuracy = agreement of the hard
            decision ``p >= 0.5`` with the target (soft targets give fractional agreement);
            ``"foreground"`` (MONAI ``CalibrationErrorMetric``): bin ``p``, accuracy = mean target.
        region: Optional ``(*spatial)`` bool mask of voxels to include.
        foreground_only: Restrict to voxels where ``p >= 0.5`` or ``target > 0`` (the union of predicted and
            reference foreground), so the background does not dominate.

    Returns:
        :class:`ReliabilityData`. Raises DataError for NaN/inf or values outside [0, 1].

    """
    if n_bins < 1:
        raise DataError(f"n_bins must be >= 1, got {n_bins}")
    p, y = _pair(prob, target, region)
    if foreground_only:
        keep = (p >= 0.5) | (y > 0)
        p, y = p[keep], y[keep]
    if mode == "confidence":
        fg = p >= 0.5
        conf = np.where(fg, p, 1.0 - p)
        acc = np.where(fg, y, 1.0 - y)
    elif mode == "foreground":
        conf, acc = p, y
    else:
        raise DataError(f"unknown calibration mode {mode!r}")
    idx = np.minimum((conf * n_bins).astype(np.int64), n_bins - 1)
    counts = np.bincount(idx, minlength=n_bins).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean_conf = np.bincount(idx, weights=conf, minlength=n_bins) / counts
        mean_acc = np.bincount(idx, weights=acc, minlength=n_bins) / counts
    return ReliabilityData(np.linspace(0.0, 1.0, n_bins + 1), mean_conf, mean_acc, counts)


def ece(
    prob: ArrayLike,
    target: ArrayLike,
    *,
    n_bins: int = 15,
    mode: CalibrationMode = "confidence",
    region: ArrayLike | None = None,
    foreground_only: bool = False,
) -> float:
    """Expected calibration error ``sum_b n_b / N * |acc_b - conf_b|`` of :func:`reliability` (same arguments).

    Binning: ``n_bins`` equal-width bins over [0, 1] (bin ``b`` holds ``b/n <= x < (b+1)/n``, the last bin also
    holds 1.0); empty bins are skipped (they carry weight 0); N = every voxel binned (all voxels of the region).

    * ``mode="confidence"`` (default; Guo et al., ICML 2017, top-label ECE of the binary decision): ``x`` is the
      confidence ``max(p, 1-p)`` (so the bins below 0.5 stay empty), ``acc_b`` the mean agreement of the
      decision ``p >= 0.5`` with the target. ``labelwise evaluate`` reports it as ``ece``.
    * ``mode="foreground"`` (MONAI ``CalibrationErrorMetric``): ``x`` is the foreground probability ``p`` and
      ``acc_b`` the mean target in the bin: the binary reliability of P(foreground). ``labelwise evaluate``
      reports it as ``ece_fg``.

    Returns:
        ECE in [0, 1]; nan if no voxel was binned (empty region).

    Example:
        >>> import numpy as np
        >>> prob = np.array([0.9, 0.9, 0.1, 0.1]); target = np.array([1, 0, 0, 0])
        >>> round(ece(prob, target, n_bins=10), 6)  # confidence 0.9 everywhere, 3 of 4 decisions right
        0.15
        >>> round(ece(prob, target, n_bins=10, mode="foreground"), 6)  # (2 * |0.5 - 0.9| + 2 * |0 - 0.1|) / 4
        0.25

    """
    return reliability(prob, target, n_bins=n_bins, mode=mode, region=region, foreground_only=foreground_only).ece()


def brier(prob: ArrayLike, target: ArrayLike, *, region: ArrayLike | None = None) -> float:
    """Brier score ``mean((p - y)^2)`` over voxels (binary); nan for an empty region.

    Args:
        prob: ``(*spatial)`` foreground probability in [0, 1].
        target: ``(*spatial)`` hard or soft reference in [0, 1].
        region: Optional bool mask of voxels to include.

    """
    p, y = _pair(prob, target, region)
    return float(np.mean((p - y) ** 2)) if p.size else float("nan")


def nll(prob: ArrayLike, target: ArrayLike, *, eps: float = 1e-7, region: ArrayLike | None = None) -> float:
    """Binary cross-entropy ``-mean(y log p + (1-y) log(1-p))`` (nats), ``p`` clipped to ``[eps, 1-eps]``.

    Args:
        prob: ``(*spatial)`` foreground probability in [0, 1].
        target: ``(*spatial)`` hard or soft reference in [0, 1].
        eps: Clipping so that confident mistakes give a large finite value.
        region: Optional bool mask of voxels to include.

    Returns:
        Mean NLL; nan for an empty region.

    """
    p, y = _pair(prob, target, region)
    if p.size == 0:
        return float("nan")
    pc = np.clip(p, eps, 1.0 - eps)
    return float(-np.mean(y * np.log(pc) + (1.0 - y) * np.log1p(-pc)))
