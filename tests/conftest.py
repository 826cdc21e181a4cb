"""Shared fixtures: real-data location, tiny synthetic datasets."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _data_root() -> Path:
    env = os.environ.get("LABELWISE_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def real_data() -> Path:
    """Folder of the real public datasets; skips (or fails when CI=true) if absent."""
    root = _data_root()
    if not root.is_dir():
        msg = f"real data not found at {root} (set LABELWISE_DATA)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(msg)
        pytest.skip(msg)
    return root


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """``slow`` tests run only when asked for (``pytest -m slow``); ``gpu`` tests skip without a CUDA device."""
    markexpr = config.getoption("markexpr") or ""
    gpu_items = [item for item in items if "gpu" in item.keywords]
    cuda = False
    if gpu_items:
        import torch

        cuda = torch.cuda.is_available()
    for item in items:
        if "slow" in item.keywords and "slow" not in markexpr:
            item.add_marker(pytest.mark.skip(reason="slow: run with `pytest -m slow`"))
    for item in gpu_items:
        if not cuda:
            item.add_marker(pytest.mark.skip(reason="gpu: needs a CUDA device"))
