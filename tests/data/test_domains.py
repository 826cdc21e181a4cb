"""Weak-supervision data domains: building them from image-level labels, healthy-source synthesis, slice datasets."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from tests.methods.weakdata import make_weak_dataset

from labelwise.data import Dataset, DatasetWriter
from labelwise.data.domains import (
    DomainConfig,
    build_domains,
    centre_weight,
    inpaint_centre,
    mirror_tile,
    periphery_crops,
    prepare_image,
    write_slice_label_dataset,
)
from labelwise.errors import DataError


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


def test_slice_label_dataset_from_a_volume(tmp_path: Path) -> None:
    vol = np.zeros((1, 6, 5, 20), np.float32)
    lab = np.zeros((6, 5, 20), np.int16)
    lab[2:4, 1:3, 5:9] = 7  # the structure occupies slices z = 5..8
    lab[0, 0, 15] = 3  # another structure
    w = DatasetWriter(tmp_path / "vol", "v", 3, ("background", "a", "b"), rater_ids=("r",))
    w.add_case("ct", vol, {"r": lab})
    w.finish()
    dest = write_slice_label_dataset(Dataset(tmp_path / "vol"), tmp_path / "slices", structure=[7], axis=2, block=4)
    ds = Dataset(dest)
    assert len(ds) == 20 and ds.spatial_dims == 2
    labels = {r.id: r.image_labels["lesion"] for r in ds.manifest.cases}
    assert [z for z in range(20) if labels[f"ct_s{z:03d}"]] == [5, 6, 7, 8]
    splits = {r.id: r.split for r in ds.manifest.cases}
    assert splits["ct_s004"] == "test" and splits["ct_s012"] == "val" and splits["ct_s000"] == "train"
    case = ds.load("ct_s006")
    assert case.image.shape == (1, 6, 5) and int(case.raters[0].sum()) == 4
    with pytest.raises(DataError, match="need both kinds"):
        write_slice_label_dataset(Dataset(tmp_path / "vol"), tmp_path / "none", structure=[9], axis=2)
