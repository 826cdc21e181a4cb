"""Trainer behaviour: accumulation equivalence, best-epoch selection, early stopping, manual optimisation, logs."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from labelwise.data import Case
from labelwise.engine import StepContext, TrainConfig, Trainer, TrainTask, read_csv_log
from labelwise.engine.checkpoint import read_safetensors


class Source:
    def sample(self, epoch: int, index: int, rng: np.random.Generator) -> dict[str, Any]:
        x = rng.normal(size=(3,)).astype(np.float32)
        return {"x": x, "y": np.float32(x @ np.array([1.0, -2.0, 0.5], np.float32))}


class Regression(TrainTask):
    def __init__(self, val_scores: list[float] | None = None) -> None:
        torch.manual_seed(0)
        self.modules = {"lin": torch.nn.Linear(3, 1)}
        self.val_scores = val_scores or []
        self.validated = 0

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        pred = ctx.module("lin")(batch["x"])[:, 0]
        return ((pred - batch["y"]) ** 2).mean()

    def validation_step(self, case: Case, ctx: StepContext) -> dict[str, float]:
        score = self.val_scores[min(self.validated, len(self.val_scores) - 1)]
        self.validated += 1
        return {"dice": score}


def _val_case(split: str = "val") -> Case:
    return Case("v", np.zeros((1, 4, 4), np.float32), (1.0, 1.0), np.eye(4), np.zeros((0, 4, 4), np.int16), split=split)


def _cfg(**kw: Any) -> TrainConfig:
    base = {"epochs": 2, "steps_per_epoch": 3, "batch_size": 4, "lr": 0.05, "progress": False, "amp": False}
    return TrainConfig(**{**base, **kw})


def test_gradient_accumulation_equals_big_batch(tmp_path: Path) -> None:
    big = Regression()
    Trainer(big, _cfg(batch_size=4), tmp_path / "a", Source()).fit()
    acc = Regression()
    Trainer(acc, _cfg(batch_size=2, grad_accum=2), tmp_path / "b", Source()).fit()
    for p, q in zip(big.modules["lin"].parameters(), acc.modules["lin"].parameters(), strict=True):
        torch.testing.assert_close(p, q, rtol=1e-5, atol=1e-6)
    la = [float(r["loss"]) for r in read_csv_log(tmp_path / "a" / "logs" / "train.csv")]
    lb = [float(r["loss"]) for r in read_csv_log(tmp_path / "b" / "logs" / "train.csv")]
    np.testing.assert_allclose(la, lb, rtol=1e-5)


def test_best_epoch_weights_and_early_stopping(tmp_path: Path) -> None:
    task = Regression(val_scores=[0.5, 0.9, 0.7, 0.6, 0.95])
    res = Trainer(task, _cfg(epochs=5, patience=2), tmp_path, Source(), [_val_case()]).fit()
    assert res.best_epoch == 1 and res.best_metrics == {"dice": 0.9}
    assert res.stopped_early and res.last_epoch == 3  # epochs 2 and 3 did not improve
    _, meta = read_safetensors(tmp_path / "weights.safetensors")
    assert '"epoch": 1' in meta["labelwise"]
    val = read_csv_log(tmp_path / "logs" / "val.csv")
    assert [float(r["dice"]) for r in val] == [0.5, 0.9, 0.7, 0.6]
    assert any(p.name.startswith("events.out.tfevents") for p in (tmp_path / "logs").iterdir())
    # running fit again on a finished run does nothing
    again = Trainer(Regression(val_scores=[1.0]), _cfg(epochs=5, patience=2), tmp_path, Source(), [_val_case()]).fit()
    assert again.best_epoch == 1


def test_validation_refuses_test_cases(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="'val' split only"):
        Trainer(Regression(), _cfg(), tmp_path, Source(), [_val_case("test")])


class TwoOptimisers(Regression):
    """GAN-style: two modules, two optimisers, stepped by the task itself."""

    manual_optimization = True

    def __init__(self) -> None:
        super().__init__()
        self.modules["other"] = torch.nn.Linear(3, 1)

    def configure_optimizers(self, cfg: TrainConfig) -> dict[str, torch.optim.Optimizer]:
        return {
            "a": torch.optim.SGD(self.modules["lin"].parameters(), lr=cfg.lr),
            "b": torch.optim.SGD(self.modules["other"].parameters(), lr=cfg.lr),
        }

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> dict[str, torch.Tensor]:
        loss_a = super().training_step(batch, ctx)
        ctx.zero_grad("a")
        ctx.backward(loss_a)
        ctx.optimizer_step("a")
        loss_b = ((ctx.module("other")(batch["x"])[:, 0] - batch["y"]) ** 2).mean()
        ctx.zero_grad("b")
        ctx.backward(loss_b)
        ctx.optimizer_step("b")
        return {"loss": loss_a.detach(), "loss_b": loss_b.detach()}


def test_manual_optimisation_with_two_optimisers(tmp_path: Path) -> None:
    task = TwoOptimisers()
    before = task.modules["other"].weight.detach().clone()
    Trainer(task, _cfg(epochs=3), tmp_path, Source()).fit()
    assert not torch.equal(before, task.modules["other"].weight)
    rows = read_csv_log(tmp_path / "logs" / "train.csv")
    assert {"loss", "loss_b", "lr_a", "lr_b"} <= set(rows[0])
    assert float(rows[-1]["loss_b"]) < float(rows[0]["loss_b"])
    _, meta = read_safetensors(tmp_path / "checkpoint.safetensors")
    assert set(json.loads(meta["labelwise"])["optimizers"]) == {"a", "b"}


def test_non_finite_loss_stops_with_one_clear_error(tmp_path: Path) -> None:
    from labelwise.errors import ConfigError

    with pytest.raises(ConfigError, match=r"loss became (nan|inf) at step \d+.*lower train.lr"):
        Trainer(Regression(), _cfg(lr=1e30, epochs=3), tmp_path, Source()).fit()
    assert not (tmp_path / "weights.safetensors").exists()
