from __future__ import annotations

import csv
import gzip
import json
import math
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import Dataset, DatasetWriter
from labelwise.errors import DataError
from labelwise.evaluation import (
    CANDIDATES_COLUMN,
    DEFAULT_METRICS,
    CaseArrays,
    EvaluationConfig,
    bootstrap_ci,
    evaluate_folder,
    score_case,
)
from labelwise.io import Prediction, PredictionIndex, write_prediction
from labelwise.labels import strict_majority

SPACING = (1.0, 1.0, 2.0)
SHAPE = (8, 9, 6)


def _cube(lo: int, hi: int) -> np.ndarray:
    m = np.zeros(SHAPE, np.int16)
    m[lo:hi, lo:hi, 1:4] = 1
    return m


def _onehot(label: np.ndarray) -> np.ndarray:
    return np.stack([label == 0, label == 1]).astype(np.float32)


@pytest.fixture()
def folders(tmp_path: Path) -> tuple[Path, Path]:
    data = tmp_path / "data"
    w = DatasetWriter(data, "tiny", 3, ("background", "organ"), rater_ids=("r1", "r2", "r3"))
    a, b = _cube(2, 6), _cube(2, 5)
    for cid in ("c1", "c2", "c3", "c4"):
        w.add_case(
            cid,
            np.zeros((1, *SHAPE), np.float32),
            raters={"r1": a, "r2": a, "r3": b},
            spacing_mm=SPACING,
            split="test",
        )
    w.add_case("c5", np.zeros((1, *SHAPE), np.float32), raters={"r1": a}, spacing_mm=SPACING, split="train")
    w.finish()
    pred = tmp_path / "pred"
    pred.mkdir()
    index = PredictionIndex("test-method", ("background", "organ"), rater_ids=("r1", "r2", "r3"))
    aff = np.diag([*SPACING, 1.0])
    for cid in ("c1", "c2", "c3"):
        label = a.astype(np.uint8)
        p = Prediction(
            probs=_onehot(label),
            samples=np.stack([a, b]).astype(np.uint8),
            raters=np.stack([a, a, b]).astype(np.uint8),
            label=label,
        )
        write_prediction(pred, cid, p, SPACING, aff)
        index.cases.append(cid)
    index.cases.append("c4")  # listed, but its file is corrupt
    (pred / "c4.nii.gz").write_bytes(b"this is not a nifti file")
    index.save(pred)
    return data, pred


def test_majority_vote() -> None:
    r = np.array([[1, 1, 0, 2], [1, 0, 0, 2], [0, 0, 2, 1]])
    assert strict_majority(r, 3).tolist() == [1, 0, 0, 2]


def test_bootstrap_ci_contains_mean() -> None:
    v = np.array([0.1, 0.5, 0.9, 0.4, np.nan])
    lo, hi = bootstrap_ci(v, n_bootstrap=500, seed=1)
    assert lo <= 0.475 <= hi
    assert all(math.isnan(x) for x in bootstrap_ci(np.array([1.0])))


def test_evaluate_folder_scores_and_reports_failures(folders: tuple[Path, Path]) -> None:
    data, pred = folders
    res = evaluate_folder(pred, data, split="test", config=EvaluationConfig(n_bootstrap=50))
    assert set(res.failures) == {"c4"}
    assert res.summary["n_scored"] == 3 and res.summary["n_failed"] == 1
    rows = {(r["case"], r["reference"]): r for r in res.rows}
    # prediction = rater r1's cube (4x4x3 = 48 voxels); r3 is the 3x3x3 cube (27 voxels) inside it
    assert rows[("c1", "r1")]["dice"] == 1.0 and rows[("c1", "r1")]["hd"] == 0.0
    assert rows[("c1", "r3")]["dice"] == pytest.approx(2 * 27 / (48 + 27))
    # the corner column (5, 5, z) of the big cube is diagonal to (4, 4, z) of the small one: sqrt(2) mm
    assert rows[("c1", "r3")]["hd"] == pytest.approx(math.sqrt(2.0))
    assert rows[("c1", "majority")]["dice"] == 1.0  # 2 of 3 raters drew the big cube
    assert rows[("c1", "r3")]["abs_volume_difference"] == pytest.approx(21 * 2.0)  # 21 voxels of 2 mm^3
    soft = rows[("c1", "mean_of_raters")]
    # samples {a, b} match raters {a, a, b}: Dice_max = 1, Dice_match = 1 (2 samples < 3 raters: both compete)
    assert soft["dice_max"] == 1.0 and soft["dice_match"] == 1.0 and soft[CANDIDATES_COLUMN] == 2
    assert rows[("c1", "r3")]["personal_dice"] == 1.0
    # soft Dice: prob is one-hot of a; mean of raters is 1 on b, 2/3 on a \ b -> Dice 1 at every t < 2/3
    # (t = .1..0.6), and Dice(a, b) at t = .7, .8, .9
    d_ab = 2 * 27 / 75
    assert soft["soft_dice"] == pytest.approx((6 + 3 * d_ab) / 9)
    assert res.summary["metrics"]["dice"]["organ"]["majority"]["mean"] == 1.0


def test_evaluation_reads_labels_not_image_voxels(folders: tuple[Path, Path]) -> None:
    """The images' voxels are never read: cut their data short and every case still scores the same."""
    data, pred = folders
    before = evaluate_folder(pred, data, split="test", config=EvaluationConfig(n_bootstrap=0))
    for image in sorted((data / "images").glob("*.nii.gz")):
        raw = gzip.decompress(image.read_bytes())
        image.write_bytes(gzip.compress(raw[: len(raw) - 8]))  # header intact, voxels cut short
    with pytest.raises(DataError, match="cannot read NIfTI"):
        Dataset(data).load("c1")
    case = Dataset(data).load("c1", image=False)
    assert not case.image_read and case.image.shape == (1, *SHAPE) and np.isnan(case.image).all()
    assert case.image.nbytes == 0 or case.image.strides == (0,) * case.image.ndim
    after = evaluate_folder(pred, data, split="test", config=EvaluationConfig(n_bootstrap=0))
    assert after.failures == before.failures and after.rows == before.rows


def test_cli_end_to_end(folders: tuple[Path, Path], tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from labelwise.cli.main import app

    data, pred = folders
    out = tmp_path / "eval"
    res = CliRunner().invoke(
        app,
        ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--workers", "2",
         "--metrics", "dice,hd95,nsd,soft_dice,ece,ged,dice_max", "--tolerance-mm", "1.5", "--n-bootstrap", "20"],
    )  # fmt: skip
    assert res.exit_code == 1, res.output
    assert "c4" in res.output
    with open(out / "per_case.csv", newline="") as fh:
        table = list(csv.DictReader(fh))
    # 3 scored cases x (3 raters + majority + mean_of_raters) rows, one class
    assert len(table) == 15
    assert set(table[0]) == {
        *("case", "class", "reference", "pred_voxels", "ref_voxels"),
        *("dice", "hd95", "nsd", "soft_dice", "ece", "ged", "dice_max", CANDIDATES_COLUMN),
    }
    assert {r[CANDIDATES_COLUMN] for r in table if r["reference"] == "mean_of_raters"} == {"2"}
    assert next(r for r in table if r["reference"] == "r3")["ref_voxels"] == "27"
    r3 = next(r for r in table if r["case"] == "c2" and r["reference"] == "r3")
    # r3 (small cube) vs prediction (big cube): distances 0, 1 or sqrt(2) mm; with tau = 1.5 mm all count
    assert float(r3["nsd"]) == pytest.approx(1.0)
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_failed"] == 1 and "c4" in summary["failures"]
    assert summary["config"]["tolerance_mm"] == 1.5
    assert "| dice | organ | majority |" in (out / "summary.md").read_text(encoding="utf-8")


def test_missing_prediction_is_counted(folders: tuple[Path, Path]) -> None:
    data, pred = folders
    (pred / "c2.nii.gz").unlink()
    res = evaluate_folder(pred, data, config=EvaluationConfig(metrics=("dice",), n_bootstrap=0))
    assert set(res.failures) == {"c2", "c4"}
    assert "missing" in res.failures["c2"]


def test_partially_labelled_volume_scored_on_labelled_slices(tmp_path: Path) -> None:
    data = tmp_path / "d"
    w = DatasetWriter(data, "partial", 3, ("background", "organ"), rater_ids=("r1",))
    a = _cube(2, 6)  # occupies slices 1..3 of the last axis
    w.add_case("p1", np.zeros((1, *SHAPE), np.float32), raters={"r1": a}, split="test", labelled_slices=(1, 2, 3))
    w.finish()
    pred = tmp_path / "p"
    pred.mkdir()
    label = a.astype(np.uint8)
    label[:, :, 5] = 1  # predicted organ on an unlabelled slice: unknown there, must not count as a false positive
    write_prediction(pred, "p1", Prediction(probs=_onehot(label), label=label), SPACING, np.diag([*SPACING, 1.0]))
    PredictionIndex("m", ("background", "organ"), (), ["p1"]).save(pred)
    res = evaluate_folder(pred, data, config=EvaluationConfig(metrics=("dice", "hd"), n_bootstrap=0))
    assert not res.failures
    row = next(r for r in res.rows if r["reference"] == "majority")
    assert row["dice"] == 1.0 and row["hd"] == 0.0


def test_score_case_ece_forms_and_equal_dice_candidates() -> None:
    rater = np.array([[1, 0, 1, 1]], np.int16)
    p = np.array([[0.3, 0.3, 0.6, 1.0]], np.float32)
    case = CaseArrays(
        case_id="c",
        label=(p >= 0.5).astype(np.int16),
        probs=np.stack([1 - p, p]),
        samples=np.stack([[[1, 0, 1, 0]], [[1, 0, 1, 1]]]).astype(np.int16),  # S = 2 samples, R = 1 rater
        pred_raters=None,
        pred_rater_ids=(),
        raters=rater[None],
        rater_ids=("r1",),
        class_names=("background", "organ"),
        classes=(1,),
        spacing_mm=(1.0, 1.0),
    )
    names = ("ece", "ece_fg", "dice_max", "dice_match", "dice_max_all", "dice_match_all")
    rows = score_case(case, EvaluationConfig(metrics=names, ece_bins=4, n_bootstrap=0))
    (soft,) = [r for r in rows if r["reference"] == "mean_of_raters"]
    # calibration hand values: tests/metrics/test_calibration_quality.py (same prob and target, 4 bins)
    assert soft["ece"] == pytest.approx(0.0)
    assert soft["ece_fg"] == pytest.approx(0.2)
    # equal candidates: only the first sample (Dice 2 * 2 / (2 + 3) = 0.8) competes for the one rater
    assert soft["dice_max"] == pytest.approx(0.8) and soft["dice_match"] == pytest.approx(0.8)
    assert soft[CANDIDATES_COLUMN] == 1
    assert soft["dice_max_all"] == 1.0 and soft["dice_match_all"] == 1.0
    assert "ece_fg" in DEFAULT_METRICS and "dice_max_all" not in DEFAULT_METRICS
    assert "nsd_per_slice" not in DEFAULT_METRICS


def test_cli_surface_surfels_scores_as_the_metric_function(folders: tuple[Path, Path], tmp_path: Path) -> None:
    """``--surface surfels`` reaches every surface metric and is recorded; the numbers are the metric's own."""
    from typer.testing import CliRunner

    from labelwise.cli.main import app
    from labelwise.metrics import surface_distances

    data, pred = folders
    rows = {}
    for surface in ("voxels", "surfels"):
        out = tmp_path / surface
        res = CliRunner().invoke(
            app,
            ["evaluate", "--pred", str(pred), "--data", str(data), "--out", str(out), "--metrics", "hd95,nsd",
             "--tolerance-mm", "0.5", "--n-bootstrap", "0", "--surface", surface],
        )  # fmt: skip
        assert res.exit_code == 1, res.output  # c4 is corrupt
        with open(out / "per_case.csv", newline="") as fh:
            rows[surface] = next(r for r in csv.DictReader(fh) if r["case"] == "c1" and r["reference"] == "r3")
        assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["config"]["surface"] == surface
    big, small = _cube(2, 6) > 0, _cube(2, 5) > 0
    for surface in ("voxels", "surfels"):
        sd = surface_distances(big, small, SPACING, surface=surface)  # type: ignore[arg-type]
        assert float(rows[surface]["nsd"]) == pytest.approx(sd.nsd(0.5))
        assert float(rows[surface]["hd95"]) == pytest.approx(sd.hausdorff_percentile(95.0))
    assert rows["voxels"]["nsd"] != rows["surfels"]["nsd"]
    bad = CliRunner().invoke(app, ["evaluate", "--pred", str(pred), "--data", str(data), "--out",
                                   str(tmp_path / "x"), "--surface", "mesh"])  # fmt: skip
    assert bad.exit_code == 2
