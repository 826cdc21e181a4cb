"""The viewer's defences (issue 15): session token, Host and Origin checks, JSON-only writes, bounded JSON,
security headers, no HTML built from data in app.js, work off the event loop, and the missing-extra message."""

from __future__ import annotations

import base64
import re
import sys
import threading
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("starlette")
from starlette.testclient import TestClient

from labelwise.data import DatasetWriter
from labelwise.errors import LabelwiseError, MissingExtraError, require_extra
from labelwise.viewer import MAX_BODY_BYTES, ReviewStore, ViewerState, create_app
from labelwise.viewer.app import (
    MAX_JSON_DEPTH,
    STATIC,
    TOKEN_HEADER,
    allowed_hosts,
    is_loopback,
    json_depth,
)

ORIGIN = "http://127.0.0.1:8765"
EVIL = "http://evil.example"


@pytest.fixture()
def dataset(tmp_path: Path) -> Path:
    rng = np.random.default_rng(0)
    w = DatasetWriter(tmp_path / "ds", "security-test", 3, ["background", "organ"], ["r1"])
    vol = np.zeros((12, 10, 6), dtype=np.int16)
    vol[3:8, 2:7, 1:5] = 1
    w.add_case("vol1", rng.random((1, 12, 10, 6)).astype("f4"), {"r1": vol}, spacing_mm=(1.0, 1.0, 2.5))
    w.finish()
    return tmp_path / "ds"


@pytest.fixture()
def app(dataset: Path) -> object:
    return create_app(ViewerState(dataset))


@pytest.fixture()
def client(app: object) -> Iterator[TestClient]:
    """A client that behaves like the viewer page: right Host, the token; Origin is added per request."""
    token = app.state.token  # type: ignore[attr-defined]
    with TestClient(app, base_url=ORIGIN, headers={TOKEN_HEADER: token}) as c:  # type: ignore[arg-type]
        yield c


@pytest.fixture()
def bare(app: object) -> Iterator[TestClient]:
    """A client without the token (what another web page or a rebinding attacker has)."""
    with TestClient(app, base_url=ORIGIN) as c:  # type: ignore[arg-type]
        yield c


def _nothing_written(dataset: Path) -> None:
    store = ReviewStore(dataset)
    assert store.reviews() == {} and store.versions() == []


def _correction(z: int = 2) -> dict[str, object]:
    mask = np.zeros((12, 10), dtype=np.uint8)
    mask[2:9, 1:8] = 1
    data = base64.b64encode(mask.tobytes()).decode()
    return {"slice": z, "width": 10, "height": 12, "data": data, "base": "empty", "user": "ana"}


# ----------------------------------------------------------------------------------------------- token
def test_page_embeds_the_session_token_and_the_api_requires_it(
    app: object, client: TestClient, bare: TestClient
) -> None:
    page = bare.get("/")
    assert page.status_code == 200
    assert page.headers["cache-control"] == "no-store"
    match = re.search(r'<meta name="labelwise-token" content="([^"]+)">', page.text)
    assert match is not None and match.group(1) == app.state.token  # type: ignore[attr-defined]
    assert len(match.group(1)) >= 40  # 32 random bytes, base64url
    for url in ("/api/info", "/api/cases", "/api/queue", "/api/cases/vol1", "/api/cases/vol1/slice/0.png"):
        refused = bare.get(url)
        assert refused.status_code == 403, url
        assert TOKEN_HEADER in refused.json()["error"]
        assert bare.get(url, headers={TOKEN_HEADER: "wrong"}).status_code == 403, url
        assert client.get(url).status_code == 200, url
    assert bare.get("/static/app.js").status_code == 200  # static code holds no data and no token


def test_each_app_gets_its_own_token(dataset: Path) -> None:
    one, two = create_app(ViewerState(dataset)), create_app(ViewerState(dataset))
    assert one.state.token != two.state.token


def test_write_without_token_is_refused(bare: TestClient, dataset: Path) -> None:
    res = bare.post("/api/cases/vol1/review", json={"decision": "accept"}, headers={"Origin": ORIGIN})
    assert res.status_code == 403
    _nothing_written(dataset)


# ----------------------------------------------------------------------------------------------- Origin (CSRF)
def test_classic_csrf_text_plain_from_foreign_origin_is_refused(bare: TestClient, dataset: Path) -> None:
    # what any web page can send without a CORS preflight: a text/plain POST, no custom header
    body = '{"decision": "reject", "comment": "csrf", "user": "evil"}'
    res = bare.post("/api/cases/vol1/review", content=body, headers={"Origin": EVIL, "Content-Type": "text/plain"})
    assert res.status_code == 403
    _nothing_written(dataset)


@pytest.mark.parametrize("route", ["review", "correction", "propagate"])
def test_foreign_origin_is_refused_even_with_the_token(client: TestClient, dataset: Path, route: str) -> None:
    payload = {"review": {"decision": "accept"}, "correction": _correction(), "propagate": {"slice": 2}}[route]
    for origin in (EVIL, "null", "http://127.0.0.1:9999", "https://127.0.0.1:8765"):
        res = client.post(f"/api/cases/vol1/{route}", json=payload, headers={"Origin": origin})
        assert res.status_code == 403, (route, origin)
        assert "cross-origin" in res.json()["error"]
    _nothing_written(dataset)


def test_same_origin_and_originless_writes_pass(client: TestClient, dataset: Path) -> None:
    assert client.post("/api/cases/vol1/review", json={"decision": "accept"}, headers={"Origin": ORIGIN}).is_success
    # a missing Origin (scripts, curl) is accepted: the token already proves the caller could read the page
    assert client.post("/api/cases/vol1/review", json={"decision": "flag"}).is_success
    assert [r["decision"] for r in ReviewStore(dataset).reviews()["vol1"]] == ["accept", "flag"]


# ----------------------------------------------------------------------------------------------- Host (DNS rebinding)
@pytest.mark.parametrize("url", ["/", "/api/info", "/api/cases", "/api/cases/vol1/slice/0.png", "/static/app.js"])
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8765", "127.0.0.1:9999", "127.0.0.1", ""])
def test_foreign_host_is_refused_on_every_route(app: object, client: TestClient, url: str, host: str) -> None:
    res = client.get(url, headers={"Host": host})
    assert res.status_code == 403
    assert "Host" in res.json()["error"]
    assert app.state.token not in res.text  # type: ignore[attr-defined]


@pytest.mark.parametrize("host", ["127.0.0.1:8765", "localhost:8765", "[::1]:8765", "LOCALHOST:8765"])
def test_loopback_forms_of_the_bound_port_are_served(client: TestClient, host: str) -> None:
    assert client.get("/api/cases", headers={"Host": host}).status_code == 200


def test_foreign_host_cannot_write(client: TestClient, dataset: Path) -> None:
    res = client.post(
        "/api/cases/vol1/review", json={"decision": "accept"}, headers={"Host": "evil.example:8765", "Origin": EVIL}
    )
    assert res.status_code == 403
    _nothing_written(dataset)


def test_allowed_hosts() -> None:
    assert allowed_hosts("127.0.0.1", 8765) == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert allowed_hosts("::1", 8765) == {"127.0.0.1:8765", "localhost:8765", "[::1]:8765"}
    assert allowed_hosts("localhost", 80) == {
        "127.0.0.1:80",
        "localhost:80",
        "[::1]:80",
        "127.0.0.1",
        "localhost",
        "[::1]",
    }
    assert allowed_hosts("192.168.1.5", 8765) == {"192.168.1.5:8765"}
    assert allowed_hosts("192.168.1.5", 8765, ["ws.lab", "Proxy.Lab:443"]) == {
        "192.168.1.5:8765",
        "ws.lab:8765",
        "proxy.lab:443",
    }
    wildcard = allowed_hosts("0.0.0.0", 8765)
    assert {"0.0.0.0:8765", "127.0.0.1:8765", "localhost:8765"} <= wildcard
    assert "evil.example:8765" not in wildcard
    assert is_loopback("127.0.0.2") and not is_loopback("0.0.0.0") and not is_loopback("localhost.evil.example")


# ----------------------------------------------------------------------------------------------- JSON-only writes
@pytest.mark.parametrize(
    "content_type", ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None]
)
def test_writes_must_be_json(client: TestClient, dataset: Path, content_type: str | None) -> None:
    headers = {"Origin": ORIGIN} | ({"Content-Type": content_type} if content_type else {})
    res = client.post("/api/cases/vol1/review", content=b'{"decision": "accept"}', headers=headers)
    assert res.status_code == 415
    _nothing_written(dataset)
    ok = {"Origin": ORIGIN, "Content-Type": "application/json; charset=utf-8"}
    assert client.post("/api/cases/vol1/review", content=b'{"decision": "accept"}', headers=ok).is_success


def test_deeply_nested_json_is_a_400_not_a_500(client: TestClient, dataset: Path) -> None:
    deep = b'{"decision": "accept", "comment": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    res = client.post("/api/cases/vol1/review", content=deep, headers={"Content-Type": "application/json"})
    assert res.status_code == 400
    assert res.json()["error"] == f"JSON body is nested deeper than {MAX_JSON_DEPTH} levels"
    # just over the limit, and inside a string (which does not count)
    over = b"{" + b'"a":[' * MAX_JSON_DEPTH + b"]" * MAX_JSON_DEPTH + b"}"
    assert (
        client.post("/api/cases/vol1/review", content=over, headers={"Content-Type": "application/json"}).status_code
        == 400
    )
    _nothing_written(dataset)
    quoted = {"decision": "accept", "comment": "[" * 10_000}
    assert client.post("/api/cases/vol1/review", json=quoted).is_success


@pytest.mark.parametrize(
    ("body", "status"),
    [
        (b"{not json", 400),
        (b"\xff\xfe", 400),
        (b"[1, 2]", 400),
        (b'{"decision": "accept", "comment": [[1]]}', 422),
        (b'{"decision": 3}', 422),
        (b'{"comment": "no decision"}', 422),
    ],
)
def test_malformed_bodies_get_clear_errors(client: TestClient, dataset: Path, body: bytes, status: int) -> None:
    res = client.post("/api/cases/vol1/review", content=body, headers={"Content-Type": "application/json"})
    assert res.status_code == status
    assert res.json()["error"]
    _nothing_written(dataset)


def test_correction_fields_are_typed(client: TestClient, dataset: Path) -> None:
    for bad in ({"slice": "2"}, {"width": -10, "height": -12}, {"data": "***"}, {"slice": True}):
        res = client.post("/api/cases/vol1/correction", json={**_correction(), **bad})
        assert res.status_code == 422, bad
    _nothing_written(dataset)


def test_streamed_body_over_the_limit_is_refused(client: TestClient, dataset: Path) -> None:
    def chunks() -> Iterator[bytes]:
        yield b'{"decision": "accept", "comment": "'
        for _ in range(MAX_BODY_BYTES // (1 << 20) + 1):
            yield b"x" * (1 << 20)
        yield b'"}'

    res = client.post("/api/cases/vol1/review", content=chunks(), headers={"Content-Type": "application/json"})
    assert res.status_code == 413
    _nothing_written(dataset)


def test_json_depth() -> None:
    assert json_depth(b"1") == 0
    assert json_depth(b"[]") == 1
    assert json_depth(b'{"a": {"b": [1, "[[[[\\"]]"]}}') == 3
    assert json_depth(b"[" * 5000) == 5000


# ----------------------------------------------------------------------------------------------- headers and page
@pytest.mark.parametrize(
    "url", ["/", "/static/app.js", "/static/style.css", "/api/cases", "/api/cases/nope", "/api/cases/vol1/slice/0.png"]
)
def test_security_headers_on_every_response(client: TestClient, url: str) -> None:
    for res in (
        client.get(url),
        client.get(url, headers={"Host": "evil.example"}),
        client.get(url, headers={TOKEN_HEADER: ""}),
    ):
        csp = res.headers["content-security-policy"]
        directives = dict(d.strip().split(" ", 1) for d in csp.split(";"))
        assert directives["script-src"] == "'self'" and directives["default-src"] == "'self'"
        assert directives["object-src"] == "'none'" and directives["frame-ancestors"] == "'none'"
        assert directives["base-uri"] == "'none'"
        assert "unsafe" not in csp
        assert res.headers["x-content-type-options"] == "nosniff"
        assert res.headers["referrer-policy"] == "no-referrer"


class _Inline(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.problems: list[str] = []
        self.in_script = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        names = {k for k, _ in attrs}
        self.problems += [f"{tag} {k}=" for k in names if k.startswith("on") or k == "style"]
        if tag == "script":
            self.in_script = True
            if "src" not in names:
                self.problems.append("script without src")

    def handle_endtag(self, tag: str) -> None:
        self.in_script = self.in_script and tag != "script"

    def handle_data(self, data: str) -> None:
        if self.in_script and data.strip():
            self.problems.append("inline script body")


def test_page_has_no_inline_script_or_style(client: TestClient) -> None:
    parser = _Inline()
    parser.feed(client.get("/").text)
    assert parser.problems == []


def test_app_js_never_builds_html_from_strings() -> None:
    source = (STATIC / "app.js").read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval(", "new Function"):
        assert sink not in source, f"app.js uses {sink}"


# ----------------------------------------------------------------------------------------------- event loop
def test_propagation_runs_off_the_event_loop(
    client: TestClient, dataset: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import labelwise.methods.propagation as propagation

    real = propagation.propagate
    started, release = threading.Event(), threading.Event()
    released: list[bool] = []

    def slow_propagate(*args: object, **kwargs: object) -> object:
        started.set()
        released.append(release.wait(timeout=15))  # only set once a concurrent request has been answered
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(propagation, "propagate", slow_propagate)
    assert client.post("/api/cases/vol1/correction", json=_correction()).is_success
    answers: dict[str, int] = {}

    def run() -> None:
        answers["propagate"] = client.post("/api/cases/vol1/propagate", json={"slice": 2, "extent": 1}).status_code

    worker = threading.Thread(target=run)
    worker.start()
    try:
        assert started.wait(timeout=30), "propagation did not start"
        # the same event loop (one TestClient portal) serves these while the propagation is still running
        assert client.get("/api/cases").status_code == 200
        assert client.get("/api/cases/vol1/slice/2.png?layer=correction").status_code == 200
        assert worker.is_alive()
    finally:
        release.set()
        worker.join(timeout=60)
    assert released == [True], "the light requests waited for the propagation: it blocks the event loop"
    assert answers == {"propagate": 200}


# ----------------------------------------------------------------------------------------------- data and extras
def test_qa_table_with_a_non_number_is_one_clear_error(dataset: Path, tmp_path: Path) -> None:
    qa = tmp_path / "quality.csv"
    qa.write_text("case,predicted_dice\nvol1,nan\n", encoding="utf-8")
    with pytest.raises(LabelwiseError, match="line 2: predicted_dice 'nan' is not a number"):
        ViewerState(dataset, qa_csv=qa)


def test_require_extra_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "uvicorn", None)
    with pytest.raises(MissingExtraError) as info:
        require_extra("uvicorn", "viewer", feature="labelwise view")
    assert str(info.value) == "labelwise view needs the [viewer] extra: pip install 'labelwise[viewer]'"
    assert info.value.extra == "viewer" and info.value.module == "uvicorn"
    assert "[viewer] extra" in str(MissingExtraError("viewer", module="uvicorn"))


@pytest.mark.parametrize("missing", ["starlette", "uvicorn"])
def test_view_without_the_extra_is_one_line(
    dataset: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], missing: str
) -> None:
    from labelwise.cli.main import run

    monkeypatch.setitem(sys.modules, missing, None)  # makes `import <missing>` raise ImportError
    monkeypatch.setattr(sys, "argv", ["labelwise", "view", "--data", str(dataset)])
    with pytest.raises(SystemExit) as exit_info:
        run()
    assert exit_info.value.code == 1
    err = capsys.readouterr().err
    assert err == "error: labelwise view needs the [viewer] extra: pip install 'labelwise[viewer]'\n"
