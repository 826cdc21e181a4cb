"""Every method trains under DDP (2 gloo processes) with its weights kept equal across ranks.

A task that calls a trainable module directly instead of through ``ctx.module(name)`` (the DDP wrapper) trains
each rank on its own gradients: the ranks' weights drift apart. The child compares them after every stage.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
from tests.engine.tinydata import disc_dataset

from labelwise.methods import available, get_method

CHILD = Path(__file__).with_name("ddp_child.py")
# One method per training-step shape runs by default; the others are `slow` (about 30 s each on 2 cores).
DEFAULT = {"prob-unet", "cps"}
GLOO_ABORT = "terminate called without an active exception"


def _params() -> list[object]:
    out = []
    for name in available():
        marks = [] if name in DEFAULT else [pytest.mark.slow]
        out.append(pytest.param(name, marks=marks, id=name))
    return out


@pytest.mark.parametrize("name", _params())
def test_method_weights_stay_equal_across_ddp_ranks(name: str, tmp_path: Path) -> None:
    method = get_method(name)
    data = method.example_dataset(tmp_path / "ds")
    root = data.root if data is not None else disc_dataset(tmp_path / "ds", n_train=4, n_val=1, n_test=0, size=32).root
    env = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    env.pop("WORLD_SIZE", None)
    report = tmp_path / "report.json"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    cmd += [str(CHILD), name, str(root), str(tmp_path / "run"), str(report)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 and GLOO_ABORT in proc.stderr:
        # A rank aborting in gloo's C++ ("terminate called without an active exception") was seen twice in about
        # 120 runs on a loaded 2-core machine (2026-12-04), both inside pytest, never quiet; not understood yet (see
        # the issue notes). One rerun, reported as a warning; a second abort fails.
        warnings.warn(f"{name}: a DDP rank aborted in gloo; rerunning once", RuntimeWarning, stacklevel=1)
        shutil.rmtree(tmp_path / "run", ignore_errors=True)
        report.unlink(missing_ok=True)
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stages = json.loads(report.read_text())
    assert stages, "no stage trained"
    for stage in stages:
        rank0, rank1 = stage["ranks"]
        assert rank0.keys() == rank1.keys() and rank0, stage
        for module, value in rank0.items():
            assert rank1[module] == pytest.approx(value, rel=1e-5, abs=1e-6), (
                f"{name}: {module} differs across ranks after {stage['work_dir']}: {value} vs {rank1[module]}"
            )
    assert json.loads((tmp_path / "run" / "meta.json").read_text())["status"] == "finished"
