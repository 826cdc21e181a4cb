"""``labelwise next``: the table with reasons, JSON/CSV output, reviewed cases, one error line per bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.helpers import labelwise
from tests.quality.test_select import write_quality_csv, write_select_dataset

from labelwise.data.review import ReviewStore


@pytest.fixture
def ds(tmp_path: Path) -> Path:
    return Path(write_select_dataset(tmp_path / "ds").root)


@pytest.fixture
def qa(tmp_path: Path) -> Path:
    rows = [("agree", "r0", 0.35), ("split", "r0", 0.5), ("dup1", "r0", 0.8), ("dark", "r0", 0.6)]
    return write_quality_csv(tmp_path / "qa" / "quality.csv", rows)


def test_next_by_quality_shows_reasons_and_writes_json(ds: Path, qa: Path, tmp_path: Path) -> None:
    out = tmp_path / "queue.json"
    result = labelwise("next", "--data", ds, "--strategy", "quality", "--qa", qa.parent, "-n", "2", "--out", out)
    assert result.code == 0, result.output
    assert "predicted Dice 0.350" in result.stdout and "agree" in result.stdout
    assert "proposed 2 of 4 candidate case(s)" in result.stdout
    doc = json.loads(out.read_text())
    assert [c["case"] for c in doc["cases"]] == ["agree", "split"]
    assert doc["inputs"]["qa"] == str(qa.parent)


def test_next_csv_split_and_default_strategy(ds: Path, tmp_path: Path) -> None:
    out = tmp_path / "queue.csv"
    result = labelwise("next", "--data", ds, "--split", "train", "-n", "3", "--out", out)  # mix: disagreement only
    assert result.code == 0, result.output
    lines = out.read_text().splitlines()
    assert lines[0].startswith("rank,case,split,score,reason,disagreement") and len(lines) == 4
    assert lines[1].split(",")[1] == "split" and "dark" not in out.read_text()  # 'dark' is in val


def test_next_skips_reviewed_cases_unless_asked(ds: Path, qa: Path) -> None:
    ReviewStore(ds).add_review("agree", "reject")
    result = labelwise("next", "--data", ds, "--strategy", "quality", "--qa", qa, "-n", "1")
    assert result.code == 0, result.output
    assert "split" in result.stdout and "1 reviewed case(s) left out" in result.stdout
    kept = labelwise("next", "--data", ds, "--strategy", "quality", "--qa", qa, "-n", "1", "--include-reviewed")
    assert kept.code == 0 and "agree" in kept.stdout and "left out" not in kept.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--strategy", "quality"], "'quality' needs --qa"),
        (["--strategy", "uncertainty"], "'uncertainty' needs --pred"),
        (["--out", "queue.txt"], ".json or a .csv"),
        (["--split", "test"], "--split 'test' is not a split"),
    ],
)
def test_next_refuses_missing_or_bad_input(ds: Path, args: list[str], message: str) -> None:
    result = labelwise("next", "--data", ds, *args)
    assert result.code == 2 and len(result.errors) == 1 and message in result.errors[0], result.output


def test_next_unknown_strategy_is_a_usage_error(ds: Path) -> None:
    result = labelwise("next", "--data", ds, "--strategy", "worst")
    assert result.code == 2
