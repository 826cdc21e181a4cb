"""The docstring examples of the data and I/O modules run."""

from __future__ import annotations

import doctest
import importlib

import pytest

MODULES = [
    "labelwise.io.safe_pickle",
    "labelwise.data.splits",
    "labelwise.data.importers.base",
    "labelwise.data.importers.mni152",
]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name: str) -> None:
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
