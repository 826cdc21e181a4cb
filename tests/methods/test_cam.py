"""Weak-supervision data domains, dense CRF / clean-up, and the CAM baseline end to end through the CLI."""

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
from labelwise.data.domains import (
    DomainConfig,
    build_domains,
    centre_weight,
    inpaint_centre,
    mirror_tile,
    periphery_crops,
    prepare_image,
)
from labelwise.errors import DataError
from labelwise.methods.crf import CRFConfig, clean_mask, dense_crf, otsu_threshold, rescale_probability


# ------------------------------------------------------------------------------------------------- domains
def test_domains_from_normal_cases_and_from_periphery(tmp_path: Path) -> None:
    ds = Dataset(make_weak_dataset(tmp_path / "d", n_lesion=4, n_normal=3))
    dom = build_domains(ds, DomainConfig(image_size=16))
    # the last lesion and the last normal case are test: 3 lesion + 2 normal training images
    assert dom.source == "normal"
    assert dom.lesion.shape == (3, 3, 16, 16) and dom.healthy.shape == (2, 3, 16, 16)
    assert set(dom.healthy_ids) == {"c04", "c05"}
    assert float(dom.lesion.min()) >= -1 and float(dom.lesion.max()) <= 1
    # no value means "normal": every image is a lesion image, domain B = 2 healthy versions per lesion image
    per = build_domains(ds, DomainConfig(image_size=16, normal_values=()))
    assert per.source == "periphery"
    assert per.lesion.shape[0] == 5 and per.healthy.shape[0] == 10
    assert per.healthy_ids[:4] == ("c00:border0", "c00:border1", "c01:border0", "c01:border1")
    assert "border crops" in per.describe()
    # a healthy version keeps its lesion image's corners, with the lesion image's intensity normalisation
    np.testing.assert_allclose(per.healthy[0][:, 0, 0], per.lesion[0][:, 0, 0], atol=1e-4)
    assert not np.allclose(per.healthy[0][:, 8, 8], per.lesion[0][:, 8, 8], atol=1e-2)
    old = build_domains(ds, DomainConfig(image_size=16, normal_values=(), periphery_mode="mosaic", periphery_keep=4))
    assert old.healthy.shape[0] == 20


def test_prepare_image_normalises_with_a_reference_image() -> None:
    image = np.full((1, 8, 8), 5.0, np.float32)
    reference = np.linspace(0, 10, 64, dtype=np.float32).reshape(1, 8, 8)
    out = prepare_image(image, 3, 8, "c", reference=reference)  # both replicated to RGB
    assert out.shape == (3, 8, 8)
    np.testing.assert_allclose(out, 0.0, atol=1e-5)  # 5 is the middle of the reference's 0..10 range
    with pytest.raises(DataError, match="reference image has 2 channel"):
        prepare_image(np.zeros((3, 8, 8), np.float32), 3, 8, "c", reference=np.zeros((2, 8, 8), np.float32))


def test_inpaint_centre_keeps_the_corners_and_replaces_the_centre() -> None:
    w = centre_weight((20, 30))
    assert w.shape == (20, 30) and w.dtype == np.float32
    assert w[10, 15] == 1.0 and w[0, 0] == 0.0 and w[-1, -1] == 0.0
    assert 0.0 < w[10, 1] < 1.0  # the edge midpoints are blended
    image = np.zeros((3, 20, 30), np.float32)
    skin = np.ones((3, 20, 30), np.float32)
    out = inpaint_centre(image, skin)
    np.testing.assert_array_equal(out[:, 10, 15], 1.0)
    np.testing.assert_array_equal(out[:, 0, 0], 0.0)
    np.testing.assert_allclose(out, np.broadcast_to(w, out.shape))


def test_periphery_crops_are_the_four_corners() -> None:
    img = np.arange(2 * 10 * 20, dtype=np.float32).reshape(2, 10, 20)
    crops = periphery_crops(img, 0.3)  # side round(0.3 * 10) = 3
    assert [c.shape for c in crops] == [(2, 3, 3)] * 4
    np.testing.assert_array_equal(crops[0], img[:, :3, :3])
    np.testing.assert_array_equal(crops[1], img[:, :3, 17:])
    np.testing.assert_array_equal(crops[2], img[:, 7:, :3])
    np.testing.assert_array_equal(crops[3], img[:, 7:, 17:])
    # keep=2: the two brightest of the 8 border crops (dark vignette corners and dark lesions are dropped)
    dark = np.zeros((1, 10, 20), np.float32)
    dark[:, 7:, 17:] = 9.0  # bottom-right corner
    dark[:, :3, 8:11] = 5.0  # top edge midpoint (x from (20 - 3) // 2 = 8)
    kept = periphery_crops(dark, 0.3, keep=2)
    assert [float(c.mean()) for c in kept] == [9.0, 5.0]


def test_mirror_tile_repeats_the_patch_without_seams() -> None:
    patch = np.arange(6, dtype=np.float32).reshape(1, 2, 3)
    out = mirror_tile(patch, (5, 7))
    assert out.shape == (1, 5, 7)
    np.testing.assert_array_equal(out[0, 0], [0, 1, 2, 2, 1, 0, 0])
    np.testing.assert_array_equal(out[0, :, 0], [0, 3, 3, 0, 0])
    np.testing.assert_array_equal(out[:, :2, :3], patch)


def test_bad_inputs_give_clear_errors(tmp_path: Path) -> None:
    ds = Dataset(make_weak_dataset(tmp_path / "d", n_lesion=3, n_normal=2, label="diagnosis"))
    with pytest.raises(DataError, match=r"no image-level label 'lesion'.*diagnosis"):
        build_domains(ds, DomainConfig(image_size=16))
    only_normal = Dataset(make_weak_dataset(tmp_path / "n", n_lesion=0, n_normal=3))
    with pytest.raises(DataError, match="only one class present"):
        build_domains(only_normal, DomainConfig(image_size=16), split=None)
    only_lesion = Dataset(make_weak_dataset(tmp_path / "l", n_lesion=3, n_normal=0))
    with pytest.raises(DataError, match=r"only one class present.*periphery"):
        build_domains(only_lesion, DomainConfig(image_size=16, healthy_source="normal"), split=None)


def test_prepare_image_resizes_and_fixes_channels() -> None:
    gray = np.linspace(0, 100, 30 * 50, dtype=np.float32).reshape(1, 30, 50)
    out = prepare_image(gray, 3, 16)
    assert out.shape == (3, 16, 16)
    np.testing.assert_array_equal(out[0], out[2])  # grayscale replicated to RGB
    assert float(out.min()) >= -1 and float(out.max()) <= 1
    with pytest.raises(DataError, match="case x: image has 2 channel"):
        prepare_image(np.zeros((2, 8, 8), np.float32), 3, 16, "x")


# ------------------------------------------------------------------------------------------------- CRF / clean-up
def test_otsu_threshold_splits_two_modes() -> None:
    v = np.concatenate([np.full(60, 0.1), np.full(40, 0.9)])
    t = otsu_threshold(v)
    assert 0.1 <= t < 0.9
    assert otsu_threshold(np.full(5, 0.3)) == 0.3


def test_rescale_probability_sends_threshold_to_half() -> None:
    p = np.array([0.0, 0.1, 0.2, 0.6, 1.0], np.float32)
    out = rescale_probability(p, 0.2)
    np.testing.assert_allclose(out, [0.0, 0.25, 0.5, 0.75, 1.0], atol=1e-6)


def test_clean_mask_keeps_largest_component_and_fills_holes() -> None:
    prob = np.zeros((12, 12), np.float32)
    prob[1:8, 1:8] = 0.9  # 49-pixel blob with a hole
    prob[4, 4] = 0.0
    prob[10:12, 10:12] = 0.9  # 4-pixel speck
    mask = clean_mask(prob, 0.5)
    assert mask.sum() == 49 and mask[4, 4] and not mask[10, 10]
    assert clean_mask(np.zeros((4, 4)), 0.5).sum() == 0


def _two_region_case(rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    h, w = 24, 28
    truth = np.zeros((h, w), bool)
    truth[:, 12:] = True
    img = np.where(truth[None], 40.0, 200.0) + rng.normal(0, 3, (3, h, w))
    noisy = np.clip(np.where(truth, 0.7, 0.3) + rng.normal(0, 0.25, (h, w)), 0.01, 0.99).astype(np.float32)
    return img.astype(np.float32), noisy, truth


def test_dense_crf_torch_cleans_a_noisy_unary_along_image_edges() -> None:
    img, noisy, truth = _two_region_case(np.random.default_rng(0))
    before = ((noisy >= 0.5) == truth).mean()
    out = dense_crf(img, noisy, CRFConfig(reference_side=28))
    after = ((out >= 0.5) == truth).mean()
    assert out.shape == noisy.shape and out.dtype == np.float32
    assert before < 0.95 and after > 0.99
    const = dense_crf(img, np.full_like(noisy, 0.2))
    assert float(const.max()) < 0.5  # a constant unary never flips


def test_dense_crf_torch_agrees_with_reference_package() -> None:
    pytest.importorskip("pydensecrf.densecrf")
    img, noisy, truth = _two_region_case(np.random.default_rng(1))
    cfg = CRFConfig(reference_side=28)
    ours = dense_crf(img, noisy, cfg) >= 0.5
    ref = dense_crf(img, noisy, CRFConfig(reference_side=28, backend="pydensecrf")) >= 0.5
    assert (ours == ref).mean() > 0.97
    assert (ref == truth).mean() > 0.97


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
    res = runner.invoke(app, ["predict", str(tmp_path / "run"), "--data", str(data), "--out", str(tmp_path / "pred")])
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
def test_gate_auto_follows_the_healthy_source() -> None:
    from labelwise.methods.cam import gate_enabled

    assert gate_enabled("auto", "normal") and not gate_enabled("auto", "periphery")
    assert gate_enabled("always", "periphery") and not gate_enabled("never", "normal")
    assert not gate_enabled("auto", None)  # an old run without healthy_source in meta.json: never gated
    with pytest.raises(Exception, match="gate must be"):
        gate_enabled("maybe", "normal")


def test_cam_gating_empties_the_mask_of_images_called_healthy(tmp_path: Path) -> None:
    import torch

    from labelwise.methods import load_run
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=5, n_normal=4)
    train("cam", data, tmp_path / "run", preset="smoke")
    meta = json.loads((tmp_path / "run" / "meta.json").read_text(encoding="utf-8"))
    assert meta["gate"] is True  # real normal images: auto -> on
    _, _, predictor = load_run(tmp_path / "run", "cpu")
    case = Dataset(data).load("c04")
    with torch.no_grad():  # force the classifier to say "healthy" on every image
        predictor.net.fc.weight.zero_()
        predictor.net.fc.bias.copy_(torch.tensor([10.0, -10.0]))
    gated = predictor.predict(case)
    assert float(gated.probs[1].max()) == 0.0
    np.testing.assert_allclose(gated.probs[0], 1.0)
    ungated = predictor.predict(case, gate="never")
    assert ungated.probs.shape == gated.probs.shape
    with torch.no_grad():  # "lesion": gating keeps the map
        predictor.net.fc.bias.copy_(torch.tensor([-10.0, 10.0]))
    np.testing.assert_array_equal(predictor.predict(case).probs, predictor.predict(case, gate="never").probs)


# ------------------------------------------------------------------------------------------------- selection
def test_selection_on_val_uses_the_fold_split_and_reports_it(tmp_path: Path) -> None:
    from labelwise.methods.base import train

    data = make_weak_dataset(tmp_path / "d", n_lesion=6, n_normal=6)
    with pytest.raises(DataError, match="needs cases in the val split"):
        train("cam", data, tmp_path / "bad", preset="smoke", overrides=["selection=val"])
    res = CliRunner().invoke(
        app,
        ["data", "split", str(data), "--out", str(tmp_path / "f1"), "--folds", "3", "--fold", "1",
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
    assert not log.exists() or "iou" in log.read_text(encoding="utf-8")
