"""One round of the label loop (score -> review -> retrain -> score again) and the table of rounds.

``labelwise loop`` (:mod:`labelwise.cli.loop`) runs the non-interactive parts of a round into a loop folder::

    LOOP/round-000/round.json      # the round record (written last: a round without it did not finish)
    LOOP/round-000/pred-<split>/   # the round's model on the scored split (labelwise predict layout)
    LOOP/round-000/eval/           # its evaluation against the reviewed labels (labelwise evaluate layout)
    LOOP/round-000/pred-pool/      # the model on the candidate cases (the uncertainty signal of `next`)
    LOOP/round-000/next.json       # the proposal of `labelwise next`: what to review before the next round
    LOOP/round-001/run/            # round 1's model: warm-started from round 0's on the reviewed labels
    LOOP/rounds.md                 # the table of rounds (metrics by round)

Round 0 scores a model trained before (``--run``); every later round first trains a new run from the last
round's (``labelwise train METHOD --labels reviewed --init LAST_RUN``). This module holds what does not need the
evaluation floor: the round record, the runs' lineage (``meta.json`` ``init_from``), the rounds table, and
:func:`apply_corrections`, which writes full-map corrections through the review store as the viewer would (the
simulation benchmark and the tests review this way).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from labelwise.data import Dataset
from labelwise.data.review import CorrectionVersion, ReviewStore, review_coverage
from labelwise.errors import DataError
from labelwise.io import write_json_atomic, write_text_atomic

__all__ = [
    "ROUND_FILE",
    "ROUND_FORMAT",
    "LineageStep",
    "RoundRecord",
    "RoundRow",
    "apply_corrections",
    "corrected_cases",
    "coverage_json",
    "eval_metric",
    "find_rounds",
    "format_rounds",
    "read_round",
    "round_dir",
    "rounds_table",
    "run_lineage",
    "write_round",
    "write_rounds_markdown",
]

logger = logging.getLogger(__name__)

ROUND_FILE = "round.json"
ROUND_FORMAT = "labelwise-round"
_ROUND_PREFIX = "round-"


# --------------------------------------------------------------------------------------------------- lineage


@dataclass(frozen=True)
class LineageStep:
    """One run of a warm-start chain.

    Attributes:
        path: The run folder (absolute).
        method: Its method name (``meta.json``), or None when unreadable.
        init_from: The run it was warm-started from (``meta.json`` ``init_from.path``), or None.
        status: ``meta.json`` status (``finished``, ...), or None.

    """

    path: Path
    method: str | None
    init_from: Path | None
    status: str | None


def _meta(run: Path) -> dict[str, Any] | None:
    try:
        meta = json.loads((run / "meta.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return None
    return meta if isinstance(meta, dict) else None


def run_lineage(run: str | Path, max_depth: int = 1000) -> list[LineageStep]:
    """The warm-start chain that ends in ``run``, oldest first, from each run's ``meta.json`` ``init_from``.

    The chain stops at a run trained from scratch, at a run whose folder is gone or unreadable (it is still listed,
    with ``method`` None), and at a cycle.

    Args:
        run: The latest run folder.
        max_depth: Longest chain followed.

    Returns:
        The runs, oldest first; ``run`` is the last.

    """
    chain: list[LineageStep] = []
    seen: set[Path] = set()
    path: Path | None = Path(run).resolve()
    while path is not None and path not in seen and len(chain) < max_depth:
        seen.add(path)
        meta = _meta(path)
        init = (meta or {}).get("init_from")
        parent = Path(init["path"]).resolve() if isinstance(init, dict) and isinstance(init.get("path"), str) else None
        chain.append(
            LineageStep(
                path,
                None if meta is None else meta.get("method"),
                parent,
                None if meta is None else meta.get("status"),
            )
        )
        path = parent
    return chain[::-1]


# ---------------------------------------------------------------------------------------------- round record


@dataclass(frozen=True)
class RoundRecord:
    """What one round did (``LOOP/round-NNN/round.json``).

    Attributes:
        round: The round number (0: the starting model scored, nothing trained).
        run: The round's model (absolute path): a new warm-started run, or for round 0 the given run.
        trained: Whether the round trained ``run`` (False for round 0).
        init_from: The run ``run`` was warm-started from (None for round 0).
        method: The method of ``run``.
        dataset: The dataset folder (absolute).
        labels: Which labels trained and scored the round (``reviewed``).
        split: The scored split.
        eval: The evaluation folder, relative to the round folder (``eval``).
        metrics: metric -> mean over the scored cases (majority reference, first foreground class).
        n_scored: Cases scored.
        review: The dataset's review coverage when the round started (``ReviewCoverage.to_json``).
        corrected: Cases with a saved correction when the round started (what the round's model learned from).
        next: The proposal file relative to the round folder (``next.json``), or None.
        proposed: The case ids proposed for review before the next round.
        strategy: The strategy of the proposal.

    """

    round: int
    run: str
    trained: bool
    init_from: str | None
    method: str | None
    dataset: str
    labels: str
    split: str
    eval: str
    metrics: dict[str, float]
    n_scored: int
    review: dict[str, Any] = field(default_factory=dict)
    corrected: list[str] = field(default_factory=list)
    next: str | None = None
    proposed: list[str] = field(default_factory=list)
    strategy: str | None = None

    def to_json(self) -> dict[str, Any]:
        """The JSON object of ``round.json``."""
        return {"format": ROUND_FORMAT, "version": 1, **asdict(self)}


def round_dir(loop: str | Path, number: int) -> Path:
    """The folder of round ``number`` of a loop folder (``LOOP/round-003``)."""
    return Path(loop) / f"{_ROUND_PREFIX}{number:03d}"


def write_round(folder: str | Path, record: RoundRecord) -> Path:
    """Write ``round.json`` into ``folder`` atomically (the round's last write); returns its path."""
    return write_json_atomic(Path(folder) / ROUND_FILE, record.to_json())


def read_round(folder: str | Path) -> RoundRecord:
    """Read ``folder/round.json``.

    Raises:
        DataError: missing, unreadable or not a round record (the message names the file).

    """
    path = Path(folder) / ROUND_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("no round record here (written by `labelwise loop` when a round finishes)", path) from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DataError(f"cannot read the round record ({exc})", path) from None
    if not isinstance(data, dict) or data.get("format") != ROUND_FORMAT:
        raise DataError(f"not a labelwise round record (format is not {ROUND_FORMAT!r})", path)
    fields = {k: data[k] for k in RoundRecord.__dataclass_fields__ if k in data}
    try:
        return RoundRecord(**fields)
    except TypeError as exc:
        raise DataError(f"malformed round record ({exc})", path) from None


def find_rounds(loop: str | Path) -> list[Path]:
    """The finished round folders of a loop folder (with ``round.json``), in round order."""
    root = Path(loop)
    if not root.is_dir():
        return []
    found = sorted(p for p in root.iterdir() if p.is_dir() and p.name.startswith(_ROUND_PREFIX))
    return [p for p in found if (p / ROUND_FILE).is_file()]


def eval_metric(summary: Mapping[str, Any], metric: str = "dice", reference: str = "majority") -> float | None:
    """The mean of ``metric`` against ``reference`` for the first foreground class of a ``summary.json``.

    ``summary.json`` keys a metric's values by class name, in the dataset's class order; the first is taken.

    Args:
        summary: The parsed ``summary.json`` of ``labelwise evaluate``.
        metric: Metric name.
        reference: Reference name (``majority``: the consensus; with one rater it is that rater).

    Returns:
        The mean over scored cases, or None when the summary has no such value.

    """
    by_class = summary.get("metrics", {}).get(metric)
    if not isinstance(by_class, Mapping) or not by_class:
        return None
    first = next(iter(by_class.values()))  # summary.json lists the classes in the dataset's order
    stats = first.get(reference) if isinstance(first, Mapping) else None
    mean = stats.get("mean") if isinstance(stats, Mapping) else None
    return float(mean) if isinstance(mean, (int, float)) and math.isfinite(mean) else None


# ---------------------------------------------------------------------------------------------- rounds table


@dataclass(frozen=True)
class RoundRow:
    """One row of the rounds table.

    Attributes:
        round: Round number.
        run: The round's model.
        init_from: The run it was warm-started from, by its ``meta.json`` (None for round 0).
        lineage_ok: Whether ``init_from`` is the previous round's run (the runs' lineage agrees with the rounds).
        corrected: Cases corrected when the round trained.
        metrics: metric -> mean over the scored cases.
        delta: metric -> change since the previous round (None for round 0).
        proposed: Cases proposed for review after the round.

    """

    round: int
    run: str
    init_from: str | None
    lineage_ok: bool
    corrected: int
    metrics: dict[str, float]
    delta: dict[str, float] | None
    proposed: int


def rounds_table(records: Sequence[RoundRecord]) -> list[RoundRow]:
    """The rounds table: metrics by round, with the change since the previous round and a lineage check.

    The lineage check reads each round's run ``meta.json`` (not the round record): round k's run must have been
    warm-started from round k-1's run.

    Args:
        records: Round records (any order).

    """
    rows: list[RoundRow] = []
    previous: RoundRecord | None = None
    for rec in sorted(records, key=lambda r: r.round):
        lineage = run_lineage(rec.run, max_depth=2)
        parent = lineage[0].path if len(lineage) == 2 else None
        if previous is None:
            ok = True
        else:
            ok = parent is not None and parent == Path(previous.run).resolve()
        delta = None
        if previous is not None:
            delta = {m: v - previous.metrics[m] for m, v in rec.metrics.items() if m in previous.metrics}
        rows.append(
            RoundRow(
                rec.round,
                rec.run,
                None if parent is None else str(parent),
                ok,
                len(rec.corrected),
                dict(rec.metrics),
                delta,
                len(rec.proposed),
            )
        )
        previous = rec
    return rows


def format_rounds(rows: Sequence[RoundRow], metrics: Sequence[str] = ("dice",)) -> str:
    """The rounds table as Markdown (one row per round: corrections, metrics, change, lineage)."""
    head = ["round", "corrected cases", *metrics, *(f"change in {m}" for m in metrics), "warm-started from", "next"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vals = [f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics]
        deltas = [f"{r.delta[m]:+.4f}" if r.delta is not None and m in r.delta else "-" for m in metrics]
        origin = "-" if r.round == 0 and r.init_from is None else Path(r.init_from or "?").name
        if r.round > 0 and not r.lineage_ok:
            origin += " (**not the previous round's run**)"
        cells = [str(r.round), str(r.corrected), *vals, *deltas, origin, f"{r.proposed} case(s)"]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_rounds_markdown(loop: str | Path, metrics: Sequence[str] = ("dice",)) -> Path:
    """Write ``LOOP/rounds.md`` (the rounds table of every finished round) atomically; returns its path."""
    records = [read_round(p) for p in find_rounds(loop)]
    text = "# Rounds\n\n" + format_rounds(rounds_table(records), metrics) + "\n"
    return write_text_atomic(Path(loop) / "rounds.md", text)


# ---------------------------------------------------------------------------------------------- corrections


def apply_corrections(
    dataset: Dataset | str | Path,
    labels: Mapping[str, np.ndarray],
    user: str = "simulated-reviewer",
    base: str = "simulation",
) -> list[CorrectionVersion]:
    """Save whole label maps as corrections, through the review store exactly as the viewer saves them.

    Every map is validated by :meth:`ReviewStore.save_slices` (shape, dtype, classes); the originals are not
    touched. ``Dataset(root, labels="reviewed")`` reads them back as the rater ``reviewed``.

    Args:
        dataset: The dataset (or its folder).
        labels: case id -> ``(*spatial)`` integer label map.
        user: Recorded as who corrected.
        base: Recorded as the label the correction started from.

    Returns:
        The versions written, in the order of ``labels``.

    """
    ds = dataset if isinstance(dataset, Dataset) else Dataset(dataset)
    store = ReviewStore(ds.root)
    out = []
    for case_id, label in labels.items():
        arr = np.asarray(label)
        case = ds.load(case_id)
        slices = {0: arr} if arr.ndim == 2 else {z: arr[..., z] for z in range(arr.shape[-1])}
        out.append(
            store.save_slices(case_id, arr, base, slices, tuple(case.spacing_mm), np.asarray(case.affine), user=user)
        )
    logger.info("saved %d correction(s) in %s", len(out), store.dir)
    return out


def corrected_cases(root: str | Path) -> list[str]:
    """Cases of the dataset at ``root`` that have at least one saved correction (sorted)."""
    return sorted({v.case for v in ReviewStore(root).versions()})


def coverage_json(root: str | Path) -> dict[str, Any]:
    """The review coverage of the dataset at ``root`` as JSON (empty when it has no ``review/`` folder)."""
    return review_coverage(root).to_json() if (Path(root) / "review").is_dir() else {}
