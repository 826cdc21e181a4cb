"""Checkpoints: pickle-free round trip of weights, optimiser and RNG state; corrupt/mismatched files fail clearly."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

from labelwise.engine import get_rng_state, load_checkpoint, load_weights, save_checkpoint, save_weights, set_rng_state
from labelwise.errors import ConfigError, DataError
from labelwise.models import ModelSpec, build_model


def _net(out: int = 2, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return build_model(ModelSpec("unet_tiny"), 2, 1, out)


def _train_steps(net: torch.nn.Module, opt: torch.optim.Optimizer, n: int, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for _ in range(n):
        x = torch.randn(2, 1, 8, 8, generator=g)
        opt.zero_grad()
        net(x).pow(2).mean().backward()
        opt.step()


@pytest.mark.parametrize("opt_name", ["adamw", "sgd"])
def test_checkpoint_roundtrip_continues_identically(opt_name: str, tmp_path: Path) -> None:
    def make(net: torch.nn.Module) -> torch.optim.Optimizer:
        if opt_name == "sgd":
            return torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9, nesterov=True)
        return torch.optim.AdamW(net.parameters(), lr=0.01, betas=(0.8, 0.95))

    a = _net()
    oa = make(a)
    _train_steps(a, oa, 3, seed=1)
    save_checkpoint(tmp_path / "c.safetensors", {"net": a}, {"main": oa}, {"step": 3, "best": -1.5})
    b = _net(seed=5)
    ob = make(b)
    state, _, _ = load_checkpoint(tmp_path / "c.safetensors", {"net": b}, {"main": ob})
    assert state == {"step": 3, "best": -1.5}
    _train_steps(a, oa, 2, seed=2)
    _train_steps(b, ob, 2, seed=2)
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items(), strict=True):
        assert ka == kb
        assert torch.equal(va, vb), ka
    # the file is plain safetensors: no pickle anywhere
    head = (tmp_path / "c.safetensors").read_bytes()[:8]
    assert int.from_bytes(head, "little") > 0


def test_rng_state_roundtrip() -> None:
    tensors, meta = get_rng_state()
    expect = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    set_rng_state(tensors, meta)
    got = (torch.rand(3), np.random.rand(3), random.random())  # noqa: NPY002
    assert torch.equal(expect[0], got[0])
    np.testing.assert_array_equal(expect[1], got[1])
    assert expect[2] == got[2]


def test_corrupt_checkpoint_is_a_data_error(tmp_path: Path) -> None:
    a = _net()
    opt = torch.optim.AdamW(a.parameters())
    path = save_checkpoint(tmp_path / "c.safetensors", {"net": a}, {"main": opt}, {"step": 0})
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])  # truncated, as after a crash of a non-atomic writer
    with pytest.raises(DataError, match=r"c\.safetensors"):
        load_checkpoint(path, {"net": a}, {"main": opt})
    path.write_bytes(b"not a safetensors file at all")
    with pytest.raises(DataError, match="corrupt"):
        load_weights(path, {"net": a})


def test_weights_of_another_architecture_are_a_config_error(tmp_path: Path) -> None:
    save_weights(tmp_path / "w.safetensors", {"net": _net(out=2)})
    with pytest.raises(ConfigError, match="do not match"):
        load_weights(tmp_path / "w.safetensors", {"net": _net(out=3)})
    with pytest.raises(ConfigError, match="missing"):
        load_weights(tmp_path / "w.safetensors", {"other": _net(out=2)})
