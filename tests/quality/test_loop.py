"""Round records, the runs' lineage, the rounds table and simulated corrections (``labelwise.quality.loop``)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import Dataset
from labelwise.data.phantoms import make_phantom_dataset, read_phantom_truth
from labelwise.errors import DataError
from labelwise.quality.loop import (
    RoundRecord,
    apply_corrections,
    corrected_cases,
    eval_metric,
    find_rounds,
    format_rounds,
    read_round,
    round_dir,
    rounds_table,
    run_lineage,
    write_round,
    write_rounds_markdown,
)


def fake_run(path: Path, init: Path | None = None, method: str = "supervised") -> Path:
    """A run folder with only the ``meta.json`` lineage fields."""
    path.mkdir(parents=True)
    meta: dict[str, object] = {"method": method, "status": "finished"}
    if init is not None:
        meta["init_from"] = {"path": str(init.resolve()), "method": method}
    (path / "meta.json").write_text(json.dumps(meta))
    return path


def record(n: int, run: Path, dice: float, corrected: list[str], init: Path | None = None) -> RoundRecord:
    return RoundRecord(
        round=n,
        run=str(run.resolve()),
        trained=init is not None,
        init_from=None if init is None else str(init.resolve()),
        method="supervised",
        dataset="/data",
        labels="reviewed",
        split="test",
        eval="eval",
        metrics={"dice": dice},
        n_scored=4,
        corrected=corrected,
        next="next.json",
        proposed=["a", "b"],
        strategy="mix",
    )


def test_lineage_follows_init_from_oldest_first_and_stops_at_a_cycle(tmp_path: Path) -> None:
    r0 = fake_run(tmp_path / "r0")
    r1 = fake_run(tmp_path / "r1", r0)
    r2 = fake_run(tmp_path / "r2", r1)
    assert [s.path.name for s in run_lineage(r2)] == ["r0", "r1", "r2"]
    assert run_lineage(r2)[0].init_from is None and run_lineage(r2)[-1].init_from == r1.resolve()
    assert [s.path.name for s in run_lineage(r2, max_depth=2)] == ["r1", "r2"]
    (r0 / "meta.json").write_text(json.dumps({"method": "supervised", "init_from": {"path": str(r2.resolve())}}))
    assert len(run_lineage(r2)) == 3  # r0 -> r2 would close a cycle: stop
    gone = fake_run(tmp_path / "r3", tmp_path / "missing")
    steps = run_lineage(gone)
    assert steps[0].path.name == "missing" and steps[0].method is None


def test_round_record_round_trip_and_refusals(tmp_path: Path) -> None:
    run = fake_run(tmp_path / "r0")
    folder = round_dir(tmp_path / "loop", 0)
    assert folder.name == "round-000"
    write_round(folder, record(0, run, 0.8, []))
    assert read_round(folder) == record(0, run, 0.8, [])
    assert find_rounds(tmp_path / "loop") == [folder]
    (round_dir(tmp_path / "loop", 1)).mkdir()  # an unfinished round has no round.json: not listed
    assert find_rounds(tmp_path / "loop") == [folder]
    with pytest.raises(DataError, match="no round record here"):
        read_round(round_dir(tmp_path / "loop", 1))
    (folder / "round.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(DataError, match="not a labelwise round record"):
        read_round(folder)
    (folder / "round.json").write_text("{")
    with pytest.raises(DataError, match="cannot read the round record"):
        read_round(folder)


def test_rounds_table_deltas_and_lineage_check(tmp_path: Path) -> None:
    r0 = fake_run(tmp_path / "r0")
    r1 = fake_run(tmp_path / "r1", r0)
    stray = fake_run(tmp_path / "stray")  # trained from scratch, not from round 1's run
    rows = rounds_table(
        [record(2, stray, 0.70, ["a", "b", "c"]), record(0, r0, 0.5, []), record(1, r1, 0.75, ["a"], r0)]
    )
    assert [r.round for r in rows] == [0, 1, 2]
    assert rows[0].delta is None and rows[1].delta == pytest.approx({"dice": 0.25})
    assert rows[2].delta == pytest.approx({"dice": -0.05})
    assert [r.lineage_ok for r in rows] == [True, True, False]
    assert rows[1].init_from == str(r0.resolve()) and rows[1].corrected == 1
    text = format_rounds(rows)
    assert text.splitlines()[0] == "| round | corrected cases | dice | change in dice | warm-started from | next |"
    assert "| 1 | 1 | 0.7500 | +0.2500 | r0 | 2 case(s) |" in text
    assert "not the previous round's run" in text.splitlines()[-1]


def test_rounds_markdown_of_a_loop_folder(tmp_path: Path) -> None:
    r0 = fake_run(tmp_path / "r0")
    r1 = fake_run(tmp_path / "r1", r0)
    write_round(round_dir(tmp_path / "loop", 0), record(0, r0, 0.5, []))
    write_round(round_dir(tmp_path / "loop", 1), record(1, r1, 0.6, ["a"], r0))
    text = write_rounds_markdown(tmp_path / "loop").read_text()
    assert text.startswith("# Rounds") and "| 0 | 0 | 0.5000 | - | - |" in text and "+0.1000" in text


def test_eval_metric_reads_the_majority_mean_of_the_first_class() -> None:
    summary = {"metrics": {"dice": {"liver": {"majority": {"mean": 0.8}, "r1": {"mean": 0.1}}, "kidney": {}}}}
    assert eval_metric(summary) == 0.8
    assert eval_metric(summary, "nsd") is None
    assert eval_metric({"metrics": {"dice": {"1": {"majority": {"mean": float("nan")}}}}}) is None


def test_apply_corrections_is_read_back_as_reviewed_and_refuses_bad_maps(tmp_path: Path) -> None:
    ds = make_phantom_dataset(tmp_path / "ds", n_cases=4, raters=2, shape=(16, 16), seed=1)
    case = ds.ids[0]
    truth = read_phantom_truth(ds.root, case)
    versions = apply_corrections(ds.root, {case: truth})
    assert [v.case for v in versions] == [case] and versions[0].user == "simulated-reviewer"
    assert corrected_cases(ds.root) == [case]
    view = Dataset(ds.root, labels="reviewed").load(case)
    assert view.rater_ids == ("reviewed",) and np.array_equal(view.raters[0], truth)
    assert Dataset(ds.root).load(case).rater_ids != ("reviewed",)  # the originals are untouched
    with pytest.raises(DataError):
        apply_corrections(ds, {ds.ids[1]: np.zeros((3, 3), np.int16)})
    with pytest.raises(DataError):
        apply_corrections(ds, {ds.ids[1]: np.full(truth.shape, 9, np.int16)})
    assert corrected_cases(ds.root) == [case]


def test_apply_corrections_3d(tmp_path: Path) -> None:
    ds = make_phantom_dataset(tmp_path / "ds3", n_cases=3, raters=1, spatial_dims=3, shape=(12, 12, 8), seed=2)
    case = ds.ids[0]
    truth = read_phantom_truth(ds.root, case)
    apply_corrections(ds, {case: truth})
    assert np.array_equal(Dataset(ds.root, labels="reviewed").load(case).raters[0], truth)
