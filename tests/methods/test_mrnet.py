"""MRNet through the engine and the CLI: R = 7 with missing raters, rater weightings, bad input, loss decreases."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.methods.multirater_data import multirater_discs
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.engine.planner import Plan
from labelwise.errors import ConfigError, DataError
from labelwise.methods import get_method, load_method_config, load_run
from labelwise.methods.mrnet import MRNetConfig, MRNetTask
from labelwise.models.mrnet import MRNet

R = 7


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("mrnet")
    multirater_discs(root / "ds", raters=R)
    res = _cli(
        "train",
        "mrnet",
        "--data",
        str(root / "ds"),
        "--out",
        str(root / "run"),
        "--preset",
        "smoke",
        "--set",
        "train.progress=false",
    )
    assert res.exit_code == 0, res.output
    return root / "ds", root / "run"


def test_cli_train_and_predict_with_rater_weights(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = trained
    assert (run / "raters.json").is_file()
    weights = ",".join(["0.5", "0.5"] + ["0"] * (R - 2))
    res = _cli(
        "predict",
        "--run",
        str(run),
        "--data",
        str(ds),
        "--out",
        str(tmp_path / "p"),
        "--split",
        "test",
        "--rater-weights",
        weights,
    )
    assert res.exit_code == 0, res.output
    assert (tmp_path / "p" / "case_test_raters.nii.gz").is_file()
    assert (tmp_path / "p" / "case_test_probs.nii.gz").is_file()


@pytest.mark.parametrize("weights", ["0.5,0.5", ",".join(["0.2"] * R), "x,y"])
def test_cli_rejects_bad_rater_weights(trained: tuple[Path, Path], tmp_path: Path, weights: str) -> None:
    ds, run = trained
    res = _cli(
        "predict", "--run", str(run), "--data", str(ds), "--out", str(tmp_path / "p"), "--rater-weights", weights
    )
    assert res.exit_code != 0
    assert isinstance(res.exception, ConfigError)


def test_predictor_outputs_weightings_and_reload(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    ds = Dataset(ds_path)
    case = ds["case_test"]
    _, _, pred = load_run(run, "cpu")
    uniform = pred.predict(case)
    assert uniform.probs.shape == (2, 16, 16)
    np.testing.assert_allclose(uniform.probs.sum(0), 1.0, atol=1e-5)
    assert uniform.raters is not None and uniform.raters.shape == (R, 16, 16)
    assert uniform.rater_probs is not None and uniform.rater_probs.shape == (R, 2, 16, 16)
    assert uniform.uncertainty is not None and uniform.uncertainty.shape == (16, 16)
    one = pred.predict(case, rater_weights=[1.0] + [0.0] * (R - 1))
    assert not np.allclose(one.probs, uniform.probs)  # the condition matters
    _, _, again = load_run(run, "cpu")
    np.testing.assert_array_equal(again.predict(case).probs, uniform.probs)
    with pytest.raises(ConfigError, match="sum to 1"):
        pred.predict(case, rater_weights=[0.5] * R)


def test_an_option_mrnet_does_not_take_is_one_config_error(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    case = Dataset(ds_path)["case_test"]
    _, _, pred = load_run(run, "cpu")
    with pytest.raises(
        ConfigError, match=r"^method 'mrnet' takes no prediction option 'samples'; it takes: rater_weights$"
    ):
        pred.predict(case, samples=4)


def test_rater_weights_are_validated_once_by_options(trained: tuple[Path, Path]) -> None:
    _, run = trained
    _, _, pred = load_run(run, "cpu")
    with pytest.raises(ConfigError, match=f"{R} raters"):
        pred.options(rater_weights="0.5,0.5")
    with pytest.raises(ConfigError, match="comma-separated"):
        pred.options(rater_weights="x,y")
    with pytest.raises(ConfigError, match="sum to 1"):
        pred.options(rater_weights=[0.2] * R)
    opts = pred.options(rater_weights=",".join(["0.5", "0.5"] + ["0"] * (R - 2)))
    assert opts.rater_weights == (0.5, 0.5) + (0.0,) * (R - 2)
    assert pred.options().rater_weights is None  # the config's weighting (uniform) at prediction


def test_resume_rewrites_no_run_artifact_and_meta_records_the_raters(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    names = ("raters.json", "plan.json", "weights.safetensors")
    stamps = {n: (run / n).stat().st_mtime_ns for n in names}
    method = get_method("mrnet")
    method.fit(Dataset(ds_path), load_method_config(method, run / "config.yaml"), run)
    assert stamps == {n: (run / n).stat().st_mtime_ns for n in names}
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["rater_ids"] == [f"r{j}" for j in range(R)]
    assert meta["train_cases"] == 5 and meta["val_cases"] == 1  # the unrated case counts, as before


def test_unknown_rater_at_prediction_is_an_error(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    case = Dataset(ds_path)["case_test"]
    _, _, pred = load_run(run, "cpu")
    from dataclasses import replace

    bad = replace(case, rater_ids=("r0", "someone_else", *case.rater_ids[2:]))
    with pytest.raises(ConfigError, match="someone_else"):
        pred.predict(bad)


def test_unrated_training_case_is_skipped_with_a_warning(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    from labelwise.methods.multirater import training_arrays

    ds = multirater_discs(tmp_path / "ds", raters=3)
    plan = Plan(2, 2, 1, ("background", "disc"), (16, 16), (1.0, 1.0), (16, 16), (), False)
    from labelwise.engine.planner import ChannelNorm

    plan = Plan(2, 2, 1, ("background", "disc"), (16, 16), (1.0, 1.0), (16, 16), (ChannelNorm(),), False)
    with caplog.at_level(logging.WARNING):
        arrays, ids = training_arrays(ds, plan, ds.rater_ids)
    assert "case_unrated" in caplog.text and "case_unrated" not in ids
    assert len(arrays) == 4
    missing = arrays[ids.index("case1")]["raters"]
    assert (missing[0] == -1).all() and (missing[1:] >= 0).all()


def test_no_rated_training_case_is_a_data_error(tmp_path: Path) -> None:
    from labelwise.data import DatasetWriter
    from labelwise.engine.planner import ChannelNorm
    from labelwise.methods.multirater import training_arrays

    w = DatasetWriter(tmp_path / "ds", "x", 2, ("background", "fg"), ["a", "b"])
    w.add_case("c0", np.zeros((1, 8, 8), np.float32), {}, split="train")
    w.finish()
    plan = Plan(2, 2, 1, ("background", "fg"), (8, 8), (1.0, 1.0), (8, 8), (ChannelNorm(),), False)
    with pytest.raises(DataError, match="no training case has a rater"):
        training_arrays(Dataset(tmp_path / "ds"), plan, ("a", "b"))


class _Ctx:
    def __init__(self, net: torch.nn.Module) -> None:
        self.net = net

    def module(self, name: str) -> torch.nn.Module:
        return self.net


def test_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    net = MRNet(2, 1, 2, 3, channels=(4, 8))
    plan = Plan(2, 2, 1, ("background", "fg"), (16, 16), (1.0, 1.0), (16, 16), (), False)
    task = MRNetTask(net, plan, MRNetConfig(channels=(4, 8)), ("a", "b", "c"))
    x = torch.randn(2, 1, 16, 16)
    raters = torch.stack([(x[:, 0] > t).long() for t in (0.3, 0.5, 0.7)], 1)
    raters[1, 2] = -1  # missing rater
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        loss = task.training_step({"image": x, "raters": raters}, _Ctx(net))["loss"]  # type: ignore[arg-type]
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert np.isfinite(losses).all()
    assert losses[-1] < 0.8 * losses[0]
