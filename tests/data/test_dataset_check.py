"""``check_dataset`` lists every problem of a dataset at once, naming the file and the case."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from labelwise.data import Dataset, DatasetWriter
from labelwise.data.check import check_dataset
from labelwise.errors import DataError


def _dataset(root: Path, n: int = 4) -> Path:
    rng = np.random.default_rng(0)
    w = DatasetWriter(root, "tiny", 3, ("background", "liver", "tumour"), ("r1", "r2"), ("lesion",))
    for i in range(n):
        w.add_case(
            f"c{i}",
            rng.random((1, 4, 5, 6)).astype(np.float32),
            {"r1": rng.integers(0, 3, (4, 5, 6)), "r2": rng.integers(0, 3, (4, 5, 6))},
            spacing_mm=(1.0, 1.0, 2.0),
            image_labels={"lesion": i % 2},
            split="train",
        )
    w.finish()
    return root


def _manifest(root: Path) -> dict:
    return json.loads((root / "dataset.json").read_text(encoding="utf-8"))


def _save_manifest(root: Path, data: dict) -> None:
    (root / "dataset.json").write_text(json.dumps(data))


def _nii(path: Path, data: np.ndarray, spacing=(1.0, 1.0, 2.0)) -> None:
    nib.save(nib.Nifti1Image(data, np.diag([*spacing, 1.0])), str(path))


def test_clean_dataset(tmp_path: Path) -> None:
    report = check_dataset(_dataset(tmp_path / "ds"))
    assert report.ok and report.num_cases == 4 and report.problems == ()


def test_every_problem_is_listed(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", n=8)
    (root / "labels" / "c0_r2.nii.gz").unlink()  # missing rater file
    raw = gzip.decompress((root / "images" / "c1.nii.gz").read_bytes())
    (root / "images" / "c1.nii.gz").write_bytes(gzip.compress(raw[: len(raw) // 2]))  # truncated image
    nan = np.random.default_rng(1).random((4, 5, 6)).astype(np.float32)
    nan[0, 0, 0] = np.nan
    _nii(root / "images" / "c2.nii.gz", nan)  # NaN image
    _nii(root / "labels" / "c3_r1.nii.gz", np.full((4, 5, 6), 7, np.uint8))  # values outside 3 classes
    _nii(root / "labels" / "c4_r1.nii.gz", np.zeros((4, 5, 5), np.uint8))  # shape mismatch
    _nii(root / "labels" / "c5_r2.nii.gz", np.zeros((4, 5, 6), np.uint8), (1.0, 1.0, 3.0))  # spacing mismatch
    _nii(root / "images" / "c6.nii.gz", np.zeros((4, 5, 6), np.float32))  # empty (constant) image
    _nii(root / "labels" / "c7_r1.nii.gz", np.full((4, 5, 6), 0.5, np.float32))  # non-integer labels
    data = _manifest(root)
    data["cases"].append(dict(data["cases"][7]))  # duplicate id c7
    data["cases"][0]["image_labels"] = {"grade": 2}  # undeclared image label
    data["cases"][1]["split"] = "training"
    _save_manifest(root, data)
    report = check_dataset(root)
    text = "\n".join(str(p) for p in report.problems)
    expected = [
        ("c7", "dataset.json", "duplicate case id"),
        ("c0", "dataset.json", "image label 'grade' is not in image_label_names"),
        ("c1", "dataset.json", "split 'training' is not one of"),
        ("c0", "c0_r2.nii.gz", "label file of rater r2 not found"),
        ("c1", "c1.nii.gz", "cannot read NIfTI"),
        ("c2", "c2.nii.gz", "1 voxels are NaN or infinite"),
        ("c3", "c3_r1.nii.gz", "label values [7] outside the 3 classes"),
        ("c4", "c4_r1.nii.gz", "shape (4, 5, 5) differs from image shape (4, 5, 6)"),
        ("c5", "c5_r2.nii.gz", "spacing (1.0, 1.0, 3.0) mm differs from image (1.0, 1.0, 2.0) mm"),
        ("c6", "c6.nii.gz", "image is constant (every voxel = 0)"),
        ("c7", "c7_r1.nii.gz", "non-integer values"),
    ]
    for case, path, message in expected:
        assert any(p.case == case and p.path.endswith(path) and message in p.message for p in report.problems), (
            case,
            message,
            text,
        )
    # the duplicate entry repeats c7's non-integer label problem; nothing else is reported
    assert len(report.problems) == len(expected) + 1, text


def test_paths_outside_the_folder_are_refused(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", n=3)
    outside = tmp_path / "secret.nii.gz"
    _nii(outside, np.ones((4, 5, 6), np.float32))
    (root / "images" / "link.nii.gz").symlink_to(outside)
    data = _manifest(root)
    data["cases"][0]["image"] = "../secret.nii.gz"
    data["cases"][1]["image"] = str(outside)
    data["cases"][2]["image"] = "images/link.nii.gz"
    _save_manifest(root, data)
    report = check_dataset(root)
    msgs = [p.message for p in report.problems]
    assert sum("must be relative and inside the dataset folder" in m for m in msgs) == 2
    assert sum("resolves outside the dataset folder" in m for m in msgs) == 1
    # loading refuses too
    with pytest.raises(DataError, match="must be relative and inside the dataset folder"):
        Dataset(root)


def test_symlink_outside_refused_on_load(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", n=1)
    outside = tmp_path / "secret.nii.gz"
    _nii(outside, np.ones((4, 5, 6), np.float32))
    (root / "images" / "c0.nii.gz").unlink()
    (root / "images" / "c0.nii.gz").symlink_to(outside)
    with pytest.raises(DataError, match="points outside the dataset folder"):
        Dataset(root)["c0"]


def test_unreadable_manifests(tmp_path: Path) -> None:
    assert "manifest not found" in str(check_dataset(tmp_path).problems[0])
    (tmp_path / "dataset.json").write_text("{not json")
    assert "not valid JSON" in check_dataset(tmp_path).problems[0].message
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "labelwise-dataset", "version": 1}))
    assert "lacks fields" in check_dataset(tmp_path).problems[0].message
    (tmp_path / "dataset.json").write_text(json.dumps({"format": "other"}))
    assert "not a labelwise dataset manifest" in check_dataset(tmp_path / "dataset.json").problems[0].message


def test_labelled_slices_outside_volume(tmp_path: Path) -> None:
    root = _dataset(tmp_path / "ds", n=1)
    data = _manifest(root)
    data["cases"][0]["labelled_slices"] = [4, 5, 6]
    _save_manifest(root, data)
    (p,) = check_dataset(root).problems
    assert p.case == "c0" and "labelled_slices outside 0..5" in p.message
