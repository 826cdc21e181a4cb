"""The cohort execution layer: balanced parts, the journal, executors (in process, processes, Dask) and their errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from labelwise.engine.cohort import (
    Engine,
    Journal,
    PartSpec,
    check_workers,
    dask_client,
    parse_scheduler,
    partition,
    run_cases,
    worker_cache,
)
from labelwise.errors import DataError, MissingExtraError, UsageError

LOADS: list[str] = []


def test_partition_is_balanced_deterministic_and_complete() -> None:
    sizes = {f"c{i:03d}": (i * 37) % 101 + 1 for i in range(200)}
    parts = partition(sizes, 7)
    assert sorted(c for p in parts for c in p) == sorted(sizes)
    loads = [sum(sizes[c] for c in p) for p in parts]
    assert max(loads) - min(loads) <= max(sizes.values())  # LPT: within one case of each other
    assert partition(dict(reversed(list(sizes.items()))), 7) == [list(reversed(p)) for p in parts]
    assert partition({"b": 1, "a": 1}, 2) == [["a"], ["b"]]  # ties by case id
    assert partition({"a": 1}, 3) == [["a"], [], []]


def test_part_and_scheduler_options() -> None:
    assert PartSpec(4, 3).name == "part-3-of-4"
    assert PartSpec.from_options(None, None) is None
    with pytest.raises(UsageError, match="go together"):
        PartSpec.from_options(2, None)
    with pytest.raises(UsageError, match=r"0\.\.1"):
        PartSpec(2, 2)
    assert parse_scheduler("local:2") == "local:2" and parse_scheduler("tcp://h:8786") == "tcp://h:8786"
    for bad in ("local:0", "local:x", "h:8786"):
        with pytest.raises(UsageError, match="--scheduler"):
            parse_scheduler(bad)


def test_journal_resumes_and_restarts_on_other_context(tmp_path: Path) -> None:
    path = tmp_path / "j.jsonl"
    with Journal(path, {"a": 1}) as j:
        j.append({"case": "x", "v": float("nan"), "error": None})
        j.append({"case": "y", "error": "broken"})
    with open(path, "a") as fh:
        fh.write('{"case": "z", "v"')  # torn by a crash
    again = Journal(path, {"a": 1})
    assert set(again.done) == {"x", "y"} and set(again.succeeded()) == {"x"}
    again.append({"case": "z", "error": None})
    again.close()
    assert set(Journal.read(path, {"a": 1})) == {"x", "y", "z"}
    other = Journal(path, {"a": 2})
    other.close()
    assert other.done == {} and Journal.read(path, {"a": 1}) == {}


def _square(shared: int, case_id: str) -> int:
    if case_id == "bad":
        raise ValueError("cannot score this one")
    return shared * int(case_id)


@pytest.mark.parametrize("workers", [1, 2])
def test_local_executors_report_each_case(workers: int) -> None:
    got: dict[str, Any] = {}
    run_cases(_square, 3, ["1", "bad", "2", "3"], Engine(workers=workers), lambda c, v, e: got.update({c: (v, e)}))
    assert got == {"1": (3, None), "2": (6, None), "3": (9, None), "bad": (None, "ValueError: cannot score this one")}


def _loaded_once(shared: str, case_id: str) -> tuple[int, int]:
    """What a predictor does: the model comes from the per-process cache; returns (pid, loads in this process)."""
    worker_cache((shared, "weights-digest"), lambda: LOADS.append(shared) or object())
    return os.getpid(), len(LOADS)


@pytest.fixture(scope="module")
def cluster() -> Iterator[Any]:
    distributed = pytest.importorskip("distributed")
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None, silence_logs=40
    ) as c:
        yield c


def test_dask_streams_cases_and_loads_the_model_once_per_worker(cluster: Any) -> None:
    got: dict[str, Any] = {}
    engine = Engine(scheduler=cluster.scheduler_address, in_flight=3)
    ids = [str(i) for i in range(12)]
    run_cases(_loaded_once, "run-A", ids, engine, lambda c, v, e: got.update({c: (v, e)}))
    assert set(got) == set(ids) and all(e is None for _, e in got.values())
    assert {loads for (_pid, loads), _ in got.values()} == {1}  # every worker loaded run-A exactly once
    assert os.getpid() not in {pid for (pid, _), _ in got.values()}
    bad: dict[str, Any] = {}
    run_cases(_square, 2, ["4", "bad"], engine, lambda c, v, e: bad.update({c: (v, e)}))
    assert bad == {"4": (8, None), "bad": (None, "ValueError: cannot score this one")}


def test_worker_checks_name_the_problem(cluster: Any, tmp_path: Path) -> None:
    distributed = pytest.importorskip("distributed")
    with distributed.Client(cluster) as client:
        check_workers(client, [str(tmp_path)])
        with pytest.raises(DataError, match="do not see this folder"):
            check_workers(client, [str(tmp_path / "not-shared")])

    class NoLabelwise:
        def wait_for_workers(self, n: int, timeout: float) -> None:
            pass

        def run(self, fn: Any, *args: Any, on_error: str) -> dict[str, Any]:
            return {"tcp://w1:1": None, "tcp://w2:1": ModuleNotFoundError("No module named 'labelwise'")}

    with pytest.raises(DataError, match=r"tcp://w2:1 cannot import labelwise"):
        check_workers(NoLabelwise(), [])


def _trim_setting(shared: None, case_id: str) -> str | None:
    return os.environ.get("MALLOC_TRIM_THRESHOLD_")


def test_local_cluster_workers_keep_glibc_trimming_default(monkeypatch: pytest.MonkeyPatch) -> None:
    """Dask's nanny default (trim at 64 KiB) cost 50-60 % more CPU per case; ``local:N`` workers run without it."""
    pytest.importorskip("distributed")
    import dask

    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    before = dict(dask.config.get("distributed.nanny.pre-spawn-environ"))
    got: dict[str, Any] = {}
    run_cases(_trim_setting, None, ["a"], Engine(scheduler="local:1"), lambda c, v, e: got.update({c: (v, e)}))
    assert got == {"a": (None, None)}
    assert dask.config.get("distributed.nanny.pre-spawn-environ") == before  # the setting is restored after


def test_local_cluster_serves_no_http_page() -> None:
    """Dask starts an HTTP server on the scheduler and each worker even without a dashboard; ours answer 404."""
    pytest.importorskip("distributed")
    import urllib.error
    import urllib.request

    with dask_client(Engine(scheduler="local:1")) as client:
        info = client.scheduler_info(n_workers=-1)
        host = client.scheduler.address.split("://")[1].rsplit(":", 1)[0]
        ports = [info["services"]["dashboard"]]
        ports += [w["services"]["dashboard"] for w in info["workers"].values() if "dashboard" in w["services"]]
        assert len(ports) == 2
        for port in ports:
            for path in ("/info/main/workers.html", "/json/counts.json", "/health", "/metrics"):
                with pytest.raises(urllib.error.HTTPError, match="404"):
                    urllib.request.urlopen(f"http://{host}:{port}{path}", timeout=5)


def test_scheduler_that_does_not_answer() -> None:
    pytest.importorskip("distributed")
    engine = Engine(scheduler="tcp://127.0.0.1:9", connect_timeout_s=1.0)
    with pytest.raises(DataError, match=r"tcp://127.0.0.1:9 did not answer within 1 s"):
        run_cases(_square, 1, ["1"], engine, lambda c, v, e: None)


def test_scheduler_without_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(MissingExtraError, match=r"--scheduler needs the \[dask\] extra"):
        run_cases(_square, 1, ["1"], Engine(scheduler="local:1"), lambda c, v, e: None)


def _die_twice(marker: str, case_id: str) -> str:
    """Kill the worker process the first two times any case runs (at most two: the marker files are created
    atomically); the rescheduled tasks then succeed. With two workers, both original workers die."""
    for k in range(2):
        try:
            os.close(os.open(f"{marker}.{k}", os.O_CREAT | os.O_EXCL | os.O_WRONLY))
        except FileExistsError:
            continue
        os._exit(1)
    return case_id


def test_dask_reschedules_the_cases_of_workers_that_died(cluster: Any, tmp_path: Path) -> None:
    """Every worker that held the run's shared object dies: the cases are still computed, on the restarted ones."""
    got: dict[str, Any] = {}
    engine = Engine(scheduler=cluster.scheduler_address, batch=2)
    run_cases(_die_twice, str(tmp_path / "died"), ["a", "b", "c"], engine, lambda c, v, e: got.update({c: (v, e)}))
    assert (tmp_path / "died.0").exists() and (tmp_path / "died.1").exists()
    assert got == {"a": ("a", None), "b": ("b", None), "c": ("c", None)}
