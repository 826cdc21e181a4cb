"""Model registry and losses."""

from __future__ import annotations

import pytest
import torch

from labelwise.errors import ConfigError
from labelwise.models import MODELS, ModelSpec, available, build_model, dice_ce_loss, divisor, soft_dice_loss


def test_registry_lists_unet_and_tiny_variant() -> None:
    assert {"unet", "unet_tiny"} <= set(available())
    with pytest.raises(ValueError, match="twice"):
        MODELS.register("unet")(lambda **kw: None)


def test_unknown_model_and_bad_kwargs_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="unknown model"):
        build_model(ModelSpec("nope"), 2, 1, 2)
    with pytest.raises(ConfigError, match="does not accept"):
        build_model(ModelSpec("unet_tiny", {"width": 3}), 2, 1, 2)
    with pytest.raises(ConfigError, match="spatial_dims"):
        build_model(ModelSpec("unet_tiny"), 4, 1, 2)


def test_divisor() -> None:
    assert divisor((4, 8, 16)) == 4
    assert divisor((32, 64, 128, 256)) == 8


def test_soft_dice_by_hand() -> None:
    # perfect, confident prediction -> dice loss ~0; prediction of the wrong class -> ~1
    target = torch.zeros(1, 2, 2, 2)
    target[0, 1, 0, 0] = 1
    target[0, 0] = 1 - target[0, 1]
    good = (target * 40 - 20).clone()
    assert float(soft_dice_loss(good, target)) == pytest.approx(0.0, abs=1e-6)
    assert float(soft_dice_loss(-good, target)) == pytest.approx(1.0, abs=1e-5)
    # soft targets are accepted and CE is added
    soft = torch.full((1, 2, 2, 2), 0.5)
    assert float(dice_ce_loss(torch.zeros(1, 2, 2, 2), soft)) == pytest.approx(
        0.5 + torch.log(torch.tensor(2.0)).item(), abs=1e-4
    )
