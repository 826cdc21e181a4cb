"""CLTN method: training without masks through the CLI, the GAN step, config checks, gating."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.methods.weakdata import make_weak_dataset
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.data.domains import DomainConfig
from labelwise.errors import ConfigError, DataError
from labelwise.methods.cltn import CLTNConfig, CLTNTask, build_cltn


def test_cltn_trains_without_masks_and_predicts_through_the_cli(tmp_path: Path) -> None:
    data = make_weak_dataset(tmp_path / "d", n_lesion=4, n_normal=3)
    nomask = tmp_path / "nomask"
    shutil.copytree(data, nomask)
    shutil.rmtree(nomask / "labels")  # no label file exists: training must not read any
    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "cltn", "--data", str(nomask), "--out", str(tmp_path / "run"), "--preset", "smoke"]
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["steps"] == 2
    log = (tmp_path / "run" / "logs" / "train.csv").read_text(encoding="utf-8").splitlines()
    assert "mask_a" in log[0] and len(log) == 3
    res = runner.invoke(
        app, ["predict", "--run", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "pred")]
    )
    assert res.exit_code == 0, res.output
    from labelwise.methods import load_run

    _, _, predictor = load_run(tmp_path / "run", "cpu")
    case = Dataset(data).load("c03")
    pred = predictor.predict(case, postprocess="none")
    assert pred.probs.shape == (2, 36, 44)
    assert float(pred.probs.min()) >= 0 and float(pred.probs.max()) <= 1
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)


def test_one_gan_step_updates_both_players_and_restores_grad_flags() -> None:
    torch.manual_seed(0)
    cfg = CLTNConfig(domain=DomainConfig(image_size=16), ngf=4, ndf=4, n_res=1)
    nets = build_cltn(3, cfg)
    task = CLTNTask(nets, cfg)
    opts = task.configure_optimizers(cfg.train)
    assert opts["gen"].defaults["betas"] == (0.5, 0.999) and opts["gen"].defaults["lr"] == 1e-4

    class Ctx:
        device = torch.device("cpu")

        def module(self, name: str) -> torch.nn.Module:
            return nets[name]

        def zero_grad(self, name: str) -> None:
            opts[name].zero_grad()

        def optimizer_step(self, name: str) -> None:
            opts[name].step()

        def backward(self, loss: torch.Tensor) -> None:
            loss.backward()

    before = {k: [p.detach().clone() for p in m.parameters()] for k, m in nets.items()}
    batch = {"a": torch.rand(1, 3, 16, 16) * 2 - 1, "b": torch.rand(1, 3, 16, 16) * 2 - 1}
    logs = task.training_step(batch, Ctx())  # type: ignore[arg-type]
    assert all(torch.isfinite(v) for v in logs.values())
    w = cfg.weights
    expected = (
        w.adv * logs["adv"]
        + w.cycle * logs["cycle"]
        + w.identity * logs["identity"]
        + w.cam * logs["cam"]
        + w.recon * logs["recon"]
    )
    torch.testing.assert_close(logs["loss"], expected, rtol=1e-4, atol=1e-3)
    for k, m in nets.items():
        changed = any(not torch.equal(p0, p) for p0, p in zip(before[k], m.parameters(), strict=True))
        assert changed, f"{k} was not updated"
        assert all(p.requires_grad for p in m.parameters())


def test_config_checks() -> None:
    assert CLTNConfig().weights.identity == 50.0 and CLTNConfig().weights.cam == 1400.0
    with pytest.raises(ConfigError, match="divisible"):
        CLTNConfig(domain=DomainConfig(image_size=30))


def test_cltn_rejects_a_dataset_without_a_lesion_class(tmp_path: Path) -> None:
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=0, n_normal=4)
    with pytest.raises(DataError, match="only one class present"):
        train("cltn", data, tmp_path / "run", preset="smoke")


def test_cltn_gating_and_the_reconstruction_branch(tmp_path: Path) -> None:
    from labelwise.methods import load_run
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=4, n_normal=3)
    train("cltn", data, tmp_path / "run", preset="smoke")
    log = (tmp_path / "run" / "logs" / "train.csv").read_text(encoding="utf-8").splitlines()
    assert "mask_a_max" in log[0] and "recon" in log[0]
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    assert predictor.healthy_source == "normal"
    case = Dataset(data).load("c03")
    predictor.lesion_probability = lambda image: 0.1  # type: ignore[method-assign]  # "healthy"
    gated = predictor.predict(case)
    assert float(gated.probs[1].max()) == 0.0
    assert float(predictor.predict(case, gate="never", postprocess="none").probs[1].max()) > 0.0
    predictor.lesion_probability = lambda image: 0.9  # type: ignore[method-assign]  # "lesion": mask kept
    np.testing.assert_array_equal(predictor.predict(case).probs, predictor.predict(case, gate="never").probs)


def test_cltn_losses_do_not_penalise_the_mask_directly() -> None:
    """With the mask-mixed decoder, identity/recon are minimised by m = 0 on healthy images; the mask only
    enters the losses through the translation and the fused image (no ``mean(mask * |t - x|)`` term)."""
    from labelwise.models.cltn import CLTNGenerator

    torch.manual_seed(0)
    g = CLTNGenerator(3, ngf=4, n_down=1, n_res=1).eval()
    x = torch.rand(1, 3, 8, 8) * 2 - 1
    with torch.no_grad():
        g.mask_head.weight.zero_()
        g.mask_head.bias.fill_(-50.0)  # m = 0: the translation is decoded from the reconstruction features
        before = g(x)
        for p in g.dec_res.parameters():  # the AdaILN (translation) path no longer matters
            p.add_(1.0)
        after = g(x)
    torch.testing.assert_close(before.translated, after.translated)
    torch.testing.assert_close(before.reconstructed, after.reconstructed)
    assert before.reconstructed.shape == x.shape
