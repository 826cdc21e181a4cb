"""The floors of docs/architecture.md hold: no import runs up a floor, no import cycles, no borrowed privates."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "labelwise"

# docs/architecture.md, "The floors": a package may import its own floor and the floors below.
FLOORS: dict[str, int] = {
    "errors": 0,
    "registry": 0,
    "progress": 0,
    "io": 1,
    "data": 2,
    "labels": 3,
    "metrics": 3,
    "uncertainty": 3,
    "engine": 4,
    "models": 4,
    "postprocess": 4,
    "methods": 5,
    "quality": 6,
    "evaluation": 6,
    "report": 6,
    "viewer": 7,
    "cli": 8,
}
# metrics is pure: arrays in, numbers out (no dataset or file layer).
ONLY: dict[str, set[str]] = {"metrics": {"errors", "metrics"}}


def _module_name(path: Path) -> str:
    parts = ["labelwise", *path.relative_to(SRC).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> list[tuple[str, list[str], int]]:
    """(module imported, names imported, line) for every labelwise import, at any depth (lazy ones too)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out: list[tuple[str, list[str], int]] = []
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(a.name, [], node.lineno) for a in node.names if a.name.startswith("labelwise")]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join([*base, mod] if mod else base)
            if mod.startswith("labelwise"):
                out.append((mod, [a.name for a in node.names], node.lineno))
    return out


def _floor_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


FILES = sorted(SRC.rglob("*.py"))


def test_every_package_has_a_floor() -> None:
    packages = {p.relative_to(SRC).parts[0].removesuffix(".py") for p in FILES}
    missing = sorted(packages - set(FLOORS) - {"__init__"})
    assert not missing, f"packages without a floor in docs/architecture.md and FLOORS: {missing}"


def test_no_import_runs_up_a_floor() -> None:
    problems = []
    for path in FILES:
        me = _floor_of(_module_name(path))
        if me not in FLOORS:
            continue
        for mod, _names, line in _imports(path):
            other = _floor_of(mod)
            if other not in FLOORS or other == me:
                continue
            if me in ONLY and other not in ONLY[me]:
                problems.append(f"{path.relative_to(SRC)}:{line}: {me} must stay pure, imports {mod}")
            elif FLOORS[other] > FLOORS[me]:
                problems.append(f"{path.relative_to(SRC)}:{line}: {me} (floor {FLOORS[me]}) imports {mod}")
    assert not problems, "\n".join(problems)


def test_no_private_name_is_borrowed() -> None:
    """``from labelwise.x import _helper`` from another module, or a private module of another package."""
    problems = []
    for path in FILES:
        me = _module_name(path)
        my_package = me if path.name == "__init__.py" else me.rpartition(".")[0]
        for mod, names, line in _imports(path):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and mod != me:
                problems.append(f"{path.relative_to(SRC)}:{line}: imports private {private} from {mod}")
            leaf_private = any(p.startswith("_") and not p.startswith("__") for p in mod.split("."))
            if leaf_private and not mod.startswith(my_package + ".") and mod.rpartition(".")[0] != my_package:
                problems.append(f"{path.relative_to(SRC)}:{line}: imports {mod}, private to another package")
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("lazy", [False, True], ids=["module-level", "any-level"])
def test_no_two_modules_import_each_other(lazy: bool) -> None:
    """No import cycles between modules (package ``__init__`` re-exports excluded)."""
    modules = {_module_name(p): p for p in FILES}
    graph: dict[str, set[str]] = defaultdict(set)
    for name, path in modules.items():
        if path.name == "__init__.py":
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        top = {id(n) for n in tree.body}
        for node in ast.walk(tree):
            if not lazy and id(node) not in top:
                continue
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                targets = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
            for t in targets:
                if t in modules and t != name and modules[t].name != "__init__.py":
                    graph[name].add(t)
    cycles = sorted({tuple(sorted((a, b))) for a in graph for b in graph[a] if a in graph.get(b, set())})
    assert not cycles, f"modules importing each other: {cycles}"
