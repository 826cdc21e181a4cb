"""``--labels raters|reviewed``: the same option on every command that reads labels (docs/lifecycle.md)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
from tests.cli.helpers import labelwise

from labelwise.data import Dataset, ReviewStore
from labelwise.data.phantoms import make_phantom_dataset
from labelwise.io import Prediction, PredictionIndex, read_label, write_label, write_prediction

CORRECTED = "case000"  # train
REJECTED = "case001"  # train


@pytest.fixture()
def data(tmp_path: Path) -> Path:
    """Five 16x16 phantoms, raters 'precise' and 'generous'; case000 train, 001 train, 002 val, 003 train, 004 test."""
    make_phantom_dataset(tmp_path / "ds", n_cases=5, raters=2, shape=(16, 16), seed=0)
    return tmp_path / "ds"


def _correct(root: Path, case_id: str = CORRECTED) -> np.ndarray:
    """Save a correction that is nothing like the raters' organ: a 4x4 square in the corner the organ never reaches."""
    fixed = np.zeros((16, 16), np.uint8)
    fixed[:4, :4] = 1
    case = Dataset(root)[case_id]
    assert case.raters[:, :4, :4].sum() == 0
    ReviewStore(root).save_slices(case_id, case.raters[0], "rater/precise", {0: fixed}, case.spacing_mm, case.affine)
    return fixed


@pytest.mark.parametrize("command", [["fuse"], ["evaluate"], ["qa"], ["pseudo-label"], ["data", "stats"], ["train"]])
def test_every_label_reading_command_takes_the_option(command: list[str]) -> None:
    res = labelwise(*command, "--help")
    assert res.code == 0 and "--labels" in res.stdout and "raters" in res.stdout and "reviewed" in res.stdout


def test_bad_choice_is_a_usage_error(data: Path, tmp_path: Path) -> None:
    res = labelwise("fuse", "--data", data, "--out", tmp_path / "f", "--labels", "corrected")
    assert res.code == 2 and not (tmp_path / "f").exists()


def test_fuse_reads_the_correction_for_that_case_only(data: Path, tmp_path: Path) -> None:
    fixed = _correct(data)
    assert labelwise("fuse", "--data", data, "--out", tmp_path / "raters").code == 0
    res = labelwise("fuse", "--data", data, "--out", tmp_path / "reviewed", "--labels", "reviewed")
    assert res.code == 0, res.output
    plain, reviewed = Dataset(tmp_path / "raters"), Dataset(tmp_path / "reviewed")
    for case_id in plain.ids:
        a, b = plain[case_id].raters[0], reviewed[case_id].raters[0]
        if case_id == CORRECTED:
            np.testing.assert_array_equal(b, fixed)
            assert not np.array_equal(a, b)
        else:
            np.testing.assert_array_equal(a, b)
    meta = json.loads((tmp_path / "reviewed" / "fusion.json").read_text())
    assert meta["labels"]["labels"] == "reviewed"
    assert meta["labels"]["cases"][CORRECTED]["correction"]["base"] == "rater/precise"
    assert json.loads((tmp_path / "raters" / "fusion.json").read_text())["labels"] == {"labels": "raters"}


def _per_case(out: Path) -> dict[tuple[str, str], float]:
    with (out / "per_case.csv").open(newline="") as fh:
        return {(r["case"], r["reference"]): float(r["dice"]) for r in csv.DictReader(fh) if r["class"] == "organ"}


def test_evaluate_scores_against_the_correction(data: Path, tmp_path: Path) -> None:
    fixed = _correct(data)
    pred = tmp_path / "pred"
    for case in Dataset(data):
        write_label(
            pred / f"{case.id}.nii.gz", fixed if case.id == CORRECTED else case.raters[0], case.spacing_mm, case.affine
        )
    common = ["evaluate", "--pred", pred, "--data", data, "--split", "all", "--metrics", "dice", "--n-bootstrap", "0"]
    assert labelwise(*common, "--out", tmp_path / "e_raters").code == 0
    res = labelwise(*common, "--out", tmp_path / "e_reviewed", "--labels", "reviewed", "--workers", "2")  # pickled
    assert res.code == 0, res.output
    raters, reviewed = _per_case(tmp_path / "e_raters"), _per_case(tmp_path / "e_reviewed")
    assert reviewed[(CORRECTED, "reviewed")] == 1.0 and reviewed[(CORRECTED, "majority")] == 1.0
    assert (CORRECTED, "precise") not in reviewed
    assert raters[(CORRECTED, "precise")] == 0.0
    assert reviewed[("case003", "precise")] == raters[("case003", "precise")] == 1.0  # other cases unchanged
    summary = json.loads((tmp_path / "e_reviewed" / "summary.json").read_text())
    assert summary["labels"]["cases"][CORRECTED]["status"] == "corrected"


def test_export_leaves_out_rejected_cases_and_records_provenance(data: Path, tmp_path: Path) -> None:
    fixed = _correct(data)
    ReviewStore(data).add_review(REJECTED, "reject", comment="wrong organ", user="ana")
    res = labelwise(
        "data",
        "export",
        "nnunet",
        "--data",
        data,
        "--out",
        tmp_path / "raw",
        "--id",
        "5",
        "--labels",
        "reviewed",
        "--fallback",
        "rater:precise",
    )
    assert res.code == 0, res.output
    folder = next((tmp_path / "raw").iterdir())
    lab = read_label(folder / "labelsTr" / f"{CORRECTED}.nii.gz", 3).array[..., 0]
    np.testing.assert_array_equal(lab, fixed)
    assert not (folder / "labelsTr" / f"{REJECTED}.nii.gz").exists()
    assert not (folder / "imagesTr" / f"{REJECTED}_0000.nii.gz").exists()
    block = json.loads((folder / "dataset.json").read_text())["labelwise"]
    assert block["review"][REJECTED]["status"] == "rejected" and block["review"][REJECTED]["labels"] == "none"
    assert block["review"][CORRECTED]["correction"]["version"] == 1


def test_pseudo_label_can_label_a_rejected_case(data: Path, tmp_path: Path) -> None:
    ReviewStore(data).add_review(REJECTED, "reject")
    mask = np.zeros((16, 16), np.uint8)
    mask[5:11, 5:11] = 1
    onehot = np.stack([mask == 0, mask == 1]).astype(np.float32)
    ds = Dataset(data)
    for name in ("p1", "p2"):
        for case in ds:
            write_prediction(tmp_path / name, case.id, Prediction(probs=onehot), case.spacing_mm, case.affine)
        PredictionIndex("test", ds.class_names, (), ds.ids).save(tmp_path / name)
    common = ["pseudo-label", "--pred", tmp_path / "p1", "--pred", tmp_path / "p2", "--data", data]
    raters = labelwise(*common, "--out", tmp_path / "o_raters")
    reviewed = labelwise(*common, "--out", tmp_path / "o_reviewed", "--labels", "reviewed")
    assert reviewed.code == 0, reviewed.output
    assert raters.code == 0, raters.output
    assert Dataset(tmp_path / "o_raters").ids == []  # every case has rater labels: nothing to pseudo-label
    assert Dataset(tmp_path / "o_reviewed").ids == [REJECTED]  # the rejected case is unlabelled in the view
    assert Dataset(tmp_path / "o_reviewed")[REJECTED].rater_ids == ("pseudo",)


def test_qa_reads_the_reviewed_view(data: Path, tmp_path: Path) -> None:
    _correct(data)
    (data / "review" / "corrections" / CORRECTED / "v0001.nii.gz").unlink()
    res = labelwise(
        "qa", "--run", tmp_path / "run", "--data", data, "--out", tmp_path / "q", "--raters", "--labels", "reviewed"
    )
    assert res.code == 1
    assert res.errors == [
        f"error: {data / 'review' / 'corrections' / CORRECTED / 'v0001.nii.gz'}: correction v1 of case {CORRECTED} "
        "is listed in corrections.json but its file is missing"
    ]


def test_check_and_stats_report_review_coverage(data: Path, tmp_path: Path) -> None:
    assert "review:" not in labelwise("data", "check", "--data", data).stdout  # no review/ folder: nothing to say
    _correct(data)
    store = ReviewStore(data)
    store.add_review(REJECTED, "reject")
    store.add_review("case002", "accept")
    expected = (
        "review: 3/5 cases reviewed (accepted 1, rejected 1, corrected 1, flagged 0, untouched 2; trusted 1); "
        "1 correction(s) newer than the label files"
    )
    check = labelwise("data", "check", "--data", data)
    assert check.code == 0 and expected in check.stdout.splitlines()
    stats = labelwise("data", "stats", "--data", data, "--out", tmp_path / "s.json", "--labels", "reviewed")
    assert stats.code == 0 and expected in stats.stdout.splitlines()
    payload = json.loads((tmp_path / "s.json").read_text())
    assert payload["review"]["corrected"] == 1 and payload["review"]["newer_than_labels"] == [CORRECTED]
    assert payload["labels"]["labels"] == "reviewed"
    assert payload["split_counts"]["train"] == 2 and payload["split_counts"]["none"] == 1  # the rejected case
