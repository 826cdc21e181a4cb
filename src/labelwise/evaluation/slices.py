"""Slice subsets of 3D cases for ``labelwise evaluate --slices``: the selection, its text form, each case's slices.

Every metric is per 3D case, as FLARE scores DSC and NSD: overlap counts and soft metrics pool the voxels of the
selected slices; surface metrics are computed in 3D with the case's spacing on the selected slices placed at their
true positions (the slices between them blank). The 2D per-slice mean of the k-labelled-slice protocol of
``docs/semisupervised.md`` is available under explicit names (``nsd_per_slice``, ``dice_per_slice``, ...).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from labelwise.errors import ConfigError, DataError

__all__ = ["SliceSelection", "format_slices", "parse_slice_indices", "select_slices"]


@dataclass(frozen=True)
class SliceSelection:
    """Which slices of each 3D case are scored (``labelwise evaluate --slices``).

    Overlap counts (DSC, IoU, ...) and soft metrics pool the voxels of the selected slices; surface metrics (HD,
    HD95, ASSD, MASD, NSD) are computed per 3D case with the case's spacing, the selected slices at their true
    positions and the slices between them blank. The ``*_per_slice`` metrics compute Dice and the surface
    metrics in 2D on each selected slice (in-plane spacing) and average them over the slices (nan slices left out).

    Attributes:
        mode: ``"labelled"``: the case's labelled slices (``labelled_slices``, or every slice of a fully labelled
            case); ``"indices"``: the explicit ``indices``.
        indices: Slice indices of mode ``"indices"`` (>= 0).
        exclude: Case id -> slices removed from the selection, e.g. the training slices of a run (held-out
            scoring); cases not listed lose nothing.
        axis: Spatial axis of the slices (0, 1 or 2); ``labelled`` mode and partially labelled cases need the
            last axis (2), the axis of ``labelled_slices``.
        spec: The text the selection was parsed from (recorded in ``summary.json``).

    """

    mode: Literal["labelled", "indices"] = "labelled"
    indices: tuple[int, ...] = ()
    exclude: dict[str, tuple[int, ...]] = field(default_factory=dict)
    axis: int = 2
    spec: str = "labelled"

    def __post_init__(self) -> None:
        if self.mode not in ("labelled", "indices"):
            raise ConfigError(f"slice selection mode must be 'labelled' or 'indices', got {self.mode!r}")
        if self.axis not in (0, 1, 2):
            raise ConfigError(f"slice axis must be 0, 1 or 2 (a 3D spatial axis), got {self.axis}")
        if self.mode == "indices" and not self.indices:
            raise ConfigError("slice selection 'indices' needs at least one slice index")
        if any(z < 0 for z in self.indices):
            raise ConfigError(f"slice indices must be >= 0, got {[z for z in self.indices if z < 0]}")
        if self.mode == "labelled" and self.axis != 2:
            raise ConfigError("the labelled slices lie along the last axis (2); use explicit indices on another axis")


def parse_slice_indices(text: str) -> tuple[int, ...]:
    """Sorted unique indices from ``"82-86,90"`` (comma-separated integers and inclusive ``a-b`` ranges).

    Example:
        >>> parse_slice_indices("82-84,90,83")
        (82, 83, 84, 90)

    Raises:
        ConfigError: Empty text, a non-integer, a negative index or a descending range.

    """
    out: set[int] = set()
    for part in (p.strip() for p in text.split(",")):
        if not part:
            continue
        lo_s, sep, hi_s = part.partition("-")
        try:
            lo = int(lo_s)
            hi = int(hi_s) if sep else lo
        except ValueError:
            raise ConfigError(f"slice indices must be integers or ranges like 82-86, got {part!r}") from None
        if lo < 0 or hi < lo:
            raise ConfigError(f"bad slice range {part!r} (indices >= 0, ranges ascending)")
        out.update(range(lo, hi + 1))
    if not out:
        raise ConfigError(f"no slice index in {text!r}")
    return tuple(sorted(out))


def format_slices(indices: Sequence[int]) -> str:
    """Compact text of sorted unique ``indices`` (inverse of :func:`parse_slice_indices`).

    Example:
        >>> format_slices([82, 83, 84, 90])
        '82-84,90'

    """
    zs = sorted(set(int(z) for z in indices))
    parts: list[str] = []
    i = 0
    while i < len(zs):
        j = i
        while j + 1 < len(zs) and zs[j + 1] == zs[j] + 1:
            j += 1
        parts.append(str(zs[i]) if i == j else f"{zs[i]}-{zs[j]}")
        i = j + 1
    return ",".join(parts)


def select_slices(
    selection: SliceSelection,
    case_id: str,
    shape: Sequence[int],
    labelled_slices: Sequence[int] | None,
    path: str | Path | None = None,
) -> tuple[int, ...]:
    """The slice indices of one case that ``selection`` scores.

    Args:
        selection: The selection.
        case_id: Case id (key of ``selection.exclude``).
        shape: Spatial shape ``(X, Y, Z)`` of the case.
        labelled_slices: The case's ``labelled_slices`` (last axis), or None when every slice is labelled.
        path: File named in errors (the prediction or label map).

    Returns:
        Sorted slice indices along ``selection.axis``.

    Raises:
        DataError: The case is not 3D, an index is out of range, an explicit index is not a labelled slice of a
            partially labelled case, or nothing is left after ``exclude``.

    """
    where = Path(path) if path is not None else None
    if len(shape) != 3:
        raise DataError(f"case {case_id}: a slice selection needs a 3D case, got shape {tuple(shape)}", where)
    depth = int(shape[selection.axis])
    if labelled_slices is not None and selection.axis != 2:
        raise DataError(
            f"case {case_id} is labelled on slices of the last axis only; cannot score slices along axis "
            f"{selection.axis}",
            where,
        )
    if selection.mode == "labelled":
        chosen = sorted(set(labelled_slices)) if labelled_slices is not None else list(range(depth))
    else:
        bad = [z for z in selection.indices if z >= depth]
        if bad:
            raise DataError(
                f"case {case_id}: slice index {bad[0]} out of range 0..{depth - 1} along axis {selection.axis}"
                + (f" ({len(bad)} indices out of range)" if len(bad) > 1 else ""),
                where,
            )
        chosen = list(selection.indices)
        if labelled_slices is not None:
            unlabelled = sorted(set(chosen) - set(labelled_slices))
            if unlabelled:
                raise DataError(
                    f"case {case_id}: slice(s) {format_slices(unlabelled)} carry no label "
                    f"(labelled slices: {format_slices(labelled_slices)})",
                    where,
                )
    drop = set(selection.exclude.get(case_id, ()))
    out = tuple(z for z in chosen if z not in drop)
    if not out:
        raise DataError(f"case {case_id}: no slice left to score (selection {selection.spec!r})", where)
    return out
