from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "labelwise.uncertainty.agreement",
    "labelwise.uncertainty.selection",
    "labelwise.data.slices",
    "labelwise.methods.cps",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
