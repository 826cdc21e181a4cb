from __future__ import annotations

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from labelwise.metrics import Dice, IoU, ValueAccumulator, dice, hausdorff


def test_dice_accumulator_mean_and_pooled() -> None:
    acc = Dice()
    a = np.array([[1, 1, 0, 0]], bool)
    b = np.array([[1, 0, 0, 0]], bool)
    acc.update(a, b)
    acc.update(np.zeros((2, 4), bool), np.zeros((2, 4), bool))
    np.testing.assert_allclose(acc.per_sample(), [2 / 3, 1.0, 1.0])
    assert acc.compute() == pytest.approx((2 / 3 + 2) / 3)
    assert acc.compute(reduction="pooled") == pytest.approx(2 / 3)
    nn = Dice(empty="nnunet")
    nn.update(np.zeros((1, 4), bool), np.zeros((1, 4), bool))
    assert math.isnan(nn.compute())
    nn.update(a, b)
    assert nn.compute() == pytest.approx(2 / 3)  # nan samples are ignored by the mean
    acc.reset()
    assert math.isnan(acc.compute())


def test_accumulators_take_torch_tensors() -> None:
    import torch

    rng = np.random.default_rng(0)
    p = rng.random((3, 8, 9)) < 0.5
    t = rng.random((3, 8, 9)) < 0.5
    acc = IoU()
    acc.update(torch.from_numpy(p), torch.from_numpy(t).float())
    assert acc.per_sample()[1] == pytest.approx(((p[1] & t[1]).sum()) / ((p[1] | t[1]).sum()))
    v = ValueAccumulator(hausdorff, spacing_mm=(1.0, 2.0))
    v.update(p, t)
    assert v.per_sample()[0] == pytest.approx(hausdorff(p[0], t[0], (1.0, 2.0)))
    d = ValueAccumulator(dice)
    d.update(p, t)
    assert d.compute() == pytest.approx(np.mean([dice(p[i], t[i]) for i in range(3)]))


def _ddp_worker(rank: int, world: int, port: int, out: str) -> None:
    import torch.distributed as dist

    os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ["MASTER_PORT"] = str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    acc = Dice()
    # rank 0 sees one perfect sample, rank 1 two samples with Dice 0
    if rank == 0:
        acc.update(np.ones((1, 4), bool), np.ones((1, 4), bool))
    else:
        acc.update(np.array([[1, 0, 0, 0]] * 2, bool), np.array([[0, 1, 0, 0]] * 2, bool))
    value = acc.compute()
    n = len(acc.per_sample())
    dist.destroy_process_group()
    with open(f"{out}.{rank}", "w") as fh:
        fh.write(f"{value} {n}")


def test_ddp_all_gather(tmp_path: object) -> None:
    import socket

    import torch.multiprocessing as mp

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path) + "/res"
    mp.spawn(_ddp_worker, args=(2, port, out), nprocs=2, join=True)
    for rank in (0, 1):
        value, n = open(f"{out}.{rank}").read().split()
        assert int(n) == 3 and float(value) == pytest.approx(1 / 3)


def test_import_does_not_pull_torch() -> None:
    code = "import sys, labelwise.metrics; print('torch' in sys.modules, 'monai' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
    assert out.stderr == ""
