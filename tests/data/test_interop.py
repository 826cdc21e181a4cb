"""nnU-Net / Decathlon import, nnU-Net export, and model outputs imported as raters (tiny synthetic fixtures)."""

from __future__ import annotations

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset, DatasetWriter
from labelwise.data.export import Corrections, export_nnunet
from labelwise.data.importers import LabelFolderOptions, import_dataset
from labelwise.data.raters import import_rater
from labelwise.errors import ConfigError, DataError

runner = CliRunner()
SHAPE = (8, 8, 4)
CLASSES = {"background": 0, "liver": 1, "spleen": 2}


def _affine() -> np.ndarray:
    """A rotated, anisotropic, shifted grid: spacing (0.8, 0.9, 2.5) mm."""
    c, s = np.cos(0.3), np.sin(0.3)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])
    aff = np.eye(4)
    aff[:3, :3] = rot @ np.diag([0.8, 0.9, 2.5])
    aff[:3, 3] = (-12.5, 30.25, 7.0)
    return aff


def _save(path: Path, array: np.ndarray, affine: np.ndarray | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = nib.Nifti1Image(array, _affine() if affine is None else affine)
    img.set_sform(img.affine, code=1)
    img.set_qform(img.affine, code=1)
    nib.save(img, str(path))


def _label(seed: int) -> np.ndarray:
    lab = np.zeros(SHAPE, np.uint8)
    lab[1 + seed % 3 : 5, 2:6, 1:3] = 1
    lab[5:7, 1 : 3 + seed % 2, 2:4] = 2
    return lab


def _nnunet(root: Path, *, channels: int = 2, test: bool = True) -> Path:
    """Dataset042_Tiny: 3 training cases (2 channels, raters labelsTr + labelsTr_fast), 1 test case."""
    src = root / "Dataset042_Tiny"
    rng = np.random.default_rng(0)
    cases = ["tiny_001", "tiny_002", "tiny_003"]
    for i, case in enumerate(cases):
        for c in range(channels):
            _save(src / "imagesTr" / f"{case}_{c:04d}.nii.gz", rng.integers(-100, 400, SHAPE).astype(np.int16))
        _save(src / "labelsTr" / f"{case}.nii.gz", _label(i))
        if i != 1:  # the fast rater misses a case
            _save(src / "labelsTr_fast" / f"{case}.nii.gz", np.roll(_label(i), 1, axis=0))
    if test:
        for c in range(channels):
            _save(src / "imagesTs" / f"tiny_101_{c:04d}.nii.gz", rng.integers(-100, 400, SHAPE).astype(np.int16))
    spec = {
        "channel_names": {str(c): ("CT", "PET")[c] for c in range(channels)},
        "labels": CLASSES,
        "numTraining": len(cases),
        "file_ending": ".nii.gz",
        "name": "Tiny",
    }
    (src / "dataset.json").write_text(json.dumps(spec))
    return src


def _spec(src: Path) -> dict:
    return json.loads((src / "dataset.json").read_text())


def _set_spec(src: Path, **changes: object) -> None:
    (src / "dataset.json").write_text(json.dumps({**_spec(src), **changes}))


def _same_case(a: Dataset, b: Dataset, case: str, raters: dict[str, str] | None = None) -> None:
    ca, cb = a[case], b[case]
    np.testing.assert_array_equal(ca.image, cb.image)
    np.testing.assert_allclose(ca.affine, cb.affine, atol=1e-6)
    assert ca.spacing_mm == pytest.approx(cb.spacing_mm, abs=1e-6)
    for ra, rb in (raters or {r: r for r in ca.rater_ids}).items():
        np.testing.assert_array_equal(ca.raters[ca.rater_ids.index(ra)], cb.raters[cb.rater_ids.index(rb)])


# ------------------------------------------------------------------------------------------ nnU-Net import


def test_nnunet_import_keeps_channels_geometry_raters_and_splits(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    res = runner.invoke(app, ["data", "import", "nnunet", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 0, res.output
    assert "imported 4 cases (3D, 2 raters, 3 classes; train 3 / val 0 / test 1)" in res.output
    ds = Dataset(tmp_path / "ds")
    assert ds.class_names == ("background", "liver", "spleen")
    assert ds.rater_ids == ("label", "fast")
    case = ds["tiny_001"]
    assert case.image.shape == (2, *SHAPE)
    ct = nib.load(str(src / "imagesTr" / "tiny_001_0000.nii.gz"))
    pet = nib.load(str(src / "imagesTr" / "tiny_001_0001.nii.gz"))
    np.testing.assert_array_equal(case.image[0], np.asarray(ct.dataobj))
    np.testing.assert_array_equal(case.image[1], np.asarray(pet.dataobj))
    np.testing.assert_allclose(case.affine, ct.affine, atol=1e-6)
    assert case.spacing_mm == pytest.approx((0.8, 0.9, 2.5))
    np.testing.assert_array_equal(case.raters[case.rater_ids.index("label")], _label(0))
    assert ds.record("tiny_002").labels.keys() == {"label"}  # the fast rater misses it
    assert ds.record("tiny_101").split == "test" and ds.record("tiny_101").labels == {}


def test_nnunet_rater_mapping_option(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    args = ["data", "import", "nnunet", str(src), "--out", str(tmp_path / "ds"), "--raters", "labelsTr=expert"]
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    assert Dataset(tmp_path / "ds").rater_ids == ("expert",)  # only the named folder
    res = runner.invoke(app, ["data", "import", "folder", str(src), "--out", str(tmp_path / "x"), "--raters", "a=b"])
    assert isinstance(res.exception, ConfigError)


def test_nnunet_region_labels_are_refused_unless_named(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    _set_spec(src, labels={"background": 0, "organs": [1, 2], "spleen": 2}, regions_class_order=[1, 2])
    with pytest.raises(DataError, match=r"dataset\.json: region-based labels \['organs'\] .* --classes"):
        import_dataset("nnunet", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()
    options = LabelFolderOptions(class_names=("background", "liver", "spleen"))
    manifest = import_dataset("nnunet", src, tmp_path / "ds", options)
    assert manifest.class_names == ("background", "liver", "spleen")


def test_nnunet_2d_png_dataset(tmp_path: Path) -> None:
    src = tmp_path / "Dataset005_Png"
    for i in range(2):
        (src / "imagesTr").mkdir(parents=True, exist_ok=True)
        (src / "labelsTr").mkdir(exist_ok=True)
        Image.fromarray(np.full((6, 7, 3), 50 * (i + 1), np.uint8)).save(src / "imagesTr" / f"p{i}_0000.png")
        lab = np.zeros((6, 7), np.uint8)
        lab[1:3, 2:5] = 1
        Image.fromarray(lab).save(src / "labelsTr" / f"p{i}.png")
    spec = {"channel_names": {"0": "R", "1": "G", "2": "B"}, "labels": {"background": 0, "lesion": 1}}
    (src / "dataset.json").write_text(json.dumps({**spec, "numTraining": 2, "file_ending": ".png"}))
    manifest = import_dataset("nnunet", src, tmp_path / "ds")
    assert manifest.spatial_dims == 2 and manifest.channels == 3
    case = Dataset(tmp_path / "ds")["p1"]
    assert case.image.shape == (3, 6, 7) and case.raters[0].sum() == 6
    # export writes nnU-Net's pseudo-3D NIfTI (singleton third axis, 999 mm) and re-imports to the same case
    report = export_nnunet(tmp_path / "ds", tmp_path / "raw", 5, "rater:label")
    img = nib.load(str(report.folder / "imagesTr" / "p1_0002.nii.gz"))
    assert img.shape == (6, 7, 1) and img.header.get_zooms() == pytest.approx((1.0, 1.0, 999.0))
    assert nib.load(str(report.folder / "labelsTr" / "p1.nii.gz")).shape == (6, 7, 1)
    import_dataset("nnunet", report.folder, tmp_path / "again")
    again = Dataset(tmp_path / "again")
    assert again.spatial_dims == 2
    _same_case(Dataset(tmp_path / "ds"), again, "p1")


# ------------------------------------------------------------------------------------------ Decathlon import


def test_msd_import_4d_multimodal(tmp_path: Path) -> None:
    src = tmp_path / "Task01_Tiny"
    rng = np.random.default_rng(1)
    training = []
    for i in range(2):
        _save(src / "imagesTr" / f"brats_{i}.nii.gz", rng.normal(size=(*SHAPE, 3)).astype(np.float32))
        _save(src / "labelsTr" / f"brats_{i}.nii.gz", _label(i))
        training.append({"image": f"./imagesTr/brats_{i}.nii.gz", "label": f"./labelsTr/brats_{i}.nii.gz"})
    _save(src / "labelsTr_rater2" / "brats_0.nii.gz", _label(2))
    _save(src / "imagesTs" / "brats_9.nii.gz", rng.normal(size=(*SHAPE, 3)).astype(np.float32))
    (src / "imagesTr" / "._brats_0.nii.gz").write_bytes(b"\x00macos")  # Decathlon archives hold these
    spec = {
        "name": "Tiny",
        "modality": {"0": "FLAIR", "1": "T1w", "2": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "tumour"},
        "numTraining": 2,
        "training": training,
        "test": ["./imagesTs/brats_9.nii.gz"],
    }
    (src / "dataset.json").write_text(json.dumps(spec))
    manifest = import_dataset("msd", src, tmp_path / "ds")
    assert manifest.class_names == ("background", "edema", "tumour")
    assert manifest.rater_ids == ("label", "rater2") and manifest.channels == 3
    ds = Dataset(tmp_path / "ds")
    case = ds["brats_0"]
    src_img = nib.load(str(src / "imagesTr" / "brats_0.nii.gz"))
    np.testing.assert_array_equal(case.image, np.moveaxis(np.asarray(src_img.dataobj), -1, 0))
    np.testing.assert_allclose(case.affine, src_img.affine, atol=1e-6)
    assert ds.record("brats_9").split == "test"
    # a listed file that is not there
    spec["test"] = ["./imagesTs/brats_404.nii.gz"]
    (src / "dataset.json").write_text(json.dumps(spec))
    with pytest.raises(DataError, match=r"brats_404\.nii\.gz: file listed in dataset\.json does not exist"):
        import_dataset("msd", src, tmp_path / "ds2")
    assert not (tmp_path / "ds2").exists()


# ------------------------------------------------------------------------------------------ nnU-Net export


def _labelwise_dataset(root: Path) -> Path:
    """3 cases with train / val / test splits, two raters, an image-level label."""
    writer = DatasetWriter(
        root,
        name="tiny set",
        spatial_dims=3,
        class_names=tuple(CLASSES),
        rater_ids=("expert", "fast"),
        image_label_names=("diagnosis",),
    )
    rng = np.random.default_rng(2)
    for i, split in enumerate(("train", "val", "test")):
        image = rng.integers(-50, 200, (1, *SHAPE)).astype(np.int16)
        maps = {"expert": _label(i), "fast": np.roll(_label(i), 1, axis=1)}
        writer.add_case(f"c{i}", image, maps, affine=_affine(), split=split, image_labels={"diagnosis": i % 2})
    writer.finish()
    return root


def test_export_import_round_trip_is_lossless(tmp_path: Path) -> None:
    ds_path = _labelwise_dataset(tmp_path / "ds")
    args = [
        "data",
        "export",
        "nnunet",
        "--data",
        str(ds_path),
        "--out",
        str(tmp_path / "raw"),
        "--labels",
        "rater:expert",
        "--id",
        "7",
    ]
    res = runner.invoke(app, [*args, "--keep-raters", "--channel-names", "CT"])
    assert res.exit_code == 0, res.output
    folder = tmp_path / "raw" / "Dataset007_tiny_set"
    assert f"wrote {folder} (2 training, 1 test cases; labels rater:expert)" in res.output
    spec = _spec(folder)
    assert spec["channel_names"] == {"0": "CT"} and spec["file_ending"] == ".nii.gz"
    assert spec["labels"] == CLASSES and spec["numTraining"] == 2
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == ["c0_0000.nii.gz", "c1_0000.nii.gz"]
    assert sorted(p.name for p in (folder / "imagesTs").iterdir()) == ["c2_0000.nii.gz"]
    assert (folder / "labelsTr_fast" / "c1.nii.gz").is_file() and (folder / "labelsTs" / "c2.nii.gz").is_file()
    assert not list((tmp_path / "raw").glob(".*"))  # no temporary folder left
    res = runner.invoke(app, ["data", "import", "nnunet", str(folder), "--out", str(tmp_path / "back")])
    assert res.exit_code == 0, res.output
    a, b = Dataset(ds_path), Dataset(tmp_path / "back")
    assert b.name == a.name and b.class_names == a.class_names and set(b.rater_ids) == set(a.rater_ids)
    assert b.manifest.image_label_names == ("diagnosis",)
    for case in a.ids:
        assert b.record(case).split == a.record(case).split
        assert b.record(case).image_labels == a.record(case).image_labels
        _same_case(a, b, case)


def test_export_refuses_to_overwrite_and_taken_ids(tmp_path: Path) -> None:
    ds_path = _labelwise_dataset(tmp_path / "ds")
    export_nnunet(ds_path, tmp_path / "raw", 7, "rater:expert")
    with pytest.raises(
        DataError, match=r"Dataset007_tiny_set: a raw dataset \(nnU-Net\) already exists here \(pass --overwrite"
    ):
        export_nnunet(ds_path, tmp_path / "raw", 7, "rater:expert")
    report = export_nnunet(ds_path, tmp_path / "raw", 7, "rater:fast", overwrite=True)
    assert _spec(report.folder)["labelwise"]["rater"] == "fast"
    with pytest.raises(DataError, match="nnU-Net dataset id 7 is taken by Dataset007_tiny_set"):
        export_nnunet(ds_path, tmp_path / "raw", 7, "rater:expert", name="Other")
    with pytest.raises(DataError, match=r"no rater 'nobody'"):
        export_nnunet(ds_path, tmp_path / "raw", 8, "rater:nobody")
    assert sorted(p.name for p in (tmp_path / "raw").iterdir()) == ["Dataset007_tiny_set"]


def test_export_fused_labels_of_a_fuse_output(tmp_path: Path) -> None:
    ds_path = _labelwise_dataset(tmp_path / "ds")
    res = runner.invoke(app, ["fuse", "--data", str(ds_path), "--out", str(tmp_path / "fused"), "--method", "majority"])
    assert res.exit_code == 0, res.output
    res = runner.invoke(
        app,
        [
            "data",
            "export",
            "nnunet",
            "--data",
            str(tmp_path / "fused"),
            "--out",
            str(tmp_path / "raw"),
            "--labels",
            "fused",
            "--id",
            "3",
        ],
    )
    assert res.exit_code == 0, res.output
    folder = next((tmp_path / "raw").iterdir())
    fused = Dataset(tmp_path / "fused")["c0"]
    np.testing.assert_array_equal(np.asarray(nib.load(str(folder / "labelsTr" / "c0.nii.gz")).dataobj), fused.raters[0])
    res = runner.invoke(
        app,
        [
            "data",
            "export",
            "nnunet",
            "--data",
            str(ds_path),
            "--out",
            str(tmp_path / "raw2"),
            "--labels",
            "fused",
            "--id",
            "3",
        ],
    )
    assert res.exit_code == 1 and "needs a `labelwise fuse` output" in str(res.exception)


def test_export_reviewed_labels_with_fallback(tmp_path: Path) -> None:
    ds_path = _labelwise_dataset(tmp_path / "ds")
    corrected = np.zeros(SHAPE, np.int16)
    corrected[2:4, 2:4, :] = 2
    corrections = Corrections(frozenset({"c0"}), lambda case: corrected)
    # two raters: no automatic fallback for c1 (train split needs labels)
    with pytest.raises(DataError, match=r"1 training case\(s\) have no reviewed labels: c1 \(choose --fallback"):
        export_nnunet(ds_path, tmp_path / "raw", 9, "reviewed", corrections=corrections)
    assert not (tmp_path / "raw").exists() or not list((tmp_path / "raw").iterdir())
    report = export_nnunet(ds_path, tmp_path / "raw", 9, "reviewed", corrections=corrections, fallback="rater:fast")
    assert report.fallback == {"c1": "rater:fast", "c2": "rater:fast"}
    lab = np.asarray(nib.load(str(report.folder / "labelsTr" / "c0.nii.gz")).dataobj)
    np.testing.assert_array_equal(lab, corrected)
    skipped = export_nnunet(ds_path, tmp_path / "raw3", 9, "reviewed", corrections=corrections, fallback="skip")
    assert skipped.skipped == ["c1"] and skipped.training == ["c0"] and skipped.test == ["c2"]


def test_export_reviewed_through_the_viewer_store(tmp_path: Path) -> None:
    from labelwise.data.review import ReviewStore

    ds_path = _labelwise_dataset(tmp_path / "ds")
    case = Dataset(ds_path)["c1"]
    fixed = np.zeros(SHAPE[:2], np.int16)
    fixed[0:2, 0:2] = 1
    ReviewStore(ds_path).save_slices("c1", case.raters[0], "rater/expert", {2: fixed}, case.spacing_mm, case.affine)
    args = [
        "data",
        "export",
        "nnunet",
        "--data",
        str(ds_path),
        "--out",
        str(tmp_path / "raw"),
        "--labels",
        "reviewed",
        "--id",
        "11",
    ]
    res = runner.invoke(app, [*args, "--fallback", "rater:expert"])
    assert res.exit_code == 0, res.output
    lab = np.asarray(nib.load(str(tmp_path / "raw" / "Dataset011_tiny_set" / "labelsTr" / "c1.nii.gz")).dataobj)
    np.testing.assert_array_equal(lab[..., 2], fixed)
    np.testing.assert_array_equal(lab[..., 0], case.raters[0][..., 0])


# ------------------------------------------------------------------------------------------ bad nnU-Net input


def test_nnunet_missing_channel_file(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    (src / "imagesTr" / "tiny_002_0001.nii.gz").unlink()
    res = runner.invoke(app, ["data", "import", "nnunet", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code == 1
    assert isinstance(res.exception, DataError)
    assert str(res.exception) == (
        f"{src / 'imagesTr' / 'tiny_002_0001.nii.gz'}: missing channel file (dataset.json declares 2 channels)"
    )
    assert not (tmp_path / "ds").exists()


def test_nnunet_wrong_file_ending(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    _set_spec(src, file_ending=".nii")
    with pytest.raises(DataError, match=r"tiny_001_0000\.nii\.gz: does not end with file_ending '\.nii'"):
        import_dataset("nnunet", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_nnunet_label_value_not_listed(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    bad = _label(2)
    bad[0, 0, 0] = 5
    _save(src / "labelsTr" / "tiny_003.nii.gz", bad)
    with pytest.raises(DataError, match=r"labelsTr/tiny_003\.nii\.gz: label values \[5\] are not in the dataset"):
        import_dataset("nnunet", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_nnunet_num_training_and_missing_label(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    _set_spec(src, numTraining=5)
    with pytest.raises(DataError, match=r"dataset\.json: numTraining is 5 but imagesTr holds 3 cases"):
        import_dataset("nnunet", src, tmp_path / "ds")
    _set_spec(src, numTraining=3)
    (src / "labelsTr" / "tiny_002.nii.gz").unlink()
    with pytest.raises(DataError, match=r"labelsTr: 1 training case\(s\) have no label file: tiny_002"):
        import_dataset("nnunet", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


def test_nnunet_label_geometry_mismatch(tmp_path: Path) -> None:
    src = _nnunet(tmp_path)
    _save(src / "labelsTr_fast" / "tiny_001.nii.gz", np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(DataError, match=r"labelsTr_fast/tiny_001\.nii\.gz: shape \(8, 8, 3\) differs from the case"):
        import_dataset("nnunet", src, tmp_path / "ds")
    assert not (tmp_path / "ds").exists()


# ------------------------------------------------------------------------------------------ model output as rater


def _one_rater_dataset(root: Path) -> Path:
    writer = DatasetWriter(root, name="t", spatial_dims=3, class_names=tuple(CLASSES), rater_ids=("expert",))
    for i in range(3):
        writer.add_case(
            f"c{i}", np.zeros((1, *SHAPE), np.int16), {"expert": _label(i)}, affine=_affine(), split="train"
        )
    writer.finish()
    return root


def test_import_rater_from_nifti_predictions(tmp_path: Path) -> None:
    ds_path = _one_rater_dataset(tmp_path / "ds")
    before = (ds_path / "dataset.json").read_text()
    pred = tmp_path / "pred"
    for i in range(3):
        _save(pred / f"c{i}.nii.gz", np.roll(_label(i), 1, axis=2))
    (pred / "plans.json").write_text("{}")  # nnU-Net prediction folders hold these
    _save(pred / "c99.nii.gz", _label(0))  # not a case of the dataset: warned, skipped
    res = runner.invoke(app, ["data", "import-rater", str(pred), "--data", str(ds_path), "--name", "model"])
    assert res.exit_code == 0, res.output
    assert "added rater model (nifti) to 3 cases" in res.output and "c99.nii.gz" in res.output
    ds = Dataset(ds_path)
    assert ds.rater_ids == ("expert", "model")
    case = ds["c1"]
    np.testing.assert_array_equal(case.raters[1], np.roll(_label(1), 1, axis=2))
    np.testing.assert_allclose(case.affine, _affine(), atol=1e-6)
    assert ds.record("c1").labels["model"] == "labels/c1_model.nii.gz"
    assert not list((ds_path / "labels").glob(".*"))
    # the same name again: refused, manifest untouched; --overwrite replaces it
    with pytest.raises(DataError, match="rater 'model' already exists"):
        import_rater(ds_path, pred, "model")
    assert (ds_path / "dataset.json").read_text() != before
    report = import_rater(ds_path, pred, "model", overwrite=True)
    assert report.imported == ["c0", "c1", "c2"] and Dataset(ds_path).rater_ids == ("expert", "model")


def test_import_rater_missing_cases_refused_then_allowed(tmp_path: Path) -> None:
    ds_path = _one_rater_dataset(tmp_path / "ds")
    before = (ds_path / "dataset.json").read_text()
    pred = tmp_path / "pred"
    _save(pred / "c0.nii.gz", _label(0))
    files_before = sorted(p.name for p in (ds_path / "labels").iterdir())
    res = runner.invoke(app, ["data", "import-rater", str(pred), "--data", str(ds_path), "--name", "model"])
    assert res.exit_code == 1
    assert (
        str(res.exception)
        == f"{pred}: 2 of 3 cases have no nifti file: c1, c2 (pass --allow-missing to import the others)"
    )
    assert (ds_path / "dataset.json").read_text() == before
    assert sorted(p.name for p in (ds_path / "labels").iterdir()) == files_before
    report = import_rater(ds_path, pred, "model", allow_missing=True)
    assert report.missing == ["c1", "c2"]
    assert Dataset(ds_path).record("c1").labels.keys() == {"expert"}


def test_import_rater_shape_and_value_mismatch(tmp_path: Path) -> None:
    ds_path = _one_rater_dataset(tmp_path / "ds")
    before = (ds_path / "dataset.json").read_text()
    pred = tmp_path / "pred"
    for i in range(3):
        _save(pred / f"c{i}.nii.gz", _label(i))
    _save(pred / "c2.nii.gz", np.zeros((8, 8, 5), np.uint8))
    with pytest.raises(DataError) as info:
        import_rater(ds_path, pred, "model")
    assert str(info.value) == f"{pred / 'c2.nii.gz'}: label map shape (8, 8, 5) differs from the case image's (8, 8, 4)"
    _save(pred / "c2.nii.gz", _label(2), affine=np.diag([1.0, 1.0, 1.0, 1.0]))
    with pytest.raises(DataError, match=r"c2\.nii\.gz: affine differs from the case image's"):
        import_rater(ds_path, pred, "model")
    _save(pred / "c2.nii.gz", _label(2) * 3)
    with pytest.raises(DataError, match=r"c2\.nii\.gz: label values \[3, 6\] are not classes of the dataset"):
        import_rater(ds_path, pred, "model")
    assert (ds_path / "dataset.json").read_text() == before
    assert sorted(p.name for p in (ds_path / "labels").iterdir()) == [f"c{i}_expert.nii.gz" for i in range(3)]
    # a classes map renames the source values (3 -> liver, 6 -> spleen)
    report = import_rater(ds_path, pred, "model", classes_map={"3": "liver", "6": "2"}, overwrite=False)
    assert report.imported == ["c0", "c1", "c2"]
    np.testing.assert_array_equal(Dataset(ds_path)["c2"].raters[1], _label(2))


def test_import_rater_totalsegmentator_structures(tmp_path: Path) -> None:
    ds_path = _one_rater_dataset(tmp_path / "ds")
    ts = tmp_path / "ts"
    for i in range(3):
        lab = _label(i)
        _save(ts / f"c{i}" / "liver.nii.gz", (lab == 1).astype(np.uint8))
        _save(ts / f"c{i}" / "Spleen.nii.gz", (lab == 2).astype(np.uint8))
        _save(ts / f"c{i}" / "kidney_left.nii.gz", np.zeros(SHAPE, np.uint8))  # no such class: skipped
    res = runner.invoke(app, ["data", "import-rater", str(ts), "--data", str(ds_path), "--name", "ts"])
    assert res.exit_code == 0, res.output
    assert (
        "(totalsegmentator)" in res.output and "skipped 1 structure(s) that match no class: kidney_left" in res.output
    )
    ds = Dataset(ds_path)
    for i in range(3):
        np.testing.assert_array_equal(ds[f"c{i}"].raters[1], _label(i))
    # overlapping structures cannot become one label map
    _save(ts / "c0" / "Spleen.nii.gz", (_label(0) >= 1).astype(np.uint8))
    with pytest.raises(DataError, match=r"c0/liver\.nii\.gz: overlaps 'spleen' in 32 voxel\(s\)"):
        import_rater(ds_path, ts, "ts2")


def test_import_rater_then_qa_raters_scores_it(tmp_path: Path) -> None:
    """The recipe end to end on a tiny dataset: import-rater, then `qa --raters` scores the new rater."""
    from labelwise.quality import run_qa

    src = _nnunet(tmp_path, channels=1, test=False)
    assert runner.invoke(app, ["data", "import", "nnunet", str(src), "--out", str(tmp_path / "ds")]).exit_code == 0
    pred = tmp_path / "pred"
    for i in range(3):
        _save(pred / f"tiny_00{i + 1}.nii.gz", np.roll(_label(i), 1, axis=0))
    args = ["data", "import-rater", str(pred), "--data", str(tmp_path / "ds"), "--name", "model", "--format", "nifti"]
    assert runner.invoke(app, args).exit_code == 0
    res = runner.invoke(
        app, ["train", "sentinel", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--preset", "smoke"]
    )
    assert res.exit_code == 0, res.output
    result = run_qa(tmp_path / "run", tmp_path / "ds", "raters", reference="label", device="cpu")
    assert {row.source for row in result.rows} >= {"model"}
