"""Networks and their registry; ``build_model(ModelSpec(...), ...)`` rebuilds any registered network."""

from __future__ import annotations

from labelwise.models.losses import dice_ce_loss, soft_dice_loss
from labelwise.models.registry import (
    MODELS,
    ModelFactory,
    ModelSpec,
    available,
    build_model,
    register_model,
    spec_divisor,
)
from labelwise.models.unet import divisor, unet, unet_tiny

__all__ = [
    "MODELS",
    "ModelFactory",
    "ModelSpec",
    "available",
    "build_model",
    "dice_ce_loss",
    "divisor",
    "register_model",
    "soft_dice_loss",
    "spec_divisor",
    "unet",
    "unet_tiny",
]
