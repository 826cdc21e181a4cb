"""Segmentation methods behind one skeleton and registry; see :mod:`labelwise.methods.base` and docs/architecture.md."""

from __future__ import annotations

from labelwise.methods.base import (
    METHODS,
    WARM_START_FRACTION,
    FitContext,
    Method,
    MethodPredictor,
    PredictOptions,
    Stage,
    TrainedRun,
    WarmStart,
    available,
    get_method,
    load_method_config,
    load_run,
    open_run,
    register_method,
    train,
    training_config,
    warm_start_schedule,
)

__all__ = [
    "METHODS",
    "WARM_START_FRACTION",
    "FitContext",
    "Method",
    "MethodPredictor",
    "PredictOptions",
    "Stage",
    "TrainedRun",
    "WarmStart",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "open_run",
    "register_method",
    "train",
    "training_config",
    "warm_start_schedule",
]
