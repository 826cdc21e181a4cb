"""``labelwise.metrics`` is pure: arrays in, numbers out, importable without the data, I/O or evaluation layers."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import labelwise.metrics

FORBIDDEN = ("labelwise.data", "labelwise.io", "labelwise.evaluation")
METRICS_DIR = Path(labelwise.metrics.__file__).parent


def _imported_names(path: Path) -> list[str]:
    """Every module named by an ``import`` / ``from ... import`` anywhere in the file (lazy imports included)."""
    names: list[str] = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
        if isinstance(node, ast.Import):
            names += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative import: resolve against labelwise.metrics
                names.append("labelwise.metrics" + ("." + node.module if node.module else ""))
            elif node.module:
                names += [node.module, *(f"{node.module}.{a.name}" for a in node.names)]
    return names


def _forbidden(name: str) -> bool:
    return any(name == f or name.startswith(f + ".") for f in FORBIDDEN)


def test_importing_metrics_loads_no_data_io_or_evaluation_module() -> None:
    code = (
        "import json, sys\n"
        "import labelwise.metrics\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.startswith('labelwise'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    loaded = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "labelwise.metrics" in loaded
    assert [m for m in loaded if _forbidden(m)] == []


def test_no_metrics_module_imports_the_data_io_or_evaluation_layers() -> None:
    files = sorted(METRICS_DIR.rglob("*.py"))
    assert files
    offenders = {
        str(p.relative_to(METRICS_DIR)): bad for p in files if (bad := [n for n in _imported_names(p) if _forbidden(n)])
    }
    assert offenders == {}
