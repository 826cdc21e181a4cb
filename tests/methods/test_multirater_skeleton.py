"""mrnet, prob-unet and dpersona on the method skeleton: the checks before a run, the rater order, typed options."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.methods.multirater_data import multirater_discs

from labelwise.data import Dataset, DatasetWriter
from labelwise.engine import RunDir, config_to_dict
from labelwise.errors import ConfigError, DataError
from labelwise.methods import get_method, load_method_config
from labelwise.methods.dpersona import SamplingOptions
from labelwise.methods.mrnet import MRNetOptions
from labelwise.methods.multirater import RATERS_NAME, load_rater_ids

MULTIRATER = ("mrnet", "prob-unet", "dpersona")


@pytest.mark.parametrize("name", MULTIRATER)
def test_a_dataset_without_raters_is_refused_before_anything_is_written(name: str, tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path / "ds", "x", 2, ("background", "fg"), [])
    for i, split in enumerate(("train", "val")):
        w.add_case(f"c{i}", np.zeros((1, 8, 8), np.float32), {}, split=split)
    w.finish()
    method = get_method(name)
    cfg = load_method_config(method, preset="smoke", overrides=["train.progress=false"])
    with pytest.raises(DataError, match=f"{name} needs a dataset with raters"):
        method.fit(Dataset(tmp_path / "ds"), cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_mrnet_default_weighting_must_match_the_raters_before_anything_is_written(tmp_path: Path) -> None:
    ds = multirater_discs(tmp_path / "ds", raters=3, n_train=2, missing=False, unrated=False)
    method = get_method("mrnet")
    cfg = load_method_config(method, preset="smoke", overrides=["rater_weights=[0.5,0.5]"])
    with pytest.raises(ConfigError, match="2 entries but the model has 3 raters"):
        method.fit(ds, cfg, tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_run_started_afresh_does_not_keep_a_stale_rater_order(tmp_path: Path) -> None:
    ds = multirater_discs(tmp_path / "ds", raters=3, n_train=2, missing=False, unrated=False)
    method = get_method("mrnet")
    cfg = load_method_config(method, preset="smoke", overrides=["train.progress=false"])
    run = tmp_path / "run"
    # an untrained run of another config left its rater order behind; the folder is started again
    other = config_to_dict(load_method_config(method, preset="smoke", overrides=["foreground_p=0.5"]))
    RunDir(run).prepare("mrnet", other, ds)
    (run / RATERS_NAME).write_text(json.dumps({"rater_ids": ["x", "y"]}), encoding="utf-8")
    method.fit(ds, cfg, run)
    assert load_rater_ids(run) == ("r0", "r1", "r2")
    assert json.loads((run / "meta.json").read_text(encoding="utf-8"))["rater_ids"] == ["r0", "r1", "r2"]


def test_mrnet_options_parse_the_cli_string_and_sequences() -> None:
    assert MRNetOptions(rater_weights="0.5, 0.5,0").rater_weights == (0.5, 0.5, 0.0)  # type: ignore[arg-type]
    assert MRNetOptions(rater_weights=[1, 0]).rater_weights == (1.0, 0.0)  # type: ignore[arg-type]
    assert MRNetOptions().rater_weights is None
    with pytest.raises(ConfigError, match="comma-separated numbers"):
        MRNetOptions(rater_weights="a,b")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="sequence of numbers"):
        MRNetOptions(rater_weights=3)  # type: ignore[arg-type]
    assert MRNetOptions.names() == ("rater_weights",)


def test_sampling_options_take_integers_only() -> None:
    assert SamplingOptions(samples="3", seed=2) == SamplingOptions(samples=3, seed=2)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="samples must be >= 1"):
        SamplingOptions(samples=0)
    with pytest.raises(ConfigError, match="seed must be an integer"):
        SamplingOptions(seed="one")  # type: ignore[arg-type]
    assert SamplingOptions.names() == ("samples", "seed")
