"""Contract every registered model and method passes (forward/backward, save+reload, loss decreases, fit+predict)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest
import torch
from tests.engine.tinydata import disc_dataset

from labelwise.engine import load_weights, save_weights
from labelwise.errors import ConfigError, DataError
from labelwise.io import Prediction
from labelwise.methods import Method, get_method, load_method_config, load_run
from labelwise.methods import available as available_methods
from labelwise.models import ModelSpec, available, build_model, dice_ce_loss

# Load every method module first: methods register their own networks, and the parameter lists below must
# not depend on which test modules happened to be imported before this one.
available_methods()

# Real-size models are exercised at one small size in 2D only, to keep the default run fast.
TINY = [m for m in available() if m.endswith("_tiny")]


def _build(name: str, spatial_dims: int) -> tuple[torch.nn.Module, int, int]:
    """Build with 2 input channels and the first output count the factory accepts (3, 2 or 1)."""
    errors = []
    for in_ch, out_ch in ((2, 3), (2, 2), (2, 1)):
        try:
            return build_model(ModelSpec(name), spatial_dims, in_ch, out_ch), in_ch, out_ch
        except (ValueError, ConfigError) as exc:
            errors.append(str(exc))
    pytest.skip(f"{name} does not build in {spatial_dims}D: {errors[-1]}")


def _tensors(out: object) -> list[torch.Tensor]:
    """Every tensor of a model output (tensor, tuple/list, dict or dataclass)."""
    if isinstance(out, torch.Tensor):
        return [out]
    if dataclasses.is_dataclass(out) and not isinstance(out, type):
        out = [getattr(out, f.name) for f in dataclasses.fields(out)]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


@pytest.mark.parametrize("name", available())
@pytest.mark.parametrize("spatial_dims", [2, 3])
def test_forward_backward_several_sizes(name: str, spatial_dims: int) -> None:
    torch.manual_seed(0)
    net, in_ch, out_ch = _build(name, spatial_dims)
    sizes = [64, 96] if spatial_dims == 2 else [16, 32]
    for s in sizes:
        shape = (s,) * spatial_dims
        x = torch.randn(2, in_ch, *shape, requires_grad=True)
        outs = [t for t in _tensors(net(x)) if t.is_floating_point()]
        assert outs, "the model returns at least one float tensor"
        assert all(t.shape[0] == 2 for t in outs), "outputs keep the batch axis"
        main = outs[0]
        if main.shape[2:] == shape:  # dense models: (B, out_channels, *spatial)
            assert main.shape[1] == out_ch
        sum(t.sum() for t in outs).backward()
        assert x.grad is not None and torch.isfinite(x.grad).all()
        assert any(p.grad is not None for p in net.parameters() if p.requires_grad)
        net.zero_grad()
        x.grad = None


@pytest.mark.parametrize("name", TINY)
def test_save_reload_identical_outputs(name: str, tmp_path: Path) -> None:
    torch.manual_seed(1)
    a = build_model(ModelSpec(name), 2, 1, 2).eval()
    torch.manual_seed(2)
    b = build_model(ModelSpec(name), 2, 1, 2).eval()
    x = torch.randn(1, 1, 16, 16)
    assert not torch.equal(a(x), b(x))
    save_weights(tmp_path / "w.safetensors", {"net": a})
    load_weights(tmp_path / "w.safetensors", {"net": b})
    assert torch.equal(a(x), b(x))


@pytest.mark.parametrize("name", TINY)
def test_few_steps_lower_the_loss(name: str) -> None:
    torch.manual_seed(0)
    net = build_model(ModelSpec(name), 2, 1, 2)
    x = torch.randn(4, 1, 16, 16)
    fg = (x[:, 0] > 0.5).long()
    target = torch.stack([1 - fg, fg], 1).float()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    for _ in range(15):
        opt.zero_grad()
        loss = dice_ce_loss(net(x), target)
        loss.backward()
        opt.step()
        losses.append(float(loss.detach()))
    assert losses[-1] < 0.8 * losses[0]


@pytest.fixture(scope="module")
def tiny_dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("contract") / "ds"
    disc_dataset(root, n_train=3, n_val=1, n_test=1, size=16)
    return root


@pytest.mark.parametrize("method_name", available_methods())
def test_method_fit_predict_reload(method_name: str, tiny_dataset: Path, tmp_path: Path) -> None:
    """Every method: smoke preset trains on its example dataset, writes the run dir, rebuilds and predicts."""
    from labelwise.data import Dataset

    method = get_method(method_name)
    assert method.citation, "each method cites its paper"
    assert "smoke" in method.presets, "each method has a tiny 'smoke' preset for tests"
    cfg = load_method_config(method, preset="smoke", overrides=["train.progress=false"])
    ds = method.example_dataset(tmp_path / "example") or Dataset(tiny_dataset)
    run = tmp_path / "run"
    try:
        method.fit(ds, cfg, run)
    except DataError as exc:
        if method.example_dataset.__func__ is Method.example_dataset.__func__:  # type: ignore[attr-defined]
            pytest.fail(
                f"{method_name} cannot train on the contract test's default dataset ({exc}); override "
                f"{method.__name__}.example_dataset(dest) to write a tiny dataset its smoke preset trains on"
            )
        raise
    for name in ("config.yaml", "plan.json", "weights.safetensors", "meta.json"):
        assert (run / name).is_file(), name
    m, cfg2, predictor = load_run(run, "cpu")
    assert m is method and cfg2 == cfg
    ids = ds.split_ids("test") or ds.ids
    case = ds[ids[0]]
    pred = predictor.predict(case)
    assert isinstance(pred, Prediction)
    assert pred.probs.shape[1:] == case.spatial_shape and pred.probs.shape[0] >= 2
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-4)
    # a second predictor rebuilt from the same folder gives identical outputs
    _, _, again = load_run(run, "cpu")
    np.testing.assert_array_equal(again.predict(case).probs, pred.probs)
