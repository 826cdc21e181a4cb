"""Registry of the results tables: name -> module with ``run(ctx) -> record`` and ``render(record) -> str``.

Each table module defines ``NAME``, ``config() -> dict``, ``run(ctx: Context) -> dict`` and
``render(record: dict) -> str``; optionally ``headline(record) -> str`` (one Markdown bullet for the overview of
``docs/results.md`` and the README) and ``check(record) -> None`` (asserts on numbers that are not per-case means,
run by ``tests/test_results_pipeline.py``). Shared helpers are in ``benchmarks/results/common.py``. A table is
listed here by hand (no crawling of the folder); a name listed twice is an error.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = ["TABLES", "Context", "get"]

TABLES: dict[str, str] = {}


def _register(name: str, module: str) -> None:
    if name in TABLES:
        raise ValueError(f"results table {name!r} registered twice")
    TABLES[name] = module


_register("ph2_training_free", "benchmarks.results.tables.ph2_training_free")
_register("semisup_slice_baselines", "benchmarks.results.tables.semisup_slice_baselines")
_register("weak_ph2", "benchmarks.results.tables.weak_ph2")
_register("multirater_qubiq", "benchmarks.results.tables.multirater_qubiq")
_register("label_quality_bubil", "benchmarks.results.tables.label_quality_bubil")
_register("small_data", "benchmarks.results.tables.small_data")
_register("rater_agreement", "benchmarks.results.tables.rater_agreement")


@dataclass(frozen=True)
class Context:
    """What a table's ``run`` gets.

    Attributes:
        work: The table's own work folder (imports, per-step results); a finished step found there is reused.
        data: Folder of the real datasets (``../shared/data`` or ``$LABELWISE_DATA``).
        quick: Smoke run on a tiny subset (3 images per split), for CI.
        seeds: Seeds the table should use (tables without randomness record an empty list).
    """

    work: Path
    data: Path
    quick: bool = False
    seeds: tuple[int, ...] = field(default=(0,))


def get(name: str) -> ModuleType:
    """The module of a registered table; ``KeyError`` naming the known tables otherwise."""
    if name not in TABLES:
        raise KeyError(f"unknown results table {name!r}; known: {', '.join(sorted(TABLES))}")
    return importlib.import_module(TABLES[name])
