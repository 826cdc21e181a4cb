from __future__ import annotations

import itertools
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from labelwise.data import Dataset, DatasetWriter
from labelwise.errors import ConfigError, DataError
from labelwise.methods import get_method, load_method_config, load_run
from labelwise.methods.cps import CPSConfig, cps_weight, lovasz_softmax_loss


def test_cps_weight_ramp_hand_values() -> None:
    assert cps_weight(0, 100, 0.1) == pytest.approx(0.1 * math.exp(-5))
    assert cps_weight(50, 100, 0.1) == pytest.approx(0.1 * math.exp(-5 * 0.25))
    assert cps_weight(100, 100, 0.1) == pytest.approx(0.1)
    assert cps_weight(30, 100, 0.1, rampup=0.3) == pytest.approx(0.1)  # T = 30 steps
    assert cps_weight(500, 100, 0.1) == pytest.approx(0.1)
    ws = [cps_weight(t, 100, 0.1) for t in range(101)]
    assert all(a <= b for a, b in itertools.pairwise(ws))


def test_lovasz_softmax_perfect_and_wrong() -> None:
    target = torch.zeros(1, 2, 4, 4)
    target[0, 1, :2] = 1
    target[0, 0, 2:] = 1
    perfect = lovasz_softmax_loss(target * 40 - 20, target)
    wrong = lovasz_softmax_loss((1 - target) * 40 - 20, target)
    assert float(perfect) < 1e-6
    assert float(wrong) == pytest.approx(1.0, abs=1e-6)  # every pixel wrong: Jaccard loss 1 per class
    logits = torch.zeros(1, 2, 4, 4, requires_grad=True)
    lovasz_softmax_loss(logits, target).backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all()


def test_config_errors() -> None:
    with pytest.raises(ConfigError):
        CPSConfig(cps_weight=-1.0)
    with pytest.raises(ConfigError):
        CPSConfig(rampup=0.0)
    with pytest.raises(ConfigError):
        CPSConfig(train_slices=0)


def _volume_dataset(root: Path, hu: bool = False) -> Dataset:
    """One 16x16x10 volume with a drifting disc, labelled on slices 2..7 only."""
    g = np.indices((16, 16)).astype(float)
    lab = np.zeros((16, 16, 10), np.int16)
    for z in range(10):
        lab[..., z] = ((g[0] - 6 - 0.4 * z) ** 2 + (g[1] - 8) ** 2) < 16
    rng = np.random.default_rng(0)
    img = (lab * 2.0 + rng.normal(0, 0.3, lab.shape)).astype(np.float32)
    if hu:
        img = img * 100 - 1000
    part = np.zeros_like(lab)
    part[..., 2:8] = lab[..., 2:8]
    w = DatasetWriter(root, "v", 3, ("background", "disc"), ("gt",))
    w.add_case("v", img[None], {"gt": part}, (1.0, 1.0, 2.0), split="train", labelled_slices=tuple(range(2, 8)))
    w.finish()
    return Dataset(root)


def test_cps_on_partially_labelled_volume(tmp_path: Path) -> None:
    ds = _volume_dataset(tmp_path / "ds", hu=True)
    method = get_method("cps")
    cfg = load_method_config(
        method,
        preset="smoke",
        overrides=["train_slices=2", "ct_windows=true", "supervised_loss=ce_lovasz", "train.progress=false"],
    )
    method.fit(ds, cfg, tmp_path / "run")
    plan = json.loads((tmp_path / "run" / "plan.json").read_text(encoding="utf-8"))
    assert plan["train_slices"] == {"v": [2, 7]} and plan["channels"] == 3 and plan["slicewise"]
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["labelled_units"] == 2 and meta["unlabelled_units"] == 8
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    pred = predictor.predict(ds["v"])
    assert pred.probs.shape == (2, 16, 16, 10)
    assert pred.samples is not None and pred.samples.shape == (2, 16, 16, 10)
    np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-4)


def test_cps_adds_pseudo_label_slices(tmp_path: Path) -> None:
    from labelwise.uncertainty import write_pseudo_labels

    ds = _volume_dataset(tmp_path / "ds")
    vote = ds["v"].raters[0].copy()
    write_pseudo_labels(ds, {"v": [vote, vote]}, tmp_path / "pseudo", ds.class_names)  # slices 0,1,8,9 are new
    method = get_method("cps")
    cfg = load_method_config(
        method,
        preset="smoke",
        overrides=["train_slices=2", f"pseudo_labels={tmp_path / 'pseudo'}", "train.progress=false"],
    )
    method.fit(ds, cfg, tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["labelled_units"] == 2 + 4 and meta["unlabelled_units"] == 4


def test_ct_windows_needs_one_channel(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path / "ds", "two", 2, ("background", "fg"), ("gt",))
    w.add_case("a", np.zeros((2, 8, 8), np.float32), {"gt": np.ones((8, 8), np.int16)}, split="train")
    w.finish()
    method = get_method("cps")
    cfg = load_method_config(method, preset="smoke", overrides=["ct_windows=true", "train.progress=false"])
    with pytest.raises(DataError, match="one-channel"):
        method.fit(Dataset(tmp_path / "ds"), cfg, tmp_path / "run")


def as_rank(monkeypatch: pytest.MonkeyPatch, rank: int) -> list[dict[str, object]]:
    """Run this process as DDP rank ``rank`` (no process group: world size 1); returns the ``meta.json`` writes."""
    import labelwise.engine.distributed
    import labelwise.engine.trainer
    import labelwise.methods.base
    from labelwise.engine import RunDir
    from labelwise.engine.distributed import DistInfo

    info = DistInfo(rank=rank, world_size=1)
    for module in (labelwise.engine.distributed, labelwise.engine.trainer, labelwise.methods.base):
        monkeypatch.setattr(module, "init_distributed", lambda: info)
    writes: list[dict[str, object]] = []
    real = RunDir.write_meta

    def spy(self: RunDir, **fields: object) -> None:
        writes.append(fields)
        real(self, **fields)

    monkeypatch.setattr(RunDir, "write_meta", spy)
    return writes


def run_files(run: Path) -> dict[str, bytes]:
    """Every file of a run directory (relative path -> bytes), to check that nothing was rewritten."""
    return {str(p.relative_to(run)): p.read_bytes() for p in sorted(run.rglob("*")) if p.is_file()}


def test_only_rank_0_writes_meta(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bug (issue 16): cps wrote meta.json from every DDP rank. Rank 1 of a finished run writes nothing."""
    ds = _volume_dataset(tmp_path / "ds")
    method = get_method("cps")
    cfg = load_method_config(method, preset="smoke", overrides=["train_slices=2", "train.progress=false"])
    method.fit(ds, cfg, tmp_path / "run")
    before = run_files(tmp_path / "run")
    writes = as_rank(monkeypatch, 1)
    method.fit(ds, cfg, tmp_path / "run")
    assert writes == []
    assert run_files(tmp_path / "run") == before


def test_unknown_prediction_option_is_one_error(tmp_path: Path) -> None:
    """Bug (issue 16): predictors silently ignored options they do not take."""
    ds = _volume_dataset(tmp_path / "ds")
    method = get_method("cps")
    cfg = load_method_config(method, preset="smoke", overrides=["train_slices=2", "train.progress=false"])
    method.fit(ds, cfg, tmp_path / "run")
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    with pytest.raises(ConfigError, match=r"method 'cps' takes no prediction option 'samples'; it takes: tta"):
        predictor.predict(ds["v"], samples=3)
    assert predictor.predict(ds["v"], tta=True).probs.shape == (2, 16, 16, 10)
