"""Multi-rater metrics: GED, soft Dice, Dice_max, Dice_match, per-rater Dice, agreement and diversity.

All are reductions over the rater / sample axis of one primitive: the pairwise intersection counts of two
stacks of binary masks, computed with the fused compiled counter.

Conventions (also in ``docs/metrics.md``):

* GED uses ``d = 1 - IoU``; ``self_pairs="include"`` averages the within-set terms over all S x S pairs
  (V-statistic: the mean of the full S x S matrix); ``"exclude"`` over i != j only
  (U-statistic). Two empty masks have IoU 1 (``empty_iou="one"``, d = 0), 0 (``"zero"``) or are dropped
  (``"drop"``).
* Soft Dice thresholds both the predicted probability and the mean rater mask at each threshold (default
  0.1, 0.2, ..., 0.9 with ``>``, as D-Persona; MRNet's variant is ``thresholds=(0.1, 0.3, 0.5, 0.7, 0.9),
  comparison=">="``) and averages the per-threshold Dice.
* Dice_max and Dice_match score the first ``min(S, R)`` samples by default (``candidates="equal"``), so a
  sampling method does not get more tries than a method with one map per rater; ``candidates="all"`` is the
  D-Persona protocol (all S samples compete).

Example:
    >>> import numpy as np
    >>> raters = np.array([[1, 1, 0, 0], [1, 0, 0, 0]], bool)
    >>> pairwise_dice(raters)
    array([[1.        , 0.66666667],
           [0.66666667, 1.        ]])

"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import DataError
from labelwise.metrics._checks import as_mask, as_prob
from labelwise.metrics._kernels import count_pair
from labelwise.metrics.conventions import EmptyConvention, EmptyMode
from labelwise.metrics.overlap import overlap_from_counts

__all__ = [
    "DEFAULT_SOFT_DICE_THRESHOLDS",
    "Candidates",
    "EmptyIoU",
    "SelfPairs",
    "dice_match",
    "dice_max",
    "fleiss_kappa",
    "ged",
    "n_candidates",
    "pair_counts",
    "pairwise_dice",
    "pairwise_iou",
    "per_rater_dice",
    "sample_diversity",
    "soft_dice",
]

SelfPairs = Literal["include", "exclude"]
Candidates = Literal["equal", "all"]
"""Samples that compete in Dice_max / Dice_match: the first ``min(S, R)`` (``"equal"``) or all S (``"all"``)."""
EmptyIoU = Literal["one", "zero", "drop"]
DEFAULT_SOFT_DICE_THRESHOLDS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


def _stack(masks: ArrayLike, name: str) -> NDArray[np.bool_]:
    m = as_mask(masks, name)
    if m.ndim < 2:
        raise DataError(f"{name} must have shape (K, *spatial), got {m.shape}")
    return m


def pair_counts(a: ArrayLike, b: ArrayLike | None = None) -> NDArray[np.int64]:
    """Confusion counts of every pair of masks from two stacks.

    Args:
        a: ``(A, *spatial)`` bool masks (the "prediction" side).
        b: ``(B, *spatial)`` bool masks (the "reference" side); None means ``a`` against itself.

    Returns:
        ``(A, B, 4)`` int64 counts ``(tp, fp, fn, tn)`` of ``a[i]`` against ``b[j]``.

    """
    ma = _stack(a, "a")
    same = b is None
    mb = ma if b is None else _stack(b, "b")
    if ma.shape[1:] != mb.shape[1:]:
        raise DataError(f"spatial shapes differ: {ma.shape[1:]} vs {mb.shape[1:]}")
    n = int(np.prod(ma.shape[1:]))
    sa = np.array([count_pair(x, x)[0] for x in ma], dtype=np.int64)
    sb = sa if same else np.array([count_pair(x, x)[0] for x in mb], dtype=np.int64)
    inter = np.zeros((ma.shape[0], mb.shape[0]), dtype=np.int64)
    for i in range(ma.shape[0]):
        for j in range(mb.shape[0]):
            if same and j < i:
                inter[i, j] = inter[j, i]
            elif same and j == i:
                inter[i, j] = sa[i]
            else:
                inter[i, j] = count_pair(ma[i], mb[j])[2]
    tp = inter
    fp = sa[:, None] - inter
    fn = sb[None, :] - inter
    tn = n - tp - fp - fn
    return np.stack([tp, fp, fn, tn], axis=-1)


def pairwise_dice(masks: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise") -> NDArray[np.float64]:
    """Dice between every pair of masks (inter-rater agreement matrix).

    Args:
        masks: ``(R, *spatial)`` bool masks.
        empty: Convention for two empty masks; ``"labelwise"`` gives 1.0 (so the diagonal is always 1).

    Returns:
        ``(R, R)`` float64 symmetric matrix; entry ``(i, j)`` is Dice of mask i against mask j.

    """
    return overlap_from_counts(pair_counts(masks), "dice", empty=empty)


def pairwise_iou(a: ArrayLike, b: ArrayLike | None = None, *, empty_iou: EmptyIoU = "one") -> NDArray[np.float64]:
    """IoU between every mask of ``a`` ``(A, *spatial)`` and of ``b`` ``(B, *spatial)`` -> ``(A, B)`` float64.

    Two empty masks give 1.0 (``empty_iou="one"``), 0.0 (``"zero"``) or nan (``"drop"``).
    """
    fill = {"one": 1.0, "zero": 0.0, "drop": float("nan")}[empty_iou]
    conv = EmptyConvention(fill, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0)
    return overlap_from_counts(pair_counts(a, b), "iou", empty=conv)


def _mean_distance(d: NDArray[np.float64], self_pairs: SelfPairs | None) -> float:
    if self_pairs == "exclude":
        off = ~np.eye(d.shape[0], dtype=bool)
        vals = d[off]
    else:
        vals = d.reshape(-1)
    vals = vals[~np.isnan(vals)]
    return float(vals.mean()) if vals.size else float("nan")


def ged(
    samples: ArrayLike,
    raters: ArrayLike,
    *,
    self_pairs: SelfPairs = "include",
    empty_iou: EmptyIoU = "one",
) -> float:
    """Squared generalised energy distance ``D^2_GED`` with ``d = 1 - IoU`` (Kohl et al., NeurIPS 2018).

    ``D^2 = 2 E[d(S, Y)] - E[d(S, S')] - E[d(Y, Y')]``.

    Args:
        samples: ``(S, *spatial)`` bool predicted masks (samples of a generative model or per-rater heads).
        raters: ``(R, *spatial)`` bool reference masks.
        self_pairs: ``"include"`` averages the within-set terms over all pairs including i = j (d = 0 there
            unless both are empty and ``empty_iou="zero"``); ``"exclude"`` uses i != j only (nan if S or R is 1).
        empty_iou: IoU of two empty masks: ``"one"`` (d = 0), ``"zero"`` (d = 1) or ``"drop"`` (pair ignored).

    Returns:
        ``D^2_GED`` (lower is better; can be slightly negative with ``self_pairs="exclude"``); nan if every
        pair of a term was dropped.

    """
    s = _stack(samples, "samples")
    r = _stack(raters, "raters")
    d_sy = 1.0 - pairwise_iou(s, r, empty_iou=empty_iou)
    d_ss = 1.0 - pairwise_iou(s, empty_iou=empty_iou)
    d_yy = 1.0 - pairwise_iou(r, empty_iou=empty_iou)
    return 2.0 * _mean_distance(d_sy, None) - _mean_distance(d_ss, self_pairs) - _mean_distance(d_yy, self_pairs)


def sample_diversity(samples: ArrayLike, *, empty_iou: EmptyIoU = "one") -> float:
    """Mean ``1 - IoU`` over distinct pairs of samples (the GED within-set term as a U-statistic).

    Args:
        samples: ``(S, *spatial)`` bool masks, S >= 2.
        empty_iou: IoU of two empty masks (see :func:`ged`).

    Returns:
        Diversity in [0, 1]; 0 when all samples are identical; nan if S < 2.

    """
    s = _stack(samples, "samples")
    if s.shape[0] < 2:
        return float("nan")
    return _mean_distance(1.0 - pairwise_iou(s, empty_iou=empty_iou), "exclude")


def soft_dice(
    prob: ArrayLike,
    raters: ArrayLike,
    *,
    thresholds: Sequence[float] = DEFAULT_SOFT_DICE_THRESHOLDS,
    comparison: Literal[">", ">="] = ">",
    empty: EmptyMode | EmptyConvention = "labelwise",
) -> float:
    """Soft Dice over thresholds (QUBIQ-style multi-rater evaluation, as in MRNet and D-Persona).

    At each threshold ``t`` the prediction ``prob > t`` is scored by Dice against the mean rater mask
    ``mean(raters) > t``; the result is the mean over thresholds.

    Args:
        prob: ``(*spatial)`` float foreground probability in [0, 1].
        raters: ``(R, *spatial)`` bool rater masks (or ``(*spatial)`` soft reference in [0, 1] of the same
            shape as ``prob``).
        thresholds: Thresholds in (0, 1); default 0.1, 0.2, ..., 0.9.
        comparison: ``">"`` (D-Persona) or ``">="`` (MRNet).
        empty: Convention when both thresholded masks are empty (labelwise: Dice 1).

    Returns:
        Mean Dice over thresholds.

    Raises:
        DataError: NaN/inf or values outside [0, 1], or mismatched shapes.

    """
    p = as_prob(prob, "prob")
    r = np.asarray(raters)
    if r.shape == p.shape:
        ref = as_prob(r, "raters")
    else:
        rm = _stack(r, "raters")
        if rm.shape[1:] != p.shape:
            raise DataError(f"raters spatial shape {rm.shape[1:]} differs from prob shape {p.shape}")
        ref = rm.mean(axis=0, dtype=np.float64)
    if len(thresholds) == 0:
        raise DataError("soft_dice needs at least one threshold")
    from labelwise.metrics.overlap import confusion

    scores = []
    for t in thresholds:
        if comparison == ">":
            pm, rmk = p > t, ref > t
        else:
            pm, rmk = p >= t, ref >= t
        scores.append(float(overlap_from_counts(confusion(pm, rmk).counts, "dice", empty=empty)))
    return float(np.mean(scores))


def _dice_matrix(samples: ArrayLike, raters: ArrayLike, empty: EmptyMode | EmptyConvention) -> NDArray[np.float64]:
    return overlap_from_counts(pair_counts(samples, raters), "dice", empty=empty)


def _candidates(
    samples: ArrayLike, raters: ArrayLike, candidates: Candidates
) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
    """The sample stack cut to the candidates of :data:`Candidates` and the rater stack, both validated."""
    s = _stack(samples, "samples")
    r = _stack(raters, "raters")
    if candidates == "equal":
        s = s[: r.shape[0]]
    elif candidates != "all":
        raise DataError(f"candidates must be 'equal' or 'all', got {candidates!r}")
    return s, r


def n_candidates(n_samples: int, n_raters: int, candidates: Candidates = "equal") -> int:
    """Number of samples that :func:`dice_max` / :func:`dice_match` score: ``min(S, R)`` for ``"equal"``, else S.

    Example:
        >>> n_candidates(16, 7), n_candidates(16, 7, "all"), n_candidates(3, 7)
        (7, 16, 3)

    """
    return min(n_samples, n_raters) if candidates == "equal" else n_samples


def dice_max(
    samples: ArrayLike,
    raters: ArrayLike,
    *,
    candidates: Candidates = "equal",
    empty: EmptyMode | EmptyConvention = "labelwise",
) -> float:
    """Mean over raters of the best Dice any candidate sample reaches against that rater (D-Persona's Dice_max).

    The best of more candidates can only be higher, so a method that draws 16 samples against 7 raters has an
    edge over one with 7 fixed maps. By default (``candidates="equal"``) only the first ``min(S, R)`` samples
    compete (samples are exchangeable draws, so the first R are a random R-subset; fixed per-rater maps keep
    their order); ``candidates="all"`` lets all S samples compete (D-Persona's protocol).

    Args:
        samples: ``(S, *spatial)`` bool predicted masks.
        raters: ``(R, *spatial)`` bool reference masks.
        candidates: ``"equal"`` (first ``min(S, R)`` samples) or ``"all"``; see :func:`n_candidates`.
        empty: Empty-mask convention for each Dice.

    Returns:
        Dice_max in [0, 1]; nan entries (e.g. ``empty="nnunet"``) are ignored by the max.

    Example:
        >>> import numpy as np
        >>> raters = np.array([[1, 1, 0, 0]], bool)
        >>> samples = np.array([[1, 0, 0, 0], [1, 1, 0, 0]], bool)  # the second sample matches the rater
        >>> round(dice_max(samples, raters), 6), dice_max(samples, raters, candidates="all")
        (0.666667, 1.0)

    """
    s, r = _candidates(samples, raters, candidates)
    d = _dice_matrix(s, r, empty)
    with np.errstate(all="ignore"):
        best = np.where(np.isnan(d).all(axis=0), np.nan, np.nanmax(np.where(np.isnan(d), -np.inf, d), axis=0))
    return float(np.nanmean(best)) if not np.isnan(best).all() else float("nan")


def dice_match(
    samples: ArrayLike,
    raters: ArrayLike,
    *,
    candidates: Candidates = "equal",
    empty: EmptyMode | EmptyConvention = "labelwise",
) -> float:
    """Mean Dice of the one-to-one sample/rater matching that maximises total Dice (Hungarian algorithm).

    ``min(S', R)`` pairs are matched, S' the number of candidates: by default (``candidates="equal"``) the
    first ``min(S, R)`` samples, so that S = 16 samples do not pick the best 7 of 16 against 7 raters;
    ``candidates="all"`` matches from all S samples.

    Args:
        samples: ``(S, *spatial)`` bool predicted masks.
        raters: ``(R, *spatial)`` bool reference masks.
        candidates: ``"equal"`` (first ``min(S, R)`` samples) or ``"all"``; see :func:`n_candidates`.
        empty: Empty-mask convention for each Dice (nan entries are treated as 0 for the matching).

    Returns:
        Dice_match in [0, 1].

    Example:
        >>> import numpy as np
        >>> raters = np.array([[1, 1, 0, 0]], bool)
        >>> samples = np.array([[0, 0, 1, 1], [1, 1, 0, 0]], bool)
        >>> dice_match(samples, raters), dice_match(samples, raters, candidates="all")
        (0.0, 1.0)

    """
    from scipy.optimize import linear_sum_assignment

    s, r = _candidates(samples, raters, candidates)
    d = _dice_matrix(s, r, empty)
    cost = np.nan_to_num(d, nan=0.0)
    rows, cols = linear_sum_assignment(cost, maximize=True)
    return float(np.nanmean(d[rows, cols]))


def per_rater_dice(
    preds: ArrayLike, raters: ArrayLike, *, empty: EmptyMode | EmptyConvention = "labelwise"
) -> NDArray[np.float64]:
    """Index-aligned Dice: prediction i (e.g. a personalised head) against rater i.

    Args:
        preds: ``(R, *spatial)`` bool masks, one per rater.
        raters: ``(R, *spatial)`` bool reference masks in the same rater order.
        empty: Empty-mask convention.

    Returns:
        ``(R,)`` float64 Dice per rater.

    """
    p = _stack(preds, "preds")
    r = _stack(raters, "raters")
    if p.shape != r.shape:
        raise DataError(f"preds shape {p.shape} differs from raters shape {r.shape}")
    from labelwise.metrics.overlap import confusion

    counts = np.stack([confusion(p[i], r[i]).counts for i in range(p.shape[0])])
    return overlap_from_counts(counts, "dice", empty=empty)


def fleiss_kappa(raters: ArrayLike, num_classes: int | None = None) -> float:
    """Fleiss' kappa over voxels (subjects) rated by R raters into K categories.

    Args:
        raters: ``(R, *spatial)`` integer label maps (bool for binary), R >= 2.
        num_classes: K; default ``max label + 1`` (at least 2).

    Returns:
        Kappa in [-1, 1]; nan when every rater gives every voxel the same single category (expected agreement
        is 1, kappa undefined).

    """
    r = np.asarray(raters)
    if r.ndim < 2 or r.shape[0] < 2:
        raise DataError(f"fleiss_kappa needs raters of shape (R >= 2, *spatial), got {r.shape}")
    if r.dtype.kind == "f":
        from labelwise.metrics._checks import check_finite

        check_finite(r, "raters")
    if r.dtype.kind not in "biuf":
        raise DataError(f"raters has unsupported dtype {r.dtype}")
    ri = r.astype(np.int64)
    if ri.size and ri.min() < 0:
        raise DataError("raters hold negative labels")
    k = num_classes if num_classes is not None else max(int(ri.max(initial=0)) + 1, 2)
    n_raters = r.shape[0]
    n_vox = int(np.prod(r.shape[1:]))
    sum_sq = 0.0
    p_j = np.zeros(k)
    for c in range(k):
        cnt = (ri == c).sum(axis=0, dtype=np.int64)
        sum_sq += float((cnt.astype(np.float64) ** 2).sum())
        p_j[c] = cnt.sum() / (n_vox * n_raters)
    p_bar = (sum_sq - n_vox * n_raters) / (n_vox * n_raters * (n_raters - 1))
    p_e = float((p_j**2).sum())
    if np.isclose(p_e, 1.0):
        return float("nan")
    return float((p_bar - p_e) / (1.0 - p_e))
