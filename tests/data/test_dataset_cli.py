"""``labelwise data import|check|stats`` end to end on hand-written generic folder datasets."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image
from tests.cli.helpers import labelwise
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.errors import DataError

runner = CliRunner()


def _hand_written(root: Path) -> Path:
    """Three 2D cases, two raters (one missing for a case), a csv with splits and a diagnosis."""
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    for i, case in enumerate(("lesion01", "lesion02", "healthy01")):
        img = np.full((8, 10, 3), 40 * (i + 1), np.uint8)
        img[2:5, 3:7] = 200
        Image.fromarray(img).save(root / "images" / f"{case}.png")
    mask = np.zeros((8, 10), np.uint8)
    mask[2:5, 3:7] = 255  # 0/255 masks as most tools save them
    for case in ("lesion01", "lesion02"):
        Image.fromarray(mask).save(root / "labels" / f"{case}_expert.png")
    shifted = np.roll(mask, 1, axis=1)
    Image.fromarray(shifted).save(root / "labels" / "lesion01_resident.png")
    Image.fromarray(np.zeros((8, 10), np.uint8)).save(root / "labels" / "healthy01_expert.png")
    (root / "classes.txt").write_text("background\nlesion\n")
    (root / "cases.csv").write_text("case,split,diagnosis\nlesion01,train,1\nlesion02,val,1\nhealthy01,test,0\n")
    return root


def test_generic_folder_imports_checks_and_summarises(tmp_path: Path) -> None:
    src = _hand_written(tmp_path / "mydata")
    dest = tmp_path / "ds"
    res = runner.invoke(app, ["data", "import", "folder", str(src), "--out", str(dest)])
    assert res.exit_code == 0, res.output
    assert "imported 3 cases (2D, 2 raters, 2 classes; train 1 / val 1 / test 1)" in res.output
    res = runner.invoke(app, ["data", "check", "--data", str(dest)])
    assert res.exit_code == 0, res.output
    assert "ok: 3 cases" in res.output
    res = runner.invoke(app, ["data", "stats", "--data", str(dest), "--out", str(tmp_path / "stats.json")])
    assert res.exit_code == 0, res.output
    # expert vs resident on lesion01: 12 px each, shifted by one column -> overlap 9 -> Dice 18/24 = 0.75
    assert "mean pairwise inter-rater Dice 0.750" in res.output
    stats = json.loads((tmp_path / "stats.json").read_text(encoding="utf-8"))
    assert stats["num_cases"] == 3 and stats["image_label_counts"] == {"diagnosis": {"0": 1, "1": 2}}


def test_broken_dataset_lists_all_problems_and_exits_1(tmp_path: Path) -> None:
    src = _hand_written(tmp_path / "mydata")
    dest = tmp_path / "ds"
    assert runner.invoke(app, ["data", "import", "folder", str(src), "--out", str(dest)]).exit_code == 0
    (dest / "labels" / "lesion02_expert.nii.gz").unlink()
    (dest / "images" / "healthy01.nii.gz").write_bytes(b"garbage")
    manifest = json.loads((dest / "dataset.json").read_text(encoding="utf-8"))
    entry = next(c for c in manifest["cases"] if c["id"] == "lesion01")
    entry["labels"]["resident"] = "../../outside.nii.gz"
    (dest / "dataset.json").write_text(json.dumps(manifest))
    res = labelwise("data", "check", "--data", dest)
    assert res.code == 1
    out = res.output
    assert "error: 3 problem(s)" in out
    assert "lesion02_expert.nii.gz [case lesion02]: label file of rater expert not found" in out
    assert "healthy01.nii.gz [case healthy01]: cannot read NIfTI" in out
    assert "[case lesion01]: path '../../outside.nii.gz' must be relative and inside the dataset folder" in out


def test_broken_folder_import_lists_all_problems(tmp_path: Path) -> None:
    src = _hand_written(tmp_path / "mydata")
    Image.fromarray(np.full((8, 10), 2, np.uint8)).save(src / "labels" / "lesion02_resident.png")
    Image.fromarray(np.zeros((8, 9), np.uint8)).save(src / "labels" / "healthy01_resident.png")
    res = runner.invoke(app, ["data", "import", "folder", str(src), "--out", str(tmp_path / "ds")])
    assert res.exit_code != 0 and isinstance(res.exception, DataError)
    msg = str(res.exception)
    assert "2 problem(s)" in msg and "lesion02_resident.png: label values [2]" in msg
    assert "healthy01_resident.png: label shape (8, 9) differs" in msg
    assert not (tmp_path / "ds").exists()


def test_cli_run_turns_errors_into_one_line(tmp_path: Path) -> None:
    import subprocess
    import sys

    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "labelwise.cli",
            "data",
            "import",
            "qubiq",
            str(tmp_path / "nope"),
            "--out",
            str(tmp_path / "d"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().endswith("nope: source not found")
