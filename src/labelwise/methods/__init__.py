"""Segmentation methods behind one skeleton and registry; see :mod:`labelwise.methods.base` and docs/architecture.md."""

from __future__ import annotations

from labelwise.methods.base import (
    METHODS,
    FitContext,
    Method,
    MethodPredictor,
    PredictOptions,
    Stage,
    TrainedRun,
    available,
    get_method,
    load_method_config,
    load_run,
    open_run,
    register_method,
    train,
)

__all__ = [
    "METHODS",
    "FitContext",
    "Method",
    "MethodPredictor",
    "PredictOptions",
    "Stage",
    "TrainedRun",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "open_run",
    "register_method",
    "train",
]
