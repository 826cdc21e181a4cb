"""``warm_up`` compiles the kernels once; a fresh process with an empty numba cache then scores at full speed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from labelwise.metrics import warm_up


def test_warm_up_runs_and_is_idempotent() -> None:
    assert warm_up(surfels=True) >= 0.0
    assert warm_up() >= 0.0


def test_warm_up_compiles_only_what_is_asked() -> None:
    """``labelwise evaluate`` of 3-D data asks for 3-D only: the 2-D kernels (the batch kernel compiles slowest)
    stay untouched. A fresh process, so that no earlier test compiled them; the cache makes it quick."""
    code = (
        "from labelwise.metrics import warm_up\n"
        "from labelwise.metrics import _kernels as k\n"
        "warm_up(dims=(3,), batch=False)\n"
        "print(len(k._boundary3d.signatures), len(k._boundary2d.signatures), len(k._batch2d.signatures))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
    assert out.stdout.split() == ["1", "0", "0"]


@pytest.mark.slow
def test_warm_up_in_fresh_process_fills_an_empty_cache(tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "from labelwise.metrics import warm_up; print(warm_up())"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
