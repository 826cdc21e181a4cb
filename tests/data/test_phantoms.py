"""Synthetic phantoms: determinism, shapes, rater styles doing what they say, and the written dataset."""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import Dataset
from labelwise.data.phantoms import (
    DEFAULT_RATER_STYLES,
    RaterStyle,
    make_phantom,
    make_phantom_dataset,
    random_rater_styles,
    read_phantom_info,
    read_phantom_truth,
)
from labelwise.errors import ConfigError, DataError


def test_same_seed_same_phantom_other_seed_differs() -> None:
    a, b, c = make_phantom(7), make_phantom(7), make_phantom(8)
    assert (a.image == b.image).all() and (a.truth == b.truth).all() and (a.raters == b.raters).all()
    assert a.records == b.records
    assert not (a.truth == c.truth).all()


def test_shapes_dtypes_and_classes_2d_3d() -> None:
    p2 = make_phantom(0, shape=(40, 32), raters=2, structures="organ+lesion")
    assert p2.image.shape == (1, 40, 32) and p2.image.dtype == np.float32
    assert p2.truth.shape == (40, 32) and p2.truth.dtype == np.int16
    assert p2.raters.shape == (2, 40, 32) and p2.raters.dtype == np.int16
    assert p2.class_names == ("background", "organ", "lesion")
    p3 = make_phantom(0, spatial_dims=3, raters=1)
    assert p3.image.shape == (1, 48, 48, 24) and p3.spacing_mm == (1.0, 1.0, 2.0)
    assert p3.class_names == ("background", "organ") and set(np.unique(p3.truth)) == {0, 1}
    assert make_phantom(0, raters=0).raters.shape == (0, 64, 64)


def test_image_has_contrast_between_structures() -> None:
    p = make_phantom(3, structures="organ+lesion", lesion=True)
    img = p.image[0]
    assert img[p.truth == 1].mean() > img[p.truth == 0].mean() + 0.2
    assert abs(img[p.truth == 2].mean() - img[p.truth == 1].mean()) > 0.15


def test_lesion_flag_controls_image_label_and_truth() -> None:
    none = make_phantom(1, structures="lesion", lesion=False, raters=3)
    assert none.image_labels == {"lesion": 0} and none.truth.sum() == 0 and none.raters.sum() == 0
    some = make_phantom(1, structures="lesion", lesion=True)
    assert some.image_labels == {"lesion": 1} and some.truth.sum() > 0 and some.num_lesions >= 1


def test_rater_styles_do_what_they_document() -> None:
    for seed in range(3):
        p = make_phantom(seed, raters=6, lesion=False)
        truth = p.truth > 0
        area = {rid: int((r > 0).sum()) for rid, r in zip(p.rater_ids, p.raters, strict=True)}
        gen, tight = p.raters[1] > 0, p.raters[2] > 0
        assert (gen & truth).sum() >= 0.99 * truth.sum()  # over-segmentation covers the truth
        assert (tight & ~truth).sum() <= 0.01 * truth.sum()  # under-segmentation stays inside
        assert area["generous"] > truth.sum() > area["tight"]
        dice = [2 * float(((r > 0) & truth).sum()) / float((r > 0).sum() + truth.sum()) for r in p.raters]
        assert dice[0] > 0.95 and dice[0] > max(dice[1], dice[2], dice[3], dice[5])  # precise is the best
        shifted = p.records[5]
        assert shifted.rater == "shifted" and max(abs(v) for v in shifted.shift_voxels) >= 1


def test_missing_small_components_is_recorded() -> None:
    style = RaterStyle("misser", miss_radius_mm=50.0, miss_prob=1.0)
    p = make_phantom(4, structures="lesion", lesion=True, raters=[style])
    assert p.records[0].missed_components >= 1 and p.raters[0].sum() == 0 and p.truth.sum() > 0


def test_many_raters_get_unique_names_and_bad_specs_fail() -> None:
    p = make_phantom(0, raters=8, shape=(16, 16))
    assert len(set(p.rater_ids)) == 8 and p.rater_ids[:6] == tuple(s.name for s in DEFAULT_RATER_STYLES)
    with pytest.raises(ConfigError):
        make_phantom(0, raters=-1)
    with pytest.raises(ConfigError):
        make_phantom(0, shape=(16, 16, 16))
    with pytest.raises(ConfigError):
        make_phantom(0, raters=[RaterStyle("a b")])
    with pytest.raises(ConfigError):
        make_phantom(0, raters=[RaterStyle("x"), RaterStyle("x")])


def test_dataset_is_fast_complete_and_documented(tmp_path: Path) -> None:
    t0 = time.perf_counter()
    ds = make_phantom_dataset(
        tmp_path / "ph", n_cases=40, raters=4, unlabelled_fraction=0.25, missing_rater_fraction=0.2, seed=3
    )
    elapsed = time.perf_counter() - t0
    assert elapsed < 10.0  # ~0.3 s on an idle core; generous for a loaded CI machine
    assert len(ds) == 40 and ds.rater_ids == ("precise", "generous", "tight", "sloppy")
    assert ds.manifest.image_label_names == ("lesion",)
    assert "over-segments by 1.5 mm" in ds.manifest.description
    recs = ds.manifest.cases
    assert {r.split for r in recs} == {"train", "val", "test"}
    unlabelled = [r for r in recs if not r.labels]
    assert len(unlabelled) == 10 and all(r.split == "train" for r in unlabelled)
    labelled = [r for r in recs if r.labels]
    assert any(len(r.labels) < 4 for r in labelled)  # some raters missing
    assert {r.image_labels["lesion"] for r in recs} == {0, 1}
    case = ds.load(labelled[0].id)
    assert case.image.shape == (1, 64, 64) and case.spacing_mm == (1.0, 1.0)
    assert case.raters.shape == (len(labelled[0].labels), 64, 64)
    info = read_phantom_info(ds.root)
    assert info["settings"]["seed"] == 3 and len(info["rater_styles"]) == 4
    entry = info["cases"][labelled[0].id]
    assert [r["rater"] for r in entry["raters"]] == list(labelled[0].labels)
    truth = read_phantom_truth(ds.root, labelled[0].id)
    assert truth.shape == (64, 64)
    p = make_phantom(np.random.default_rng([3, 0]), raters=0)  # the per-case stream; truth is drawn before raters
    assert (read_phantom_truth(ds.root, "case000") == p.truth).all()
    assert json.loads((ds.root / "dataset.json").read_text(encoding="utf-8"))["format"] == "labelwise-dataset"


def test_dataset_3d_multiclass_and_overwrite(tmp_path: Path) -> None:
    ds = make_phantom_dataset(
        tmp_path / "p3", n_cases=3, raters=2, spatial_dims=3, shape=(20, 20, 10), structures="organ+lesion"
    )
    c = ds.load(ds.ids[0])
    assert c.image.shape == (1, 20, 20, 10) and c.spacing_mm == (1.0, 1.0, 2.0)
    assert ds.class_names == ("background", "organ", "lesion")
    with pytest.raises(DataError, match="already exists"):
        make_phantom_dataset(tmp_path / "p3", n_cases=3)
    ds2 = make_phantom_dataset(tmp_path / "p3", n_cases=2, raters=0, overwrite=True)
    assert len(ds2) == 2 and ds2.rater_ids == () and not (tmp_path / "p3" / "truth" / "case002.nii.gz").exists()
    assert Dataset(tmp_path / "p3").load("case000").num_raters == 0


def test_dataset_bad_arguments(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="n_cases"):
        make_phantom_dataset(tmp_path / "x", n_cases=0)
    with pytest.raises(ConfigError, match="unlabelled_fraction"):
        make_phantom_dataset(tmp_path / "x", unlabelled_fraction=1.5)
    with pytest.raises(DataError, match="not a phantom dataset"):
        read_phantom_info(tmp_path)


def test_random_rater_styles_are_seeded_and_recorded(tmp_path: Path) -> None:
    a, b = random_rater_styles(12, seed=4), random_rater_styles(12, seed=4)
    assert a == b and a != random_rater_styles(12, seed=5)
    assert len({s.name for s in a}) == 12
    assert all(-2 <= s.bias_mm <= 2 and 0.3 <= s.jitter_mm <= 2 for s in a)
    ds = make_phantom_dataset(tmp_path / "crowd", n_cases=2, raters=a[:5])
    assert ds.rater_ids == tuple(s.name for s in a[:5])
    assert read_phantom_info(ds.root)["rater_styles"][0]["bias_mm"] == a[0].bias_mm
    with pytest.raises(ConfigError):
        random_rater_styles(-1)


def _digest(*arrays: np.ndarray) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype}{a.shape}".encode())
        h.update(a.tobytes())
    return h.hexdigest()[:16]


def test_phantoms_are_bit_identical_to_the_recorded_ones(tmp_path: Path) -> None:
    """Hashes recorded before phantoms.py became a package (and its signed distance moved to data/geometry).

    A change here changes every phantom dataset, demo and recorded result; update the hashes only on purpose.
    """
    p2 = make_phantom(3, shape=(32, 32), raters=6, structures="organ+lesion", lesion=True)
    assert _digest(p2.image, p2.truth, p2.raters) == "ce2d57c86b7d95bf"
    p3 = make_phantom(5, spatial_dims=3, shape=(16, 16, 8), raters=4, structures="lesion", lesion=True)
    assert _digest(p3.image, p3.truth, p3.raters) == "6ef670153aa6f95f"
    ds = make_phantom_dataset(tmp_path / "ph", n_cases=4, raters=3, shape=(24, 24), missing_rater_fraction=0.3, seed=1)
    arrays = [a for cid in ds.ids for a in (ds.load(cid).image, ds.load(cid).raters)]
    assert _digest(*arrays) == "ce6db9da6dc61285"
    info = (tmp_path / "ph" / "phantoms.json").read_text(encoding="utf-8")
    assert hashlib.sha256(info.encode()).hexdigest()[:16] == "98bead3ca318442d"
