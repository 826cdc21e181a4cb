"""Config loading: defaults < preset < YAML < --set; clear errors for unknown keys and wrong types."""

from __future__ import annotations

from pathlib import Path

import pytest

from labelwise.engine import TrainConfig, config_to_dict, load_config, parse_overrides
from labelwise.errors import ConfigError
from labelwise.methods.supervised import SupervisedConfig


def test_merge_order(tmp_path: Path) -> None:
    f = tmp_path / "c.yaml"
    f.write_text("train:\n  epochs: 7\n  lr: 0.5\ntarget: mean\n")
    cfg = load_config(SupervisedConfig, f, ["train.lr=0.25"], preset={"train": {"epochs": 3, "batch_size": 5}})
    assert (cfg.train.epochs, cfg.train.lr, cfg.train.batch_size, cfg.target) == (7, 0.25, 5, "mean")
    assert cfg.train.seed == TrainConfig().seed


def test_overrides_parse_yaml_values() -> None:
    assert parse_overrides(["a.b=[1, 2]", "c=true", "d=x"]) == {"a": {"b": [1, 2]}, "c": True, "d": "x"}
    cfg = load_config(SupervisedConfig, overrides=["patch_size=[32, 32]", "model.kwargs.channels=[8,16]"])
    assert cfg.patch_size == (32, 32)
    assert cfg.model.kwargs == {"channels": [8, 16]}


@pytest.mark.parametrize(
    ("override", "match"),
    [
        ("train.epoch=3", "unknown config key"),
        ("train.epochs=three", "expected an integer"),
        ("target=vote", "not one of"),
        ("train.lr=-1", "lr must be > 0"),
        ("train.lr=.inf", "expected a finite number"),
        ("train.lr=.nan", "expected a finite number"),
        ("train.weight_decay=-0.1", "weight_decay must be a finite number >= 0"),
        ("train.warmup_steps=-1", "warmup_steps must be >= 0"),
        ("target=rater", "needs rater"),
        ("novalue", "key=value"),
    ],
)
def test_bad_values_are_config_errors(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(SupervisedConfig, overrides=[override])


def test_train_config_checks_values_built_in_code() -> None:
    """The dataclass itself refuses NaN/inf (configs built in code skip the YAML conversion)."""
    from labelwise.engine import TrainConfig

    for bad in (float("inf"), float("nan"), 0.0):
        with pytest.raises(ConfigError, match=r"train\.lr"):
            TrainConfig(lr=bad)
    with pytest.raises(ConfigError, match="grad_clip"):
        TrainConfig(grad_clip=float("nan"))


def test_resolve_device_refuses_unusable_devices() -> None:
    import torch

    from labelwise.engine.config import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    with pytest.raises(ConfigError, match="not a torch device"):
        resolve_device("gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="CUDA is not available"):
            resolve_device("cuda")
    else:
        with pytest.raises(ConfigError, match="GPU"):
            resolve_device(f"cuda:{torch.cuda.device_count()}")


def test_roundtrip_through_dict() -> None:
    cfg = load_config(SupervisedConfig, overrides=["train.epochs=2", "rater=r1", "target=rater"])
    again = load_config(SupervisedConfig, overrides=[])
    assert again != cfg
    from labelwise.engine import config_from_dict

    assert config_from_dict(SupervisedConfig, config_to_dict(cfg)) == cfg
