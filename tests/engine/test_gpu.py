"""CUDA checks (``pytest -m gpu``; skipped without a CUDA device): AMP training and GPU prediction.

CI has no GPU: these run where one is lent (see README, Tests).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from tests.engine.test_trainer import Regression, Source, _cfg
from tests.engine.tinydata import disc_dataset

from labelwise.engine import StepContext, Trainer
from labelwise.io import read_prediction

pytestmark = pytest.mark.gpu


class AutocastProbe(Regression):
    """Records the dtype the forward pass ran in."""

    dtypes: list[torch.dtype]

    def training_step(self, batch: dict[str, Any], ctx: StepContext) -> torch.Tensor:
        out = ctx.module("lin")(batch["x"])
        self.dtypes = [*getattr(self, "dtypes", []), out.dtype]
        return ((out[:, 0].float() - batch["y"]) ** 2).mean()


def test_amp_forward_backward_on_cuda(tmp_path: Path) -> None:
    task = AutocastProbe()
    before = [p.detach().clone() for p in task.modules["lin"].parameters()]
    res = Trainer(task, _cfg(amp=True), tmp_path, Source(), device=torch.device("cuda")).fit()
    assert res.steps == 6
    assert set(task.dtypes) == {torch.bfloat16}  # autocast was on
    after = list(task.modules["lin"].parameters())
    assert all(p.is_cuda and torch.isfinite(p).all() for p in after)
    assert any(not torch.equal(a.cpu(), b) for a, b in zip(after, before, strict=True))


def test_supervised_trains_and_predicts_on_cuda_like_on_cpu(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli.main import app

    data = disc_dataset(tmp_path / "data", n_train=3, n_val=1, n_test=2, size=16)
    smoke = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]
    run = tmp_path / "run"
    res = CliRunner().invoke(app, ["train", "supervised", "--data", str(data.root), "--out", str(run), *smoke])
    assert res.exit_code == 0, res.output
    preds = {}
    for device in ("cuda", "cpu"):
        out = tmp_path / f"pred_{device}"
        args = ["predict", "--run", str(run), "--data", str(data.root), "--out", str(out), "--device", device]
        res = CliRunner().invoke(app, args)
        assert res.exit_code == 0, res.output
        preds[device] = read_prediction(out, "case04", 2).probs
    np.testing.assert_allclose(preds["cuda"], preds["cpu"], atol=2e-2)
