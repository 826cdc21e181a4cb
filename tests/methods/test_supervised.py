"""The supervised baseline end to end through the CLI, fused targets, and the bad-input guarantees."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.engine.tinydata import disc_dataset
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Case, Dataset
from labelwise.io import PredictionIndex, read_prediction
from labelwise.labels import fused_target

SMOKE = ["--preset", "smoke", "--set", "train.progress=false", "--set", "tta=false"]


def _invoke(*args: str):
    return CliRunner().invoke(app, list(args), catch_exceptions=True)


def _case(raters: list[list[int]]) -> Case:
    maps = np.array(raters, dtype=np.int16)[:, None, :]  # (R, 1, N)
    return Case("c", np.zeros((1, 1, maps.shape[-1]), np.float32), (1.0, 1.0), np.eye(4), maps, ("a", "b", "c"))


def test_fused_targets_by_hand() -> None:
    case = _case([[0, 1, 1, 0], [0, 1, 0, 2], [1, 1, 0, 2]])
    maj = fused_target(case, "majority", 3)
    assert maj is not None
    assert np.argmax(maj, 0)[0].tolist() == [0, 1, 0, 2]
    mean = fused_target(case, "mean", 3)
    assert mean is not None
    np.testing.assert_allclose(mean[:, 0, 2], [2 / 3, 1 / 3, 0])
    one = fused_target(case, "rater", 3, rater="b")
    assert one is not None and np.argmax(one, 0)[0].tolist() == [0, 1, 0, 2]
    # a tie between background and foreground goes to background (lower index)
    tie = fused_target(_case([[0, 1], [1, 1]]), "majority", 2)
    assert tie is not None and np.argmax(tie, 0)[0].tolist() == [0, 1]
    assert fused_target(_case([[0, 1]]), "rater", 2, rater="zz") is None


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("sup")
    ds = disc_dataset(root / "ds", n_train=3, n_val=1, n_test=2, size=16)
    res = _invoke("train", "supervised", "--data", str(ds.root), "--out", str(root / "run"), *SMOKE)
    assert res.exit_code == 0, res.output
    return ds.root, root / "run"


def test_train_predict_end_to_end(trained: tuple[Path, Path], tmp_path: Path) -> None:
    data, run = trained
    meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["method"] == "supervised"
    assert "dice" in meta["val_metrics"]
    res = _invoke("predict", "--run", str(run), "--data", str(data), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 0, res.output
    index = PredictionIndex.load(tmp_path / "pred")
    assert index.cases == ["case04", "case05"] and index.method == "supervised"
    ds = Dataset(data)
    pred = read_prediction(tmp_path / "pred", "case04", 2)
    case = ds["case04"]
    assert pred.probs.shape == (2, *case.spatial_shape)
    # same geometry as the source image
    import nibabel as nib

    src = nib.load(str(data / "images" / "case04.nii.gz"))
    out = nib.load(str(tmp_path / "pred" / "case04.nii.gz"))
    np.testing.assert_allclose(out.affine, src.affine)


def test_rerun_finished_run_is_a_noop_and_other_config_is_refused(trained: tuple[Path, Path]) -> None:
    data, run = trained
    before = (run / "weights.safetensors").read_bytes()
    res = _invoke("train", "supervised", "--data", str(data), "--out", str(run), *SMOKE)
    assert res.exit_code == 0, res.output
    res = _invoke("train", "supervised", "--data", str(data), "--out", str(run), *SMOKE, "--set", "train.lr=0.5")
    assert res.exit_code != 0
    assert "different config" in str(res.exception)
    assert (run / "weights.safetensors").read_bytes() == before


def test_corrupt_checkpoint_is_reported_and_not_overwritten(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    data, run = trained
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    ckpt = copy / "checkpoint.safetensors"
    ckpt.write_bytes(ckpt.read_bytes()[:100])
    weights = (copy / "weights.safetensors").read_bytes()
    res = _invoke("train", "supervised", "--data", str(data), "--out", str(copy), *SMOKE)
    assert res.exit_code != 0 and "corrupt" in str(res.exception)
    assert len(ckpt.read_bytes()) == 100
    assert (copy / "weights.safetensors").read_bytes() == weights


@pytest.mark.parametrize(
    ("kwargs", "match"), [({"channels": 2}, "channel"), ({"classes": ("bg", "a", "b")}, "classes")]
)
def test_predict_refuses_incompatible_dataset(
    trained: tuple[Path, Path], tmp_path: Path, kwargs: dict, match: str
) -> None:
    _, run = trained
    other = disc_dataset(tmp_path / "other", n_train=1, n_val=0, n_test=1, size=16, **kwargs)
    res = _invoke("predict", "--run", str(run), "--data", str(other.root), "--out", str(tmp_path / "pred"))
    assert res.exit_code != 0 and match in str(res.exception)
    assert not (tmp_path / "pred").exists()


def test_one_bad_case_is_reported_and_the_rest_predicted(trained: tuple[Path, Path], tmp_path: Path) -> None:
    import shutil

    data, run = trained
    copy = tmp_path / "ds"
    shutil.copytree(data, copy)
    (copy / "images" / "case04.nii.gz").write_bytes(b"garbage")
    res = _invoke("predict", "--run", str(run), "--data", str(copy), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 1
    assert "case04" in res.output
    assert PredictionIndex.load(tmp_path / "pred").cases == ["case05"]
    assert not (tmp_path / "pred" / "case04.nii.gz").exists()


def test_methods_lists_supervised() -> None:
    res = _invoke("methods")
    assert res.exit_code == 0 and "supervised" in res.output


def test_slicewise_2d_on_3d_with_class_subset_and_held_out_slices(tmp_path: Path) -> None:
    ds = disc_dataset(
        tmp_path / "ds3d", n_train=2, n_val=0, n_test=1, size=12, spatial_dims=3, classes=("bg", "a", "b")
    )
    run = tmp_path / "run"
    sets = ["slicewise=true", "train_slices=3", "classes=[b]", "patch_size=[12, 12]"]
    res = _invoke(
        "train", "supervised", "--data", str(ds.root), "--out", str(run), *SMOKE, *(f"--set={s}" for s in sets)
    )
    assert res.exit_code == 0, res.output
    plan = json.loads((run / "plan.json").read_text(encoding="utf-8"))
    assert plan["spatial_dims"] == 2 and plan["class_names"] == ["background", "b"] and plan["class_indices"] == [0, 2]
    assert plan["train_slices"] == {"case00": [0, 6, 11], "case01": [0, 6, 11]}  # evenly spaced over 12 slices
    res = _invoke("predict", "--run", str(run), "--data", str(ds.root), "--out", str(tmp_path / "pred"))
    assert res.exit_code == 0, res.output
    assert PredictionIndex.load(tmp_path / "pred").class_names == ("background", "b")
    pred = read_prediction(tmp_path / "pred", "case02", 3)
    assert pred.probs.shape == (2, 12, 12, 12)
