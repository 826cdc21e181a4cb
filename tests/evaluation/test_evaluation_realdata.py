"""`labelwise evaluate` on real data: QUBIQ brain-growth (7 raters) and the TotalSegmentator example CT.

Stand-in predictions (no trained model needed):
* QUBIQ: hard label = majority of the 7 raters, probs = mean of raters, samples = each rater shifted by one pixel
  (a perturbed rater set), per-rater maps = the raters themselves.
* TotalSegmentator: the dataset's reference is the full model's map (``example_seg``); the prediction is the
  ``--fast`` model's map (``example_seg_fast``), so the per-organ Dice can be checked against the data README
  (0.81 pancreas .. 0.98 liver).
Each run also gets one deliberately broken prediction file, which must be reported without stopping the run.

Run as a script to keep the folders: ``python tests/evaluation/test_evaluation_realdata.py OUT_DIR``.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.realdata


def build_qubiq(data_root: Path, work: Path) -> tuple[Path, Path]:
    """Import QUBIQ brain-growth and write stand-in predictions for every case; break one file."""
    from labelwise.data import Dataset
    from labelwise.data.importers import import_dataset
    from labelwise.io import Prediction, PredictionIndex, write_prediction

    ds_dir = work / "qubiq_ds"
    import_dataset("medical-matting", data_root / "qubiq_brain_growth" / "brain_growth_alpha.zip", ds_dir)
    ds = Dataset(ds_dir)
    pred_dir = work / "qubiq_pred"
    pred_dir.mkdir(parents=True, exist_ok=True)
    index = PredictionIndex("stand-in: rater majority + shifted raters", ds.class_names, ds.rater_ids)
    for case in ds:
        r = (case.raters > 0).astype(np.uint8)
        mean = r.mean(axis=0, dtype=np.float32)
        label = (r.sum(axis=0) > r.shape[0] / 2).astype(np.uint8)
        shifted = np.stack([np.roll(m, shift=(1 if i % 2 else -1), axis=i % 2) for i, m in enumerate(r)])
        pred = Prediction(probs=np.stack([1 - mean, mean]), samples=shifted, raters=r, label=label)
        write_prediction(pred_dir, case.id, pred, case.spacing_mm, case.affine)
        index.cases.append(case.id)
    broken = ds.split_ids("test")[0]
    (pred_dir / f"{broken}.nii.gz").write_bytes(b"\x1f\x8b broken gzip")
    index.save(pred_dir)
    return ds_dir, pred_dir


def build_totalsegmentator(data_root: Path, work: Path) -> tuple[Path, Path]:
    """Dataset: CT crop with the full model's labels (rater 'model'); prediction: the fast model's labels."""
    from labelwise.data import DatasetWriter
    from labelwise.data.importers.nifti_partial import class_names_from_map
    from labelwise.io import PredictionIndex, read_image, read_label, write_label

    src = data_root / "totalsegmentator_example"
    names = class_names_from_map(src / "class_map.json", "total")
    img = read_image(src / "example_ct_sm.nii.gz", 3)
    ref = read_label(src / "example_seg.nii.gz", 3).array
    fast = read_label(src / "example_seg_fast.nii.gz", 3).array
    ds_dir = work / "totalseg_ds"
    w = DatasetWriter(ds_dir, "totalsegmentator-example", 3, names, rater_ids=("model",))
    for cid in ("ct", "ct_copy"):
        w.add_case(cid, img.array, raters={"model": ref}, affine=img.affine, split="test")
    w.finish()
    pred_dir = work / "totalseg_pred"
    pred_dir.mkdir(parents=True, exist_ok=True)
    write_label(pred_dir / "ct.nii.gz", fast.astype(np.uint8), img.spacing_mm, img.affine)
    (pred_dir / "ct_copy.nii.gz").write_bytes(b"not a nifti")
    PredictionIndex("TotalSegmentator --fast", names, (), ["ct", "ct_copy"]).save(pred_dir)
    return ds_dir, pred_dir


def _run_cli(args: list[str]) -> int:
    from typer.testing import CliRunner

    from labelwise.cli.main import app

    res = CliRunner().invoke(app, args)
    print(res.output)
    return int(res.exit_code)


def test_qubiq_evaluate(real_data: Path, tmp_path: Path) -> None:
    ds, pred = build_qubiq(real_data, tmp_path)
    out = tmp_path / "eval"
    code = _run_cli(["evaluate", "--pred", str(pred), "--data", str(ds), "--out", str(out), "--n-bootstrap", "200"])
    assert code == 1  # one broken file
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_cases"] == 8 and summary["n_failed"] == 1 and summary["n_scored"] == 7
    m = summary["metrics"]
    # the hard prediction IS the majority vote
    assert m["dice"]["foreground"]["majority"]["mean"] == pytest.approx(1.0)
    # the prediction's per-rater maps are the raters
    assert m["personal_dice"]["foreground"]["rater1"]["mean"] == pytest.approx(1.0)
    # probs = mean of raters: soft Dice against the mean of raters is perfect, Brier 0
    assert m["soft_dice"]["foreground"]["mean_of_raters"]["mean"] == pytest.approx(1.0)
    assert m["brier"]["foreground"]["mean_of_raters"]["mean"] == pytest.approx(0.0, abs=1e-12)
    assert 0.0 < m["dice_match"]["foreground"]["mean_of_raters"]["mean"] < 1.0  # shifted samples
    with open(out / "per_case.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == 7 * (7 + 2)


def test_totalsegmentator_evaluate(real_data: Path, tmp_path: Path) -> None:
    ds, pred = build_totalsegmentator(real_data, tmp_path)
    out = tmp_path / "eval"
    code = _run_cli(
        ["evaluate", "--pred", str(pred), "--data", str(ds), "--out", str(out), "--metrics", "dice,hd95,nsd",
         "--tolerance-mm", "3"]
    )  # fmt: skip
    assert code == 1
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["n_failed"] == 1 and "ct_copy" in summary["failures"]
    dice = summary["metrics"]["dice"]
    assert dice["liver"]["majority"]["mean"] == pytest.approx(0.98, abs=0.01)  # data README: liver 0.98
    assert dice["pancreas"]["majority"]["mean"] == pytest.approx(0.81, abs=0.01)  # pancreas 0.81


if __name__ == "__main__":
    work = Path(sys.argv[1])
    root = Path(__file__).resolve().parents[3] / "shared" / "data"
    for name, fn in (("qubiq", build_qubiq), ("totalsegmentator", build_totalsegmentator)):
        d, p = fn(root, work)
        print(f"{name}: labelwise evaluate --data {d} --pred {p} --out {work / (name + '_eval')}")
