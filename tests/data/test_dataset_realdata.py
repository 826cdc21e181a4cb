"""Import each real dataset of ../shared/data, check it, and assert its true shapes, raters and classes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset
from labelwise.data.check import check_dataset
from labelwise.data.importers import import_dataset
from labelwise.evaluation import dataset_stats

pytestmark = pytest.mark.realdata


def _splits(manifest) -> list[int]:
    return [sum(c.split == s for c in manifest.cases) for s in ("train", "val", "test")]


def test_qubiq_brain_growth_cli(real_data: Path, tmp_path: Path) -> None:
    runner = CliRunner()
    src = real_data / "qubiq_brain_growth" / "brain_growth_alpha.zip"
    dest = tmp_path / "qubiq"
    res = runner.invoke(app, ["data", "import", "medical-matting", str(src), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    assert "imported 39 cases (2D, 7 raters, 2 classes; train 25 / val 6 / test 8)" in res.output
    res = runner.invoke(app, ["data", "check", "--data", str(dest)])
    assert res.exit_code == 0, res.output
    res = runner.invoke(app, ["data", "stats", "--data", str(dest), "--out", str(tmp_path / "s.json")])
    assert res.exit_code == 0, res.output
    assert "39 x 7 raters" in res.output and "mean pairwise inter-rater Dice 0.856" in res.output
    stats = json.loads((tmp_path / "s.json").read_text(encoding="utf-8"))
    assert stats["shapes"] == {"128x128": 39} and stats["raters_per_case"] == {"7": 39}
    assert stats["mean_pairwise_dice"] == pytest.approx(0.856, abs=0.0015)
    assert stats["min_pairwise_dice"] == pytest.approx(0.678, abs=0.0015)  # README: lowest pair 0.678
    assert stats["class_frequency"][1] == pytest.approx(0.14, abs=0.01)  # README: foreground ~0.14
    case = Dataset(dest)["case01"]
    assert case.image.shape == (1, 128, 128) and 0 <= case.image.min() and case.image.max() <= 252
    assert case.raters.shape == (7, 128, 128) and set(np.unique(case.raters).tolist()) <= {0, 1}


def test_ph2(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "ph2_dermoscopy"
    m = import_dataset("ph2", src, tmp_path / "ph2")
    assert len(m.cases) == 30 and m.rater_ids == ("expert",) and m.class_names == ("background", "lesion")
    assert m.channels == 3 and _splits(m) == [18, 6, 6]
    diag = {c.id: c.image_labels["diagnosis"] for c in m.cases}
    assert sorted(diag.values()) == [0] * 10 + [1] * 10 + [2] * 10
    assert diag["IMD003"] == 0 and diag["IMD002"] == 1 and diag["IMD058"] == 2
    assert all(c.image_labels["lesion"] == 1 for c in m.cases)
    for cls in range(3):
        assert sorted(c.split for c in m.cases if diag[c.id] == cls) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2
    report = check_dataset(tmp_path / "ph2")
    assert report.ok, report.problems
    ds = Dataset(tmp_path / "ph2")
    for cid in ("IMD002", "IMD420"):  # IMD002's mask is RGB 0/255, the others 1-bit
        w, h = Image.open(src / "PH2 Dataset images" / cid / f"{cid}_Dermoscopic_Image" / f"{cid}.bmp").size
        case = ds[cid]
        assert case.image.shape == (3, h, w) and case.raters.shape == (1, h, w)
        mask = np.array(Image.open(src / "PH2 Dataset images" / cid / f"{cid}_lesion" / f"{cid}_lesion.bmp"))
        mask = mask[..., 0] if mask.ndim == 3 else mask
        np.testing.assert_array_equal(case.raters[0], (mask > 0).astype(np.int16))


def test_totalsegmentator_partial(real_data: Path, tmp_path: Path) -> None:
    src = real_data / "totalsegmentator_example"
    m = import_dataset("nifti-partial", src, tmp_path / "ts")
    assert m.spatial_dims == 3 and m.rater_ids == ("model", "fast") and len(m.class_names) == 118
    assert m.class_names[1] == "spleen" and m.class_names[5] == "liver"
    (rec,) = m.cases
    assert rec.labelled_slices == tuple(range(82, 112)) and rec.split == "train"
    assert check_dataset(tmp_path / "ts").ok
    case = Dataset(tmp_path / "ts")[rec.id]
    assert case.image.shape == (1, 122, 101, 112) and case.spacing_mm == pytest.approx((3.0, 3.0, 3.0))
    assert case.raters.shape == (2, 122, 101, 112)
    assert not case.raters[:, :, :, :82].any()
    assert len(np.unique(case.raters[0])) - 1 == 41 and len(np.unique(case.raters[1])) - 1 == 40
    assert case.image.min() == -1207 and case.image.max() == 3382
    stats = dataset_stats(tmp_path / "ts")
    assert stats.class_pairwise_dice[5] == pytest.approx(0.98, abs=0.01)  # liver, README: 0.98


def test_mni152(real_data: Path, tmp_path: Path) -> None:
    m = import_dataset("mni152", real_data / "mni152_nilearn", tmp_path / "mni")
    assert m.class_names == ("background", "gray_matter", "white_matter") and m.rater_ids == ("p50",)
    assert check_dataset(tmp_path / "mni").ok
    case = Dataset(tmp_path / "mni")["mni152"]
    assert case.image.shape == (1, 197, 233, 189) and case.spacing_mm == pytest.approx((1.0, 1.0, 1.0))
    assert set(np.unique(case.raters).tolist()) == {0, 1, 2}
    assert (tmp_path / "mni" / "soft" / "mni152_gm.nii.gz").is_file()
