from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = ["accumulate", "overlap", "surface", "multirater", "calibration", "quality", "conventions"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    mod = importlib.import_module(f"labelwise.metrics.{name}")
    result = doctest.testmod(mod)
    assert result.attempted > 0 and result.failed == 0
