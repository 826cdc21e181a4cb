from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from labelwise.data import Dataset, DatasetWriter
from labelwise.io import Prediction, PredictionIndex, write_prediction
from labelwise.report import MethodResult, build_report


def _dataset(tmp_path: Path) -> Dataset:
    yy, xx = np.mgrid[:32, :32]
    w = DatasetWriter(tmp_path / "ds", "report-test", 2, ["background", "lesion"], ["a", "b", "c"])
    for i in range(3):
        disc = ((yy - 16) ** 2 + (xx - 14 - i) ** 2 < 64).astype(np.int16)
        raters = {"a": disc, "b": np.roll(disc, 1, axis=0), "c": np.roll(disc, -1, axis=1)}
        w.add_case(f"c{i}", (disc * 100.0 + i)[None].astype("f4"), raters, split="test")
    w.finish()
    return Dataset(tmp_path / "ds")


def test_report_is_self_contained_with_tables_and_figures(tmp_path: Path) -> None:
    ds = _dataset(tmp_path)
    pred_dir = tmp_path / "pred"
    for case in ds:
        fg = (case.raters > 0).mean(axis=0).astype("f4")
        pred = Prediction(probs=np.stack([1 - fg, fg]), raters=case.raters.copy(), uncertainty=fg * (1 - fg))
        write_prediction(pred_dir, case.id, pred, case.spacing_mm, case.affine)
    PredictionIndex("toy", ds.class_names, ds.rater_ids, ds.ids).save(pred_dir)
    qa = tmp_path / "quality.csv"
    qa.write_text("case,structure,source,predicted_dice,rank\nc1,lesion,b,0.41,1\nc0,lesion,a,0.93,2\n")
    results = [
        MethodResult("toy", {"dice": {"mean": 0.9, "std": 0.01}, "ged": {"mean": 0.2, "std": 0.05}}, pred_dir),
        MethodResult("other", {"dice": {"mean": 0.8, "std": 0.02}, "ged": {"mean": 0.1, "std": 0.05}}),
    ]
    out = build_report(tmp_path / "report.html", ds, results, split="test", qa_csv=qa)
    html = out.read_text(encoding="utf-8")
    assert 'src="http' not in html and "<script" not in html  # nothing fetched
    images = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', html)
    assert len(images) == 3 + 1 + 1  # 3 case panels, 1 reliability diagram, 1 agreement matrix
    # best cell per column: dice higher is better, GED lower is better
    assert '<td class="best">0.900 ± 0.010</td>' in html
    assert '<td class="best">0.100 ± 0.050</td>' in html
    assert html.index("0.410") < html.index("0.930")  # review queue worst first
