"""Warm start (``labelwise train METHOD --init RUN1``): RUN1's weights at step 0, short schedule, lineage, refusals."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from tests.cli.helpers import labelwise
from tests.engine.tinydata import disc_dataset

from labelwise.data import Dataset
from labelwise.engine.checkpoint import read_safetensors
from labelwise.engine.rundir import INIT_KEY, RunDir, file_sha256
from labelwise.errors import ConfigError
from labelwise.methods import available, get_method, load_method_config, train
from labelwise.methods import base as method_base
from labelwise.methods.base import WarmStart, warm_start_schedule

# RUN1 trains 4 epochs of 2 steps; a warm start trains ceil(4 / 4) = 1 epoch unless told otherwise.
SMOKE = ["train.progress=false", "train.epochs=4", "train.steps_per_epoch=2"]
SHORT = ["train.progress=false", "train.steps_per_epoch=2"]


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Dataset:
    return disc_dataset(tmp_path_factory.mktemp("warm") / "ds", n_train=3, n_val=1, n_test=1, size=16)


@pytest.fixture(scope="module")
def run1(data: Dataset, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("warm") / "run1"
    train("supervised", data, out, overrides=SMOKE, preset="smoke")
    return out


class _Recorder:
    """Replaces the Trainer in methods.base: records every stage's module weights when its fit() starts."""

    def __init__(self) -> None:
        self.starts: list[dict[str, torch.Tensor]] = []

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        real = method_base.Trainer
        starts = self.starts

        class Recording(real):  # type: ignore[misc, valid-type]
            def fit(self) -> Any:
                state = {}
                for name, module in self.task.modules.items():
                    for key, value in module.state_dict().items():
                        state[f"{name}.{key}"] = value.detach().cpu().clone()
                starts.append(state)
                return super().fit()

        monkeypatch.setattr(method_base, "Trainer", Recording)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    tensors: dict[str, torch.Tensor] = read_safetensors(path)[0]
    return tensors


def test_warm_start_begins_at_the_earlier_runs_weights(
    data: Dataset, run1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recorder = _Recorder()
    recorder.install(monkeypatch)
    run2 = tmp_path / "run2"
    train("supervised", data, run2, overrides=SHORT, preset="smoke", init=run1)
    assert len(recorder.starts) == 1
    start, before = recorder.starts[0], _weights(run1 / "weights.safetensors")
    assert set(start) == set(before)
    for key, value in before.items():
        assert torch.equal(start[key], value), key
    after = _weights(run2 / "weights.safetensors")
    assert any(not torch.equal(after[k], before[k]) for k in before), "the warm-started run trained"


def test_short_schedule_and_lineage(data: Dataset, run1: Path, tmp_path: Path) -> None:
    run2 = tmp_path / "run2"
    train("supervised", data, run2, overrides=SHORT, preset="smoke", init=run1)
    config = yaml.safe_load((run2 / "config.yaml").read_text())["config"]
    assert config["train"]["epochs"] == 1  # ceil(0.25 * 4)
    meta = RunDir(run2).read_meta()
    assert meta["status"] == "finished" and meta["steps"] == 2
    lineage = meta[INIT_KEY]
    assert lineage["path"] == str(run1.resolve())
    assert lineage["method"] == "supervised"
    assert lineage["weights"] == {"weights.safetensors": file_sha256(run1 / "weights.safetensors")}
    assert lineage["config_hash"] == RunDir(run1).lineage()["config_hash"]
    assert set(yaml.safe_load((run2 / "config.yaml").read_text())) == {"method", "config"}


def test_schedule_rule_keeps_explicit_epochs() -> None:
    method = get_method("dpersona")
    cfg = load_method_config(method, preset="smoke", overrides=["train.epochs=8", "stage2.epochs=8"])
    short, changes = warm_start_schedule(cfg)
    assert (short.train.epochs, short.stage2.epochs) == (2, 2)
    assert changes == {"train.epochs": (8, 2), "stage2.epochs": (8, 2)}
    kept, changes = warm_start_schedule(cfg, ["stage2.epochs=8"])
    assert (kept.train.epochs, kept.stage2.epochs) == (2, 8) and set(changes) == {"train.epochs"}
    one, _ = warm_start_schedule(load_method_config(method, overrides=["train.epochs=1"]))
    assert one.train.epochs == 1


def test_mismatched_plan_is_refused_and_leaves_nothing(run1: Path, tmp_path: Path) -> None:
    other = disc_dataset(tmp_path / "three", n_train=2, n_val=1, n_test=1, size=16, classes=("background", "a", "b"))
    run2 = tmp_path / "run2"
    with pytest.raises(ConfigError, match=r"class_names: \('background', 'disc'\).*\('background', 'a', 'b'\)"):
        train("supervised", other, run2, overrides=SHORT, preset="smoke", init=run1)
    assert not run2.exists()
    channels = disc_dataset(tmp_path / "rgb", n_train=2, n_val=1, n_test=1, size=16, channels=2)
    with pytest.raises(ConfigError, match=r"channels: 1 .* vs 2"):
        train("supervised", channels, run2, overrides=SHORT, preset="smoke", init=run1)


def test_other_method_and_own_folder_are_refused(data: Dataset, run1: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="is a 'supervised' run; a warm start needs a run of 'mrnet'"):
        train("mrnet", data, tmp_path / "run2", overrides=SHORT, preset="smoke", init=run1)
    with pytest.raises(ConfigError, match="its own weights"):
        train("supervised", data, run1, overrides=SHORT, preset="smoke", init=run1)
    assert not (tmp_path / "run2").exists()


def test_model_that_does_not_fit_is_one_error(data: Dataset, run1: Path, tmp_path: Path) -> None:
    wider = [*SHORT, "model.kwargs={channels: [4, 8]}"]
    with pytest.raises(ConfigError, match=r"--init: .*do not match the model"):
        train("supervised", data, tmp_path / "run2", overrides=wider, preset="smoke", init=run1)


def test_init_on_a_run_trained_from_scratch_is_refused(data: Dataset, run1: Path, tmp_path: Path) -> None:
    other = tmp_path / "other"
    train("supervised", data, other, overrides=SHORT, preset="smoke", init=run1)
    with pytest.raises(ConfigError, match="trained from scratch"):  # same config as run1, so it would resume
        train("supervised", data, run1, overrides=SMOKE, preset="smoke", init=other)


@pytest.fixture
def killed_after_first_epoch(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The first epoch-end checkpoint is written, then the run dies (like a SIGKILL after the save)."""
    real = method_base.Trainer._save_checkpoint
    calls = {"n": 0}

    def save_then_die(self: Any, state: Any) -> None:
        real(self, state)
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("killed")

    monkeypatch.setattr(method_base.Trainer, "_save_checkpoint", save_then_die)
    yield
    monkeypatch.setattr(method_base.Trainer, "_save_checkpoint", real)


def test_resume_continues_its_own_progress(
    data: Dataset, run1: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, killed_after_first_epoch: None
) -> None:
    run2 = tmp_path / "run2"
    two = [*SHORT, "train.epochs=2"]
    with pytest.raises(RuntimeError, match="killed"):
        train("supervised", data, run2, overrides=two, preset="smoke", init=run1)
    assert (run2 / "checkpoint.safetensors").is_file() and RunDir(run2).status == "running"

    def no_reinit(self: WarmStart, stage: str | None, modules: Any) -> list[str]:
        raise AssertionError("a resumed run must not load the earlier run's weights again")

    monkeypatch.setattr(WarmStart, "load", no_reinit)
    recorder = _Recorder()
    recorder.install(monkeypatch)
    train("supervised", data, run2, overrides=two, preset="smoke")  # resume without --init: lineage kept
    meta = RunDir(run2).read_meta()
    assert meta["status"] == "finished" and meta["steps"] == 4
    assert meta[INIT_KEY]["path"] == str(run1.resolve())
    monkeypatch.undo()
    other = tmp_path / "other"
    train("supervised", data, other, overrides=SHORT, preset="smoke")
    with pytest.raises(ConfigError, match="was started from"):
        train("supervised", data, run2, overrides=two, preset="smoke", init=other)


def test_cli_warm_start(data: Dataset, run1: Path, tmp_path: Path) -> None:
    run2 = tmp_path / "run2"
    args = ["train", "supervised", "--data", data.root, "--out", run2, "--preset", "smoke", "--time-budget", "none"]
    args += ["--set", "train.progress=false", "--set", "train.steps_per_epoch=2"]
    result = labelwise(*args, "--init", run1)
    assert result.code == 0, result.output
    assert "warm start from" in result.stdout
    assert RunDir(run2).read_meta()[INIT_KEY]["path"] == str(run1.resolve())
    other = disc_dataset(tmp_path / "three", n_train=2, n_val=1, n_test=1, size=16, classes=("background", "a", "b"))
    bad = labelwise("train", "supervised", "--data", other.root, "--out", tmp_path / "run3", "--init", run1)
    assert bad.code == 2 and len(bad.errors) == 1 and "class_names" in bad.errors[0], bad.output
    assert not (tmp_path / "run3").exists()


def test_multi_stage_method_warm_starts_every_stage(
    data: Dataset, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """D-Persona: stage 1 from RUN1/stage1, stage 2's heads from RUN1/stage2 (the frozen net is this run's)."""
    opts = ["train.progress=false", "stage2.progress=false"]
    run1 = tmp_path / "run1"
    train("dpersona", data, run1, overrides=opts, preset="smoke")
    recorder = _Recorder()
    recorder.install(monkeypatch)
    train("dpersona", data, tmp_path / "run2", overrides=opts, preset="smoke", init=run1)
    assert len(recorder.starts) == 2
    for start, stage in zip(recorder.starts, ("stage1", "stage2"), strict=True):
        before = _weights(run1 / stage / "weights.safetensors")
        assert set(start) == set(before)
        assert all(torch.equal(start[k], v) for k, v in before.items()), stage
    lineage = RunDir(tmp_path / "run2").read_meta()[INIT_KEY]
    assert {"stage1/weights.safetensors", "stage2/weights.safetensors", "weights.safetensors"} <= set(
        lineage["weights"]
    )


@pytest.mark.slow
@pytest.mark.parametrize("method_name", available())
def test_every_method_warm_starts(method_name: str, data: Dataset, tmp_path: Path) -> None:
    """Every registered method trains RUN1 (smoke) and a RUN2 warm-started from it, with the lineage recorded."""
    method = get_method(method_name)
    ds = method.example_dataset(tmp_path / "example") or data
    cfg = load_method_config(method, preset="smoke", overrides=["train.progress=false"])
    method.fit(ds, cfg, tmp_path / "run1")
    short, _ = warm_start_schedule(cfg)
    method.fit(ds, short, tmp_path / "run2", init=tmp_path / "run1")
    meta = RunDir(tmp_path / "run2").read_meta()
    assert meta["status"] == "finished" and meta[INIT_KEY]["method"] == method_name


def test_source_weights_changed_since_the_start_is_refused(data: Dataset, run1: Path, tmp_path: Path) -> None:
    import shutil

    source = tmp_path / "source"
    shutil.copytree(run1, source)
    run2 = tmp_path / "run2"
    train("supervised", data, run2, overrides=SHORT, preset="smoke", init=source)
    shutil.copy(run2 / "weights.safetensors", source / "weights.safetensors")  # the source run was retrained
    with pytest.raises(ConfigError, match="whose weights have changed since"):
        train("supervised", data, run2, overrides=SHORT, preset="smoke", init=source)
    stale = WarmStart(RunDir(source), RunDir(run2).read_meta()[INIT_KEY])
    with pytest.raises(ConfigError, match="changed since this run started from it"):
        stale.load(None, {})
