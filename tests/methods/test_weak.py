"""Shared weak-supervision plumbing of ``cam`` and ``cltn``: resume, typed prediction options, grayscale input."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tests.methods.weakdata import make_weak_dataset

from labelwise.data import Dataset
from labelwise.errors import ConfigError, DataError
from labelwise.methods.base import Method, load_method_config
from labelwise.methods.cam import CAMMethod
from labelwise.methods.cltn import CLTNMethod
from labelwise.methods.weak import gate_enabled

WEAK = ["cam", "cltn"]
CLASSES: dict[str, type[Method]] = {"cam": CAMMethod, "cltn": CLTNMethod}


def train(method: str, data: Path, run: Path) -> None:
    """Fit the smoke preset (through the class: the test needs no other method module)."""
    cls = CLASSES[method]
    cls.fit(Dataset(data), load_method_config(cls, preset="smoke"), run)


def load_predictor(method: str, run: Path) -> Any:
    """The run's predictor on the CPU."""
    return CLASSES[method].load_predictor(run, "cpu")


@pytest.fixture(scope="module")
def weak_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_weak_dataset(tmp_path_factory.mktemp("weak") / "d", n_lesion=4, n_normal=3)


@pytest.fixture(scope="module")
def weak_runs(weak_data: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    for method in WEAK:
        train(method, weak_data, root / method)
    return {m: root / m for m in WEAK}


@pytest.mark.parametrize("method", WEAK)
def test_resume_never_rewrites_plan_json(method: str, weak_data: Path, tmp_path: Path) -> None:
    """Bug (#16): ``cam`` and ``cltn`` wrote ``plan.json`` again on every (re)start of a run."""
    run = tmp_path / "run"
    train(method, weak_data, run)
    plan = run / "plan.json"
    # the same plan, written differently: a rewrite on resume would change the bytes
    plan.write_text(json.dumps(json.loads(plan.read_text(encoding="utf-8")), indent=4) + "\n", encoding="utf-8")
    before, mtime = plan.read_bytes(), plan.stat().st_mtime_ns
    train(method, weak_data, run)  # resumes the finished run
    assert plan.read_bytes() == before and plan.stat().st_mtime_ns == mtime
    assert json.loads((run / "meta.json").read_text(encoding="utf-8"))["status"] == "finished"


@pytest.mark.parametrize("method", WEAK)
def test_a_dataset_the_domains_cannot_come_from_is_refused_before_anything_is_written(
    method: str, tmp_path: Path
) -> None:
    no_label = make_weak_dataset(tmp_path / "d", n_lesion=3, n_normal=2, label="grade")
    with pytest.raises(DataError, match="no image-level label 'lesion'"):
        train(method, no_label, tmp_path / "run")
    assert not (tmp_path / "run").exists()
    with pytest.raises(DataError, match="selection=val needs cases in the val split"):
        cls = CLASSES[method]
        cls.fit(
            Dataset(no_label),
            load_method_config(cls, overrides=["domain.label=grade", "selection=val"]),
            tmp_path / "r2",
        )
    assert not (tmp_path / "r2").exists()


@pytest.mark.parametrize("method", WEAK)
def test_predict_rejects_options_the_method_does_not_take(
    method: str, weak_data: Path, weak_runs: dict[str, Path]
) -> None:
    """Bug (#16): ``tta`` (and any unknown option) was silently ignored; the weak maps have no TTA."""
    predictor = load_predictor(method, weak_runs[method])
    ds_case = Dataset(weak_data).load("c03")
    with pytest.raises(ConfigError, match=rf"method '{method}' takes no prediction option 'tta'; it takes: crf"):
        predictor.predict(ds_case, tta=True)
    with pytest.raises(ConfigError, match="samples"):
        predictor.predict(ds_case, samples=3)
    with pytest.raises(ConfigError, match="postprocess"):
        predictor.predict(ds_case, postprocess="watershed")
    with pytest.raises(ConfigError, match="gate must be"):
        predictor.predict(ds_case, gate="maybe")
    assert predictor.predict(ds_case, tta=None).probs.shape == (2, *ds_case.spatial_shape)  # None: not given


@pytest.mark.parametrize("method", WEAK)
def test_grayscale_case_is_replicated_for_an_rgb_model(
    method: str, weak_data: Path, weak_runs: dict[str, Path]
) -> None:
    """Documented in :mod:`labelwise.data.domains`: a 1-channel image given to an RGB model is replicated."""
    predictor = load_predictor(method, weak_runs[method])
    case = Dataset(weak_data).load("c03")
    gray = case.image.mean(0, keepdims=True)
    pred = predictor.predict(replace(case, image=gray), gate="never")
    rgb = predictor.predict(replace(case, image=np.repeat(gray, 3, axis=0)), gate="never")
    np.testing.assert_array_equal(pred.probs, rgb.probs)


def test_gate_auto_follows_the_healthy_source() -> None:
    assert gate_enabled("auto", "normal") and not gate_enabled("auto", "periphery")
    assert gate_enabled("always", "periphery") and not gate_enabled("never", "normal")
    assert not gate_enabled("auto", None)  # an old run without healthy_source in meta.json: never gated
    with pytest.raises(Exception, match="gate must be"):
        gate_enabled("maybe", "normal")
