"""Running a command over a cohort of cases: parts (sharding), executors (local or Dask) and the per-case journal.

``labelwise predict``, ``labelwise evaluate`` and ``labelwise qa`` share this one execution layer:

* **Parts** (``--num-parts N --part-id K``, nothing to install): :func:`partition` splits the cases into N parts
  balanced by size (greedy longest-processing-time on the cases' file sizes, ties broken by case id), the same
  split in every part. Part K writes only into ``OUT/parts/part-K-of-N/`` (:func:`part_dir`): ``part.json``
  (which cases it owns, the run's context) and ``cases.jsonl`` (its journal), so parts running at the same time
  never write the same file. :func:`collect_parts` reads them back for ``merge``, refusing missing, unfinished,
  overlapping or mismatched parts unless partial results are allowed.
* **Executors** (:func:`run_cases`): in this process, in local worker processes (``--workers N``), or on a Dask
  cluster (``--scheduler tcp://HOST:8786`` or ``--scheduler local:N``, the ``[dask]`` extra). Cases stream in
  bounded batches (at most :attr:`Engine.in_flight` submitted at once), results come back as they finish, and a
  case that fails is reported as an error string while the others go on. On Dask, tasks whose worker dies are
  rescheduled by the scheduler and a failing task is retried :attr:`Engine.retries` times.
* **Journal** (:class:`Journal`): one JSON line per finished case, flushed as it arrives (fsynced at most once a
  second); a run that crashes loses at most the cases in flight, and a rerun with the same context skips the
  cases already done.
* **Once per worker** (:func:`worker_cache`): a model (or any costly object) is built once per process and kept,
  keyed by what identifies it (run directory + weights hash), never once per case.
"""

from __future__ import annotations

import contextlib
import hashlib
import heapq
import itertools
import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from labelwise.data import Dataset
from labelwise.errors import DataError, LabelwiseError, UsageError, require_extra
from labelwise.io import read_json_object, write_json_atomic

__all__ = [
    "JOURNAL_NAME",
    "PART_NAME",
    "Engine",
    "Journal",
    "PartSet",
    "PartSpec",
    "case_files",
    "case_sizes",
    "check_workers",
    "collect_parts",
    "dask_client",
    "error_text",
    "parse_scheduler",
    "part_dir",
    "partition",
    "run_cases",
    "weights_fingerprint",
    "worker_cache",
    "worker_cache_put",
    "write_part",
]

logger = logging.getLogger(__name__)

S = TypeVar("S")
R = TypeVar("R")

PART_NAME = "part.json"
JOURNAL_NAME = "cases.jsonl"
FSYNC_EVERY_S = 1.0
"""The journal is flushed after every case (a killed run loses nothing) and fsynced at most this often."""
PARTS_FOLDER = "parts"
LOCAL_PREFIX = "local:"
_SCHEMES = ("tcp://", "tls://", "inproc://", "ucx://", "ws://", "wss://")


# ---------------------------------------------------------------------------------------------------- parts
@dataclass(frozen=True)
class PartSpec:
    """Part ``part_id`` (0-based) of ``num_parts``; ``labelwise ... --num-parts N --part-id K``."""

    num_parts: int
    part_id: int

    def __post_init__(self) -> None:
        if self.num_parts < 1:
            raise UsageError(f"--num-parts must be at least 1, got {self.num_parts}")
        if not 0 <= self.part_id < self.num_parts:
            raise UsageError(f"--part-id must be in 0..{self.num_parts - 1} for --num-parts {self.num_parts}")

    @property
    def name(self) -> str:
        """Folder name of the part: ``part-K-of-N``."""
        return f"part-{self.part_id}-of-{self.num_parts}"

    @classmethod
    def from_options(cls, num_parts: int | None, part_id: int | None) -> PartSpec | None:
        """The part named by ``--num-parts`` / ``--part-id`` (None when neither is given; one alone is refused)."""
        if num_parts is None and part_id is None:
            return None
        if num_parts is None or part_id is None:
            raise UsageError(
                "--num-parts and --part-id go together (e.g. --num-parts 4 --part-id $SLURM_ARRAY_TASK_ID)"
            )
        return cls(num_parts, part_id)


def partition(sizes: Mapping[str, float], num_parts: int) -> list[list[str]]:
    """Split cases into ``num_parts`` parts of about equal total size (greedy longest processing time).

    Cases are taken largest first (ties: case id ascending) and each goes to the part with the smallest total so
    far (ties: the lowest part index). The result depends only on ``sizes``, so every part computes the same split.

    Args:
        sizes: Case id -> cost (e.g. bytes on disk); the mapping's order is the order kept inside each part.
        num_parts: Number of parts (>= 1).

    Returns:
        ``num_parts`` lists of case ids, each in the order of ``sizes``; a part may be empty when there are fewer
        cases than parts.

    Example:
        >>> partition({"a": 5, "b": 4, "c": 3, "d": 3, "e": 1}, 2)
        [['a', 'd'], ['b', 'c', 'e']]

    """
    if num_parts < 1:
        raise UsageError(f"number of parts must be at least 1, got {num_parts}")
    heap = [(0.0, k) for k in range(num_parts)]
    owner: dict[str, int] = {}
    for cid in sorted(sizes, key=lambda c: (-float(sizes[c]), c)):
        load, k = heapq.heappop(heap)
        owner[cid] = k
        heapq.heappush(heap, (load + float(sizes[cid]), k))
    parts: list[list[str]] = [[] for _ in range(num_parts)]
    for cid in sizes:
        parts[owner[cid]].append(cid)
    return parts


def case_sizes(paths: Mapping[str, Sequence[Path]]) -> dict[str, int]:
    """Case id -> total bytes of its files (a missing file counts 0: its case fails later, with its reason)."""
    out: dict[str, int] = {}
    for cid, files in paths.items():
        total = 0
        for p in files:
            with contextlib.suppress(OSError):
                total += os.path.getsize(p)
        out[cid] = total
    return out


def case_files(
    dataset: Dataset, ids: Sequence[str], masks: str | Path | None = None, *, image: bool = True
) -> dict[str, list[Path]]:
    """Case id -> the files a case's work reads: what :func:`partition` balances.

    These are the image (unless ``image`` is False: ``evaluate`` reads only its header), the rater labels, and
    ``masks/<case>.nii.gz``.
    """
    out: dict[str, list[Path]] = {}
    for cid in ids:
        rec = dataset.record(cid)
        files = [dataset.root / rec.image] if image else []
        files += [dataset.root / p for p in rec.labels.values()]
        if masks is not None:
            files.append(Path(masks) / f"{cid}.nii.gz")
        out[cid] = files
    return out


def part_dir(out: str | Path, part: PartSpec) -> Path:
    """Where part ``part`` of a run writing to ``out`` keeps its files: ``out/parts/part-K-of-N``."""
    return Path(out) / PARTS_FOLDER / part.name


def write_part(
    folder: Path, command: str, part: PartSpec, owned: Sequence[str], all_ids: Sequence[str], context: Any, status: str
) -> Path:
    """Write a part's ``part.json`` atomically (``status``: ``"running"`` at the start, ``"complete"`` at the end)."""
    return write_json_atomic(
        folder / PART_NAME,
        {
            "format": "labelwise-part",
            "version": 1,
            "command": command,
            "num_parts": part.num_parts,
            "part_id": part.part_id,
            "status": status,
            "cases": list(owned),
            "all_cases": list(all_ids),
            "context": context,
        },
    )


@dataclass
class PartSet:
    """The parts of a run read back by :func:`collect_parts`.

    Attributes:
        context: The run's context (identical in every part).
        all_ids: Every case of the run, in the run's order.
        records: Case id -> journal record, for the cases of the parts found (in ``all_ids`` order).
        missing_parts: Names of the parts absent or unfinished (only with ``allow_partial``).
        num_parts: N.

    """

    context: Any
    all_ids: list[str]
    records: dict[str, dict[str, Any]]
    missing_parts: list[str]
    num_parts: int


def collect_parts(out: str | Path, command: str, *, allow_partial: bool = False) -> PartSet:
    """Read every part under ``out/parts`` of a ``command`` run and check that together they are the whole run.

    Raises:
        DataError: No parts; a part of another command, another number of parts or another context (other
            options or inputs); two parts holding the same case (overlap); and, unless ``allow_partial``, parts
            missing or unfinished (named in the message).

    """
    root = Path(out) / PARTS_FOLDER
    manifests: list[tuple[Path, dict[str, Any]]] = []
    for folder in sorted(root.glob("part-*-of-*")) if root.is_dir() else []:
        if (folder / PART_NAME).is_file():
            manifests.append((folder, read_json_object(folder / PART_NAME, "part manifest")))
    if not manifests:
        raise DataError(f"no parts to merge (expected {PARTS_FOLDER}/part-K-of-N/{PART_NAME})", out)
    for folder, m in manifests:
        if m.get("format") != "labelwise-part" or m.get("command") != command:
            raise DataError(f"not a part of a `labelwise {command}` run", folder / PART_NAME)
    owners: dict[str, str] = {}
    overlaps: list[str] = []
    for folder, m in manifests:
        for cid in m["cases"]:
            if cid in owners:
                overlaps.append(f"{cid} ({owners[cid]} and {folder.name})")
            owners.setdefault(cid, folder.name)
    counts = sorted({int(m["num_parts"]) for _, m in manifests})
    if overlaps or len(counts) > 1:
        what = f"cases {', '.join(overlaps[:3])}" + (" ..." if len(overlaps) > 3 else "") if overlaps else ""
        raise DataError(
            f"parts overlap: {what or 'parts of different splits'} (parts of {' and '.join(map(str, counts))}); "
            f"remove the parts of the other split from {root}",
            root,
        )
    first_folder, first = manifests[0]
    for folder, m in manifests[1:]:
        if m["context"] != first["context"] or m["all_cases"] != first["all_cases"]:
            raise DataError(
                f"{folder.name} and {first_folder.name} come from different runs (other inputs or options)", root
            )
    n = counts[0]
    present = {int(m["part_id"]): (folder, m) for folder, m in manifests}
    missing = [f"part-{k}-of-{n}" for k in range(n) if k not in present]
    records: dict[str, dict[str, Any]] = {}
    for _k, (folder, m) in sorted(present.items()):
        done = Journal.read(folder / JOURNAL_NAME, m["context"])
        lacking = [cid for cid in m["cases"] if cid not in done]
        if m.get("status") != "complete" or lacking:
            missing.append(f"{folder.name} (unfinished: {len(m['cases']) - len(lacking)}/{len(m['cases'])} cases)")
            continue
        records.update({cid: done[cid] for cid in m["cases"]})
    if missing and not allow_partial:
        raise DataError(f"missing parts: {', '.join(missing)}; run them, or merge with --allow-partial", root)
    all_ids = list(first["all_cases"])
    ordered = {cid: records[cid] for cid in all_ids if cid in records}
    return PartSet(first["context"], all_ids, ordered, missing, n)


# ---------------------------------------------------------------------------------------------------- journal
class Journal:
    """An append-only JSON-lines file of per-case results, written as each case finishes.

    The first line is a header holding the run's context; each further line is one record
    ``{"case": id, ...}``. Every line is flushed at once (a killed process loses nothing written) and fsynced at
    most once a second (a power cut loses at most that second); a torn last line is dropped on reading. Opening a
    journal whose context differs from the run's starts it afresh. Failed cases are recorded too (for merge), but
    a rerun tries them again.

    Args:
        path: The journal file.
        context: JSON-ready description of the run (inputs and options); a rerun resumes only with an equal one.

    """

    def __init__(self, path: str | Path, context: Any) -> None:
        self.path = Path(path)
        self.context = json.loads(json.dumps(context))
        self.done = self.read(self.path, self.context)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if not self.path.exists() or not self._header_matches():
            if self.path.exists():
                logger.warning("%s: journal of another run (other inputs or options); starting afresh", self.path)
            self.done = {}
            with open(self.path, "w", encoding="utf-8") as fh:
                fh.write(json.dumps({"journal": "labelwise", "context": self.context}) + "\n")
                fh.flush()
                os.fsync(fh.fileno())
        else:
            self._truncate_torn_tail()
        self._fh = open(self.path, "a", encoding="utf-8")  # closed by close()
        self._synced: float = time.monotonic()

    def _header_matches(self) -> bool:
        with contextlib.suppress(OSError, ValueError), open(self.path, encoding="utf-8") as fh:
            head = json.loads(fh.readline())
            return bool(head.get("context") == self.context)
        return False

    def _truncate_torn_tail(self) -> None:
        data = self.path.read_bytes()
        if data and not data.endswith(b"\n"):
            with open(self.path, "r+b") as fh:
                fh.truncate(data.rfind(b"\n") + 1)

    @staticmethod
    def read(path: str | Path, context: Any) -> dict[str, dict[str, Any]]:
        """Case id -> last record of a journal written with ``context`` (empty if absent or of another run)."""
        p = Path(path)
        out: dict[str, dict[str, Any]] = {}
        if not p.is_file():
            return out
        with open(p, encoding="utf-8") as fh:
            lines = fh.read().split("\n")
        try:
            head = json.loads(lines[0])
        except ValueError:
            return out
        if head.get("context") != json.loads(json.dumps(context)):
            return out
        for line in lines[1:]:
            if not line:
                continue
            try:
                rec = json.loads(line)
            except ValueError:  # a torn last line
                continue
            out[rec["case"]] = rec
        return out

    def succeeded(self) -> dict[str, dict[str, Any]]:
        """The records of the cases done without error (a rerun skips these)."""
        return {cid: r for cid, r in self.done.items() if r.get("error") is None}

    def append(self, record: dict[str, Any]) -> None:
        """Append one case's record (``{"case": id, ...}``): flushed at once, fsynced at most once a second."""
        self._fh.write(json.dumps(record) + "\n")
        self._fh.flush()  # a killed process loses nothing written here
        if time.monotonic() - self._synced >= FSYNC_EVERY_S:  # a power cut loses at most the last second
            os.fsync(self._fh.fileno())
            self._synced = time.monotonic()
        self.done[record["case"]] = record

    def close(self) -> None:
        """Fsync and close the file."""
        self._fh.flush()
        os.fsync(self._fh.fileno())
        self._fh.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ---------------------------------------------------------------------------------------------------- once per worker
_CACHE: dict[Any, Any] = {}
_CACHE_LOCK = threading.Lock()
CACHE_SIZE = 2
"""Objects :func:`worker_cache` keeps per process (the oldest goes first): a model or two, not one per round."""


def worker_cache(key: Any, factory: Callable[[], R]) -> R:
    """The object built by ``factory`` for ``key`` in this process, built on first use and kept.

    Workers (local processes or Dask workers) call this for the model: with ``key = (run_dir, weights_digest)``
    each worker loads a run once, however many cases it scores, and a retrained run (new weights) is loaded anew.

    Example:
        >>> worker_cache(("doc", 1), lambda: [1, 2])
        [1, 2]
        >>> worker_cache(("doc", 1), lambda: [3]) is worker_cache(("doc", 1), lambda: [4])
        True

    """
    with _CACHE_LOCK:
        if key not in _CACHE:
            while len(_CACHE) >= CACHE_SIZE:
                _CACHE.pop(next(iter(_CACHE)))
            _CACHE[key] = factory()
        return _CACHE[key]  # type: ignore[no-any-return]


def worker_cache_put(key: Any, value: Any) -> None:
    """Put an object already built in this process into :func:`worker_cache` (so it is not built twice)."""
    with _CACHE_LOCK:
        _CACHE.pop(key, None)
        while len(_CACHE) >= CACHE_SIZE:
            _CACHE.pop(next(iter(_CACHE)))
        _CACHE[key] = value


def weights_fingerprint(run_dir: str | Path) -> str:
    """A digest of a run's weight files (names, sizes, modification times): part of a :func:`worker_cache` key.

    Cheap enough for every command start (no weight is read), and it changes whenever a weight file is rewritten,
    so a worker never keeps serving a model that was retrained in place.
    """
    root = Path(run_dir).resolve()
    h = hashlib.sha256(str(root).encode())
    for p in sorted(root.rglob("*.safetensors")):
        st = p.stat()
        h.update(f"{p.relative_to(root)}:{st.st_size}:{st.st_mtime_ns};".encode())
    return h.hexdigest()[:16]


# ---------------------------------------------------------------------------------------------------- executors
@dataclass(frozen=True)
class Engine:
    """Where the cases run.

    Attributes:
        workers: Local worker processes (1 = in this process); ignored with ``scheduler``.
        scheduler: A Dask scheduler address (``tcp://HOST:8786``) or ``local:N`` (a ``LocalCluster`` of N worker
            processes started for this run); None: local.
        retries: Dask: how often a failing task is retried (a task whose worker died is rescheduled anyway).
        in_flight: Cases submitted at once (None: 2 batches per worker); bounds the memory of the client.
        batch: Dask: cases per task. Several cases per task spare a scheduler round trip per case, which matters
            when a case takes milliseconds; a case that fails still fails alone, but a worker that dies takes
            its whole task to the retry.
        connect_timeout_s: Dask: how long to wait for the scheduler to answer.
        check_paths: Dask: folders every worker must see (data, predictions); checked on each worker at start.

    """

    workers: int = 1
    scheduler: str | None = None
    retries: int = 2
    in_flight: int | None = None
    batch: int = 8
    connect_timeout_s: float = 10.0
    check_paths: tuple[str, ...] = ()


def parse_scheduler(text: str | None) -> str | None:
    """Check ``--scheduler``: ``local:N`` (N >= 1) or a Dask address such as ``tcp://HOST:8786``."""
    if text is None or not text.strip():
        return None
    text = text.strip()
    if text.startswith(LOCAL_PREFIX):
        n = text[len(LOCAL_PREFIX) :]
        if not n.isdigit() or int(n) < 1:
            raise UsageError(f"--scheduler {text!r}: local:N needs a number of workers N >= 1 (e.g. local:4)")
        return text
    if not text.startswith(_SCHEMES):
        raise UsageError(f"--scheduler {text!r}: give a Dask scheduler address (tcp://HOST:8786) or local:N")
    return text


def error_text(exc: BaseException) -> str:
    """The one-line reason of a failed case: a labelwise error's message, else ``Type: message``."""
    return str(exc) if isinstance(exc, LabelwiseError) else f"{type(exc).__name__}: {exc}"


def _guarded(fn: Callable[[S, str], R], shared: S, case_id: str) -> tuple[R | None, str | None]:
    """Run one case; its exception comes back as text so one bad case never stops the run."""
    try:
        return fn(shared, case_id), None
    except Exception as exc:  # reported per case; the run goes on
        logger.info("case %s failed: %s", case_id, error_text(exc))
        return None, error_text(exc)


def run_cases(
    fn: Callable[[S, str], R],
    shared: S,
    ids: Iterable[str],
    engine: Engine,
    on_result: Callable[[str, R | None, str | None], None],
) -> None:
    """Run ``fn(shared, case_id)`` for every id on ``engine``; ``on_result(case_id, value, error)`` as each finishes.

    ``fn`` must be a module-level function (it is pickled by reference to the workers) and ``shared`` picklable;
    ``shared`` goes to each worker once (Dask: a task whose result each worker fetches once; local processes: when
    each starts), never with each case. Results arrive in completion order, in this process. A case whose ``fn``
    raises comes back with ``error`` set (and ``value`` None); an error raised by ``on_result`` (or Ctrl-C) stops
    the run and its workers. Nothing starts (no process, no cluster) when ``ids`` is empty.
    """
    it = iter(ids)
    first = next(it, None)
    if first is None:
        return
    ids = itertools.chain([first], it)
    if engine.scheduler is not None:
        _run_dask(fn, shared, ids, engine, on_result)
    elif engine.workers <= 1:
        for cid in ids:
            value, err = _guarded(fn, shared, cid)
            on_result(cid, value, err)
    else:
        _run_processes(fn, shared, ids, engine, on_result)


_WORKER_SHARED: dict[str, Any] = {}
"""A local worker process's ``shared`` object of :func:`run_cases`, sent once when the worker starts."""


def _worker_init(parent_pid: int, token: str, shared: Any) -> None:
    """Set up a local worker process: tied to its parent, holding the run's ``shared`` object.

    ``shared`` is pickled once per worker, not once per case. The worker exits when the parent is gone and leaves
    Ctrl-C to the parent. Linux: ``PR_SET_PDEATHSIG`` kills the worker with the parent. Everywhere (and as a
    fallback): a daemon thread polls the parent pid twice a second.
    """
    _WORKER_SHARED.clear()
    _WORKER_SHARED[token] = shared
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent handles Ctrl-C and terminates the pool
    if sys.platform.startswith("linux"):
        with contextlib.suppress(Exception):
            import ctypes

            ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1 = PR_SET_PDEATHSIG
    if os.getppid() != parent_pid:  # the parent died before the line above took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(1)

    threading.Thread(target=watch, name="labelwise-parent-watch", daemon=True).start()


def _guarded_in_worker(fn: Callable[[Any, str], R], token: str, case_id: str) -> tuple[R | None, str | None]:
    """:func:`_guarded` in a local worker, with the ``shared`` object :func:`_worker_init` kept."""
    return _guarded(fn, _WORKER_SHARED[token], case_id)


def _stop_pool(pool: ProcessPoolExecutor) -> None:
    """Cancel pending cases and terminate the worker processes now (not after their current case)."""
    procs = list((getattr(pool, "_processes", None) or {}).values())  # stdlib has no public handle on them
    pool.shutdown(wait=False, cancel_futures=True)
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.terminate()
    for proc in procs:
        with contextlib.suppress(Exception):
            proc.join(timeout=5)


def _run_processes(
    fn: Callable[[S, str], R],
    shared: S,
    ids: Iterable[str],
    engine: Engine,
    on_result: Callable[[str, R | None, str | None], None],
) -> None:
    """Local worker processes; at most ``in_flight`` cases submitted; the workers die with this process."""
    limit = engine.in_flight or 2 * engine.workers
    token = uuid.uuid4().hex
    pool = ProcessPoolExecutor(
        max_workers=engine.workers, initializer=_worker_init, initargs=(os.getpid(), token, shared)
    )
    todo: Iterator[str] = iter(ids)
    running: dict[Future[tuple[R | None, str | None]], str] = {}
    try:
        for cid in todo:
            running[pool.submit(_guarded_in_worker, fn, token, cid)] = cid
            if len(running) >= limit:
                break
        while running:
            finished, _ = wait(running, return_when=FIRST_COMPLETED)
            for fut in finished:
                cid = running.pop(fut)
                try:
                    value, err = fut.result()
                except Exception as exc:  # a crashed worker process
                    value, err = None, f"worker failed: {type(exc).__name__}: {exc}"
                on_result(cid, value, err)
                nxt = next(todo, None)
                if nxt is not None:
                    running[pool.submit(_guarded_in_worker, fn, token, nxt)] = nxt
    except BaseException:  # Ctrl-C, or an error in on_result: no worker may outlive this call
        _stop_pool(pool)
        raise
    pool.shutdown(wait=True)


TRIM_KEY = "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_"
"""The Dask setting of the worker environment variable that ``local:N`` clusters leave unset."""


NO_HTTP: dict[str, list[str]] = {"distributed.scheduler.http.routes": [], "distributed.worker.http.routes": []}
"""Dask settings for ``local:N`` clusters: their HTTP servers (which Dask starts even without a dashboard, on
127.0.0.1) serve no page, so no web page in the user's browser can read the cluster's state (paths, case ids)."""


@contextlib.contextmanager
def dask_client(engine: Engine) -> Iterator[Any]:
    """A Dask client for ``engine.scheduler`` (a new ``LocalCluster`` for ``local:N``), workers checked.

    Raises:
        MissingExtraError: dask.distributed is not installed.
        DataError: The scheduler does not answer within the timeout, has no workers, or a worker cannot import
            labelwise or does not see one of ``engine.check_paths``.

    """
    assert engine.scheduler is not None
    distributed = require_extra("distributed", "dask", feature="--scheduler")
    import dask

    with contextlib.ExitStack() as stack:
        if engine.scheduler.startswith(LOCAL_PREFIX):
            n = int(engine.scheduler[len(LOCAL_PREFIX) :])
            # Dask's nanny starts workers with MALLOC_TRIM_THRESHOLD_=65536, which makes glibc hand memory back to
            # the OS after nearly every case: measured 50-60 % more CPU per case here (docs/benchmarks.md, "Scale").
            # A variable the user exported still wins (Dask reads the environment first).
            stack.enter_context(dask.config.set({TRIM_KEY: None, **NO_HTTP}))
            # That server moves to a free port when 8787 is taken (another cluster): nothing for the user to do.
            stack.enter_context(warnings.catch_warnings())
            warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
            cluster = stack.enter_context(
                distributed.LocalCluster(
                    n_workers=n,
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,
                )
            )
            client = stack.enter_context(distributed.Client(cluster))
        else:
            try:
                client = stack.enter_context(
                    distributed.Client(engine.scheduler, timeout=f"{engine.connect_timeout_s}s")
                )
            except (OSError, TimeoutError) as exc:
                raise DataError(
                    f"the Dask scheduler {engine.scheduler} did not answer within {engine.connect_timeout_s:g} s "
                    f"({type(exc).__name__}); is it running and reachable?"
                ) from None
        check_workers(client, engine.check_paths, engine.connect_timeout_s)
        yield client


def check_workers(client: Any, paths: Sequence[str], timeout_s: float = 10.0) -> None:
    """Check that the cluster has workers, each of which imports labelwise and sees every folder of ``paths``.

    The probes are standard-library functions (``exec``, ``os.path.isdir``), so a worker without labelwise
    answers them too and is named in the error.
    """
    try:
        client.wait_for_workers(1, timeout=timeout_s)
    except (OSError, TimeoutError) as exc:
        raise DataError(f"the Dask cluster has no workers ({type(exc).__name__} after {timeout_s:g} s)") from None
    imports = client.run(exec, "import labelwise", on_error="return")
    bad = sorted(w for w, r in imports.items() if isinstance(r, BaseException))
    if bad:
        reason = error_text(imports[bad[0]])
        raise DataError(f"Dask worker(s) {', '.join(bad)} cannot import labelwise ({reason}); install it there")
    for path in paths:
        seen = client.run(os.path.isdir, str(path), on_error="return")
        blind = sorted(w for w, r in seen.items() if r is not True)
        if blind:
            raise DataError(
                f"Dask worker(s) {', '.join(blind)} do not see this folder (use a shared file system)", path
            )


def _identity(value: S) -> S:
    """The run's ``shared`` object as a Dask task result (recomputable when the workers holding it die)."""
    return value


def _guarded_batch(fn: Callable[[S, str], R], shared: S, case_ids: Sequence[str]) -> list[tuple[R | None, str | None]]:
    """A batch of cases in one task (one scheduler round trip for several cases); each case still fails alone."""
    return [_guarded(fn, shared, cid) for cid in case_ids]


def _run_dask(
    fn: Callable[[S, str], R],
    shared: S,
    ids: Iterable[str],
    engine: Engine,
    on_result: Callable[[str, R | None, str | None], None],
) -> None:
    """Stream the cases through a Dask cluster in tasks of ``batch`` cases, at most ``in_flight`` cases submitted."""
    distributed = require_extra("distributed", "dask", feature="--scheduler")
    token = uuid.uuid4().hex[:12]
    with dask_client(engine) as client:
        n_workers = max(1, len(client.scheduler_info(n_workers=-1).get("workers", {})))
        size = max(1, engine.batch)
        limit = max(1, (engine.in_flight or 2 * n_workers * size) // size)  # tasks in flight
        # A task, not ``scatter``: scattered data has no recipe, so if every worker holding it dies, the cases that
        # need it are cancelled; a task's result is recomputed on a live worker. Workers fetch it once each.
        shared_f = client.submit(_identity, shared, key=f"labelwise-{token}-shared", pure=False)
        todo = iter(ids)
        keys: dict[str, list[str]] = {}
        pending: dict[str, Any] = {}
        done = distributed.as_completed()

        def submit() -> bool:
            batch = list(itertools.islice(todo, size))
            if not batch:
                return False
            fut = client.submit(
                _guarded_batch,
                fn,
                shared_f,
                batch,
                key=f"labelwise-{token}-{batch[0]}",
                retries=engine.retries,
                pure=False,
            )
            keys[fut.key] = batch
            pending[fut.key] = fut
            done.add(fut)
            return True

        while len(keys) < limit and submit():
            pass
        try:
            for fut in done:
                batch = keys.pop(fut.key)
                pending.pop(fut.key, None)
                try:
                    answers = fut.result()
                except Exception as exc:  # the task failed on every try (e.g. KilledWorker)
                    answers = [(None, f"worker failed: {error_text(exc)}")] * len(batch)
                fut.release()
                for cid, (value, err) in zip(batch, answers, strict=True):
                    on_result(cid, value, err)
                submit()
        except BaseException:
            client.cancel(list(pending.values()))
            raise
