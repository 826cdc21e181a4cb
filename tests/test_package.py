"""Package-level promises: cheap import, no warnings, no optional dependency pulled, one registry type."""

from __future__ import annotations

import subprocess
import sys

import pytest

from labelwise.errors import ConfigError
from labelwise.registry import Registry

HEAVY = ("torch", "monai", "scipy", "nibabel", "SimpleITK", "numba", "matplotlib", "starlette")


def test_import_is_light_and_silent() -> None:
    code = (
        "import sys, warnings\n"
        "warnings.simplefilter('error')\n"
        "import labelwise, labelwise.cli.main\n"
        f"heavy = [m for m in {HEAVY!r} if m in sys.modules]\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8", check=True)
    assert out.stdout.strip() == "", f"import pulled heavy modules: {out.stdout}"
    assert out.stderr == ""


def test_evaluation_and_cohort_need_no_torch() -> None:
    """``labelwise evaluate`` and each Dask worker import these; torch would add seconds to each process."""
    code = (
        "import sys\n"
        "import labelwise.cli.evaluate, labelwise.evaluation, labelwise.engine.cohort, labelwise.quality.loop\n"
        "import labelwise.engine as e\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "missing = [n for n in e.__all__ if getattr(e, n, None) is None]\n"
        "assert not missing, missing\n"
        "assert sorted(e._LAZY) == sorted(e.__all__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0, out.stderr[-2000:]


def test_cli_help_answers() -> None:
    cmd = [sys.executable, "-m", "labelwise.cli", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8")
    assert out.returncode == 0
    assert "data" in out.stdout


def test_registry_rejects_duplicates_and_lists_names() -> None:
    reg: Registry[int] = Registry("thing")
    reg.register("b")(2)
    reg.register("a")(1)
    assert reg.available() == ["a", "b"]
    assert reg.get("a") == 1
    with pytest.raises(ValueError, match="registered twice"):
        reg.register("a")(3)
    with pytest.raises(ConfigError, match="unknown thing 'zzz'; available: a, b"):
        reg.get("zzz")


def test_package_declares_its_types() -> None:
    """PEP 561: without ``py.typed`` a user's mypy treats every labelwise name as ``Any``."""
    from importlib.resources import files

    assert (files("labelwise") / "py.typed").is_file()
