"""Registry of the results tables: name -> module with ``run(ctx) -> record`` and ``render(record) -> str``.

Each table module defines ``NAME``, ``config() -> dict``, ``run(ctx: Context) -> dict`` and
``render(record: dict) -> str``; optionally ``headline(record) -> str`` (one Markdown bullet for the overview of
``docs/results.md`` and the README) and ``check(record) -> None`` (asserts on numbers that are not per-case means,
run by ``tests/test_results_pipeline.py``). Shared helpers are in ``benchmarks/results/common.py``. A table is
listed here by hand (no crawling of the folder); a name listed twice is an error.

``TABLES`` are the registered tables: ``run.py`` runs them by default and the tests require a committed full-run
record and a ``docs/results.md`` block of each. ``UNREGISTERED`` are tables that have no full-run record yet: run
only when named (``run.py NAME [--quick]``), never by default, without a headline, and not required by the docs
tests. A table moves to ``TABLES`` with its first full-run record.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

__all__ = ["TABLES", "UNREGISTERED", "Context", "get"]

TABLES: dict[str, str] = {}
UNREGISTERED: dict[str, str] = {}


def _register(name: str, module: str, *, registered: bool = True) -> None:
    if name in TABLES or name in UNREGISTERED:
        raise ValueError(f"results table {name!r} registered twice")
    (TABLES if registered else UNREGISTERED)[name] = module


_register("ph2_training_free", "benchmarks.results.tables.ph2_training_free")
_register("semisup_slice_baselines", "benchmarks.results.tables.semisup_slice_baselines")
_register("weak_ph2", "benchmarks.results.tables.weak_ph2")
_register("weak_ph2_cv", "benchmarks.results.tables.weak_ph2_cv")
_register("multirater_qubiq", "benchmarks.results.tables.multirater_qubiq")
_register("label_quality_bubil", "benchmarks.results.tables.label_quality_bubil")
_register("label_quality_ct", "benchmarks.results.tables.label_quality_ct")
_register("small_data", "benchmarks.results.tables.small_data")
_register("rater_agreement", "benchmarks.results.tables.rater_agreement")
_register("weak_ct", "benchmarks.results.tables.weak_ct")
_register("active_loop", "benchmarks.results.tables.active_loop")


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
    """The module of a registered or unregistered table; ``KeyError`` naming the known tables otherwise."""
    known = {**TABLES, **UNREGISTERED}
    if name not in known:
        raise KeyError(f"unknown results table {name!r}; known: {', '.join(sorted(known))}")
    return importlib.import_module(known[name])
