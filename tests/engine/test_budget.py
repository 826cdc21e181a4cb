"""Time budgets: measured once, fixed in the run, exact on resume, and equal to training the shortened schedule."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from tests.engine.test_trainer import Regression, Source, _cfg
from tests.engine.tinydata import disc_dataset
from typer.testing import CliRunner

from labelwise.engine import StepContext, TrainConfig, Trainer
from labelwise.engine.budget import default_budget_s, parse_duration, plan_schedule, resolve_time_budget
from labelwise.errors import ConfigError


class SlowRegression(Regression):
    """A step of at least ``delay_s`` seconds, so the budget binds whatever the machine."""

    def __init__(self, delay_s: float, stop_at: int | None = None) -> None:
        super().__init__()
        self.delay_s, self.stop_at = delay_s, stop_at

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        if self.stop_at is not None and ctx.step == self.stop_at:
            raise KeyboardInterrupt  # a killed run
        time.sleep(self.delay_s)
        return super().training_step(batch, ctx)


def _weights(task: Regression) -> list[torch.Tensor]:
    return [p.detach().clone() for p in task.modules["lin"].parameters()]


def test_budget_shortens_the_schedule_and_equals_training_that_schedule(tmp_path: Path) -> None:
    cfg = _cfg(epochs=2, steps_per_epoch=30, time_budget_s=0.5, checkpoint_every=4)
    budgeted = SlowRegression(0.02)
    res = Trainer(budgeted, cfg, tmp_path / "budget", Source()).fit()
    plan = json.loads((tmp_path / "budget" / "schedule.json").read_text())
    planned = plan["epochs"] * plan["steps_per_epoch"]
    assert plan["nominal_epochs"] == 2 and plan["nominal_steps_per_epoch"] == 30
    assert 1 <= planned < 60, plan  # 60 steps of >= 20 ms cannot fit 0.5 s
    assert res.steps == res.planned_steps == planned
    assert plan["step_seconds"] >= 0.02
    # the probe steps were rolled back: same weights as training the planned schedule with no budget
    plain = SlowRegression(0.0)
    short = dataclasses.replace(cfg, epochs=plan["epochs"], steps_per_epoch=plan["steps_per_epoch"], time_budget_s=0)
    Trainer(plain, short, tmp_path / "plain", Source()).fit()
    for a, b in zip(_weights(budgeted), _weights(plain), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_resumed_budgeted_run_keeps_its_schedule(tmp_path: Path) -> None:
    cfg = _cfg(epochs=1, steps_per_epoch=40, time_budget_s=0.4, checkpoint_every=2)
    with pytest.raises(KeyboardInterrupt):
        Trainer(SlowRegression(0.02, stop_at=5), cfg, tmp_path / "run", Source()).fit()
    first = json.loads((tmp_path / "run" / "schedule.json").read_text())
    # the resumed run is 10x faster per step: re-measuring would plan more steps; it must not
    resumed = SlowRegression(0.002)
    res = Trainer(resumed, cfg, tmp_path / "run", Source()).fit()
    assert res.steps == first["epochs"] * first["steps_per_epoch"] < 40
    assert json.loads((tmp_path / "run" / "schedule.json").read_text()) == first
    uninterrupted = SlowRegression(0.0)
    short = dataclasses.replace(cfg, steps_per_epoch=first["steps_per_epoch"], time_budget_s=0)
    Trainer(uninterrupted, short, tmp_path / "ref", Source()).fit()
    for a, b in zip(_weights(resumed), _weights(uninterrupted), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_a_budget_that_leaves_a_small_part_of_the_schedule_warns(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # 400 steps of >= 20 ms cannot fit 0.5 s: at most ~25 planned, under 10 % of the configured schedule
    cfg = _cfg(epochs=1, steps_per_epoch=400, time_budget_s=0.5)
    with caplog.at_level("WARNING", logger="labelwise.plan"):
        res = Trainer(SlowRegression(0.02), cfg, tmp_path / "starved", Source()).fit()
    assert res.steps < 40
    warned = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warned) == 1 and f"only {res.steps} of the configured 400 steps" in warned[0]
    caplog.clear()
    with caplog.at_level("WARNING", logger="labelwise.plan"):  # a plan that keeps most of the schedule: silent
        Trainer(
            SlowRegression(0.0), _cfg(epochs=1, steps_per_epoch=5, time_budget_s=60), tmp_path / "ok", Source()
        ).fit()
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


def test_no_budget_means_no_probe_and_the_full_schedule(tmp_path: Path) -> None:
    res = Trainer(Regression(), _cfg(), tmp_path, Source()).fit()
    plan = json.loads((tmp_path / "schedule.json").read_text())
    assert res.steps == 6 and plan == {
        "nominal_epochs": 2,
        "nominal_steps_per_epoch": 3,
        "time_budget_s": 0.0,
        "epochs": 2,
        "steps_per_epoch": 3,
    }


def test_plan_schedule_counts_validation_time() -> None:
    cfg = TrainConfig(epochs=10, steps_per_epoch=10, time_budget_s=100)
    assert plan_schedule(cfg, 1.0, 0.0, 0)[:2] == (10, 10)
    # each epoch validates 5 cases at 2 s: 20 s per epoch -> 5 epochs fit
    epochs, spe, seconds = plan_schedule(cfg, 1.0, 2.0, 5)
    assert (epochs, spe) == (5, 10) and seconds == pytest.approx(100)


def test_parse_duration_and_errors() -> None:
    assert parse_duration("15m") == 900 and parse_duration("1h 30m") == 5400 and parse_duration("45s") == 45
    for bad in ("", "15x", "m", "-5m", "0"):
        with pytest.raises(ConfigError):
            parse_duration(bad)


@dataclasses.dataclass(frozen=True)
class _Staged:
    train: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=30, steps_per_epoch=10))
    stage2: TrainConfig = dataclasses.field(default_factory=lambda: TrainConfig(epochs=10, steps_per_epoch=10))
    other: int = 3


def test_resolve_splits_the_budget_across_stages() -> None:
    cfg = resolve_time_budget(_Staged(), "20m", num_train_cases=10, full_schedule_asked=True, cuda=False)
    assert cfg.train.time_budget_s == pytest.approx(900) and cfg.stage2.time_budget_s == pytest.approx(300)
    auto = resolve_time_budget(_Staged(), "auto", num_train_cases=28, full_schedule_asked=False, cuda=False)
    assert auto.train.time_budget_s + auto.stage2.time_budget_s == pytest.approx(default_budget_s(28))
    for kwargs in ({"full_schedule_asked": True, "cuda": False}, {"full_schedule_asked": False, "cuda": True}):
        kept = resolve_time_budget(_Staged(), "auto", num_train_cases=28, **kwargs)
        assert kept == _Staged()
    none = resolve_time_budget(_Staged(), "none", num_train_cases=28, full_schedule_asked=False, cuda=False)
    assert none.train.time_budget_s == 0 and none.stage2.time_budget_s == 0


def test_cli_time_budget_is_planned_recorded_and_printed(tmp_path: Path) -> None:
    from labelwise.cli.main import app

    data = disc_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=0, size=16)
    out = tmp_path / "run"
    args = ["train", "supervised", "--data", str(data.root), "--out", str(out), "--time-budget", "1s"]
    args += ["--set", "model.name=unet_tiny", "--set", "train.progress=false", "--set", "tta=false"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    plan = json.loads((out / "schedule.json").read_text())
    assert plan["time_budget_s"] == pytest.approx(1.0)
    assert plan["epochs"] * plan["steps_per_epoch"] < plan["nominal_epochs"] * plan["nominal_steps_per_epoch"]
    assert "planned in a 1 s budget" in result.output
    saved = (out / "config.yaml").read_text()
    assert "time_budget_s: 1.0" in saved


def test_training_config_is_the_cli_rule_for_the_api(tmp_path: Path) -> None:
    """``auto`` budgets a CPU run unless a schedule was asked for; ``none`` keeps the configured schedule."""
    from labelwise.methods import get_method, training_config

    data = disc_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=0, size=16)
    method = get_method("supervised")
    if torch.cuda.is_available():
        pytest.skip("auto trains the full schedule on a GPU")
    auto = training_config(method, data, overrides=["train.seed=1"], time_budget="auto")
    assert auto.train.time_budget_s == pytest.approx(default_budget_s(3))
    for asked in (["train.epochs=2"], ["train.time_budget_s=1.5"], ["train.steps_per_epoch=3"]):
        cfg = training_config(method, data, overrides=asked, time_budget="auto")
        assert cfg.train.time_budget_s == pytest.approx(1.5 if "time_budget" in asked[0] else 0.0), asked
    assert training_config(method, data).train.time_budget_s == 0.0  # the API's default: "none"
    assert training_config(method, data, time_budget="2m").train.time_budget_s == pytest.approx(120.0)
