"""The review store and the reviewed view of a dataset: corrections are labels, rejections set a case aside."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import REVIEWED_RATER, Dataset, DatasetWriter, ReviewStore, review_coverage
from labelwise.data.check import check_dataset
from labelwise.errors import DataError

SHAPE = (8, 6)
CLASSES = ["background", "organ", "lesion"]


def _square(value: int = 1) -> np.ndarray:
    m = np.zeros(SHAPE, np.int16)
    m[2:5, 1:4] = value
    return m


@pytest.fixture()
def root(tmp_path: Path) -> Path:
    """Four 2D cases, two raters each: c0, c1 train, c2 val, c3 test."""
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", "review-test", 2, CLASSES, ["r1", "r2"])
    for i, split in enumerate(["train", "train", "val", "test"]):
        w.add_case(f"c{i}", rng.random((1, *SHAPE)).astype("f4"), {"r1": _square(), "r2": _square()}, split=split)
    w.finish()
    return tmp_path / "ds"


def _correct(root: Path, case_id: str, mask: np.ndarray, user: str = "ana") -> None:
    case = Dataset(root)[case_id]
    ReviewStore(root).save_slices(case_id, case.raters[0], "rater/r1", {0: mask}, case.spacing_mm, case.affine, user)


def test_raters_view_is_the_files(root: Path) -> None:
    _correct(root, "c0", _square(2))
    ds = Dataset(root)
    assert ds.labels == "raters" and ds.reviews == {} and ds.provenance() == {"labels": "raters"}
    assert ds["c0"].rater_ids == ("r1", "r2") and REVIEWED_RATER not in ds.rater_ids


def test_correction_replaces_the_raters(root: Path) -> None:
    fixed = _square(2)
    _correct(root, "c0", fixed)
    before = {p: p.read_bytes() for p in (root / "labels").iterdir()}
    ds = Dataset(root, labels="reviewed")
    case = ds["c0"]
    assert case.rater_ids == (REVIEWED_RATER,)
    np.testing.assert_array_equal(case.raters[0], fixed)
    assert ds["c1"].rater_ids == ("r1", "r2")  # untouched cases keep their raters
    assert ds.rater_ids == ("r1", "r2", REVIEWED_RATER)
    review = ds.reviews["c0"]
    assert review.status == "corrected" and review.labels == REVIEWED_RATER and not review.trusted
    prov = ds.provenance()
    assert prov["labels"] == "reviewed" and list(prov["cases"]) == ["c0"]
    corr = prov["cases"]["c0"]["correction"]
    assert corr["user"] == "ana" and corr["base"] == "rater/r1" and corr["file"] == "review/corrections/c0/v0001.nii.gz"
    assert {p: p.read_bytes() for p in (root / "labels").iterdir()} == before  # the originals are never modified


def test_accept_marks_the_raters_trusted(root: Path) -> None:
    ReviewStore(root).add_review("c1", "accept", user="bo")
    ds = Dataset(root, labels="reviewed")
    assert ds.reviews["c1"].status == "accepted" and ds.reviews["c1"].trusted
    assert ds["c1"].rater_ids == ("r1", "r2")
    assert ds.provenance()["cases"]["c1"]["decision"]["user"] == "bo"


def test_reject_sets_the_case_aside_until_corrected(root: Path) -> None:
    store = ReviewStore(root)
    store.add_review("c1", "reject", comment="boundary wrong")
    ds = Dataset(root, labels="reviewed")
    assert ds.reviews["c1"].status == "rejected"
    assert ds["c1"].num_raters == 0 and ds["c1"].split is None
    assert ds.split_ids("train") == ["c0"]  # excluded from training
    assert Dataset(root).split_ids("train") == ["c0", "c1"]  # the raters view is unchanged
    _correct(root, "c1", _square(1))  # the same second as the reject: the correction still counts as after it
    ds = Dataset(root, labels="reviewed")
    assert ds.reviews["c1"].status == "corrected" and ds.split_ids("train") == ["c0", "c1"]
    assert ds["c1"].rater_ids == (REVIEWED_RATER,)


def test_reject_after_a_correction_wins(root: Path) -> None:
    _correct(root, "c0", _square(2))
    ReviewStore(root).add_review("c0", "reject")
    ds = Dataset(root, labels="reviewed")
    assert ds.reviews["c0"].status == "rejected" and ds["c0"].num_raters == 0
    ReviewStore(root).add_review("c0", "accept")
    ds = Dataset(root, labels="reviewed")
    assert ds.reviews["c0"].status == "corrected" and ds.reviews["c0"].trusted


def test_partial_labels_gain_the_corrected_slices(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path / "ds", "partial", 3, CLASSES, ["r1"])
    vol = np.zeros((6, 5, 4), np.int16)
    w.add_case("v", np.ones((1, 6, 5, 4), "f4") * np.arange(4), {"r1": vol}, labelled_slices=(1,), split="train")
    w.finish()
    case = Dataset(tmp_path / "ds")["v"]
    store = ReviewStore(tmp_path / "ds")
    store.save_slices("v", vol, "rater/r1", {3: np.ones((6, 5), np.uint8)}, case.spacing_mm, case.affine)
    assert Dataset(tmp_path / "ds", labels="reviewed")["v"].labelled_slices == (1, 3)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (np.zeros((7, 6), np.uint8), r"shape \(7, 6\) differs from the expected \(8, 6\)"),
        (np.zeros(SHAPE, np.float32), "dtype float32 is not an integer type"),
        (np.full(SHAPE, np.nan), "48 value\\(s\\) are NaN"),
        (np.full(SHAPE, 3, np.int16), r"values \[3\] are not classes \(0..2\)"),
        (np.full(SHAPE, -1, np.int16), r"values \[-1\] are not classes"),
        (np.array([["a"] * 6] * 8), "dtype <U1 is not an integer type"),
    ],
)
def test_store_refuses_a_bad_body(root: Path, body: np.ndarray, message: str) -> None:
    case = Dataset(root)["c0"]
    store = ReviewStore(root)
    with pytest.raises(DataError, match=message):
        store.save_slices("c0", case.raters[0], "rater/r1", {0: body}, case.spacing_mm, case.affine)
    assert store.versions() == [] and not (root / "review" / "corrections").exists()


def test_store_refuses_a_bad_base_case_or_slice(root: Path) -> None:
    case = Dataset(root)["c0"]
    store = ReviewStore(root)
    ok = _square()
    with pytest.raises(DataError, match=r"base 'prob': values \[255\] are not classes"):
        store.save_slices("c0", np.full(SHAPE, 255, np.uint8), "prob", {0: ok}, case.spacing_mm, case.affine)
    with pytest.raises(DataError, match=r"'\.\./x' is not a case id"):
        store.save_slices("../x", case.raters[0], "r", {0: ok}, case.spacing_mm, case.affine)
    with pytest.raises(DataError, match=r"slice 1 outside 0\.\.0"):
        store.save_slices("c0", case.raters[0], "r", {1: ok}, case.spacing_mm, case.affine)
    with pytest.raises(DataError, match="no case 'nope'"):
        store.add_review("nope", "accept")
    assert store.versions() == []


def test_listed_but_missing_or_corrupt_version_is_named(root: Path) -> None:
    _correct(root, "c0", _square(2))
    path = root / "review" / "corrections" / "c0" / "v0001.nii.gz"
    path.write_bytes(b"not a nifti")
    with pytest.raises(DataError) as info:
        Dataset(root, labels="reviewed")["c0"]
    assert str(path) in str(info.value)
    assert any(str(path) in str(p) for p in check_dataset(root).problems)
    path.unlink()
    with pytest.raises(DataError, match=r"listed in corrections\.json but its file is missing") as info:
        Dataset(root, labels="reviewed")
    assert info.value.path == path
    assert [p.message for p in check_dataset(root).problems] == [
        "correction v1 is listed in corrections.json but its file is missing"
    ]


def test_a_catalogue_cannot_point_outside_the_store(root: Path) -> None:
    _correct(root, "c0", _square(2))
    catalogue = root / "review" / "corrections.json"
    data = json.loads(catalogue.read_text())
    data["versions"][0]["file"] = "../../labels/c1_r1.nii.gz"
    catalogue.write_text(json.dumps(data))
    with pytest.raises(DataError, match=re.escape("names the file '../../labels/c1_r1.nii.gz'")):
        Dataset(root, labels="reviewed")


def test_no_temporary_file_is_left_or_listed(root: Path) -> None:
    _correct(root, "c0", _square(2))
    _correct(root, "c0", _square(1))
    folder = root / "review" / "corrections" / "c0"
    assert sorted(p.name for p in folder.iterdir()) == ["v0001.nii.gz", "v0002.nii.gz"]
    assert [v.seq for v in ReviewStore(root).versions()] == [1, 2]


def test_coverage_counts_and_newer_corrections(root: Path) -> None:
    store = ReviewStore(root)
    store.add_review("c1", "accept")
    store.add_review("c2", "reject")
    _correct(root, "c0", _square(2))
    cov = review_coverage(root)
    assert (cov.cases, cov.reviewed, cov.accepted, cov.rejected, cov.corrected, cov.untouched) == (4, 3, 1, 1, 1, 1)
    assert cov.trusted == 1 and cov.newer_than_labels == ("c0",) and cov.older_than_labels == ()
    later = (root / "review" / "corrections" / "c0" / "v0001.nii.gz").stat().st_mtime + 10
    os.utime(root / "labels" / "c0_r1.nii.gz", (later, later))  # a rater file edited after the correction
    cov = review_coverage(root)
    assert cov.newer_than_labels == () and cov.older_than_labels == ("c0",)
    report = check_dataset(root)
    assert report.ok and report.review is not None and report.review.corrected == 1


def test_check_reports_review_problems(root: Path) -> None:
    _correct(root, "c0", _square(2))
    ReviewStore(root).add_review("c1", "flag")
    reviews = root / "review" / "reviews.json"
    data = json.loads(reviews.read_text())
    data["items"]["ghost"] = [{"decision": "accept"}]
    reviews.write_text(json.dumps(data))
    report = check_dataset(root)
    assert [(p.case, p.message) for p in report.problems] == [
        ("ghost", "review decisions for a case that is not in the manifest")
    ]
    reviews.write_text("{")
    assert "review file is not valid JSON" in check_dataset(root).problems[0].message


def test_viewer_reexports_the_store() -> None:
    import labelwise.viewer
    from labelwise.data.review import ReviewStore as Moved

    assert labelwise.viewer.ReviewStore is Moved is ReviewStore
