"""The README's first command, on its reduced setting: every stage runs through the real CLI."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path


def test_quick_demo_runs_every_stage_and_writes_the_report(tmp_path: Path) -> None:
    out = tmp_path / "demo"
    cmd = [sys.executable, "-m", "labelwise.cli", "demo", "--quick", "--out", str(out)]
    res = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", timeout=900)
    assert res.returncode == 0, res.stderr[-3000:]
    assert res.stdout.strip().splitlines()[-1] == f"report: {(out / 'report.html').resolve()}"
    html = (out / "report.html").read_text(encoding="utf-8")
    for method in ("supervised", "mrnet", "dpersona"):
        assert f"<td>{method}</td>" in html
        summary = json.loads((out / "eval" / method / "summary.json").read_text(encoding="utf-8"))
        assert summary["n_failed"] == 0 and summary["n_scored"] == summary["n_cases"] > 0
    assert "Label quality" in html
    assert (out / "qa" / "quality.csv").read_text(encoding="utf-8").count("\n") > 1
    assert (out / "fused" / "reliability.csv").exists()
