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


@pytest.mark.slow
def test_warm_up_in_fresh_process_fills_an_empty_cache(tmp_path: os.PathLike[str]) -> None:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    code = "from labelwise.metrics import warm_up; print(warm_up())"
    subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
    assert any(name.endswith(".nbi") for _, _, files in os.walk(tmp_path) for name in files)
