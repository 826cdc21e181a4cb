"""Slice subsets and class-subset predictions in the evaluation runner (``labelwise evaluate --slices``)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import DatasetWriter
from labelwise.errors import ConfigError
from labelwise.evaluation import (
    EvaluationConfig,
    SliceSelection,
    evaluate_folder,
    format_slices,
    parse_slice_indices,
    write_outputs,
)
from labelwise.io import Prediction, PredictionIndex, write_label, write_prediction
from labelwise.metrics import surface_distances

SPACING = (1.0, 1.0, 2.0)
SHAPE = (8, 8, 6)
AFF = np.diag([*SPACING, 1.0])


def _reference() -> np.ndarray:
    """A 4x4 square (16 voxels) on every slice of the last axis."""
    m = np.zeros(SHAPE, np.int16)
    m[2:6, 2:6, :] = 1
    return m


def _prediction() -> np.ndarray:
    """The reference, but empty on slice 3 and shifted by one row on slice 4."""
    p = _reference()
    p[..., 3] = 0
    p[..., 4] = 0
    p[3:7, 2:6, 4] = 1
    return p


def _dataset(tmp_path: Path, labelled: tuple[int, ...] | None = None, ref: np.ndarray | None = None) -> Path:
    data = tmp_path / "data"
    w = DatasetWriter(data, "tiny", 3, ("background", "organ"), rater_ids=("r1",))
    ref = _reference() if ref is None else ref
    if labelled is not None:
        ref[..., [z for z in range(SHAPE[2]) if z not in labelled]] = 0
    w.add_case("c1", np.zeros((1, *SHAPE), np.float32), {"r1": ref}, SPACING, split="test", labelled_slices=labelled)
    w.finish()
    return data


def _pred_folder(tmp_path: Path, label: np.ndarray, class_names: tuple[str, ...] = ("background", "organ")) -> Path:
    pred = tmp_path / "pred"
    k = len(class_names)
    probs = np.stack([label == c for c in range(k)]).astype(np.float32)
    write_prediction(pred, "c1", Prediction(probs=probs, label=label.astype(np.uint8)), SPACING, AFF)
    PredictionIndex("test", class_names, (), ["c1"]).save(pred)
    return pred


def _row(result, metric: str) -> float:  # type: ignore[no-untyped-def]
    (row,) = [r for r in result.rows if r["reference"] == "majority" and metric in r]
    return float(row[metric])


def test_parse_and_format_slice_indices() -> None:
    assert parse_slice_indices("82-86,90") == (82, 83, 84, 85, 86, 90)
    assert parse_slice_indices(" 3, 1,2-2 ,") == (1, 2, 3)
    assert format_slices([1, 2, 3, 7, 9, 10]) == "1-3,7,9-10"
    assert parse_slice_indices(format_slices([0, 4, 5, 6])) == (0, 4, 5, 6)
    for bad in ("", "a", "5-3", "-1", "1-x"):
        with pytest.raises(ConfigError):
            parse_slice_indices(bad)


def test_slice_selection_validates() -> None:
    with pytest.raises(ConfigError, match="axis"):
        SliceSelection("indices", indices=(1,), axis=3)
    with pytest.raises(ConfigError, match="last axis"):
        SliceSelection("labelled", axis=0)
    with pytest.raises(ConfigError, match="at least one"):
        SliceSelection("indices")


def test_overlap_pooled_and_surface_per_3d_case(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    pred = _pred_folder(tmp_path, _prediction())
    sel = SliceSelection("indices", indices=(2, 3, 4), spec="2-4")
    names = ("dice", "hd95", "nsd", "dice_per_slice", "hd95_per_slice", "nsd_per_slice")
    cfg = EvaluationConfig(metrics=names, tolerance_mm=1.0, n_bootstrap=0, slices=sel)
    res = evaluate_folder(pred, data, split="test", config=cfg)
    assert not res.failures
    # pooled over slices 2..4: tp = 16 (slice 2) + 0 (slice 3) + 12 (slice 4, shifted by one row);
    # pred voxels 16 + 0 + 16, reference voxels 3 x 16 -> Dice = 2 * 28 / (32 + 48) = 0.7
    assert _row(res, "dice") == pytest.approx(0.7)
    # NSD per 3D case at 1 mm, spacing (1, 1, 2), slices 2..4 as one volume (z = 2 and 4 on its border):
    # reference boundary = 16 (z=2) + 12 (ring of z=3) + 16 (z=4) = 44 voxels; prediction boundary = 16 + 16 = 32
    # (z=3 is empty). Every prediction voxel is within 1 mm (shifted row: 1 mm in-plane); the reference ring on
    # z=3 is 2 mm (one slice) from the prediction: 12 misses -> NSD = (32 + 44 - 12) / (32 + 44) = 64 / 76.
    assert _row(res, "nsd") == pytest.approx(64 / 76)
    # HD95 per 3D case, directed max: reference -> prediction holds 28 zeros, 4 x 1 mm, 12 x 2 mm -> 2 mm.
    assert _row(res, "hd95") == pytest.approx(2.0)
    # The 2D per-slice variants (the former default): NSD slice 2 -> 1; slice 3 (prediction empty) -> 0;
    # slice 4: a one-row shift lies within 1 mm -> 1; mean = 2/3. HD95: 0, nan (left out), 1 mm -> 0.5.
    # Dice per slice: 1, 0, 2 * 12 / 32 -> mean 0.5833.
    assert _row(res, "nsd_per_slice") == pytest.approx(2 / 3)
    assert _row(res, "hd95_per_slice") == pytest.approx(0.5)
    assert _row(res, "dice_per_slice") == pytest.approx((1 + 0 + 0.75) / 3)
    assert res.summary["slices"]["cases"] == {"c1": [2, 3, 4]}
    assert res.summary["slices"]["selection"] == "2-4"
    out = tmp_path / "eval"
    write_outputs(res, out)
    with (out / "per_case.csv").open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert {r["slices"] for r in rows} == {"2-4"}
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["slices"]["cases"]["c1"] == [2, 3, 4]
    assert "c1 2-4" in (out / "summary.md").read_text(encoding="utf-8")


def test_surface_per_slice_uses_in_plane_spacing_of_the_axis(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    label = _prediction()
    pred = _pred_folder(tmp_path, label)
    sel = SliceSelection("indices", indices=(3,), axis=0, spec="3")
    names = ("dice", "nsd", "assd", "nsd_per_slice", "assd_per_slice")
    cfg = EvaluationConfig(metrics=names, tolerance_mm=1.0, n_bootstrap=0, slices=sel)
    res = evaluate_folder(pred, data, split="test", config=cfg)
    sd = surface_distances(label[3] == 1, _reference()[3] == 1, (1.0, 2.0))  # slice x = 3: spacing (y, z)
    assert _row(res, "nsd_per_slice") == pytest.approx(sd.nsd(1.0))
    assert _row(res, "assd_per_slice") == pytest.approx(sd.assd())
    # per 3D case, one slice: a one-voxel-thick volume with the full spacing (x, y, z) = (1, 1, 2)
    sd3 = surface_distances(label[3:4] == 1, _reference()[3:4] == 1, SPACING)
    assert _row(res, "nsd") == pytest.approx(sd3.nsd(1.0))
    assert _row(res, "assd") == pytest.approx(sd3.assd())


def _gap_prediction() -> np.ndarray:
    """The reference on slice 1 only (slice 3 empty): slices 1 and 3 are 4 mm apart, not neighbours."""
    p = np.zeros(SHAPE, np.int16)
    p[2:6, 2:6, 1] = 1
    return p


def test_non_contiguous_slices_keep_their_true_distance(tmp_path: Path) -> None:
    data = _dataset(tmp_path)
    pred = _pred_folder(tmp_path, _gap_prediction())
    sel = SliceSelection("indices", indices=(1, 3), spec="1,3")
    names = ("dice", "hd", "nsd", "dice_per_slice", "nsd_per_slice")
    cfg = EvaluationConfig(metrics=names, tolerance_mm=2.5, n_bootstrap=0, slices=sel)
    res = evaluate_folder(pred, data, split="test", config=cfg)
    assert not res.failures
    # Dice pooled: tp 16, pred 16, reference 32 -> 2/3.
    assert _row(res, "dice") == pytest.approx(2 / 3)
    # 3D at true positions (slice 2 blank): all 32 reference voxels and 16 prediction voxels are boundary; the 16
    # reference voxels of slice 3 are 2 slices x 2 mm = 4 mm from the prediction (> 2.5 mm): NSD = 32 / 48, HD 4.
    # Stacking the two slices as neighbours would give 2 mm, NSD 1 and HD 2.
    assert _row(res, "nsd") == pytest.approx(2 / 3)
    assert _row(res, "hd") == pytest.approx(4.0)
    # per slice: slice 1 perfect, slice 3 prediction empty -> Dice and NSD (1 + 0) / 2.
    assert _row(res, "nsd_per_slice") == pytest.approx(0.5)
    assert _row(res, "dice_per_slice") == pytest.approx(0.5)


def test_partially_labelled_volume_is_scored_at_true_positions(tmp_path: Path) -> None:
    data = _dataset(tmp_path, labelled=(1, 3))
    pred = _pred_folder(tmp_path, _gap_prediction())
    cfg = EvaluationConfig(metrics=("dice", "hd", "nsd"), tolerance_mm=2.5, n_bootstrap=0)
    res = evaluate_folder(pred, data, split="test", config=cfg)
    assert not res.failures
    # the same as selecting slices 1 and 3 explicitly (above)
    assert _row(res, "dice") == pytest.approx(2 / 3)
    assert _row(res, "nsd") == pytest.approx(2 / 3)
    assert _row(res, "hd") == pytest.approx(4.0)


def test_both_empty_slices_count_per_slice_but_not_per_case(tmp_path: Path) -> None:
    ref = _reference()
    ref[..., 2:] = 0  # the organ on slices 0 and 1 only; slices 2..5 empty in both masks
    data = _dataset(tmp_path, ref=ref)
    label = ref.copy()
    label[2:6, 2:6, 0] = 0
    label[3:7, 2:6, 0] = 1  # slice 0 shifted by one row (1 mm)
    pred = _pred_folder(tmp_path, label)
    cfg = EvaluationConfig(metrics=("nsd", "nsd_per_slice"), tolerance_mm=0.5, n_bootstrap=0)
    res = evaluate_folder(pred, data, split="test", config=cfg)
    # per 2D slice (last axis): slice 0 -> 12 of 24 ring pixels coincide -> 0.5; slice 1 -> 1; slices 2..5 both
    # empty -> 1 each: (0.5 + 5) / 6.
    assert _row(res, "nsd_per_slice") == pytest.approx(5.5 / 6)
    # per 3D case: both slices are all boundary (z=0 image border, z=1 next to the empty z=2): 32 + 32 voxels;
    # the shifted row of each mask on z=0 is 1 mm (> 0.5) from the other -> (64 - 8) / 64; empty slices add nothing.
    assert _row(res, "nsd") == pytest.approx(56 / 64)


def test_labelled_minus_training_slices_is_the_held_out_set(tmp_path: Path) -> None:
    data = _dataset(tmp_path, labelled=(1, 2, 3, 4))
    pred = _pred_folder(tmp_path, _prediction())
    sel = SliceSelection("labelled", exclude={"c1": (1, 4)}, spec="held-out:run")
    res = evaluate_folder(pred, data, split="test", config=EvaluationConfig(metrics=("dice",), slices=sel))
    assert res.summary["slices"]["cases"] == {"c1": [2, 3]}
    assert _row(res, "dice") == pytest.approx(2 * 16 / (16 + 32))
    everything = SliceSelection("labelled", exclude={"c1": (1, 2, 3, 4)})
    res = evaluate_folder(pred, data, split="test", config=EvaluationConfig(metrics=("dice",), slices=everything))
    assert "no slice left" in res.failures["c1"]


def test_out_of_range_and_unlabelled_slices_are_clear_errors(tmp_path: Path) -> None:
    data = _dataset(tmp_path, labelled=(1, 2, 3, 4))
    pred = _pred_folder(tmp_path, _prediction())
    cfg = EvaluationConfig(metrics=("dice",), slices=SliceSelection("indices", indices=(2, 9, 11)))
    err = evaluate_folder(pred, data, split="test", config=cfg).failures["c1"]
    assert "slice index 9 out of range 0..5 along axis 2" in err and str(pred / "c1.nii.gz") in err
    cfg = EvaluationConfig(metrics=("dice",), slices=SliceSelection("indices", indices=(0, 2)))
    err = evaluate_folder(pred, data, split="test", config=cfg).failures["c1"]
    assert "slice(s) 0 carry no label" in err and "1-4" in err
    cfg = EvaluationConfig(metrics=("dice",), slices=SliceSelection("indices", indices=(2,), axis=0))
    assert "last axis" in evaluate_folder(pred, data, split="test", config=cfg).failures["c1"]


def test_class_subset_prediction_is_matched_by_name(tmp_path: Path) -> None:
    data = tmp_path / "data"
    w = DatasetWriter(data, "two", 3, ("background", "a", "b"), rater_ids=("r1",))
    ref = np.zeros(SHAPE, np.int16)
    ref[0:2] = 1  # class a
    ref[4:8] = 2  # class b
    w.add_case("c1", np.zeros((1, *SHAPE), np.float32), {"r1": ref}, SPACING, split="test")
    w.finish()
    label = np.zeros(SHAPE, np.int16)
    label[4:8] = 1  # the prediction's class 1 is "b"
    pred = _pred_folder(tmp_path, label, ("background", "b"))
    res = evaluate_folder(pred, data, split="test", config=EvaluationConfig(metrics=("dice",), n_bootstrap=0))
    assert {r["class"] for r in res.rows} == {"b"}
    assert _row(res, "dice") == 1.0
    assert res.summary["class_names"] == ["background", "b"]
    bad = _pred_folder(tmp_path / "x", label, ("background", "c"))
    err = evaluate_folder(bad, data, split="test", config=EvaluationConfig(metrics=("dice",))).failures["c1"]
    assert "['c'] are not classes of the dataset" in err


def test_classes_option_and_folder_without_index(tmp_path: Path) -> None:
    data = tmp_path / "data"
    w = DatasetWriter(data, "two", 3, ("background", "a", "b"), rater_ids=("r1",))
    ref = np.zeros(SHAPE, np.int16)
    ref[0:2] = 1
    ref[4:8] = 2
    w.add_case("c1", np.zeros((1, *SHAPE), np.float32), {"r1": ref}, SPACING, split="test")
    w.finish()
    bare = tmp_path / "bare"  # a label map from another tool (e.g. `labelwise propagate`), no predictions.json
    write_label(bare / "c1.nii.gz", ref.astype(np.uint8), SPACING, AFF)
    cfg = EvaluationConfig(metrics=("dice", "nsd"), classes=("b",), n_bootstrap=0)
    res = evaluate_folder(bare, data, split="test", config=cfg)
    assert not res.failures and res.summary["method"] == "external"
    assert {r["class"] for r in res.rows} == {"b"}
    assert _row(res, "dice") == 1.0 and _row(res, "nsd") == 1.0
    res = evaluate_folder(bare, data, split="test", config=EvaluationConfig(classes=("zz",)))
    assert "['zz'] are not foreground classes" in res.failures["c1"]
