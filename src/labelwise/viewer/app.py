"""The local web viewer: a Starlette app over one dataset (+ predictions, + a QA table).

Only ids from the manifest and layer names from a fixed vocabulary reach the file system, so no request can read
outside the dataset and prediction folders. Writes go through :class:`~labelwise.data.review.ReviewStore`
(atomic, locked, validated); everything that touches the disk or computes runs in a worker thread, so a long propagation
never stalls the other requests.

Every request passes one guard (see ``SECURITY.md`` and ``docs/viewer.md``):

- ``Host`` must name the address the server was started on (``allowed_hosts``), which defeats DNS rebinding;
- every request but the page (``/``) and ``/static/`` must carry the per-session token (``X-Labelwise-Token``)
  that the served page embeds in a ``<meta name="labelwise-token">`` tag; another web page cannot read it;
- writes (any method but GET/HEAD/OPTIONS) must come from the page's own ``Origin`` (a missing Origin is allowed:
  browsers always send one on cross-origin writes, and the token already proves the caller read the page), be
  ``Content-Type: application/json``, at most ``MAX_BODY_BYTES`` and nested at most ``MAX_JSON_DEPTH`` levels;
- every response carries a Content-Security-Policy without inline script, ``nosniff``, ``no-referrer``.

API (JSON unless noted; every route under ``/api/`` needs the token header)::

    GET  /api/info                             dataset name, classes, raters, what is loaded
    GET  /api/cases                            case list with split, raters, image labels, QA score, last review
    GET  /api/queue                            QA review queue, worst predicted quality first
    GET  /api/cases/{id}                       shape, spacing, slice count, available layers, versions, reviews
    GET  /api/cases/{id}/slice/{z}.png?layer=  one slice as PNG (image: grey/RGB; label layers: class index)
    POST /api/cases/{id}/review                {"decision": "accept"|"reject"|"flag", "comment", "user"}
    POST /api/cases/{id}/correction            {"slice", "width", "height", "data": base64 uint8, "base", "user"}
    POST /api/cases/{id}/propagate             {"slice", "extent", "user", "preview"}: propagate the painted slices
                                               to the unpainted slices within ``extent`` (default 10) of ``slice``;
                                               saved at once, or with ``"preview": true`` kept as a proposal with
                                               a confidence per slice (:func:`slice_confidence`)
    POST /api/cases/{id}/propagate/accept      {"proposal", "slices", "user"}: save those slices of a proposal as
                                               one version (action ``propagate``)
    POST /api/cases/{id}/propagate/discard     {"proposal", "slices"}: drop slices from a proposal (nothing written)
    POST /api/cases/{id}/revert                {"version", "user"}: undo the latest version by saving a new one that
                                               restores the slices it changed (``version`` must be the latest: 409)
    GET  /api/next?strategy=&n=&include_reviewed=   ``labelwise next`` over the viewer's dataset, qa and pred
    GET  /api/changed?since=                   cases whose latest correction or decision is newer than ``since``
                                               (ISO date/time) or, without it, than the viewer's ``run``

Errors are ``{"error": message}`` with 400 (malformed JSON), 403 (Host, token or Origin refused), 404 (unknown
case, slice, layer or proposal), 409 (the case changed since: reload), 413 (body too large), 415 (not JSON) or 422
(a valid request the data refuses).

Layers: ``image``, ``rater/<id>``, ``consensus`` (majority vote), ``pred``, ``prob`` (foreground probability x255),
``sample/<k>``, ``predrater/<k>``, ``uncertainty`` (x255 of its max), ``correction`` (latest saved version),
``proposal/<id>`` (the slices a propagation proposal still holds; ids live in memory only).
"""

from __future__ import annotations

import base64
import binascii
import csv
import functools
import hmac
import io
import ipaddress
import json
import logging
import math
import re
import secrets
import socket
import threading
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.data.review import CorrectionVersion, ReviewStore, case_reviews
from labelwise.errors import LabelwiseError, require_extra

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "MAX_NEXT",
    "MAX_PROPOSALS",
    "TOKEN_HEADER",
    "PropagationProposal",
    "ViewerState",
    "allowed_hosts",
    "available_strategies",
    "changed_since",
    "create_app",
    "is_loopback",
    "json_depth",
    "painted_slices",
    "parse_since",
    "run_trained_at",
    "slice_confidence",
]

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
MAX_NEXT = 200
"""The most cases ``/api/next`` proposes at once."""
MAX_PROPOSALS = 4
"""Propagation proposals kept in memory (the oldest is dropped first)."""
REVERT_ACTION = "revert"
"""The action a revert version is saved with (the store's actions: ``paint``, ``propagate``, ``revert``)."""
REVERT_BASE = "revert of v"
"""A revert version's ``base`` is ``revert of v0003``: how :func:`painted_slices` recognises it."""
CONFIDENT_FOREGROUND = 0.05
"""Voxels whose foreground probability reaches this count in :func:`slice_confidence`."""
TOKEN_HEADER = "X-Labelwise-Token"
STATIC = Path(__file__).with_name("static")
TOKEN_PLACEHOLDER = "__LABELWISE_TOKEN__"
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; "
    "object-src 'none'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"
)
SECURITY_HEADERS: tuple[tuple[bytes, bytes], ...] = (
    (b"content-security-policy", CONTENT_SECURITY_POLICY.encode()),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-frame-options", b"DENY"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"cross-origin-opener-policy", b"same-origin"),
)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PUBLIC_PATHS = frozenset({"/", "/favicon.ico"})  # the page (it holds the token) and the icon browsers ask for
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_HOST_WITH_PORT = re.compile(r"^(\[[^\]]*\]|[^:\[\]]+):\d+$")


@dataclass
class PropagationProposal:
    """A propagation the user has not accepted yet (kept in memory, never on disk).

    Attributes:
        case: Case id.
        base_version: The case's latest version number when the proposal was made.
        anchors: The painted slices it propagated from.
        labels: slice index -> ``(X, Y)`` int16 proposed labels, for the slices not yet accepted or discarded.
        confidence: slice index -> ``(confidence, foreground voxels)`` (:func:`slice_confidence`).

    """

    case: str
    base_version: int
    anchors: tuple[int, ...]
    labels: dict[int, np.ndarray]
    confidence: dict[int, tuple[float, int]]

    def to_json(self, proposal_id: str) -> dict[str, Any]:
        """What ``/propagate`` with ``preview`` answers: the id and each remaining slice with its confidence."""
        return {
            "proposal": proposal_id,
            "case": self.case,
            "base_version": self.base_version,
            "anchors": list(self.anchors),
            "slices": [
                {"slice": k, "confidence": round(self.confidence[k][0], 4), "foreground": self.confidence[k][1]}
                for k in sorted(self.labels)
            ],
        }


class ViewerState:
    """Everything the viewer serves, loaded lazily and cached per case.

    Args:
        dataset: Dataset folder.
        pred_dir: Optional prediction folder (``labelwise predict`` layout).
        qa_csv: Optional ``quality.csv`` from ``labelwise qa``.
        run_dir: Optional run folder of the last model trained on the dataset: the reference time of the
            "changed since last model" filter (:func:`run_trained_at`).

    Raises:
        LabelwiseError: an unreadable QA table, or a ``run_dir`` without a readable ``meta.json``.

    """

    def __init__(
        self,
        dataset: str | Path,
        pred_dir: str | Path | None = None,
        qa_csv: str | Path | None = None,
        run_dir: str | Path | None = None,
    ):
        self.dataset = Dataset(dataset)
        self.pred_dir = Path(pred_dir) if pred_dir else None
        self.store = ReviewStore(self.dataset.root)
        self.qa_path = Path(qa_csv) if qa_csv else None
        self.qa = self._read_qa(self.qa_path) if self.qa_path else []
        self.run_dir = Path(run_dir) if run_dir else None
        if self.run_dir is not None:
            run_trained_at(self.run_dir)  # fail at start, not at the first filter
        self.case = functools.lru_cache(maxsize=8)(self._load_case)
        self.prediction = functools.lru_cache(maxsize=8)(self._load_prediction)
        self._windows: dict[str, tuple[float, float]] = {}
        self.write_lock = threading.Lock()  # every viewer write: checks and save happen as one step
        self.proposals: OrderedDict[str, PropagationProposal] = OrderedDict()
        self._next_cache: dict[tuple[Any, ...], dict[str, Any]] = {}

    def add_proposal(self, proposal: PropagationProposal) -> str:
        """Keep ``proposal`` (dropping the oldest beyond ``MAX_PROPOSALS``) and return its id."""
        proposal_id = secrets.token_hex(8)
        with self.write_lock:
            self.proposals[proposal_id] = proposal
            while len(self.proposals) > MAX_PROPOSALS:
                self.proposals.popitem(last=False)
        return proposal_id

    def next_cases(self, strategy: str, n: int, include_reviewed: bool) -> dict[str, Any]:
        """``labelwise next`` over this dataset (:func:`~labelwise.quality.select.select_cases`) as JSON.

        The answer is cached until a review file changes (a decision or a saved version), so switching
        strategies back and forth does not recompute the signals.
        """
        from labelwise.quality.select import select_cases

        stamps = tuple(_mtime_ns(p) for p in (self.store.reviews_path, self.store.corrections_path))
        key = (strategy, n, include_reviewed, stamps)
        if key not in self._next_cache:
            selection = select_cases(
                self.dataset,
                strategy,  # type: ignore[arg-type]  # checked against STRATEGIES by the endpoint
                n,
                qa=self.qa_path,
                pred=self.pred_dir,
                include_reviewed=include_reviewed,
            )
            if len(self._next_cache) > 16:
                self._next_cache.clear()
            self._next_cache[key] = selection.to_json()
        return self._next_cache[key]

    @staticmethod
    def _read_qa(path: Path) -> list[dict[str, Any]]:
        if not path.is_file():
            raise LabelwiseError(f"{path}: QA table not found")
        with path.open(newline="", encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh))
        if rows and not {"case", "predicted_dice"} <= set(rows[0]):
            raise LabelwiseError(f"{path}: QA table needs columns 'case' and 'predicted_dice'")
        for number, row in enumerate(rows, start=2):
            try:
                score = float(row["predicted_dice"])
            except (TypeError, ValueError):
                score = math.nan
            if not math.isfinite(score):
                raise LabelwiseError(f"{path}: line {number}: predicted_dice {row['predicted_dice']!r} is not a number")
            row["predicted_dice"] = score
        return sorted(rows, key=lambda r: r["predicted_dice"])

    def _load_case(self, case_id: str) -> Case:
        return self.dataset.load(case_id)

    def _load_prediction(self, case_id: str) -> Any:
        from labelwise.io import read_prediction

        if self.pred_dir is None or not (self.pred_dir / f"{case_id}.nii.gz").exists():
            return None
        return read_prediction(self.pred_dir, case_id, self.dataset.spatial_dims)

    def layers(self, case_id: str) -> list[str]:
        """Layer names available for ``case_id``."""
        case = self.case(case_id)
        names = ["image"] + [f"rater/{r}" for r in case.rater_ids]
        if case.num_raters > 1:
            names.append("consensus")
        pred = self.prediction(case_id)
        if pred is not None:
            names += ["pred", "prob"]
            names += [f"sample/{k}" for k in range(0 if pred.samples is None else len(pred.samples))]
            names += [f"predrater/{k}" for k in range(0 if pred.raters is None else len(pred.raters))]
            if pred.uncertainty is not None:
                names.append("uncertainty")
        if self.store.versions(case_id):
            names.append("correction")
        return names

    def volume(self, case_id: str, layer: str) -> np.ndarray:
        """The ``(*spatial)`` array behind a label/map layer (not ``image``)."""
        case = self.case(case_id)
        kind, _, key = layer.partition("/")
        pred = self.prediction(case_id)
        if kind == "rater" and key in case.rater_ids:
            rater: np.ndarray = case.raters[case.rater_ids.index(key)]
            return rater
        if kind == "consensus" and case.num_raters:
            from labelwise.labels import majority_vote

            return np.asarray(majority_vote(case.raters))
        if kind == "correction":
            latest = self.store.latest(case_id, case.spatial_dims)
            if latest is not None:
                return latest
        if pred is not None:
            if kind == "pred":
                label: np.ndarray = np.asarray(pred.label)
                return label
            if kind == "prob":
                fg = pred.probs[1:].sum(axis=0) if pred.probs.shape[0] > 1 else pred.probs[0]
                prob: np.ndarray = np.clip(np.rint(fg * 255), 0, 255).astype(np.uint8)
                return prob
            if kind == "uncertainty" and pred.uncertainty is not None:
                u = pred.uncertainty
                unc: np.ndarray = np.clip(np.rint(255 * u / max(float(u.max()), 1e-6)), 0, 255).astype(np.uint8)
                return unc
            stack = pred.samples if kind == "sample" else pred.raters if kind == "predrater" else None
            if stack is not None and key.isdigit() and int(key) < len(stack):
                member: np.ndarray = np.asarray(stack[int(key)])
                return member
        raise KeyError(layer)

    def slice_png(self, case_id: str, z: int, layer: str) -> bytes:
        """PNG bytes of slice ``z`` of ``layer`` (``z`` must be 0 for 2D)."""
        from PIL import Image

        case = self.case(case_id)
        depth = 1 if case.spatial_dims == 2 else case.spatial_shape[-1]
        if not 0 <= z < depth:
            raise KeyError(f"slice {z}")
        if layer.startswith("proposal/"):
            proposal = self.proposals.get(layer.partition("/")[2])
            if proposal is None or proposal.case != case_id or z not in proposal.labels:
                raise KeyError(layer)
            pil = Image.fromarray(np.clip(proposal.labels[z], 0, 255).astype(np.uint8))
        elif layer == "image":
            img = case.image if case.spatial_dims == 2 else case.image[..., z]
            if case_id not in self._windows:
                self._windows[case_id] = _window(case)
            lo, hi = self._windows[case_id]
            arr = np.clip((img - lo) / max(hi - lo, 1e-6) * 255, 0, 255).astype(np.uint8)
            pil = Image.fromarray(np.moveaxis(arr[:3], 0, -1) if arr.shape[0] >= 3 else arr[0])
        else:
            vol = self.volume(case_id, layer)
            sl = vol if case.spatial_dims == 2 else vol[..., z]
            pil = Image.fromarray(np.clip(sl, 0, 255).astype(np.uint8))
        buf = io.BytesIO()
        pil.save(buf, format="PNG")
        return buf.getvalue()


def _mtime_ns(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def available_strategies(dataset: Dataset, has_qa: bool, has_pred: bool) -> list[str]:
    """The ``labelwise next`` strategies the viewer can offer: those whose input it has.

    ``quality`` needs a QA table, ``uncertainty`` a prediction folder, ``disagreement`` two raters, ``mix`` one of
    these; ``diversity`` and ``random`` need only the images.
    """
    from labelwise.quality.select import STRATEGIES

    raters = len(dataset.rater_ids) >= 2
    needs = {
        "quality": has_qa,
        "uncertainty": has_pred,
        "disagreement": raters,
        "mix": has_qa or has_pred or raters,
    }
    return [s for s in STRATEGIES if needs.get(s, True)]


def slice_confidence(probs: np.ndarray, threshold: float = CONFIDENT_FOREGROUND) -> tuple[float, int]:
    """How sure a propagation is of one slice: the mean max-probability where it is not plainly background.

    Args:
        probs: ``(K, X, Y)`` float class probabilities of one slice (summing to 1 over K; class 0 background).
        threshold: Voxels whose foreground probability ``1 - probs[0]`` reaches it are scored; the plain background
            elsewhere would push every slice towards 1.

    Returns:
        ``(confidence, foreground)``: the mean of ``max_k probs`` over the scored voxels (0..1; 1 = every scored
        voxel certain; the mean over the whole slice when no voxel is scored), and the number of voxels whose most
        likely class is not background.

    Example:
        >>> p = np.zeros((2, 2, 2), dtype=np.float32)
        >>> p[0], p[1] = [[1.0, 1.0], [0.4, 0.2]], [[0.0, 0.0], [0.6, 0.8]]
        >>> tuple(round(v, 2) for v in slice_confidence(p))
        (0.7, 2)

    """
    top = probs.max(axis=0)
    scored = (1.0 - probs[0]) >= threshold
    foreground = int((probs.argmax(axis=0) > 0).sum())
    region = top[scored] if scored.any() else top
    return (float(region.mean()) if region.size else 1.0), foreground


def painted_slices(versions: Sequence[CorrectionVersion]) -> set[int]:
    """The slices whose current content a user painted: the anchors propagation starts from.

    A ``paint`` version marks its slices painted, a ``propagate`` version marks them not painted, and a revert
    (``base`` ``revert of vNNNN``, which always undoes the version just before it) gives its slices back the state
    they had before the version it undid.
    """
    states: list[dict[int, bool]] = [{}]
    for v in versions:
        current = dict(states[-1])
        if (v.action == REVERT_ACTION or v.base.startswith(REVERT_BASE)) and len(states) >= 2:
            before = states[-2]
            for s in v.slices:
                current[s] = before.get(s, False)
        else:
            for s in v.slices:
                current[s] = v.action == "paint"
        states.append(current)
    return {s for s, painted in states[-1].items() if painted}


def _aware(value: datetime) -> datetime:
    return value if value.tzinfo is not None else value.astimezone()  # naive: this machine's local time


def parse_since(text: str) -> datetime:
    """An ISO 8601 date or date-time as an aware datetime (no offset: local time).

    Raises:
        ValueError: not an ISO date or date-time.

    Example:
        >>> parse_since("2026-12-01T10:00:00+00:00").isoformat()
        '2026-12-01T10:00:00+00:00'

    """
    try:
        return _aware(datetime.fromisoformat(text.strip()))
    except ValueError:
        raise ValueError(
            f"since {text[:40]!r} is not an ISO date or date-time (2026-12-01 or 2026-12-01T10:00)"
        ) from None


def run_trained_at(run_dir: Path) -> datetime:
    """When the model of ``run_dir`` last saw its labels: ``meta.json`` ``finished_at`` if present, else its mtime.

    ``meta.json`` is rewritten when training finishes, so its modification time is the end of the run (copying the
    folder without keeping times moves it; then pass a date to the filter instead).

    Raises:
        DataError: no readable ``meta.json`` in ``run_dir`` (not a labelwise run).

    """
    from labelwise.io import read_json_object

    meta_path = run_dir / "meta.json"
    meta = read_json_object(meta_path, "run meta.json", missing="no meta.json: not a labelwise run folder")
    if meta.get("status") != "finished":
        logger.warning("%s: the run has not finished (status %r); using its last write", meta_path, meta.get("status"))
    stamp = meta.get("finished_at")
    if isinstance(stamp, str):
        try:
            return parse_since(stamp)
        except ValueError:
            logger.warning("%s: finished_at %r is not a date-time; using the file time", meta_path, stamp)
    return datetime.fromtimestamp(meta_path.stat().st_mtime, tz=timezone.utc)


def changed_since(store: ReviewStore, case_ids: Sequence[str], since: datetime) -> list[dict[str, Any]]:
    """Cases whose latest correction or decision is newer than ``since``: what the next training will learn from.

    Args:
        store: The dataset's review store.
        case_ids: The cases to look at (manifest order is kept).
        since: An aware datetime (:func:`parse_since`, :func:`run_trained_at`).

    Returns:
        One dict per changed case: ``case``, ``time`` (of its latest change), ``change`` (``correction v3 by ana`` or
        ``reject by bob``), ``status`` and ``labels`` (what the reviewed view now reads for it; see
        :class:`~labelwise.data.review.CaseReview`). Entries with a time that does not parse are left out, with a
        warning.

    """
    out = []
    for cid, review in case_reviews(store, case_ids).items():
        events: list[tuple[str, str]] = []
        if review.correction is not None:
            c = review.correction
            events.append((c.time, f"correction v{c.version} ({c.action}) by {c.user}"))
        if review.decision is not None:
            d = review.decision
            events.append((str(d.get("time", "")), f"{d.get('decision')} by {d.get('user', '?')}"))
        dated: list[tuple[datetime, str]] = []
        for stamp, what in events:
            try:
                dated.append((parse_since(stamp), what))
            except ValueError:
                logger.warning("case %s: review time %r is not a date-time; left out of the filter", cid, stamp)
        if not dated:
            continue
        when, what = max(dated, key=lambda e: e[0])
        if when > since:
            out.append(
                {
                    "case": cid,
                    "time": when.isoformat(),
                    "change": what,
                    "status": review.status,
                    "labels": review.labels,
                }
            )
    return out


def _window(case: Case) -> tuple[float, float]:
    """1st/99th intensity percentiles of the whole case (one window for every slice)."""
    lo, hi = np.percentile(case.image, [1, 99])
    return float(lo), float(hi)


# ----------------------------------------------------------------------------------------------- request guard
def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an IP, IPv6 with or without brackets) only reaches this machine.

    Example:
        >>> [is_loopback(h) for h in ("127.0.0.1", "localhost", "[::1]", "0.0.0.0", "example.org")]
        [True, True, True, False, False]

    """
    name = host.strip("[]").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _is_wildcard(host: str) -> bool:
    try:
        return ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        return False


def _host_port(name: str, port: int) -> set[str]:
    bare = name.strip("[]").lower()
    shown = f"[{bare}]" if ":" in bare else bare
    return {f"{shown}:{port}", shown} if port == 80 else {f"{shown}:{port}"}


def allowed_hosts(host: str, port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The ``Host`` header values a viewer bound to ``host:port`` answers (lower case).

    Args:
        host: The bound address (``127.0.0.1``, ``localhost``, ``::1``, an interface address or ``0.0.0.0``).
        port: The bound port.
        extra: More names the server may be reached by (``name`` or ``name:port``; a name without port gets
            ``port``), for a non-loopback bind.

    Returns:
        ``host:port`` itself; with a loopback bind also the ``127.0.0.1``, ``localhost`` and ``[::1]`` forms of the
        port; with a wildcard bind (``0.0.0.0``, ``::``) the loopback forms and this machine's host name and fully
        qualified name. Port 80 also allows the forms without a port, as browsers send them.

    Example:
        >>> sorted(allowed_hosts("127.0.0.1", 8765))
        ['127.0.0.1:8765', '[::1]:8765', 'localhost:8765']

    """
    names = {host}
    if is_loopback(host):
        names |= {"127.0.0.1", "localhost", "::1"}
    elif _is_wildcard(host):
        names |= {"127.0.0.1", "localhost", "::1", socket.gethostname(), socket.getfqdn()}
    out: set[str] = set()
    for name in names:
        out |= _host_port(name, port)
    for name in extra:
        out |= {name.lower()} if _HOST_WITH_PORT.match(name) else _host_port(name, port)
    return frozenset(out)


def json_depth(raw: bytes) -> int:
    """How deeply arrays and objects nest in the JSON text ``raw`` (0 for a scalar), without parsing it.

    Brackets inside strings do not count. Runs in linear time with no recursion, so it is safe on hostile input.

    Example:
        >>> json_depth(b'{"a": [1, {"b": "]]]"}]}')
        3

    """
    stripped = _JSON_STRING.sub(b'""', raw)
    codes = np.frombuffer(stripped, dtype=np.uint8)
    if codes.size == 0:
        return 0
    steps = (codes == ord("[")).astype(np.int64) + (codes == ord("{")) - (codes == ord("]")) - (codes == ord("}"))
    return int(max(0, np.cumsum(steps).max()))


class RequestRefused(Exception):
    """A request the viewer answers with an error status and ``{"error": message}``.

    Args:
        status: HTTP status code.
        message: What is wrong, in one sentence.

    """

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def parse_json_object(raw: bytes) -> dict[str, Any]:
    """Parse a request body that must be one JSON object of bounded nesting.

    Raises:
        RequestRefused: 400 if it is nested deeper than ``MAX_JSON_DEPTH``, is not JSON or not an object.

    """
    if json_depth(raw) > MAX_JSON_DEPTH:
        raise RequestRefused(400, f"JSON body is nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        payload = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise RequestRefused(400, f"body is not valid JSON ({exc})") from None
    if not isinstance(payload, dict):
        raise RequestRefused(400, "expected a JSON object")
    return payload


def _integer(payload: dict[str, Any], name: str, default: int | None = None) -> int:
    value = payload.get(name, default)
    if value is None:
        raise RequestRefused(422, f"missing {name!r}")
    if isinstance(value, bool) or not isinstance(value, int):
        raise RequestRefused(422, f"{name!r} must be an integer")
    return value


def _text(payload: dict[str, Any], name: str, default: str | None = None) -> str:
    value = payload.get(name, default)
    if value is None:
        raise RequestRefused(422, f"missing {name!r}")
    if not isinstance(value, str):
        raise RequestRefused(422, f"{name!r} must be a string")
    return value


def _flag(payload: dict[str, Any], name: str, default: bool) -> bool:
    value = payload.get(name, default)
    if not isinstance(value, bool):
        raise RequestRefused(422, f"{name!r} must be true or false")
    return value


def _integers(payload: dict[str, Any], name: str) -> list[int]:
    value = payload.get(name)
    if not isinstance(value, list) or not value:
        raise RequestRefused(422, f"{name!r} must be a non-empty list of integers")
    if any(isinstance(v, bool) or not isinstance(v, int) for v in value):
        raise RequestRefused(422, f"{name!r} must be a list of integers")
    return sorted(set(value))


class _Guard:
    """ASGI middleware: Host, token, Origin and body checks, and the security headers on every response."""

    def __init__(self, app: ASGIApp, hosts: frozenset[str], token: str) -> None:
        self.app = app
        self.hosts = hosts
        self.token = token.encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *SECURITY_HEADERS]
            await send(message)

        refusal = self.check(scope)
        if refusal is not None:
            from starlette.responses import JSONResponse

            status, reason = refusal
            logger.warning("refused %s %s: %s", scope["method"], scope["path"], reason)
            response = JSONResponse({"error": reason}, status_code=status)
            await response(scope, receive, send_with_headers)
            return
        await self.app(scope, receive, send_with_headers)

    def check(self, scope: Scope) -> tuple[int, str] | None:
        """The refusal (status, reason) for a request, or None to let it through."""
        headers: dict[bytes, bytes] = {}
        for key, value in scope.get("headers", []):
            headers.setdefault(key.lower(), value)
        host = headers.get(b"host", b"").decode("latin-1").lower()
        if host not in self.hosts:
            return 403, f"unexpected Host header {host!r}: open the viewer at the address it printed"
        path = scope["path"]
        if path not in _PUBLIC_PATHS and not path.startswith("/static/"):  # the page and its code are public
            token = headers.get(TOKEN_HEADER.lower().encode(), b"")
            if not hmac.compare_digest(token, self.token):
                return 403, f"missing or wrong {TOKEN_HEADER}: reload the viewer page"
        if scope["method"] in _SAFE_METHODS:
            return None
        origin = headers.get(b"origin")
        if origin is not None and origin.decode("latin-1").lower() != f"{scope['scheme']}://{host}":
            return 403, f"cross-origin write refused (Origin {origin.decode('latin-1')!r})"
        media_type = headers.get(b"content-type", b"").split(b";")[0].strip().lower()
        if media_type != b"application/json":
            return 415, "writes must be Content-Type: application/json"
        declared = headers.get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > MAX_BODY_BYTES):
            return 413, "request body too large"
        return None


async def _read_json(request: Request) -> dict[str, Any]:
    """The body of ``request`` as a JSON object, read up to ``MAX_BODY_BYTES``."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            raise RequestRefused(413, "request body too large")
        chunks.append(chunk)
    return parse_json_object(b"".join(chunks))


# ----------------------------------------------------------------------------------------------- the app
def create_app(state: ViewerState, host: str = "127.0.0.1", port: int = 8765, extra_hosts: Iterable[str] = ()) -> Any:
    """Build the Starlette application for ``state``, with a fresh session token.

    Args:
        state: What to serve.
        host: The address the server is bound to; ``Host`` headers are checked against it (``allowed_hosts``).
        port: The port the server is bound to.
        extra_hosts: More ``Host`` names to accept (see :func:`allowed_hosts`).

    Returns:
        The Starlette app; ``app.state.token`` is the session token the page embeds.

    """
    require_extra("starlette", "viewer", feature="the labelwise viewer")
    from starlette.applications import Starlette
    from starlette.concurrency import run_in_threadpool
    from starlette.middleware import Middleware
    from starlette.responses import HTMLResponse, JSONResponse, Response
    from starlette.routing import Mount, Route
    from starlette.staticfiles import StaticFiles

    token = secrets.token_urlsafe(32)
    page = (STATIC / "index.html").read_text(encoding="utf-8")
    if TOKEN_PLACEHOLDER not in page:
        raise RuntimeError("index.html lost its token placeholder")
    page = page.replace(TOKEN_PLACEHOLDER, token)
    hosts = allowed_hosts(host, port, extra_hosts)

    def api(handler: Callable[[Request], Awaitable[Any]]) -> Callable[[Request], Awaitable[Response]]:
        """Turn a handler's result into JSON and its expected failures into ``{"error": ...}`` responses."""

        @functools.wraps(handler)
        async def endpoint(request: Request) -> Response:
            try:
                result = await handler(request)
            except RequestRefused as exc:
                return JSONResponse({"error": exc.message}, status_code=exc.status)
            except (LabelwiseError, ValueError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=422)
            return result if isinstance(result, Response) else JSONResponse(result)

        return endpoint

    def known_case(request: Request) -> str:
        case_id = str(request.path_params["case_id"])
        if case_id not in state.dataset.ids:
            raise RequestRefused(404, "unknown case")
        return case_id

    async def index(request: Request) -> Response:
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})

    strategies = available_strategies(state.dataset, state.qa_path is not None, state.pred_dir is not None)

    @api
    async def info(request: Request) -> Any:
        ds = state.dataset
        trained_at = None
        if state.run_dir is not None:
            try:
                trained_at = run_trained_at(state.run_dir).isoformat()
            except LabelwiseError as exc:  # the run folder changed since the start: the filter says why
                logger.warning("%s", exc)
        return {
            "name": ds.name,
            "spatial_dims": ds.spatial_dims,
            "class_names": list(ds.class_names),
            "rater_ids": list(ds.rater_ids),
            "has_predictions": state.pred_dir is not None,
            "has_qa": bool(state.qa),
            "strategies": strategies,
            "default_strategy": "mix" if "mix" in strategies else "diversity",
            "run": None if state.run_dir is None else str(state.run_dir),
            "run_trained_at": trained_at,
        }

    def list_cases() -> list[dict[str, Any]]:
        reviews = state.store.reviews()
        qa_by_case: dict[str, float] = {}
        for row in state.qa:
            qa_by_case[row["case"]] = min(row["predicted_dice"], qa_by_case.get(row["case"], 1.0))
        out = []
        for rec in state.dataset.manifest.cases:
            last = reviews.get(rec.id, [])
            out.append(
                {
                    "id": rec.id,
                    "split": rec.split,
                    "raters": list(rec.labels),
                    "image_labels": rec.image_labels,
                    "quality": qa_by_case.get(rec.id),
                    "review": last[-1]["decision"] if last else None,
                }
            )
        return out

    @api
    async def cases(request: Request) -> Any:
        return await run_in_threadpool(list_cases)

    def list_queue() -> list[dict[str, Any]]:
        reviews = state.store.reviews()
        return [{**row, "review": (reviews.get(row["case"]) or [{}])[-1].get("decision")} for row in state.qa]

    @api
    async def queue(request: Request) -> Any:
        return await run_in_threadpool(list_queue)

    @api
    async def next_cases(request: Request) -> Any:
        query = request.query_params
        strategy = query.get("strategy", "mix" if "mix" in strategies else "diversity")
        if strategy not in strategies:
            raise RequestRefused(422, f"strategy {strategy!r} is not available here; choose one of {strategies}")
        n_text = query.get("n", "20")
        if not n_text.isdigit() or not 1 <= int(n_text) <= MAX_NEXT:
            raise RequestRefused(422, f"n must be an integer from 1 to {MAX_NEXT}")
        include = query.get("include_reviewed", "0")
        if include not in ("0", "1", "true", "false"):
            raise RequestRefused(422, "include_reviewed must be 0 or 1")
        return await run_in_threadpool(state.next_cases, strategy, int(n_text), include in ("1", "true"))

    def list_changed(since_text: str | None) -> dict[str, Any]:
        if since_text:
            since, source = parse_since(since_text), "date"
        elif state.run_dir is not None:
            since, source = run_trained_at(state.run_dir), "run"
        else:
            raise RequestRefused(422, "no run to compare with: start the viewer with --run RUN, or give since=DATE")
        changed = changed_since(state.store, state.dataset.ids, since)
        return {
            "since": since.isoformat(),
            "source": source,
            "run": None if state.run_dir is None else str(state.run_dir),
            "cases": changed,
        }

    @api
    async def changed(request: Request) -> Any:
        return await run_in_threadpool(list_changed, request.query_params.get("since"))

    def describe_case(case_id: str) -> dict[str, Any]:
        case = state.case(case_id)
        return {
            "id": case_id,
            "shape": list(case.spatial_shape),
            "spacing_mm": list(case.spacing_mm),
            "channels": int(case.image.shape[0]),
            "slices": 1 if case.spatial_dims == 2 else case.spatial_shape[-1],
            "labelled_slices": list(case.labelled_slices) if case.labelled_slices is not None else None,
            "layers": state.layers(case_id),
            "image_labels": case.image_labels,
            "versions": [v.to_json() for v in state.store.versions(case_id)],
            "reviews": state.store.reviews().get(case_id, []),
        }

    @api
    async def case_meta(request: Request) -> Any:
        return await run_in_threadpool(describe_case, known_case(request))

    @api
    async def slice_png(request: Request) -> Any:
        case_id = known_case(request)
        z = int(request.path_params["z"])
        layer = request.query_params.get("layer", "image")
        try:
            png = await run_in_threadpool(state.slice_png, case_id, z, layer)
        except (KeyError, ValueError):
            raise RequestRefused(404, "unknown case, slice or layer") from None
        return Response(png, media_type="image/png", headers={"Cache-Control": "no-store"})

    @api
    async def review(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        decision = _text(payload, "decision")
        comment = _text(payload, "comment", "")
        user = _text(payload, "user", "anonymous")
        return await run_in_threadpool(state.store.add_review, case_id, decision, comment, user)

    def _base(case_id: str, base_name: str) -> np.ndarray:
        case = state.case(case_id)
        try:
            return state.volume(case_id, base_name)
        except KeyError:
            return np.zeros(case.spatial_shape, dtype=np.int16)

    def save_correction(case_id: str, z: int, h: int, w: int, data: str, base_name: str, user: str) -> Any:
        case = state.case(case_id)
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise RequestRefused(422, f"'data' is not base64 ({exc})") from None
        if len(raw) != h * w:
            raise RequestRefused(422, f"data has {len(raw)} bytes, expected {h}x{w}")
        mask = np.frombuffer(raw, dtype=np.uint8).reshape(h, w)  # the store checks shape and classes
        with state.write_lock:
            entry = state.store.save_slices(
                case_id, _base(case_id, base_name), base_name, {z: mask}, case.spacing_mm, case.affine, user=user
            )
        return entry.to_json()

    @api
    async def correction(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        z = _integer(payload, "slice")
        h, w = _integer(payload, "height"), _integer(payload, "width")
        if h < 1 or w < 1:
            raise RequestRefused(422, "width and height must be positive")
        data = _text(payload, "data")
        base_name = _text(payload, "base", "correction")
        user = _text(payload, "user", "anonymous")
        return await run_in_threadpool(save_correction, case_id, z, h, w, data, base_name, user)

    def revert_version(case_id: str, number: int, user: str) -> Any:
        case = state.case(case_id)
        with state.write_lock:
            versions = state.store.versions(case_id)
            if not versions:
                raise RequestRefused(422, f"case {case_id} has no saved version to undo")
            latest = versions[-1]
            if latest.version != number:
                raise RequestRefused(
                    409, f"v{number} is not the latest version of {case_id} (v{latest.version} is): reload the case"
                )
            if len(versions) > 1:
                before = state.store.read(versions[-2])
            elif latest.base in ("correction", "empty"):  # the first version started from an empty map
                before = np.zeros(case.spatial_shape, dtype=np.int16)
            else:  # the layer it started from, as it is now
                before = _base(case_id, latest.base)
            slices = {k: (before if case.spatial_dims == 2 else before[..., k]) for k in latest.slices}
            entry = state.store.save_slices(
                case_id,
                before,
                f"{REVERT_BASE}{number:04d}",
                slices,
                case.spacing_mm,
                case.affine,
                user=user,
                action=REVERT_ACTION,
            )
        return entry.to_json()

    @api
    async def revert(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        number = _integer(payload, "version")
        user = _text(payload, "user", "anonymous")
        return await run_in_threadpool(revert_version, case_id, number, user)

    def run_propagation(case_id: str, z: int, extent: int, user: str, preview: bool) -> Any:
        case = state.case(case_id)
        if case.spatial_dims != 3:
            raise RequestRefused(422, "propagation needs a 3D case")
        versions = state.store.versions(case_id)
        if not versions:
            raise RequestRefused(422, "save a corrected slice first")
        latest = state.store.read(versions[-1])
        painted = painted_slices(versions)
        if z not in painted:
            raise RequestRefused(422, f"slice {z} has no saved correction; paint and save it first")
        from labelwise.methods.propagation import propagate as propagate_volume

        anchors = {s: latest[..., s] for s in sorted(painted)}
        result = propagate_volume(case.image, anchors, num_classes=len(case.class_names), allow_empty=True)
        depth = latest.shape[-1]
        targets = [k for k in range(max(0, z - extent), min(depth, z + extent + 1)) if k not in painted]
        if not targets:
            raise RequestRefused(422, f"every slice within {extent} of slice {z} is painted: nothing to propagate")
        labels = {k: result.labels[..., k].astype(np.int16) for k in targets}
        confidence = {k: slice_confidence(result.probs[..., k]) for k in targets}
        proposal = PropagationProposal(case_id, versions[-1].version, tuple(sorted(painted)), labels, confidence)
        if preview:
            return proposal.to_json(state.add_proposal(proposal))
        with state.write_lock:
            entry = state.store.save_slices(
                case_id, latest, "correction", labels, case.spacing_mm, case.affine, user=user, action="propagate"
            )
        return {**entry.to_json(), "confidence": proposal.to_json("")["slices"]}

    @api
    async def propagate(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        z = _integer(payload, "slice")
        extent = _integer(payload, "extent", 10)
        if extent < 1:
            raise RequestRefused(422, "extent must be >= 1 slice")
        user = _text(payload, "user", "anonymous")
        preview = _flag(payload, "preview", False)
        return await run_in_threadpool(run_propagation, case_id, z, extent, user, preview)

    def _proposal(case_id: str, proposal_id: str, slices: Sequence[int]) -> PropagationProposal:
        proposal = state.proposals.get(proposal_id)
        if proposal is None or proposal.case != case_id:
            raise RequestRefused(404, "unknown proposal (proposals live until the server restarts): propagate again")
        missing = [k for k in slices if k not in proposal.labels]
        if missing:
            raise RequestRefused(422, f"slice(s) {missing} are not in the proposal (accepted or discarded already?)")
        return proposal

    def accept_slices(case_id: str, proposal_id: str, slices: list[int], user: str) -> Any:
        case = state.case(case_id)
        with state.write_lock:
            proposal = _proposal(case_id, proposal_id, slices)
            versions = state.store.versions(case_id)
            edited = [v for v in versions if v.version > proposal.base_version and v.action != "propagate"]
            since = {s for v in edited for s in v.slices}
            if since & set(slices):
                raise RequestRefused(
                    409, f"slice(s) {sorted(since & set(slices))} were edited after the proposal: propagate again"
                )
            latest = state.store.read(versions[-1])
            chosen = {k: proposal.labels[k] for k in slices}
            entry = state.store.save_slices(
                case_id, latest, "correction", chosen, case.spacing_mm, case.affine, user=user, action="propagate"
            )
            for k in slices:
                del proposal.labels[k]
        return {**entry.to_json(), "remaining": sorted(proposal.labels)}

    @api
    async def accept_proposal(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        proposal_id = _text(payload, "proposal")
        slices = _integers(payload, "slices")
        user = _text(payload, "user", "anonymous")
        return await run_in_threadpool(accept_slices, case_id, proposal_id, slices, user)

    @api
    async def discard_proposal(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        proposal_id = _text(payload, "proposal")
        slices = _integers(payload, "slices")
        with state.write_lock:
            proposal = _proposal(case_id, proposal_id, slices)
            for k in slices:
                del proposal.labels[k]
        return {"proposal": proposal_id, "discarded": slices, "remaining": sorted(proposal.labels)}

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/cases", cases),
        Route("/api/queue", queue),
        Route("/api/next", next_cases),
        Route("/api/changed", changed),
        Route("/api/cases/{case_id}", case_meta),
        Route("/api/cases/{case_id}/slice/{z:int}.png", slice_png),
        Route("/api/cases/{case_id}/review", review, methods=["POST"]),
        Route("/api/cases/{case_id}/correction", correction, methods=["POST"]),
        Route("/api/cases/{case_id}/propagate", propagate, methods=["POST"]),
        Route("/api/cases/{case_id}/propagate/accept", accept_proposal, methods=["POST"]),
        Route("/api/cases/{case_id}/propagate/discard", discard_proposal, methods=["POST"]),
        Route("/api/cases/{case_id}/revert", revert, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, hosts=hosts, token=token)])
    app.state.token = token
    return app
