"""Exact resume after SIGKILL, and DDP (2 gloo processes) matching one process, both in subprocesses."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tests.engine.tinydata import disc_dataset

from labelwise.engine import read_csv_log
from labelwise.engine.checkpoint import read_safetensors

CHILD = Path(__file__).with_name("train_child.py")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    return env


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, env=_env(), capture_output=True, text=True, timeout=240, check=check)


def _weights(path: Path) -> dict[str, np.ndarray]:
    tensors, _ = read_safetensors(path)
    return {k: v.numpy() for k, v in tensors.items()}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("resume") / "ds"
    disc_dataset(root, n_train=4, n_val=1, n_test=0, size=20)
    return root


def test_sigkill_mid_epoch_then_rerun_gives_identical_weights(dataset: Path, tmp_path: Path) -> None:
    full, killed = tmp_path / "full", tmp_path / "killed"
    _run([sys.executable, str(CHILD), str(dataset), str(full), "-1"])
    # Step 7 is mid-epoch 1 (4 steps per epoch); the last checkpoint before it is at step 6.
    proc = _run([sys.executable, str(CHILD), str(dataset), str(killed), "7"], check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert (killed / "checkpoint.safetensors").exists()
    # Killed right after logging step 7: the log has 7 rows, the checkpoint is at step 6 (epoch 1, batch 2).
    assert len(read_csv_log(killed / "logs" / "train.csv")) == 7
    state = json.loads(read_safetensors(killed / "checkpoint.safetensors")[1]["labelwise"])["state"]
    assert (state["step"], state["epoch"], state["batch"]) == (6, 1, 2)
    _run([sys.executable, str(CHILD), str(dataset), str(killed), "-1"])
    a, b = _weights(full / "weights.safetensors"), _weights(killed / "weights.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    ca, cb = _weights(full / "checkpoint.safetensors"), _weights(killed / "checkpoint.safetensors")
    for k in ca:
        np.testing.assert_array_equal(ca[k], cb[k], err_msg=k)
    la = read_csv_log(full / "logs" / "train.csv")
    lb = read_csv_log(killed / "logs" / "train.csv")
    assert [r["loss"] for r in la] == [r["loss"] for r in lb]
    assert len(la) == 12


def test_ddp_two_gloo_processes_match_one_process(dataset: Path, tmp_path: Path) -> None:
    one, two = tmp_path / "one", tmp_path / "two"
    # No dropout here: dropout masks depend on how the batch is split across ranks.
    _run([sys.executable, str(CHILD), str(dataset), str(one), "-1", "4", "0"])
    run = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    proc = _run([*run, str(CHILD), str(dataset), str(two), "-1", "4", "0"], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    la = [float(r["loss"]) for r in read_csv_log(one / "logs" / "train.csv")]
    lb = [float(r["loss"]) for r in read_csv_log(two / "logs" / "train.csv")]
    assert len(la) == len(lb) == 12
    np.testing.assert_allclose(lb, la, rtol=2e-4, atol=1e-5)
    assert la[0] != la[-1]


def test_documented_torchrun_line_trains_through_the_cli(dataset: Path, tmp_path: Path) -> None:
    """``torchrun --nproc-per-node 2 -m labelwise.cli train ...`` (README, docs/engine.md) runs, not just imports."""
    out = tmp_path / "run"
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cli = ["-m", "labelwise.cli", "train", "supervised", "--data", str(dataset), "--out", str(out)]
    smoke = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]
    proc = _run([*torchrun, *cli, *smoke], check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["status"] == "finished"
    assert (out / "weights.safetensors").is_file()
