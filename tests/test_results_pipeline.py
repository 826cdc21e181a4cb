"""The results pipeline: every table in docs/results.md equals the render of its JSON record, and a quick run works.

A number typed by hand into a generated block of ``docs/results.md`` (or a record edited without re-rendering) fails
``test_docs_blocks_match_records``. ``test_quick_run`` runs ``benchmarks/results/run.py --quick`` for every
registered table into ``tmp_path`` (a subprocess, as CI runs it) and checks its output the same way;
``test_quick_run_unregistered`` does the same for a named table without a full-run record yet.
"""

from __future__ import annotations

import json
import math
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from benchmarks.results.run import (
    HEADLINES,
    PROVENANCE_FIELDS,
    RECORD_FIELDS,
    blocks,
    config_hash,
    headlines,
    previous_record,
    render_into,
)
from benchmarks.results.tables import TABLES, UNREGISTERED, get

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs" / "results.md"
RECORDS = REPO / "docs" / "results"


def _check(docs: Path, records: Path, *, quick: bool) -> list[str]:
    """Check the blocks of ``docs`` against the records in ``records``; return the table names checked."""
    found = blocks(docs.read_text(encoding="utf-8"))
    assert found.pop(HEADLINES, None) == headlines(records), (
        f"headline block of {docs.name} differs from the records: run `python benchmarks/results/run.py --render-only`"
    )
    names = sorted(p.stem for p in records.glob("*.json"))
    assert set(found) == set(names), f"marker blocks {sorted(found)} vs records {names}"
    for name in names:
        record = json.loads((records / f"{name}.json").read_text(encoding="utf-8"))
        missing = [k for k in RECORD_FIELDS if k not in record]
        assert not missing, f"{name}.json lacks {missing}"
        prov = record["provenance"]
        missing = [k for k in PROVENANCE_FIELDS if k not in prov]
        assert not missing, f"{name}.json provenance lacks {missing}"
        assert prov["git_commit"] and isinstance(prov["git_dirty"], bool)
        assert prov["wall_s"] >= 0 and prov["cpu_s"] >= 0
        assert {"cpu", "cores", "torch", "gpu"} <= set(prov["machine"])
        assert record["quick"] is quick and record["table"] == name
        assert record["config_hash"] == config_hash(record["config"]), f"{name}: config edited after the run"
        for split in record["splits"].values():
            assert split["role"] in ("dev", "test") and split["n"] == len(split["cases"])
        looks = record["looks"]
        assert looks["test_looks_this_version"] <= looks["test_looks_total"] <= len(looks["log"])
        for row in record["rows"]:  # the summary numbers are the per-case values' means
            if row.get("per_case", True) is False:
                continue
            per = record["per_case"][row["split"]][row["method"]]
            scale = row.get("scale", 100)
            for metric, stats in row["metrics"].items():
                vals = [per[c][metric] * scale for c in record["splits"][row["split"]]["cases"]]
                vals = [v for v in vals if v is not None and math.isfinite(v)]
                assert stats["mean"] == pytest.approx(sum(vals) / len(vals), abs=1e-9), (name, row, metric)
        table = get(name)
        if hasattr(table, "check"):
            table.check(record)
        assert found[name] == get(name).render(record), (
            f"docs block of {name} differs from render(docs/results/{name}.json): "
            "run `python benchmarks/results/run.py --render-only` (never edit the block by hand)"
        )
    return names


def test_docs_blocks_match_records() -> None:
    names = _check(DOCS, RECORDS, quick=False)
    assert names == sorted(TABLES), "every registered table has a committed record and a block in docs/results.md"


def test_readme_headlines_match_records() -> None:
    found = blocks((REPO / "README.md").read_text(encoding="utf-8"))
    assert found.get(HEADLINES) == headlines(RECORDS), (
        "README headline block differs from the records: run `python benchmarks/results/run.py --render-only`"
    )


def test_hand_edited_number_fails(tmp_path: Path) -> None:
    records = tmp_path / "results"
    records.mkdir()
    for p in RECORDS.glob("*.json"):
        (records / p.name).write_bytes(p.read_bytes())
    docs = tmp_path / "results.md"
    docs.write_text(DOCS.read_text(encoding="utf-8"), encoding="utf-8")
    _check(docs, records, quick=False)
    text = docs.read_text(encoding="utf-8")
    name = sorted(n for n in blocks(text) if n != HEADLINES)[0]
    block = blocks(text)[name]
    # a re-typed number: the first decimal number in a table cell gets its last digit changed
    edited = re.sub(r"(\| [^|\n]*?\d\.\d*)(\d)", lambda m: f"{m.group(1)}{(int(m.group(2)) + 1) % 10}", block, count=1)
    assert edited != block
    docs.write_text(text.replace(block, edited), encoding="utf-8")
    with pytest.raises(AssertionError, match="differs from render"):
        _check(docs, records, quick=False)
    render_into(docs, name, get(name).render(json.loads((records / f"{name}.json").read_text(encoding="utf-8"))))
    _check(docs, records, quick=False)


def _quick_run(name: str, real_data: Path, tmp_path: Path) -> None:
    """``run.py NAME --quick`` in a subprocess, as CI runs it: a small dev-only record whose block renders."""
    out = tmp_path / "out"
    env = {**os.environ, "LABELWISE_DATA": str(real_data), "OMP_NUM_THREADS": "1"}
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results" / "run.py"), name, "--quick", "--out", str(out)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        encoding="utf-8",
        errors="replace",
        timeout=280,
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert _check(out / "results.md", out, quick=True) == [name]
    record = json.loads((out / f"{name}.json").read_text(encoding="utf-8"))
    assert all(split["n"] <= 3 for split in record["splits"].values())
    # a quick (CI) run never opens the untouched test split, so it adds no look
    assert all(split["role"] == "dev" for split in record["splits"].values()), record["splits"]
    assert not any(e.get("quick") for e in record["looks"]["log"])


@pytest.mark.realdata
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(TABLES))
def test_quick_run(name: str, real_data: Path, tmp_path: Path) -> None:
    """``run.py TABLE --quick`` for every registered table."""
    _quick_run(name, real_data, tmp_path)


@pytest.mark.realdata
@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", list(UNREGISTERED))
def test_quick_run_unregistered(name: str, real_data: Path, tmp_path: Path) -> None:
    """An unregistered table (no full-run record yet) runs by name with ``--quick``, checked as a registered one."""
    assert name in UNREGISTERED and name not in TABLES
    _quick_run(name, real_data, tmp_path)


def test_unregistered_tables_by_name_only() -> None:
    """Unregistered tables resolve by name but are neither registered nor required to have a record or block."""
    assert not set(UNREGISTERED) & set(TABLES)
    for name in UNREGISTERED:
        assert get(name).NAME == name
    with pytest.raises(KeyError, match="unknown results table"):
        get("no_such_table")


def test_quick_refuses_docs(tmp_path: Path) -> None:
    res = subprocess.run(
        [sys.executable, str(REPO / "benchmarks" / "results" / "run.py"), "--quick", "--out", str(RECORDS)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert res.returncode == 2 and "never writes into docs/results" in res.stderr


def test_active_loop_says_when_the_gap_to_random_is_seed_noise() -> None:
    """The best strategy's gap to random is compared with the seed-to-seed spread of the final Dice."""
    from benchmarks.results.tables import active_loop as al

    def summary(quality_finals: tuple[float, float]) -> dict[str, Any]:
        finals = {st: (0.90, 0.92) for st in al.STRATEGIES} | {"quality": quality_finals}
        per_seed = {st: {"0": [0.8, f[0]], "1": [0.8, f[1]]} for st, f in finals.items()}
        curve = {st: [0.8, (f[0] + f[1]) / 2] for st, f in finals.items()}
        return {"test_dice_by_round_per_seed": per_seed, "test_dice_by_round": curve}

    best, gap, noise = al._gap_vs_noise(summary((0.91, 0.93)), 1)
    assert best == "quality" and gap == pytest.approx(0.01) and noise == pytest.approx(0.02 / 2**0.5)
    assert abs(gap) <= noise
    best, gap, noise = al._gap_vs_noise(summary((0.95, 0.951)), 1)
    assert best == "quality" and gap > noise


def test_quality_helpers_on_known_answers() -> None:
    """recall_worst shares ties at the cut; auroc_below is the Mann-Whitney AUROC of the low scores."""
    from benchmarks.results.common import auroc_below, quality_metrics, recall_worst

    true = [0.1, 0.5, 0.9, 0.95, 0.97, 0.99, 0.6, 0.92, 0.93, 0.94]
    assert recall_worst(true, true, 0.2) == 1.0  # a perfect ranking finds both worst masks
    assert recall_worst([0.5] * 10, true, 0.2) == pytest.approx(0.2)  # a constant gets the chance value k / n
    assert recall_worst([-t for t in true], true, 0.2) == 0.0
    assert auroc_below(true, true, 0.8) == 1.0 and auroc_below([-t for t in true], true, 0.8) == 0.0
    assert auroc_below([0.5] * 10, true, 0.8) == 0.5 and math.isnan(auroc_below(true, [0.9] * 10, 0.8))
    vals = {str(i): {"true_dice": t, "pred": 0.9} for i, t in enumerate(true)}
    m = quality_metrics(vals, predicts_dice=True)
    assert m["pearson"] is None and m["n_bad"] == 3 and m["mae"] == pytest.approx(sum(abs(0.9 - t) for t in true) / 10)
    assert quality_metrics(vals, predicts_dice=False)["mae"] is None


def test_a_full_run_into_a_scratch_folder_continues_the_committed_looks(tmp_path: Path) -> None:
    committed, scratch = tmp_path / "committed", tmp_path / "scratch"
    committed.mkdir()
    scratch.mkdir()
    (committed / "t.json").write_text(json.dumps({"looks": {"log": [{"config_hash": "a"}]}}), encoding="utf-8")
    assert previous_record("t", scratch, quick=False, records=committed) == {"looks": {"log": [{"config_hash": "a"}]}}
    assert previous_record("t", scratch, quick=True, records=committed) is None  # a quick run never reads docs/
    (scratch / "t.json").write_text(json.dumps({"looks": {"log": []}}), encoding="utf-8")
    assert previous_record("t", scratch, quick=False, records=committed) == {"looks": {"log": []}}


def test_small_data_probe_reads_the_default_plan_and_keeps_nothing(real_data: Path, tmp_path: Path) -> None:
    """The probe starts `labelwise train` with the default budget and stops it at its plan: no weights are kept."""
    from benchmarks.results.tables import Context
    from benchmarks.results.tables import small_data as sd

    out = sd.probe(Context(work=tmp_path, data=real_data), datasets=("qubiq",), seeds=(0,))
    assert set(out["planned"]) == {f"qubiq/seed0/{m}" for m in sd.TRAINED}
    for key, plan in out["planned"].items():
        method = key.rsplit("/", 1)[1]
        assert 1 <= plan["epochs"] * plan["steps_per_epoch"] <= sd._default_steps(method)
        assert out["measured"][key]["time_budget_s"] > 0 and out["measured"][key]["step_seconds"] > 0
    assert not list((tmp_path / "probe").rglob("*.safetensors"))
