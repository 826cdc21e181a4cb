"""Select pseudo-labels by certainty (agreement between predictions) or by an external quality score.

The selection signal is either the agreement certainty of :func:`labelwise.uncertainty.chunk_certainty` (one
score per chunk of slices, or per case) or any per-case score in [0, 1] supplied from outside, for instance the
predicted Dice of a label-quality estimator (Quality Sentinel). A unit is kept when its score is ``>=``
``threshold`` (0.9 by default, the FLARE22 value); NaN scores are never kept.

External scores are read from JSON (``{"case_id": score}`` or ``{"scores": {...}}``) or CSV with columns
``case`` (or ``case_id``) and ``score`` (or ``predicted_dice``).
"""

from __future__ import annotations

import csv
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from labelwise.errors import ConfigError, DataError
from labelwise.uncertainty.agreement import ChunkCertainty

__all__ = [
    "DEFAULT_THRESHOLD",
    "Decision",
    "kept_slices",
    "load_quality_scores",
    "select_by_scores",
    "select_chunks",
]

DEFAULT_THRESHOLD = 0.9


@dataclass(frozen=True)
class Decision:
    """Whether one unit (a case, or a chunk ``[start, stop)`` of its slices) becomes a pseudo-label.

    Attributes:
        case_id: The case.
        start: First slice of the chunk along the chunk axis (None: the whole case).
        stop: One past the last slice (None: the whole case).
        score: The selection signal in [0, 1] (NaN if unknown).
        signal: ``"certainty"`` (agreement between predictions) or ``"external"`` (a supplied score).
        kept: ``score >= threshold``.

    """

    case_id: str
    start: int | None
    stop: int | None
    score: float
    signal: Literal["certainty", "external"]
    kept: bool


def _check_threshold(threshold: float) -> None:
    if not 0.0 <= threshold <= 1.0 or math.isnan(threshold):
        raise ConfigError(f"threshold must lie in [0, 1], got {threshold}")


def select_chunks(
    case_id: str, chunks: Sequence[ChunkCertainty], threshold: float = DEFAULT_THRESHOLD
) -> list[Decision]:
    """Keep the chunks of ``case_id`` whose certainty is ``>= threshold``.

    Example:
        >>> [d.kept for d in select_chunks("c", [ChunkCertainty(0, 4, 0.95), ChunkCertainty(4, 8, 0.5)])]
        [True, False]

    """
    _check_threshold(threshold)
    return [
        Decision(case_id, c.start, c.stop, float(c.certainty), "certainty", bool(c.certainty >= threshold))
        for c in chunks
    ]


def select_by_scores(scores: Mapping[str, float], threshold: float = DEFAULT_THRESHOLD) -> list[Decision]:
    """Keep whole cases whose external score (e.g. a predicted Dice) is ``>= threshold``; NaN is dropped."""
    _check_threshold(threshold)
    out = []
    for case_id, s in scores.items():
        v = float(s)
        out.append(Decision(case_id, None, None, v, "external", bool(v >= threshold)))
    return out


def kept_slices(decisions: Sequence[Decision], case_id: str, depth: int) -> tuple[int, ...]:
    """Slice indices of ``case_id`` covered by kept decisions (a whole-case decision covers ``0..depth-1``)."""
    out: set[int] = set()
    for d in decisions:
        if d.case_id != case_id or not d.kept:
            continue
        lo = 0 if d.start is None else d.start
        hi = depth if d.stop is None else d.stop
        out.update(range(max(lo, 0), min(hi, depth)))
    return tuple(sorted(out))


def load_quality_scores(path: str | Path) -> dict[str, float]:
    """Read per-case scores from JSON or CSV (see the module docstring).

    Raises:
        DataError: unreadable file, unknown layout, or a value that is not a number.

    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise DataError(f"cannot read scores ({exc})", p) from None
    try:
        if p.suffix.lower() == ".csv":
            rows = list(csv.DictReader(text.splitlines()))
            if not rows:
                raise DataError("no rows", p)
            key = next((c for c in ("case", "case_id") if c in rows[0]), None)
            val = next((c for c in ("score", "predicted_dice") if c in rows[0]), None)
            if key is None or val is None:
                raise DataError(f"CSV needs columns case|case_id and score|predicted_dice, has {list(rows[0])}", p)
            return {str(r[key]): float(r[val]) for r in rows}
        data = json.loads(text)
        if isinstance(data, dict) and isinstance(data.get("scores"), dict):
            data = data["scores"]
        if not isinstance(data, dict):
            raise DataError('expected {"case_id": score, ...}', p)
        return {str(k): float(v) for k, v in data.items()}
    except (ValueError, TypeError, json.JSONDecodeError) as exc:
        raise DataError(f"malformed scores ({exc})", p) from None
