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
    POST /api/cases/{id}/propagate             {"slice", "extent", "user"}: propagate the saved corrections to the
                                               unpainted slices within ``extent`` (default 10) of ``slice``

Errors are ``{"error": message}`` with 400 (malformed JSON), 403 (Host, token or Origin refused), 404 (unknown
case, slice or layer), 413 (body too large), 415 (not JSON) or 422 (a valid request the data refuses).

Layers: ``image``, ``rater/<id>``, ``consensus`` (majority vote), ``pred``, ``prob`` (foreground probability x255),
``sample/<k>``, ``predrater/<k>``, ``uncertainty`` (x255 of its max), ``correction`` (latest saved version).
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
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from labelwise.data import Case, Dataset
from labelwise.data.review import ReviewStore
from labelwise.errors import LabelwiseError, require_extra

if TYPE_CHECKING:
    from starlette.requests import Request
    from starlette.responses import Response
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = [
    "CONTENT_SECURITY_POLICY",
    "MAX_BODY_BYTES",
    "MAX_JSON_DEPTH",
    "TOKEN_HEADER",
    "ViewerState",
    "allowed_hosts",
    "create_app",
    "is_loopback",
    "json_depth",
]

logger = logging.getLogger(__name__)
MAX_BODY_BYTES = 16 * 1024 * 1024
MAX_JSON_DEPTH = 32
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


class ViewerState:
    """Everything the viewer serves, loaded lazily and cached per case.

    Args:
        dataset: Dataset folder.
        pred_dir: Optional prediction folder (``labelwise predict`` layout).
        qa_csv: Optional ``quality.csv`` from ``labelwise qa``.

    """

    def __init__(self, dataset: str | Path, pred_dir: str | Path | None = None, qa_csv: str | Path | None = None):
        self.dataset = Dataset(dataset)
        self.pred_dir = Path(pred_dir) if pred_dir else None
        self.store = ReviewStore(self.dataset.root)
        self.qa = self._read_qa(Path(qa_csv)) if qa_csv else []
        self.case = functools.lru_cache(maxsize=8)(self._load_case)
        self.prediction = functools.lru_cache(maxsize=8)(self._load_prediction)
        self._windows: dict[str, tuple[float, float]] = {}

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
        if layer == "image":
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

    @api
    async def info(request: Request) -> Any:
        ds = state.dataset
        return {
            "name": ds.name,
            "spatial_dims": ds.spatial_dims,
            "class_names": list(ds.class_names),
            "rater_ids": list(ds.rater_ids),
            "has_predictions": state.pred_dir is not None,
            "has_qa": bool(state.qa),
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

    def run_propagation(case_id: str, z: int, extent: int, user: str) -> Any:
        case = state.case(case_id)
        if case.spatial_dims != 3:
            raise RequestRefused(422, "propagation needs a 3D case")
        latest = state.store.latest(case_id, 3)
        if latest is None:
            raise RequestRefused(422, "save a corrected slice first")
        painted = {s for v in state.store.versions(case_id) if v.action == "paint" for s in v.slices}
        if z not in painted:
            raise RequestRefused(422, f"slice {z} has no saved correction; paint and save it first")
        from labelwise.methods.propagation import propagate as propagate_volume

        anchors = {s: latest[..., s] for s in sorted(painted)}
        result = propagate_volume(case.image, anchors, num_classes=len(case.class_names), allow_empty=True)
        depth = latest.shape[-1]
        targets = [k for k in range(max(0, z - extent), min(depth, z + extent + 1)) if k not in painted]
        slices = {k: result.labels[..., k].astype(np.int16) for k in targets}
        entry = state.store.save_slices(
            case_id, latest, "correction", slices, case.spacing_mm, case.affine, user=user, action="propagate"
        )
        return entry.to_json()

    @api
    async def propagate(request: Request) -> Any:
        case_id = known_case(request)
        payload = await _read_json(request)
        z = _integer(payload, "slice")
        extent = _integer(payload, "extent", 10)
        if extent < 1:
            raise RequestRefused(422, "extent must be >= 1 slice")
        user = _text(payload, "user", "anonymous")
        return await run_in_threadpool(run_propagation, case_id, z, extent, user)

    routes = [
        Route("/", index),
        Route("/api/info", info),
        Route("/api/cases", cases),
        Route("/api/queue", queue),
        Route("/api/cases/{case_id}", case_meta),
        Route("/api/cases/{case_id}/slice/{z:int}.png", slice_png),
        Route("/api/cases/{case_id}/review", review, methods=["POST"]),
        Route("/api/cases/{case_id}/correction", correction, methods=["POST"]),
        Route("/api/cases/{case_id}/propagate", propagate, methods=["POST"]),
        Mount("/static", StaticFiles(directory=STATIC), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(_Guard, hosts=hosts, token=token)])
    app.state.token = token
    return app
