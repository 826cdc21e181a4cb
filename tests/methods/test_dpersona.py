"""prob-unet and dpersona through the engine and the CLI: two stages, resume, samples, per-rater maps, losses."""

from __future__ import annotations

import json
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
from labelwise.errors import ConfigError
from labelwise.io import read_prediction
from labelwise.methods import get_method, load_method_config, load_run
from labelwise.methods.dpersona import DPersonaConfig, PersonaTask, ProbUNetTask
from labelwise.models.prob_unet import PersonaHeads, ProbUNet

R = 4


def _cli(*args: str) -> Any:
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("dpersona")
    multirater_discs(root / "ds", raters=R)
    res = _cli(
        "train", "dpersona", "--data", str(root / "ds"), "--out", str(root / "run"), "--preset", "smoke",
        "--set", "train.progress=false", "--set", "stage2.progress=false",
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    return root / "ds", root / "run"


def test_two_stages_in_one_run_dir_and_resume_is_a_no_op(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    for name in ("stage1/weights.safetensors", "stage2/weights.safetensors", "weights.safetensors", "raters.json"):
        assert (run / name).is_file(), name
    from safetensors.torch import load_file

    before = load_file(run / "weights.safetensors")
    stamps = {s: (run / s / "checkpoint.safetensors").stat().st_mtime_ns for s in ("stage1", "stage2")}
    artifacts = {n: (run / n).stat().st_mtime_ns for n in ("raters.json", "plan.json")}
    method = get_method("dpersona")
    cfg = load_method_config(method, run / "config.yaml")
    method.fit(Dataset(ds_path), cfg, run)  # both stages already finished: nothing is retrained
    after = load_file(run / "weights.safetensors")
    assert before.keys() == after.keys() and all(torch.equal(before[k], after[k]) for k in before)
    assert stamps == {s: (run / s / "checkpoint.safetensors").stat().st_mtime_ns for s in ("stage1", "stage2")}
    assert artifacts == {n: (run / n).stat().st_mtime_ns for n in ("raters.json", "plan.json")}  # written once


def test_meta_records_both_stages_and_the_raters(trained: tuple[Path, Path]) -> None:
    _, run = trained
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["rater_ids"] == [f"r{j}" for j in range(R)]
    assert set(meta["stage1"]) == {"best_epoch", "val_metrics", "steps"} and "neg_ged" in meta["stage1"]["val_metrics"]
    assert "persona_dice" in meta["val_metrics"]
    assert meta["steps"] == meta["stage1"]["steps"] + 6  # stage II: 2 epochs x 3 steps (smoke)


def test_an_option_dpersona_does_not_take_is_one_config_error(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    case = Dataset(ds_path)["case_test"]
    _, _, pred = load_run(run, "cpu")
    with pytest.raises(
        ConfigError, match=r"^method 'dpersona' takes no prediction option 'rater_weights'; it takes: samples, seed$"
    ):
        pred.predict(case, rater_weights="1,0,0,0")
    with pytest.raises(ConfigError, match="samples must be >= 1"):
        pred.options(samples=0)


def test_cli_predict_samples_and_rater_maps(trained: tuple[Path, Path], tmp_path: Path) -> None:
    ds, run = trained
    res = _cli("predict", "--run", str(run), "--data", str(ds), "--out", str(tmp_path / "p"), "--samples", "3")
    assert res.exit_code == 0, res.output
    pred = read_prediction(tmp_path / "p", "case_test", 2)
    assert pred.samples is not None and pred.samples.shape == (3, 16, 16)
    assert pred.raters is not None and pred.raters.shape == (R, 16, 16)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-4)


def test_sampling_is_seeded_and_probs_are_the_sample_mean(trained: tuple[Path, Path]) -> None:
    ds_path, run = trained
    case = Dataset(ds_path)["case_test"]
    _, _, pred = load_run(run, "cpu")
    a = pred.predict(case, samples=5, seed=1)
    b = pred.predict(case, samples=5, seed=1)
    np.testing.assert_array_equal(a.probs, b.probs)
    np.testing.assert_array_equal(a.samples, b.samples)
    assert a.samples is not None and a.samples.shape == (5, 16, 16)
    with pytest.raises(ConfigError):
        pred.predict(case, samples=0)


def _plan() -> Plan:
    from labelwise.engine.planner import ChannelNorm

    return Plan(2, 2, 1, ("background", "fg"), (16, 16), (1.0, 1.0), (16, 16), (ChannelNorm(),), False)


class _Ctx:
    def __init__(self, mod: torch.nn.Module) -> None:
        self.mod = mod

    def module(self, name: str) -> torch.nn.Module:
        return self.mod


def _batch() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    raters = torch.stack([(x[:, 0] > t).long() for t in (0.2, 0.5, 0.8)], 1)
    raters[0, 1] = -1  # a missing rater
    return {"image": x, "raters": raters}


def test_stage1_and_stage2_few_steps_lower_the_loss() -> None:
    torch.manual_seed(0)
    cfg = DPersonaConfig(channels=(4, 8), bound_samples=4, head_samples=4)
    net = ProbUNet(2, 1, 2, 3, channels=(4, 8))
    task1 = ProbUNetTask(net, _plan(), cfg)
    batch = _batch()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(12):
        opt.zero_grad()
        out = task1.training_step(batch, _Ctx(net))  # type: ignore[arg-type]
        assert {"rec", "kl", "bound"} <= set(out)
        out["loss"].backward()
        opt.step()
        losses.append(float(out["loss"].detach()))
    assert losses[-1] < 0.9 * losses[0]
    heads = PersonaHeads(2, net.backbone.out_channels, 3, 6, hidden=4)
    task2 = PersonaTask(net, heads, _plan(), cfg, torch.device("cpu"))
    assert not any(p.requires_grad for p in net.parameters())  # stage I is frozen
    opt2 = torch.optim.Adam(heads.parameters(), lr=1e-2)
    l2 = []
    for _ in range(10):
        torch.manual_seed(1)  # same prior draws each step
        opt2.zero_grad()
        loss = task2.training_step(batch, _Ctx(heads))["loss"]  # type: ignore[arg-type]
        loss.backward()
        opt2.step()
        l2.append(float(loss.detach()))
    assert l2[-1] < l2[0]


def test_prob_unet_predicts_samples_without_rater_maps(tmp_path: Path) -> None:
    ds = multirater_discs(tmp_path / "ds", raters=2, n_train=2, missing=False, unrated=False)
    method = get_method("prob-unet")
    cfg = load_method_config(method, preset="smoke", overrides=["train.progress=false"])
    method.fit(ds, cfg, tmp_path / "run")
    _, _, pred = load_run(tmp_path / "run", "cpu")
    p = pred.predict(ds["case_test"], samples=2)
    assert p.raters is None and p.samples is not None and p.samples.shape == (2, 16, 16)
    with pytest.raises(ConfigError, match="method 'prob-unet' takes no prediction option 'tta'"):
        pred.predict(ds["case_test"], tta=True)
