"""Time budgets: a wall-clock limit turned into a fixed number of optimiser steps, once, before training.

A run with ``train.time_budget_s > 0`` measures its own step time on the first start (a few probe steps whose
effects are rolled back, plus one validation case), shortens the schedule so that the steps and the validations
fit the budget, and records the planned schedule in the checkpoint and in ``schedule.json``. A resumed run reads the
recorded schedule instead of measuring again, so it stays exact. A budget never lengthens a schedule.

The budget a run gets is decided by :func:`resolve_time_budget` from ``labelwise train --time-budget``:

* a duration (``15m``, ``90s``, ``1h30m``) is split across the method's training stages in proportion to their
  nominal step counts;
* ``none`` trains the full configured schedule;
* ``auto`` (the default) trains the full schedule when one was asked for (``--preset``, a ``--config`` file or a
  ``--set`` of ``epochs``/``steps_per_epoch``) or on a GPU, and otherwise gives the run
  :func:`default_budget_s` of the training-set size: a first run on a CPU answers in minutes, not hours.
"""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, TypeVar

from labelwise.engine.config import TrainConfig
from labelwise.errors import ConfigError

__all__ = [
    "STARVED_FRACTION",
    "default_budget_s",
    "parse_duration",
    "plan_schedule",
    "resolve_time_budget",
    "starved_plan_warning",
    "train_configs",
]

C = TypeVar("C")

_UNIT_S = {"h": 3600.0, "m": 60.0, "s": 1.0}


def parse_duration(text: str) -> float:
    """Seconds in a duration such as ``15m``, ``90s``, ``1h30m``, ``0.5h`` or a bare number of seconds.

    >>> parse_duration("1h30m"), parse_duration("90"), parse_duration("2.5m")
    (5400.0, 90.0, 150.0)
    """
    s = text.strip().lower().replace(" ", "")
    if re.fullmatch(r"\d+(\.\d+)?", s):
        total = float(s)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", s)
        if not parts or "".join(n + u for n, u in parts) != s:
            raise ConfigError(f"cannot read the duration {text!r}: use e.g. 15m, 90s, 1h30m")
        total = sum(float(n) * _UNIT_S[u] for n, u in parts)
    if not math.isfinite(total) or total <= 0:
        raise ConfigError(f"the duration {text!r} must be positive")
    return total


def default_budget_s(num_train_cases: int) -> float:
    """The ``auto`` budget on a CPU: 2 min + 20 s per training case, within [5 min, 30 min].

    Small datasets need fewer steps to fit; the clamp keeps a first run on a laptop under half an hour.

    >>> default_budget_s(28), default_budget_s(3), default_budget_s(500)
    (680.0, 300.0, 1800.0)
    """
    return float(min(max(120.0 + 20.0 * num_train_cases, 300.0), 1800.0))


def train_configs(config: Any) -> dict[str, TrainConfig]:
    """The :class:`TrainConfig` fields of a method config (``train``, and ``stage2`` etc. for staged methods)."""
    return {
        f.name: getattr(config, f.name)
        for f in dataclasses.fields(config)
        if isinstance(getattr(config, f.name), TrainConfig)
    }


def resolve_time_budget(config: C, budget: str, *, num_train_cases: int, full_schedule_asked: bool, cuda: bool) -> C:
    """Set ``time_budget_s`` of every training stage of ``config`` from a ``--time-budget`` value.

    Args:
        config: A frozen method config.
        budget: ``auto``, ``none`` or a duration (see :func:`parse_duration`).
        num_train_cases: Cases in the train split (for the ``auto`` default).
        full_schedule_asked: The user asked for a schedule (preset, config file, epochs/steps override) or set
            ``time_budget_s`` directly: ``auto`` then keeps the configured values.
        cuda: Training on a GPU (``auto`` then trains the full schedule).

    Returns:
        The config with each stage's ``time_budget_s`` set (total split by nominal steps).

    """
    stages = train_configs(config)
    if not stages:
        return config
    key = budget.strip().lower()
    if key == "auto":
        if full_schedule_asked or cuda:
            return config
        total = default_budget_s(num_train_cases)
    elif key == "none":
        total = 0.0
    else:
        total = parse_duration(budget)
    nominal = {n: tc.epochs * tc.steps_per_epoch for n, tc in stages.items()}
    whole = sum(nominal.values())
    updates = {n: dataclasses.replace(tc, time_budget_s=total * nominal[n] / whole) for n, tc in stages.items()}
    return dataclasses.replace(config, **updates)  # type: ignore[type-var]


def plan_schedule(cfg: TrainConfig, step_s: float, val_case_s: float, num_val_cases: int) -> tuple[int, int, float]:
    """Epochs and steps per epoch that fit ``cfg.time_budget_s``, and the predicted wall time.

    Args:
        cfg: The stage's settings (nominal ``epochs`` x ``steps_per_epoch``, ``val_every``, the budget).
        step_s: Measured seconds per optimiser step.
        val_case_s: Measured seconds to validate one case.
        num_val_cases: Validation cases.

    Returns:
        ``(epochs, steps_per_epoch, predicted_seconds)``; never longer than the nominal schedule.

    >>> plan_schedule(TrainConfig(epochs=50, steps_per_epoch=100, time_budget_s=600), 1.0, 0.0, 0)[:2]
    (6, 100)
    >>> plan_schedule(TrainConfig(epochs=5, steps_per_epoch=100, time_budget_s=60), 1.0, 0.0, 0)[:2]
    (1, 60)
    >>> plan_schedule(TrainConfig(epochs=2, steps_per_epoch=10, time_budget_s=600), 1.0, 0.0, 0)[:2]
    (2, 10)

    """

    def seconds(epochs: int, spe: int) -> float:
        validations = math.ceil(epochs / cfg.val_every)
        return epochs * spe * step_s + validations * num_val_cases * val_case_s

    epochs, spe = cfg.epochs, cfg.steps_per_epoch
    if cfg.time_budget_s <= 0 or seconds(epochs, spe) <= cfg.time_budget_s:
        return epochs, spe, seconds(epochs, spe)
    per_epoch = seconds(1, spe)
    if per_epoch <= cfg.time_budget_s:
        epochs = max(1, min(epochs, int(cfg.time_budget_s // per_epoch)))
    else:  # not even one epoch fits: one shorter epoch
        epochs = 1
        spare = cfg.time_budget_s - num_val_cases * val_case_s
        spe = max(1, min(spe, int(spare // step_s) if step_s > 0 else spe))
    return epochs, spe, seconds(epochs, spe)


STARVED_FRACTION = 0.1
"""A plan below this fraction of the configured steps is reported as a warning (:func:`starved_plan_warning`)."""


def starved_plan_warning(planned: int, nominal: int, load: float | None, cores: int | None) -> str | None:
    """The warning for a budget that leaves a small part of the configured schedule, or None.

    The plan follows the step time measured at the start, so a busy machine plans far fewer steps (on this project's
    2-core machine, 100 instead of 2,000 for the same QUBIQ training, Dice 82 instead of 90). ``load`` is the 1-min
    load average and ``cores`` the CPU count at planning time (either None when unknown).

    >>> starved_plan_warning(2000, 5000, 0.5, 2) is None
    True
    >>> text = starved_plan_warning(100, 5000, 3.9, 2)
    >>> text.startswith("only 100 of the configured 5000 steps (2 %)"), "(load 3.9 on 2 cores)" in text
    (True, True)
    """
    if nominal <= 0 or planned >= STARVED_FRACTION * nominal:
        return None
    busy = (
        f" The machine was busy when the step time was measured (load {load:.1f} on {cores} cores):"
        if load is not None and cores and load > cores
        else ""
    )
    return (
        f"only {planned} of the configured {nominal} steps ({100 * planned / nominal:.0f} %) fit the time budget: "
        f"the model will be undertrained.{busy}{' run it' if busy else ' Run it'} when the machine is idle, give a "
        "longer --time-budget, or train a fixed schedule (--time-budget none, or --set train.epochs=...)"
    )
