"""The CAM baseline end to end through the CLI: training without masks, gating, selection on val."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from tests.methods.weakdata import make_weak_dataset
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.errors import DataError
from labelwise.methods.cam import CAMPredictor


# ------------------------------------------------------------------------------------------------- CAM end to end
def test_cam_trains_without_masks_and_predicts_through_the_cli(tmp_path: Path) -> None:
    data = make_weak_dataset(tmp_path / "d", n_lesion=5, n_normal=4)
    nomask = tmp_path / "nomask"
    shutil.copytree(data, nomask)
    shutil.rmtree(nomask / "labels")  # label files deleted: training must never read them
    runner = CliRunner()
    res = runner.invoke(
        app, ["train", "cam", "--data", str(nomask), "--out", str(tmp_path / "run"), "--preset", "smoke"]
    )
    assert res.exit_code == 0, res.output
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["status"] == "finished" and meta["healthy_source"] == "normal"
    res = runner.invoke(
        app, ["predict", "--run", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "pred")]
    )
    assert res.exit_code == 0, res.output
    from labelwise.methods import load_run

    _, cfg, predictor = load_run(tmp_path / "run", "cpu")
    case = Dataset(data).load("c04")
    for kwargs in ({}, {"crf": True, "postprocess": "otsu"}):
        pred = predictor.predict(case, **kwargs)
        assert pred.probs.shape == (2, *case.spatial_shape)
        np.testing.assert_allclose(pred.probs.sum(0), 1.0, atol=1e-5)
    assert cfg.domain.image_size == 32
    index = json.loads((tmp_path / "pred" / "predictions.json").read_text(encoding="utf-8"))
    assert sorted(index["cases"]) == ["c04", "c08"]


def test_cam_train_rejects_a_dataset_without_image_labels(tmp_path: Path) -> None:
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=3, n_normal=2, label="grade")
    with pytest.raises(DataError, match="no image-level label 'lesion'"):
        train("cam", data, tmp_path / "run", preset="smoke")


# ------------------------------------------------------------------------------------------------- gating
def test_cam_gating_empties_the_mask_of_images_called_healthy(tmp_path: Path) -> None:
    import torch

    from labelwise.methods import load_run
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=5, n_normal=4)
    train("cam", data, tmp_path / "run", preset="smoke")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["gate"] is True  # real normal images: auto -> on
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    assert isinstance(predictor, CAMPredictor)
    case = Dataset(data).load("c04")
    fc = predictor.net.get_submodule("fc")
    with torch.no_grad():  # force the classifier to say "healthy" on every image
        fc.get_parameter("weight").zero_()
        fc.get_parameter("bias").copy_(torch.tensor([10.0, -10.0]))
    gated = predictor.predict(case)
    assert float(gated.probs[1].max()) == 0.0
    np.testing.assert_allclose(gated.probs[0], 1.0)
    ungated = predictor.predict(case, gate="never")
    assert ungated.probs.shape == gated.probs.shape
    with torch.no_grad():  # "lesion": gating keeps the map
        fc.get_parameter("bias").copy_(torch.tensor([-10.0, 10.0]))
    np.testing.assert_array_equal(predictor.predict(case).probs, predictor.predict(case, gate="never").probs)


# ------------------------------------------------------------------------------------------------- selection
def test_selection_on_val_uses_the_fold_split_and_reports_it(tmp_path: Path) -> None:
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=6, n_normal=6)
    with pytest.raises(DataError, match="needs cases in the val split"):
        train("cam", data, tmp_path / "bad", preset="smoke", overrides=["selection=val"])
    res = CliRunner().invoke(
        app,
        ["data", "split", "--data", str(data), "--out", str(tmp_path / "f1"), "--folds", "3", "--fold", "1",
         "--stratify", "lesion", "--val-fraction", "0.25"],
    )  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "train 6 / val 2 / test 4" in res.output
    ds = Dataset(tmp_path / "f1")
    assert sorted(ds.record(i).image_labels["lesion"] for i in ds.split_ids("test")) == [0, 0, 1, 1]
    train("cam", tmp_path / "f1", tmp_path / "run", preset="smoke", overrides=["selection=val"])
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["selection"].startswith("best val IoU: epoch 1 (dice ")
    log = tmp_path / "run" / "logs" / "val.csv"
    assert log.is_file(), "selection on val writes the validation log"
    header = log.read_text(encoding="utf-8").splitlines()[0].split(",")
    assert "iou" in header and "dice" in header, header


# ------------------------------------------------------------------------------------------------- known answer
def _disc_dataset(dest: Path, n: int = 8, size: int = 32, seed: int = 0) -> Path:
    """``n`` images with a dark disc (label lesion) and ``n`` without (normal), all in ``train``.

    Every image gets a black first row and a white last row, so the per-image intensity normalisation of
    :mod:`labelwise.data.domains` maps the skin to the same values in both classes: the disc is the only thing
    that tells the classes apart, and the lesion evidence can only be in it.
    """
    from tests.methods.weakdata import disc_image

    from labelwise.data import DatasetWriter

    rng = np.random.default_rng(seed)
    w = DatasetWriter(dest, "disc", 2, ("background", "lesion"), rater_ids=("gt",), image_label_names=("lesion",))
    for i in range(2 * n):
        img, mask = disc_image(rng, size, size, lesion=i < n)
        img[:, 0, :], img[:, -1, :] = 0.0, 255.0
        mask[0, :] = mask[-1, :] = 0
        w.add_case(f"c{i:02d}", img, {"gt": mask}, image_labels={"lesion": int(i < n)}, split="train")
    w.finish()
    return dest


@pytest.mark.parametrize("kind", ["cam", "gradcam"])
def test_cam_map_is_high_on_the_lesion_known_answer(kind: str, tmp_path: Path) -> None:
    """Bug (#17): the map was the inverse of the lesion (MONAI's normaliser maps the maximum to 0).

    A short CPU training on dark discs vs disc-free images: the map must be higher inside the disc than outside
    on every lesion image, and the default mask (Otsu clean-up, as ``cltn``) must overlap the disc.
    """
    from labelwise.data.domains import resize_chw
    from labelwise.methods import load_run
    from labelwise.methods.base import train
    from labelwise.metrics import iou

    data = _disc_dataset(tmp_path / "d")
    overrides = [
        "domain.image_size=32",
        "widths=[8,16,16,16]",
        f"cam={kind}",
        "train.epochs=1",
        "train.steps_per_epoch=100",
        "train.batch_size=8",
        "train.progress=false",
    ]
    train("cam", data, tmp_path / "run", overrides=overrides)
    _, cfg, predictor = load_run(tmp_path / "run", "cpu")
    assert isinstance(predictor, CAMPredictor)
    assert cfg.postprocess == "otsu"  # the default is cltn's
    ds = Dataset(data)
    gaps, ious = [], []
    for cid in [i for i in ds.ids if ds.record(i).image_labels["lesion"] == 1]:
        case = ds.load(cid)
        inside = case.raters[0] > 0
        fmap = resize_chw(predictor.activation_map(predictor.working_image(case))[None], case.spatial_shape)[0]
        gaps.append(float(fmap[inside].mean() - fmap[~inside].mean()))
        ious.append(iou(predictor.predict(case, gate="never").probs[1] >= 0.5, inside))
    # every lesion image: clearly more evidence inside the disc than outside (the inverted map gave gaps < 0)
    assert min(gaps) > 0.1, gaps
    assert float(np.mean(gaps)) > 0.2, gaps
    assert float(np.mean(ious)) > 0.2, ious  # a 4 x 4 map at 1/8 of 32 px: coarse, but on the disc
