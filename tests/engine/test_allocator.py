"""glibc allocator tuning: applied on Linux/glibc, skipped when the user opted out or set MALLOC_* themselves."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest

CODE = "from labelwise.engine import tune_allocator; print(tune_allocator(), tune_allocator())"


def _run(**env: str) -> str:
    full = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_") and k != "LABELWISE_MALLOC_TUNING"}
    full.update(env)
    return subprocess.run([sys.executable, "-c", CODE], env=full, capture_output=True, text=True, check=True).stdout


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt tuning needs glibc")
def test_applied_once_on_linux() -> None:
    assert _run().split() == ["True", "True"]


@pytest.mark.parametrize("env", [{"LABELWISE_MALLOC_TUNING": "0"}, {"MALLOC_TRIM_THRESHOLD_": "1000000"}])
def test_user_choice_wins(env: dict[str, str]) -> None:
    assert _run(**env).split() == ["False", "False"]
