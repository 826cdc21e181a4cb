"""Fusing several raters' label maps into one: majority vote, soft mean and STAPLE, with a registry of rules.

All rules take the rater stack ``raters`` ``(R, *spatial)`` (integer class indices, 0 = background, 2D or 3D)
and an optional ``present`` ``(R,)`` bool mask saying which raters actually labelled the case (a case's missing
raters are zero-filled by :meth:`labelwise.data.Case.rater_stack`; absent raters never vote). At least one rater
must be present.

Undecided voxels (a tie between classes) are handled explicitly by a :data:`TiePolicy`:

* ``"lowest"`` (default): the lowest tied class index wins, so a 1-1 binary tie becomes background (the same
  convention as :func:`numpy.argmax` on the soft mean, used by the supervised baseline's ``majority`` target);
* ``"highest"``: the highest tied class index wins (a lenient, foreground-favouring vote);
* ``"undecided"``: the voxel gets ``undecided_value`` (default ``-1``), so callers can mask or review it.

STAPLE (Warfield, Zou & Wells, "Simultaneous Truth and Performance Level Estimation (STAPLE): an algorithm for
the validation of image segmentation", IEEE TMI 23(7), 2004) uses SimpleITK's implementation:
``STAPLEImageFilter`` for binary maps and ``MultiLabelSTAPLEImageFilter`` (Rohlfing et al., IPMI 2003) for
several classes.

Example:
    >>> import numpy as np
    >>> r = np.array([[0, 1, 1, 1], [0, 0, 1, 1], [1, 0, 0, 1]])   # 3 raters, 4 voxels
    >>> majority_vote(r).tolist()
    [0, 0, 1, 1]
    >>> (3 * soft_mean(r)[1]).tolist()       # votes for class 1 out of 3
    [1.0, 1.0, 2.0, 3.0]
    >>> fusion_rules.available()
    ['majority', 'mean', 'staple']

"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np
from numpy.typing import ArrayLike, NDArray

from labelwise.errors import ConfigError, DataError
from labelwise.registry import Registry

__all__ = [
    "FusionResult",
    "FusionRule",
    "StapleResult",
    "TiePolicy",
    "fuse",
    "fusion_rules",
    "majority_vote",
    "soft_mean",
    "staple",
    "strict_majority",
]

TiePolicy = Literal["lowest", "highest", "undecided"]


@dataclass(frozen=True)
class FusionResult:
    """What a registered fusion rule returns.

    Attributes:
        label: ``(*spatial)`` int16 fused class map (``undecided_value`` where a tie is left undecided).
        probabilities: ``(C, *spatial)`` float32 per-class probabilities summing to 1 per voxel, or None when the
            rule gives none (majority vote).
        undecided: ``(*spatial)`` bool, True where the rule could not decide (a tie), whatever the tie policy
            then put in ``label``.
        sensitivity: ``(R,)`` float64 per-rater sensitivity (STAPLE only; NaN for absent raters), else None.
        specificity: ``(R,)`` float64 per-rater specificity (STAPLE only; NaN for absent raters), else None.

    """

    label: NDArray[np.int16]
    probabilities: NDArray[np.float32] | None
    undecided: NDArray[np.bool_]
    sensitivity: NDArray[np.float64] | None = None
    specificity: NDArray[np.float64] | None = None


@dataclass(frozen=True)
class StapleResult:
    """STAPLE's estimate of the hidden truth and of each rater's performance.

    Attributes:
        label: ``(*spatial)`` int16 fused class map (posterior > 0.5 for binary; the filter's vote for
            multi-label); undecided voxels follow the tie policy.
        probabilities: ``(C, *spatial)`` float32 posterior class probabilities.
        undecided: ``(*spatial)`` bool, voxels STAPLE left undecided (binary: posterior exactly 0.5).
        sensitivity: ``(R,)`` float64. Binary: STAPLE's p_r = P(rater says 1 | truth 1). Multi-label: the
            prior-weighted mean over foreground classes c of P(rater says c | truth c). NaN for absent raters.
        specificity: ``(R,)`` float64. Binary: q_r = P(rater says 0 | truth 0). Multi-label:
            P(rater says 0 | truth 0). NaN for absent raters.
        confusion: ``(R, C, C)`` float64 rater confusion matrices ``[r, truth, said]`` = P(rater r says
            ``said`` | truth); rows sum to 1 (multi-label: the probability of the filter's own "undecided"
            decision is dropped before renormalising). NaN rows for absent raters and for classes no rater
            used in this case.

    """

    label: NDArray[np.int16]
    probabilities: NDArray[np.float32]
    undecided: NDArray[np.bool_]
    sensitivity: NDArray[np.float64]
    specificity: NDArray[np.float64]
    confusion: NDArray[np.float64]


FusionRule = Callable[..., FusionResult]
"""A registered rule: ``rule(raters, present=None, num_classes=None, tie="lowest") -> FusionResult``."""

fusion_rules: Registry[FusionRule] = Registry("fusion rule")
"""Registry of fusion rules by name (``majority``, ``mean``, ``staple``); ``fusion_rules.available()`` lists them."""


# ------------------------------------------------------------------------------------------------ validation


def _prepare(
    raters: ArrayLike, present: ArrayLike | None, num_classes: int | None
) -> tuple[NDArray[np.int64], NDArray[np.bool_], int]:
    """Validate the stack; return ``(present raters' maps (P, *spatial) int64, present (R,), num_classes)``."""
    arr = np.asarray(raters)
    if arr.ndim < 2:
        raise DataError(f"raters must be (R, *spatial) label maps, got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == np.bool_):
        if arr.size and not np.all(np.mod(arr, 1) == 0):
            raise DataError(f"rater label maps must hold integer class indices, got {arr.dtype} values")
    arr = arr.astype(np.int64, copy=False)
    r = arr.shape[0]
    pres = np.ones(r, dtype=bool) if present is None else np.asarray(present, dtype=bool).reshape(-1)
    if pres.shape != (r,):
        raise DataError(f"present must have one flag per rater ({r}), got shape {pres.shape}")
    if not pres.any():
        raise DataError("no rater is present: nothing to fuse (an unlabelled case?)")
    used = arr[pres]
    if used.size and int(used.min()) < 0:
        raise DataError(f"rater label maps hold a negative class index ({int(used.min())})")
    top = int(used.max()) if used.size else 0
    k = max(top + 1, 2) if num_classes is None else int(num_classes)
    if k < 2:
        raise ConfigError(f"num_classes must be >= 2, got {k}")
    if top >= k:
        raise DataError(f"rater label maps hold class {top} but num_classes is {k}")
    return used, pres, k


def _check_tie(tie: str) -> None:
    if tie not in get_args(TiePolicy):
        raise ConfigError(f"unknown tie policy {tie!r}; expected one of {get_args(TiePolicy)}")


def _vote(used: NDArray[np.int64], tie: TiePolicy, undecided_value: int) -> tuple[NDArray[np.int16], NDArray[np.bool_]]:
    """Plurality vote streamed over the classes that occur (memory O(voxels), not O(classes x voxels)).

    Returns ``(label, tied)``. Classes nobody used cannot win: every voxel has at least one vote.
    """
    spatial = used.shape[1:]
    best = np.zeros(spatial, dtype=np.int32)
    label = np.zeros(spatial, dtype=np.int16)
    tied = np.zeros(spatial, dtype=bool)
    for c in np.unique(used):  # increasing class order
        cnt = (used == c).sum(axis=0, dtype=np.int32)
        better = cnt > best
        equal = (cnt == best) & (cnt > 0)
        label[better] = c
        tied[better] = False
        tied |= equal
        if tie == "highest":
            label[equal] = c
        np.maximum(best, cnt, out=best)
    if tie == "undecided":
        label[tied] = undecided_value
    return label, tied


def _fractions(used: NDArray[np.int64], k: int) -> NDArray[np.float32]:
    """``(K, *spatial)`` float32 fraction of present raters voting each class."""
    out = np.zeros((k, *used.shape[1:]), dtype=np.float32)
    for c in np.unique(used):
        out[c] = (used == c).sum(axis=0, dtype=np.int32) / np.float32(used.shape[0])
    return out


def _decide(score: NDArray[Any], tie: TiePolicy, undecided_value: int) -> tuple[NDArray[np.int16], NDArray[np.bool_]]:
    """Arg-max over axis 0 with an explicit tie policy; returns ``(label, tied)``."""
    best = score.max(axis=0)
    is_best = score == best
    tied = is_best.sum(axis=0) > 1
    if tie == "highest":
        label = (score.shape[0] - 1 - np.argmax(is_best[::-1], axis=0)).astype(np.int16)
    else:
        label = np.argmax(is_best, axis=0).astype(np.int16)
        if tie == "undecided":
            label[tied] = undecided_value
    return label, tied


# ------------------------------------------------------------------------------------------------ rules


def majority_vote(
    raters: ArrayLike,
    present: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    tie: TiePolicy = "lowest",
    undecided_value: int = -1,
) -> NDArray[np.int16]:
    """Per-voxel plurality vote of the present raters (binary or multi-class).

    The class chosen by the most present raters wins; with two classes this is the usual majority vote. Ties
    (e.g. 1-1 with two raters, 2-2 with four) follow ``tie`` (see the module docstring).

    Args:
        raters: ``(R, *spatial)`` integer label maps, values in ``[0, num_classes)``.
        present: ``(R,)`` bool, which raters labelled this case (default: all). Absent raters do not vote.
        num_classes: Number of classes including background (default: largest label + 1, at least 2).
        tie: Tie policy: ``"lowest"``, ``"highest"`` or ``"undecided"``.
        undecided_value: Value written at tied voxels when ``tie="undecided"``.

    Returns:
        ``(*spatial)`` int16 fused label map. Empty (all-background) raters give an all-background map.

    Raises:
        DataError: bad shapes, negative or out-of-range labels, or no rater present.
        ConfigError: unknown tie policy.

    Example:
        >>> majority_vote([[0, 1, 1], [1, 0, 1]]).tolist()                    # 2 raters: 1-1 ties
        [0, 0, 1]
        >>> majority_vote([[0, 1, 1], [1, 0, 1]], tie="undecided").tolist()
        [-1, -1, 1]

    """
    _check_tie(tie)
    used, _, _ = _prepare(raters, present, num_classes)
    label, _ = _vote(used, tie, undecided_value)
    return label


def strict_majority(raters: ArrayLike, num_classes: int) -> NDArray[np.int16]:
    """Per-voxel strict majority: class c where **more than half** of the raters say c, else background (0).

    The evaluation reference ``"majority"`` (``labelwise evaluate``). It differs from :func:`majority_vote`, a
    plurality vote, with three or more classes: a class that leads without an absolute majority (2 of 5 votes)
    wins the plurality vote but gives background here. On binary maps the two rules agree (ties go to
    background under both with the default ``tie="lowest"``). Every rater of the stack votes (no ``present``).

    Args:
        raters: ``(R, *spatial)`` integer label maps, R >= 1.
        num_classes: Number of classes including background; labels outside ``1..num_classes-1`` never win.

    Returns:
        ``(*spatial)`` int16 label map.

    Example:
        >>> r = [[1, 2], [1, 2], [2, 2], [3, 0], [0, 1]]          # 5 raters, 2 voxels
        >>> strict_majority(r, 4).tolist(), majority_vote(r).tolist()
        ([0, 2], [1, 2])

    """
    r = np.asarray(raters)
    out = np.zeros(r.shape[1:], dtype=np.int16)
    half = r.shape[0] / 2.0
    for c in range(1, num_classes):
        out[(r == c).sum(axis=0) > half] = c
    return out


def soft_mean(
    raters: ArrayLike, present: ArrayLike | None = None, *, num_classes: int | None = None
) -> NDArray[np.float32]:
    """Fraction of present raters voting each class, per voxel.

    Args:
        raters: ``(R, *spatial)`` integer label maps.
        present: ``(R,)`` bool, which raters labelled this case (default: all).
        num_classes: Number of classes including background (default: largest label + 1, at least 2).

    Returns:
        ``(C, *spatial)`` float32 in [0, 1], summing to 1 over classes at every voxel (the mean of the present
        raters' one-hot maps).

    Example:
        >>> soft_mean([[0, 2], [1, 2]], num_classes=3).tolist()
        [[0.5, 0.0], [0.5, 0.0], [0.0, 1.0]]

    """
    used, _, k = _prepare(raters, present, num_classes)
    return _fractions(used, k)


def _sitk() -> Any:
    """SimpleITK, imported on first use (it has no type hints)."""
    import SimpleITK

    return SimpleITK


def _sitk_image(arr: NDArray[Any]) -> Any:
    return _sitk().GetImageFromArray(np.ascontiguousarray(arr))


def staple(
    raters: ArrayLike,
    present: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    tie: TiePolicy = "lowest",
    undecided_value: int = -1,
    max_iterations: int = 100,
) -> StapleResult:
    """STAPLE fusion with per-rater performance, through SimpleITK.

    Binary maps (``num_classes == 2``) use ``STAPLEImageFilter`` (posterior foreground probability, per-rater
    sensitivity p and specificity q). More classes use ``MultiLabelSTAPLEImageFilter`` (per-rater confusion
    matrices); its posterior class probabilities are computed here from the estimated confusion matrices and the
    label frequencies as priors (the filter's default priors). Absent raters are left out of the estimate and get
    NaN performance.

    Args:
        raters: ``(R, *spatial)`` integer label maps (2D or 3D).
        present: ``(R,)`` bool, which raters labelled this case (default: all).
        num_classes: Number of classes including background (default: largest label + 1, at least 2).
        tie: Policy for undecided voxels (binary: posterior exactly 0.5; multi-label: the filter's undecided
            voxels, where "lowest"/"highest" pick among the classes of maximal posterior).
        undecided_value: Value for undecided voxels when ``tie="undecided"``.
        max_iterations: EM iteration cap.

    Returns:
        A :class:`StapleResult`. With a single present rater the truth is that rater's map, its sensitivity and
        specificity are 1 (nothing to disagree with). All-empty raters give an empty map with NaN sensitivity
        (no foreground to detect) and specificity 1.

    Example:
        >>> import numpy as np
        >>> r = np.zeros((3, 8, 8), dtype=np.int16); r[:, 2:6, 2:6] = 1; r[2, 2:6, 6] = 1
        >>> res = staple(r)
        >>> int(res.label.sum()), res.sensitivity.round(2).tolist()
        (16, [1.0, 1.0, 1.0])

    """
    sitk = _sitk()
    _check_tie(tie)
    used, pres, k = _prepare(raters, present, num_classes)
    nr, npres = pres.shape[0], used.shape[0]
    spatial = used.shape[1:]
    sens = np.full(nr, np.nan)
    spec = np.full(nr, np.nan)
    conf = np.full((nr, k, k), np.nan)
    if npres == 1 or (used == used[0]).all():
        # Unanimous raters: STAPLE's EM degenerates (0/0); the answer is the common map with perfect raters.
        probs = _fractions(used[:1], k)
        label = used[0].astype(np.int16)
        sens[pres] = 1.0 if used[0].any() else np.nan
        spec[pres] = 1.0
        conf[pres] = np.eye(k)
        return StapleResult(label, probs, np.zeros(spatial, dtype=bool), sens, spec, conf)
    # STAPLE treats voxels independently, so every map is passed flattened as a 1 x N image (any spatial rank).
    if k == 2:
        images = [_sitk_image(m.reshape(1, -1).astype(np.uint8)) for m in used]
        f = sitk.STAPLEImageFilter()
        f.SetForegroundValue(1.0)
        f.SetMaximumIterations(int(max_iterations))
        fg = np.asarray(sitk.GetArrayFromImage(f.Execute(images)), dtype=np.float64).reshape(spatial)
        fg = np.clip(np.nan_to_num(fg, nan=0.5), 0.0, 1.0)
        probs = np.stack([1.0 - fg, fg]).astype(np.float32)
        sens[pres] = np.asarray(f.GetSensitivity(), dtype=np.float64)
        spec[pres] = np.asarray(f.GetSpecificity(), dtype=np.float64)
        p_r, q_r = sens[pres], spec[pres]
        conf[pres] = np.stack([np.stack([q_r, 1 - q_r], -1), np.stack([1 - p_r, p_r], -1)], axis=1)
        label, tied = _decide(probs.astype(np.float64), tie, undecided_value)
        return StapleResult(label, probs, tied, sens, spec, conf)
    # Classes nobody used are dropped before the filter (its cost grows with the number of labels) and get
    # posterior 0; background is always kept so that specificity is defined.
    cls = np.union1d(np.unique(used), [0])
    n = int(cls.size)
    compact = np.searchsorted(cls, used)
    images = [_sitk_image(m.reshape(1, -1).astype(np.uint8 if n <= 255 else np.uint16)) for m in compact]
    und = n  # the filter's own undecided label: one past the last class
    f2 = sitk.MultiLabelSTAPLEImageFilter()
    f2.SetLabelForUndecidedPixels(und)
    f2.SetMaximumNumberOfIterations(int(max_iterations))
    out = np.asarray(sitk.GetArrayFromImage(f2.Execute(images)), dtype=np.int64).reshape(spatial)
    prior = np.bincount(compact.reshape(-1), minlength=n)[:n].astype(np.float64)
    prior = prior / prior.sum()
    log_post = np.empty((n, *spatial), dtype=np.float32)
    log_post[:] = np.log(np.maximum(prior, 1e-30)).astype(np.float32)[(slice(None),) + (None,) * len(spatial)]
    for i, r_idx in enumerate(np.flatnonzero(pres)):
        # Flattened (n + 1) x n matrix: row = the rater's decision (incl. undecided), column = true class.
        m = np.asarray(f2.GetConfusionMatrix(i), dtype=np.float64).reshape(n + 1, n)
        said_given_truth = m[:n].T  # [truth, said]
        said_given_truth = said_given_truth / np.maximum(said_given_truth.sum(axis=1, keepdims=True), 1e-300)
        conf[r_idx, cls, :] = 0.0
        conf[r_idx][np.ix_(cls, cls)] = said_given_truth
        log_theta = np.log(np.maximum(said_given_truth, 1e-30)).astype(np.float32)  # (n, n)
        log_post += log_theta[:, compact[i]]
        fg_prior = prior[1:]
        recall = np.diag(said_given_truth)[1:]
        sens[r_idx] = float((fg_prior * recall).sum() / fg_prior.sum()) if fg_prior.sum() > 0 else np.nan
        spec[r_idx] = float(said_given_truth[0, 0])
    log_post -= log_post.max(axis=0, keepdims=True)
    np.exp(log_post, out=log_post)
    log_post /= log_post.sum(axis=0, keepdims=True)
    probs = np.zeros((k, *spatial), dtype=np.float32)
    probs[cls] = log_post
    tied = out == und
    label = cls[np.minimum(out, n - 1)].astype(np.int16)
    if tied.any():
        pick, _ = _decide(log_post[:, tied], "highest" if tie == "highest" else "lowest", undecided_value)
        label[tied] = undecided_value if tie == "undecided" else cls[pick]
    return StapleResult(label, probs, tied, sens, spec, conf)


# ------------------------------------------------------------------------------------------------ registry


@fusion_rules.register("majority")
def _majority_rule(
    raters: ArrayLike, present: ArrayLike | None = None, num_classes: int | None = None, tie: TiePolicy = "lowest"
) -> FusionResult:
    used, _, _ = _prepare(raters, present, num_classes)
    _check_tie(tie)
    label, tied = _vote(used, tie, -1)
    return FusionResult(label=label, probabilities=None, undecided=tied)


@fusion_rules.register("mean")
def _mean_rule(
    raters: ArrayLike, present: ArrayLike | None = None, num_classes: int | None = None, tie: TiePolicy = "lowest"
) -> FusionResult:
    _check_tie(tie)
    used, _, k = _prepare(raters, present, num_classes)
    label, tied = _vote(used, tie, -1)  # the arg-max of the soft mean, with the same tie policy
    return FusionResult(label=label, probabilities=_fractions(used, k), undecided=tied)


@fusion_rules.register("staple")
def _staple_rule(
    raters: ArrayLike, present: ArrayLike | None = None, num_classes: int | None = None, tie: TiePolicy = "lowest"
) -> FusionResult:
    res = staple(raters, present, num_classes=num_classes, tie=tie)
    return FusionResult(res.label, res.probabilities, res.undecided, res.sensitivity, res.specificity)


def fuse(
    method: str,
    raters: ArrayLike,
    present: ArrayLike | None = None,
    *,
    num_classes: int | None = None,
    tie: TiePolicy = "lowest",
) -> FusionResult:
    """Fuse with the rule registered as ``method`` (see ``fusion_rules.available()``).

    Args:
        method: Registered rule name, e.g. ``"majority"``, ``"mean"`` or ``"staple"``.
        raters: ``(R, *spatial)`` integer label maps.
        present: ``(R,)`` bool, which raters labelled this case (default: all).
        num_classes: Number of classes including background.
        tie: Tie policy; with ``"undecided"`` the label holds -1 at undecided voxels.

    Returns:
        The rule's :class:`FusionResult`.

    Raises:
        ConfigError: unknown method.

    """
    return fusion_rules.get(method)(raters, present, num_classes=num_classes, tie=tie)
