"""Empty-mask conventions: what each metric returns when one or both masks are empty.

Libraries disagree (see ``docs/metrics.md``). Every metric takes ``empty=`` naming one row of this table; the
default is ``"labelwise"``. A custom :class:`EmptyConvention` can be passed too.

Example:
    >>> resolve_convention("nnunet").overlap_both_empty
    nan

"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

from labelwise.errors import ConfigError

__all__ = ["CONVENTIONS", "EmptyConvention", "EmptyMode", "resolve_convention"]

EmptyMode = Literal["labelwise", "flare", "nnunet", "monai", "metricsreloaded"]

_NAN = math.nan
_INF = math.inf


@dataclass(frozen=True)
class EmptyConvention:
    """Values returned for empty masks.

    Attributes:
        overlap_both_empty: Dice/IoU/volume similarity (and precision, sensitivity, specificity whose
            denominator is 0) when prediction and reference are both empty.
        overlap_target_empty: Dice/IoU when only the reference is empty (the formula gives 0).
        overlap_pred_empty: Dice/IoU when only the prediction is empty (the formula gives 0).
        distance_both_empty: HD, HD-percentile, ASSD, MASD when both are empty.
        distance_one_empty: HD, HD-percentile, ASSD, MASD when exactly one is empty.
        nsd_both_empty: normalised surface Dice when both are empty.
        nsd_one_empty: normalised surface Dice when exactly one is empty.
        mean_distance_one_empty: ASSD and MASD when exactly one is empty; None means ``distance_one_empty``
            (MONAI returns nan for HD but inf for ASSD).

    """

    overlap_both_empty: float
    overlap_target_empty: float
    overlap_pred_empty: float
    distance_both_empty: float
    distance_one_empty: float
    nsd_both_empty: float
    nsd_one_empty: float
    mean_distance_one_empty: float | None = None


CONVENTIONS: dict[str, EmptyConvention] = {
    # labelwise: a correctly empty prediction is perfect; with one empty mask no distance exists (nan, counted
    # separately in summaries) while Dice and NSD score the miss as 0.
    "labelwise": EmptyConvention(1.0, 0.0, 0.0, 0.0, _NAN, 1.0, 0.0),
    # FLARE challenge evaluation: both empty -> Dice 1 and NSD 1; one empty -> 0 (it reports no distances).
    "flare": EmptyConvention(1.0, 0.0, 0.0, 0.0, _NAN, 1.0, 0.0),
    # nnU-Net: Dice is nan when tp + fp + fn == 0 (excluded from means); it reports no distances.
    "nnunet": EmptyConvention(_NAN, 0.0, 0.0, _NAN, _NAN, _NAN, 0.0),
    # MONAI 1.6 (DiceMetric ignore_empty=True, compute_hausdorff_distance, compute_average_surface_distance,
    # compute_surface_dice), measured: empty reference -> Dice nan; both empty -> nan everywhere; one empty ->
    # HD nan, ASSD inf, NSD 0.
    "monai": EmptyConvention(_NAN, _NAN, 0.0, _NAN, _NAN, _NAN, 0.0, _INF),
    # MetricsReloaded: both empty -> Dice 1; distances 0 when both are empty and nan when one is
    # (pairwise_measures.measured_distance, MetricsReloaded PR #55, 2025); NSD both-empty taken as 1.
    "metricsreloaded": EmptyConvention(1.0, 0.0, 0.0, 0.0, _NAN, 1.0, 0.0),
}


def resolve_convention(empty: EmptyMode | EmptyConvention) -> EmptyConvention:
    """Return the :class:`EmptyConvention` for a name (or pass one through); unknown names raise ConfigError."""
    if isinstance(empty, EmptyConvention):
        return empty
    try:
        return CONVENTIONS[empty]
    except KeyError:
        raise ConfigError(f"unknown empty-mask convention {empty!r}; choose one of {sorted(CONVENTIONS)}") from None
