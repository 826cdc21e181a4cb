"""Sharded evaluation: parts + merge give exactly one run's tables; merge refuses missing or overlapping parts."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from tests.cli.helpers import labelwise

from labelwise.data import DatasetWriter
from labelwise.io import Prediction, PredictionIndex, write_prediction

SHAPE = (10, 11, 6)
SPACING = (1.0, 1.0, 2.0)
METRICS = ("--metrics", "dice,iou,soft_dice,ece")


def _box(lo: int, hi: int, z: int = 4) -> np.ndarray:
    m = np.zeros(SHAPE, np.int16)
    m[lo:hi, lo:hi, 1:z] = 1
    return m


@pytest.fixture()
def cohort(tmp_path: Path) -> tuple[Path, Path]:
    """Seven test cases of different sizes (one with no prediction), three raters, soft predictions."""
    data = tmp_path / "data"
    w = DatasetWriter(data, "cohort", 3, ("background", "organ"), rater_ids=("r1", "r2", "r3"))
    rng = np.random.default_rng(0)
    ids = [f"case{i:02d}" for i in range(7)]
    for i, cid in enumerate(ids):
        a, b = _box(2, 5 + i % 4), _box(1 + i % 2, 6)
        image = rng.normal(size=(1, *SHAPE)).astype(np.float32) * (1 + i)  # different file sizes
        w.add_case(cid, image, raters={"r1": a, "r2": a, "r3": b}, spacing_mm=SPACING, split="test")
    w.finish()
    pred = tmp_path / "pred"
    index = PredictionIndex("test-method", ("background", "organ"), rater_ids=("r1", "r2", "r3"))
    for i, cid in enumerate(ids[:-1]):
        fg = np.clip(_box(2, 6 - i % 3).astype(np.float32) * 0.8 + rng.uniform(0, 0.3, SHAPE), 0, 1)
        probs = np.stack([1 - fg, fg]).astype(np.float32)
        write_prediction(pred, cid, Prediction(probs=probs), SPACING, np.diag([*SPACING, 1.0]))
        index.cases.append(cid)
    index.save(pred)
    return data, pred


def _evaluate(data: Path, pred: Path, out: Path, *extra: object) -> int:
    args = ["evaluate", "--pred", pred, "--data", data, "--out", out, "--n-bootstrap", "200", *METRICS, *extra]
    return labelwise(*args).code


def test_three_parts_merge_to_exactly_one_run(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    data, pred = cohort
    one, sharded = tmp_path / "one", tmp_path / "sharded"
    assert _evaluate(data, pred, one) == 1  # case06 has no prediction: reported, exit 1
    codes = [_evaluate(data, pred, sharded, "--num-parts", 3, "--part-id", k) for k in range(3)]
    assert sorted(codes) == [0, 0, 1]  # the part holding case06 exits 1
    owned = [json.loads((sharded / f"parts/part-{k}-of-3/part.json").read_text())["cases"] for k in range(3)]
    assert sorted(c for part in owned for c in part) == [f"case{i:02d}" for i in range(7)]
    assert all(owned)  # balanced: no part is empty
    out = labelwise("evaluate", "merge", "--out", sharded)
    assert out.code == 1 and out.errors == ["error: 1 case(s) failed (see summary.json)"]
    for name in ("per_case.csv", "summary.json", "summary.md"):
        assert (sharded / name).read_bytes() == (one / name).read_bytes(), name


def test_merge_refuses_missing_and_overlapping_parts(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    data, pred = cohort
    out = tmp_path / "sharded"
    for k in (0, 2):
        _evaluate(data, pred, out, "--num-parts", 3, "--part-id", k)
    missing = labelwise("evaluate", "merge", "--out", out)
    assert missing.code == 1 and len(missing.errors) == 1
    assert "missing parts: part-1-of-3" in missing.errors[0] and "--allow-partial" in missing.errors[0]
    assert not (out / "summary.json").exists()

    partial = labelwise("evaluate", "merge", "--out", out, "--allow-partial")
    summary = json.loads((out / "summary.json").read_text())
    assert summary["partial"]["missing_parts"] == ["part-1-of-3"]
    assert summary["n_cases"] + summary["partial"]["n_cases_missing"] == 7
    assert "parts missing: part-1-of-3" in partial.stderr

    _evaluate(data, pred, out, "--num-parts", 2, "--part-id", 0)  # another split into the same folder
    overlap = labelwise("evaluate", "merge", "--out", out, "--allow-partial")
    assert overlap.code == 1 and len(overlap.errors) == 1 and "parts overlap" in overlap.errors[0]


def test_part_options_checked(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    data, pred = cohort
    alone = labelwise("evaluate", "--pred", pred, "--data", data, "--out", tmp_path / "o", "--num-parts", 2)
    assert alone.code == 2 and "--num-parts and --part-id go together" in alone.errors[0]
    beyond = labelwise(
        "evaluate", "--pred", pred, "--data", data, "--out", tmp_path / "o", "--num-parts", 2, "--part-id", 2
    )
    assert beyond.code == 2 and "--part-id must be in 0..1" in beyond.errors[0]
    nothing = labelwise("evaluate", "merge", "--out", tmp_path / "none")
    assert nothing.code == 1 and "no parts to merge" in nothing.errors[0]


def test_workers_and_resume_give_the_same_tables(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    data, pred = cohort
    one, pool = tmp_path / "one", tmp_path / "pool"
    _evaluate(data, pred, one)
    _evaluate(data, pred, pool, "--workers", 2)
    assert (pool / "per_case.csv").read_bytes() == (one / "per_case.csv").read_bytes()
    assert not (tmp_path / ".pool.journal.jsonl").exists()  # removed once the results are in place


def test_rerun_of_a_killed_part_skips_the_cases_done(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    from labelwise.engine.cohort import JOURNAL_NAME

    data, pred = cohort
    out = tmp_path / "sharded"
    _evaluate(data, pred, out, "--num-parts", 1, "--part-id", 0)
    journal = out / "parts/part-0-of-1" / JOURNAL_NAME
    lines = journal.read_text().splitlines()
    journal.write_text("\n".join(lines[:3]) + "\n" + lines[3][:20])  # killed: two cases done, a torn line
    (out / "parts/part-0-of-1/part.json").unlink()
    first = [json.loads(line) for line in lines[1:3]]
    assert first[0]["case"] == "case06" and first[0]["error"] and first[1]["error"] is None
    _evaluate(data, pred, out, "--num-parts", 1, "--part-id", 0)
    again = journal.read_text().splitlines()
    redone = [json.loads(line)["case"] for line in again[3:]]
    assert again[:3] == lines[:3] and first[1]["case"] not in redone  # the case done is not scored again
    assert sorted(redone) == sorted(c for c in (f"case{i:02d}" for i in range(7)) if c != first[1]["case"])
    assert labelwise("evaluate", "merge", "--out", out).code == 1  # case06: no prediction
    one = tmp_path / "one"
    _evaluate(data, pred, one)
    assert (out / "per_case.csv").read_bytes() == (one / "per_case.csv").read_bytes()


# a LocalCluster of 2 worker processes (issue 20: the three commands on Dask in CI)
def test_dask_local_cluster_gives_the_same_tables(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    pytest.importorskip("distributed")
    data, pred = cohort
    one, dask = tmp_path / "one", tmp_path / "dask"
    _evaluate(data, pred, one)
    assert _evaluate(data, pred, dask, "--scheduler", "local:2") == 1  # case06: no prediction
    for name in ("per_case.csv", "summary.json"):
        assert (dask / name).read_bytes() == (one / name).read_bytes(), name


def test_bad_scheduler_is_one_line(cohort: tuple[Path, Path], tmp_path: Path) -> None:
    data, pred = cohort
    res = labelwise("evaluate", "--pred", pred, "--data", data, "--out", tmp_path / "o", "--scheduler", "h:1")
    assert res.code == 2 and res.errors == [
        "error: --scheduler 'h:1': give a Dask scheduler address (tcp://HOST:8786) or local:N"
    ]
