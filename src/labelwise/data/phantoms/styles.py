"""Simulated rater styles: how each rater labels, the defaults, random crowds and their descriptions."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from labelwise.errors import ConfigError

__all__ = ["DEFAULT_RATER_STYLES", "RaterStyle", "describe_style", "random_rater_styles", "resolve_styles"]


@dataclass(frozen=True)
class RaterStyle:
    """How one simulated rater labels (all distances in mm, so styles mean the same at any spacing).

    Attributes:
        name: Rater id written to the dataset (letters, digits, ``._-``).
        bias_mm: Systematic boundary offset: > 0 over-segments (dilates), < 0 under-segments (erodes).
        jitter_mm: Amplitude (standard deviation) of smooth random boundary displacement, drawn per case.
        jitter_scale_mm: Correlation length of that displacement field.
        shift_mm: Length of a systematic shift; its direction is drawn once per rater and kept for all cases.
        miss_radius_mm: Components whose equivalent radius (of a disc/ball of the same area/volume) is below
            this are each missed with probability ``miss_prob``.
        miss_prob: Probability of missing each such small component.

    """

    name: str
    bias_mm: float = 0.0
    jitter_mm: float = 0.0
    jitter_scale_mm: float = 4.0
    shift_mm: float = 0.0
    miss_radius_mm: float = 0.0
    miss_prob: float = 0.0


DEFAULT_RATER_STYLES: tuple[RaterStyle, ...] = (
    RaterStyle("precise", jitter_mm=0.5),
    RaterStyle("generous", bias_mm=1.5, jitter_mm=0.5),
    RaterStyle("tight", bias_mm=-1.5, jitter_mm=0.5),
    RaterStyle("sloppy", jitter_mm=2.0, jitter_scale_mm=6.0),
    RaterStyle("hasty", jitter_mm=0.5, miss_radius_mm=4.0, miss_prob=0.8),
    RaterStyle("shifted", jitter_mm=0.5, shift_mm=2.0),
)
"""The styles ``raters=R`` cycles through, in order (see the module docstring)."""


def random_rater_styles(n: int, seed: int = 0) -> tuple[RaterStyle, ...]:
    """Draw ``n`` varied rater styles (ids ``rater01``, ``rater02``, ...) for crowds larger than the defaults.

    Each style gets ``bias_mm ~ U(-2, 2)``, ``jitter_mm ~ U(0.3, 2)`` with ``jitter_scale_mm ~ U(3, 8)``; with
    probability 0.3 a shift of ``U(1, 3)`` mm; with probability 0.3 misses components of radius < 4 mm with
    ``miss_prob ~ U(0.5, 1)``. The drawn values are what ``phantoms.json`` records.

    Example:
        >>> [s.name for s in random_rater_styles(3)]
        ['rater01', 'rater02', 'rater03']

    """
    if n < 0:
        raise ConfigError(f"n must be >= 0, got {n}")
    rng = np.random.default_rng(seed)
    styles = []
    for i in range(n):
        u = rng.uniform(size=8)
        styles.append(
            RaterStyle(
                name=f"rater{i + 1:02d}",
                bias_mm=round(float(-2 + 4 * u[0]), 3),
                jitter_mm=round(float(0.3 + 1.7 * u[1]), 3),
                jitter_scale_mm=round(float(3 + 5 * u[2]), 3),
                shift_mm=round(float(1 + 2 * u[4]), 3) if u[3] < 0.3 else 0.0,
                miss_radius_mm=4.0 if u[5] < 0.3 else 0.0,
                miss_prob=round(float(0.5 + 0.5 * u[6]), 3) if u[5] < 0.3 else 0.0,
            )
        )
    return tuple(styles)


def resolve_styles(raters: int | Sequence[RaterStyle]) -> tuple[RaterStyle, ...]:
    """Turn ``raters`` (a count or explicit styles) into styles with unique names."""
    if isinstance(raters, int):
        if raters < 0:
            raise ConfigError(f"raters must be >= 0, got {raters}")
        n = len(DEFAULT_RATER_STYLES)
        styles = [
            DEFAULT_RATER_STYLES[i % n]
            if i < n
            else replace(DEFAULT_RATER_STYLES[i % n], name=f"{DEFAULT_RATER_STYLES[i % n].name}{i // n + 1}")
            for i in range(raters)
        ]
    else:
        styles = list(raters)
    names = [s.name for s in styles]
    if len(set(names)) != len(names):
        raise ConfigError(f"rater style names must be unique, got {names}")
    for s in styles:
        if not s.name or not all(ch.isalnum() or ch in "._-" for ch in s.name):
            raise ConfigError(f"rater name {s.name!r} must use letters, digits, '.', '_' or '-' only")
        if not 0.0 <= s.miss_prob <= 1.0:
            raise ConfigError(f"rater {s.name}: miss_prob must be in [0, 1], got {s.miss_prob}")
    return tuple(styles)


def describe_style(s: RaterStyle) -> str:
    """One-line description of what a style does (the dataset description lists every rater with it)."""
    parts = []
    if s.bias_mm:
        parts.append(f"{'over' if s.bias_mm > 0 else 'under'}-segments by {abs(s.bias_mm):g} mm")
    if s.jitter_mm:
        parts.append(f"boundary jitter {s.jitter_mm:g} mm (scale {s.jitter_scale_mm:g} mm)")
    if s.shift_mm:
        parts.append(f"shifted by {s.shift_mm:g} mm")
    if s.miss_prob and s.miss_radius_mm:
        parts.append(f"misses components of radius < {s.miss_radius_mm:g} mm with p={s.miss_prob:g}")
    return ", ".join(parts) or "exact"
