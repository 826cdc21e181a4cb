from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from labelwise.cli.main import app
from labelwise.data import Dataset, DatasetWriter
from labelwise.io import Prediction, PredictionIndex, write_prediction


def test_pseudo_label_cli_writes_new_dataset_and_report(tmp_path: Path) -> None:
    w = DatasetWriter(tmp_path / "ds", "u", 3, ("background", "organ"), ("gt",))
    img = np.zeros((1, 6, 6, 4), np.float32)
    w.add_case("a", img, None, (1.0, 1.0, 1.0), split="train")
    w.finish()
    lab = np.zeros((6, 6, 4), np.uint8)
    lab[1:4, 1:4] = 1
    other = lab.copy()
    other[..., 2:] = 0
    for name, m in (("p1", lab), ("p2", other), ("p3", lab)):
        onehot = np.stack([m == 0, m == 1]).astype(np.float32)
        write_prediction(tmp_path / name, "a", Prediction(probs=onehot), (1.0, 1.0, 1.0), np.eye(4))
        PredictionIndex("cps", ("background", "organ"), (), ["a"]).save(tmp_path / name)
    r = CliRunner().invoke(
        app,
        [
            "pseudo-label",
            *(a for n in ("p1", "p2", "p3") for a in ("--pred", str(tmp_path / n))),
            "--data",
            str(tmp_path / "ds"),
            "--out",
            str(tmp_path / "new"),
            "--chunk",
            "2",
            "--threshold",
            "0.9",
        ],
    )
    assert r.exit_code == 0, r.output
    assert "kept 1/2 unit(s)" in r.output
    new = Dataset(tmp_path / "new")
    assert new["a"].labelled_slices == (0, 1)
    report = json.loads((tmp_path / "new" / "pseudo_report.json").read_text(encoding="utf-8"))
    assert [u["kept"] for u in report["units"]] == [True, False]
