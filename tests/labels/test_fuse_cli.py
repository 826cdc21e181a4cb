"""``labelwise fuse`` end to end on phantom datasets: outputs, geometry, reliability table, a broken case."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
from tests.cli.helpers import labelwise
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.data.phantoms import make_phantom_dataset, read_phantom_truth
from labelwise.io import read_image, read_label
from labelwise.labels import majority_vote
from labelwise.labels.dataset_fusion import fuse_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def phantoms(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("fuse") / "ph"
    make_phantom_dataset(root, n_cases=8, raters=4, unlabelled_fraction=0.125, missing_rater_fraction=0.2, seed=1)
    return root


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open() as fh:
        return list(csv.DictReader(fh))


def test_fuse_majority_writes_a_dataset_with_source_geometry(phantoms: Path, tmp_path: Path) -> None:
    out = tmp_path / "maj"
    res = runner.invoke(app, ["fuse", "--data", str(phantoms), "--out", str(out), "--method", "majority"])
    assert res.exit_code == 0, res.output
    src, fused = Dataset(phantoms), Dataset(out)
    assert fused.rater_ids == ("fused",) and len(fused) == len(src)
    assert fused.class_names == src.class_names
    for cid in src.ids:
        a, b = src.load(cid), fused.load(cid)
        assert b.split == a.split and b.image_labels == a.image_labels
        np.testing.assert_allclose(b.affine, a.affine)
        np.testing.assert_allclose(b.image, a.image)
        if a.num_raters == 0:
            assert b.num_raters == 0
            continue
        assert (b.raters[0] == majority_vote(a.raters, num_classes=2)).all()
        undecided = read_label(out / "undecided" / f"{cid}.nii.gz", 2).array
        assert undecided.shape == a.spatial_shape
    rel = _rows(out / "reliability.csv")
    assert [r["rater"] for r in rel] == list(src.rater_ids)
    assert set(rel[0]) == {"rater", "cases", "sensitivity", "specificity", "dice_vs_fused"}
    for r in rel:
        assert 0.5 < float(r["dice_vs_fused"]) <= 1.0 and 0 < float(r["sensitivity"]) <= 1.0
    by = {r["rater"]: r for r in rel}
    assert float(by["generous"]["sensitivity"]) > float(by["tight"]["sensitivity"])
    assert float(by["tight"]["specificity"]) > float(by["generous"]["specificity"])
    assert not (out / "probabilities").exists()
    assert len(_rows(out / "reliability_cases.csv")) == sum(len(r.labels) for r in src.manifest.cases)


def test_fuse_mean_and_staple_write_probabilities(phantoms: Path, tmp_path: Path) -> None:
    for method in ("mean", "staple"):
        out = tmp_path / method
        res = runner.invoke(app, ["fuse", "--data", str(phantoms), "--out", str(out), "--method", method])
        assert res.exit_code == 0, res.output
        cid = next(r.id for r in Dataset(phantoms).manifest.cases if r.labels)
        probs = read_image(out / "probabilities" / f"{cid}.nii.gz", 2).array
        assert probs.shape == (2, 64, 64)
        np.testing.assert_allclose(probs.sum(axis=0), 1.0, atol=1e-5)
        fused = Dataset(out).load(cid).raters[0]
        truth = read_phantom_truth(phantoms, cid)
        dice = 2 * float(((fused > 0) & (truth > 0)).sum()) / float((fused > 0).sum() + (truth > 0).sum())
        assert dice > 0.85


def test_one_broken_case_is_reported_and_the_rest_complete(tmp_path: Path) -> None:
    root = tmp_path / "ph"
    ds = make_phantom_dataset(root, n_cases=4, raters=3, seed=2)
    bad = ds.manifest.cases[1]
    (root / bad.labels["tight"]).write_bytes(b"not a nifti file")
    out = tmp_path / "out"
    res = labelwise("fuse", "--data", root, "--out", out)
    assert res.code == 1
    assert bad.id in res.output and "1 case(s) failed" in res.output
    fused = Dataset(out)
    assert bad.id not in fused.ids and len(fused) == 3
    report = fuse_dataset(root, tmp_path / "out2", "staple")
    assert list(report.failures) == [bad.id] and len(report.fused) == 3


def test_bad_options_are_usage_errors(phantoms: Path, tmp_path: Path) -> None:
    # --method and --tie are Enum choices: a value outside them is typer's usage error (exit code 2, like a
    # ConfigError through the entry point), raised before anything is read or written.
    res = labelwise("fuse", "--data", phantoms, "--out", tmp_path / "x", "--method", "median")
    assert res.code == 2 and "--method" in res.stderr
    res = labelwise("fuse", "--data", phantoms, "--out", tmp_path / "x", "--tie", "undecided")
    assert res.code == 2 and "--tie" in res.stderr
    assert not (tmp_path / "x").exists()


def test_partial_labels_reliability_uses_labelled_slices_only(tmp_path: Path) -> None:
    from labelwise.data import DatasetWriter

    w = DatasetWriter(tmp_path / "part", "part", 3, ("background", "fg"), rater_ids=("a", "b"))
    a = np.zeros((6, 6, 4), np.int16)
    a[1:5, 1:5, :] = 1
    b = a.copy()
    b[:, :, 2:] = 0  # b disagrees only on slices 2 and 3, which are not labelled
    w.add_case("c0", np.zeros((1, 6, 6, 4), np.float32), raters={"a": a, "b": b}, labelled_slices=(0, 1))
    w.finish()
    report = fuse_dataset(tmp_path / "part", tmp_path / "out", "majority")
    assert [r["dice_vs_fused"] for r in report.reliability] == [1.0, 1.0]
    assert Dataset(tmp_path / "out").load("c0").labelled_slices == (0, 1)
    # majority of a and b: 1-1 ties on slices 2, 3 -> background (tie "lowest"); recorded as undecided
    undecided = read_label(tmp_path / "out" / "undecided" / "c0.nii.gz", 3).array
    assert undecided[1:5, 1:5, 2:].all() and not undecided[..., :2].any()
    again = fuse_dataset(tmp_path / "part", tmp_path / "out", "mean", overwrite=True)
    assert again.fused == ["c0"] and (tmp_path / "out" / "probabilities" / "c0.nii.gz").is_file()
