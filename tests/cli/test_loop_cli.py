"""``labelwise loop``: one round end to end on a tiny phantom dataset (a few training steps), through the CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from tests.cli.helpers import labelwise

from labelwise.data.phantoms import make_phantom_dataset, read_phantom_truth
from labelwise.quality.loop import apply_corrections, find_rounds, read_round, run_lineage


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    ds = make_phantom_dataset(tmp_path / "ds", n_cases=8, raters=2, shape=(24, 24), seed=3)
    return Path(ds.root)


def _train(dataset: Path, run: Path) -> None:
    result = labelwise("train", "supervised", "--data", dataset, "--out", run, "--preset", "smoke")
    assert result.code == 0, result.output


def test_round_zero_scores_and_proposes(dataset: Path, tmp_path: Path) -> None:
    run0, loop = tmp_path / "r0", tmp_path / "loop"
    _train(dataset, run0)
    args = ["--data", dataset, "--run", run0, "--out", loop, "--split", "val", "-n", "3", "--strategy", "diversity"]
    result = labelwise("loop", *args)
    assert result.code == 0, result.output
    rec = read_round(loop / "round-000")
    assert rec.strategy == "diversity" and len(rec.proposed) == 3 and rec.corrected == []
    assert not (loop / "round-000" / "pred-pool").exists()  # diversity needs no model predictions of the pool
    assert "| 0 | 0 |" in (loop / "rounds.md").read_text()


@pytest.mark.timeout(300)
def test_two_rounds_score_propose_review_retrain(dataset: Path, tmp_path: Path) -> None:
    run0, loop = tmp_path / "runs" / "r0", tmp_path / "loop"
    _train(dataset, run0)
    r0 = labelwise("loop", "--data", dataset, "--run", run0, "--out", loop, "-n", "2", "--split", "val")
    assert r0.code == 0, r0.output
    rec0 = read_round(loop / "round-000")
    assert rec0.round == 0 and not rec0.trained and rec0.run == str(run0.resolve())
    assert len(rec0.proposed) == 2 and "dice" in rec0.metrics
    assert json.loads((loop / "round-000" / "next.json").read_text())["strategy"] == "mix"
    assert (loop / "round-000" / "eval" / "summary.json").is_file()

    # the review in the viewer, simulated: the proposed cases get their true label as a correction
    apply_corrections(dataset, {c: read_phantom_truth(dataset, c) for c in rec0.proposed})

    r1 = labelwise("loop", "--data", dataset, "--out", loop, "-n", "2", "--split", "val")
    assert r1.code == 0, r1.output
    rec1 = read_round(loop / "round-001")
    assert rec1.trained and rec1.init_from == str(run0.resolve())
    config = (loop / "round-001" / "run" / "config.yaml").read_text()
    assert "unet_tiny" in config  # the starting run's recipe (smoke preset), on the warm start's short schedule
    assert rec1.corrected == sorted(rec0.proposed)
    assert not set(rec1.proposed) & set(rec0.proposed)  # reviewed cases are not proposed again
    assert [s.path for s in run_lineage(rec1.run)] == [run0.resolve(), (loop / "round-001" / "run").resolve()]
    assert [p.name for p in find_rounds(loop)] == ["round-000", "round-001"]
    table = (loop / "rounds.md").read_text()
    assert "| 1 | 2 |" in table and "| r0 |" in table
    assert "round 1: review these 2 case(s) next" in r1.stdout

    # a round interrupted after its training resumes without training again
    (loop / "round-001" / "round.json").unlink()
    again = labelwise("loop", "--data", dataset, "--out", loop, "-n", "2", "--split", "val")
    assert again.code == 0 and "is trained already" in again.stdout, again.output
    assert read_round(loop / "round-001").proposed == rec1.proposed

    # the report shows how the metrics moved, round by round
    html = tmp_path / "report.html"
    evals = [loop / "round-000" / "eval", loop / "round-001" / "eval"]
    rep = labelwise("report", *evals, "--data", dataset, "--split", "val", "--max-cases", "0", "--out", html)
    assert rep.code == 0, rep.output
    page = html.read_text()
    assert "<h2>Rounds</h2>" in page and "supervised (round 1)" in page
    row = f"<tr><td>1</td><td>2</td><td>{rec1.metrics['dice']:.4f}</td>"
    assert row in page and "not the previous round" not in page


def test_first_round_needs_a_run(dataset: Path, tmp_path: Path) -> None:
    result = labelwise("loop", "--data", dataset, "--out", tmp_path / "loop")
    assert result.code == 2 and result.errors == [
        f"error: --out {tmp_path / 'loop'} holds no round yet: give --run RUN, the trained run to start from"
    ]


def test_unknown_split_is_one_error(dataset: Path, tmp_path: Path) -> None:
    run0 = tmp_path / "r0"
    _train(dataset, run0)
    result = labelwise("loop", "--data", dataset, "--run", run0, "--out", tmp_path / "loop", "--split", "nope")
    assert result.code == 2 and len(result.errors) == 1 and "nope" in result.errors[0]
