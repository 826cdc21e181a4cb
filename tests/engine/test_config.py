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
        ("target=rater", "needs rater"),
        ("novalue", "key=value"),
    ],
)
def test_bad_values_are_config_errors(override: str, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_config(SupervisedConfig, overrides=[override])


def test_roundtrip_through_dict() -> None:
    cfg = load_config(SupervisedConfig, overrides=["train.epochs=2", "rater=r1", "target=rater"])
    again = load_config(SupervisedConfig, overrides=[])
    assert again != cfg
    from labelwise.engine import config_from_dict

    assert config_from_dict(SupervisedConfig, config_to_dict(cfg)) == cfg
