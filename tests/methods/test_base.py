"""The method skeleton: the docs' example method trains and predicts; the template's run plumbing holds."""

from __future__ import annotations

import dataclasses
import json
import re
import sys
import types
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.engine.tinydata import disc_dataset

import labelwise.methods.base as base
from labelwise.data import Dataset
from labelwise.engine.distributed import DistInfo
from labelwise.errors import ConfigError
from labelwise.methods import METHODS, Method, MethodPredictor, get_method, load_run, train

DOC = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
SMOKE = ("train.epochs=1", "train.steps_per_epoch=2", "train.batch_size=2", "train.progress=false")


def _example_source() -> str:
    text = DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks, "docs/architecture.md has no python example"
    return str(blocks[0])


@pytest.fixture(scope="module")
def example_method() -> Iterator[type[Method]]:
    """Exec the docs' example method (registers ``soft-mean-unet``), unregister it afterwards."""
    module = types.ModuleType("docs_example_method")
    sys.modules[module.__name__] = module
    try:
        exec(compile(_example_source(), str(DOC), "exec"), module.__dict__)
        yield get_method("soft-mean-unet")
    finally:
        METHODS._items.pop("soft-mean-unet", None)
        sys.modules.pop(module.__name__, None)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return disc_dataset(tmp_path_factory.mktemp("base") / "ds", n_train=2, n_val=1, n_test=1, size=16)


def test_docs_example_is_short() -> None:
    code = [line for line in _example_source().splitlines() if line.strip()]
    assert len(code) <= 45, f"the docs' example method has {len(code)} non-blank lines"


def test_docs_example_method_trains_resumes_and_predicts(
    example_method: type[Method], tiny: Dataset, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    train("soft-mean-unet", tiny, run, overrides=SMOKE)
    meta = json.loads((run / "meta.json").read_text())
    assert meta["status"] == "finished" and meta["method"] == "soft-mean-unet"
    assert meta["steps"] == 2 and meta["train_cases"] == 2
    plan_before = (run / "plan.json").read_bytes()
    plan_mtime = (run / "plan.json").stat().st_mtime_ns
    train("soft-mean-unet", tiny, run, overrides=SMOKE)  # a rerun of a finished run resumes: nothing retrained
    assert (run / "plan.json").read_bytes() == plan_before
    assert (run / "plan.json").stat().st_mtime_ns == plan_mtime, "plan.json was rewritten on resume"
    method, _cfg, predictor = load_run(run, "cpu")
    assert method is example_method and isinstance(predictor, MethodPredictor)
    case = tiny.load(tiny.split_ids("test")[0])
    pred = predictor.predict(case)
    assert pred.probs.shape == (2, *case.spatial_shape)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ConfigError, match=r"method 'soft-mean-unet' takes no prediction option 'samples'"):
        predictor.predict(case, samples=4)
    with pytest.raises(ConfigError, match="takes no prediction option"):
        predictor.options(tta=True)
    assert predictor.options(tta=None) == predictor.Options()  # None means "not given"


def test_check_hook_runs_before_anything_is_written(
    example_method: type[Method], tiny: Dataset, tmp_path: Path
) -> None:
    class Picky(example_method):  # type: ignore[misc,valid-type]
        @classmethod
        def check(cls, dataset: Dataset, config: Any) -> None:
            raise ConfigError("picky refuses")

    with pytest.raises(ConfigError, match="picky"):
        Picky.fit(tiny, Picky.Config(), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_only_rank_zero_writes_plan_and_meta(
    example_method: type[Method], tiny: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under DDP every rank runs fit; a non-zero rank must not write plan.json or meta.json."""
    run = tmp_path / "run"
    cfg = example_method.Config()
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, epochs=1, steps_per_epoch=1, progress=False))
    example_method.fit(tiny, cfg, run)  # rank 0's run
    files = {name: (run / name).stat().st_ino for name in ("meta.json", "plan.json")}
    example_method.fit(tiny, cfg, run)  # rank 0 again: meta.json is rewritten (atomically: a new inode)
    assert (run / "meta.json").stat().st_ino != files["meta.json"], "the check below could not fail"
    assert (run / "plan.json").stat().st_ino == files["plan.json"], "plan.json was rewritten on resume"
    files["meta.json"] = (run / "meta.json").stat().st_ino
    monkeypatch.setattr(base, "init_distributed", lambda: DistInfo(rank=1, world_size=2))
    example_method.fit(tiny, cfg, run)  # as rank 1 of 2 (no process group: barriers are no-ops)
    for name, inode in files.items():
        assert (run / name).stat().st_ino == inode, f"rank 1 wrote {name}"


def test_every_builtin_method_is_on_the_skeleton() -> None:
    """No method re-writes the run plumbing: fit and load_predictor come from the base class."""
    from labelwise.methods import available

    for name in available():
        method = get_method(name)
        assert "fit" not in vars(method), f"{name} overrides fit (fill the hooks instead)"
        assert "load_predictor" not in vars(method), f"{name} overrides load_predictor"
        assert issubclass(method.Predictor, MethodPredictor), f"{name}.Predictor is not a MethodPredictor"
        assert dataclasses.is_dataclass(method.Predictor.Options), f"{name}: Options must be a dataclass"
