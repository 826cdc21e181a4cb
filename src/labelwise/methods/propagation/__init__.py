"""Mask propagation along the slices of a volume: the algorithm and the trainable ``propagation`` method.

* :mod:`~labelwise.methods.propagation.algorithm`: :func:`propagate` (training-free or with a trained STCN),
  :func:`propagate_from_reference`, :func:`read_slice_annotations` — what ``labelwise propagate`` and the viewer
  call;
* :mod:`~labelwise.methods.propagation.method`: the ``propagation`` method (a CPS reference model + an STCN),
  its predictor, and :func:`load_propagation_model` (the trained STCN of a run, for :func:`propagate`).

Importing this package registers the ``propagation`` method.
"""

from __future__ import annotations

from labelwise.methods.propagation.algorithm import (
    PropagationModel,
    PropagationResult,
    check_annotations,
    choose_reference_slices,
    propagate,
    propagate_from_reference,
    read_slice_annotations,
)
from labelwise.methods.propagation.method import (
    PropagationConfig,
    PropagationMethod,
    PropagationOptions,
    PropagationPredictor,
    STCNTask,
    load_propagation_model,
    max_jump_at,
)

__all__ = [
    "PropagationConfig",
    "PropagationMethod",
    "PropagationModel",
    "PropagationOptions",
    "PropagationPredictor",
    "PropagationResult",
    "STCNTask",
    "check_annotations",
    "choose_reference_slices",
    "load_propagation_model",
    "max_jump_at",
    "propagate",
    "propagate_from_reference",
    "read_slice_annotations",
]
