"""Segmentation methods (one module each) behind one protocol and registry; see :mod:`labelwise.methods.base`."""

from __future__ import annotations

from labelwise.methods.base import (
    METHODS,
    Method,
    Predictor,
    available,
    get_method,
    load_method_config,
    load_run,
    register_method,
    train,
)

__all__ = [
    "METHODS",
    "Method",
    "Predictor",
    "available",
    "get_method",
    "load_method_config",
    "load_run",
    "register_method",
    "train",
]
