"""End-to-end: the viewer in a real headless Chromium (Debian's), driven by Playwright.

Besides reviewing and correcting, it checks the defences of issue 15 in a real browser: text from untrusted files
(quality.csv, review files) renders as text and runs no script, the page works under its Content-Security-Policy,
another origin can neither write nor read, and a foreign Host (DNS rebinding, simulated with Chromium's
``--host-resolver-rules``) gets nothing.

Needs /usr/bin/chromium (or $LABELWISE_CHROMIUM) and the `playwright` package (its bundled driver; no browser
download). `.ci/run` installs both; elsewhere the test skips with the reason, and fails when CI=true.
"""

from __future__ import annotations

import http.server
import logging
import os
import shutil
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from labelwise.data import DatasetWriter
from labelwise.viewer import ReviewStore, ViewerState, create_app

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = Path(os.environ.get("LABELWISE_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = os.environ.get("LABELWISE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--host-resolver-rules=MAP evil.example 127.0.0.1",  # a DNS-rebinding attacker's name now points here
]
# a QA table and a review file are untrusted input (shared with a dataset): each field below must show as text
XSS = "<img src=x onerror=window.__pwned=1>"
XSS2 = "<b>bold</b><img src=x onerror=window.__pwned=2>"


def _requirements() -> None:
    missing = []
    if not Path(CHROMIUM).exists():
        missing.append(f"chromium not found at {CHROMIUM}")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        missing.append("python package playwright not installed")
    try:
        import uvicorn  # noqa: F401
    except ImportError:
        missing.append("uvicorn not installed")
    if missing:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail("; ".join(missing))
        pytest.skip("; ".join(missing))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until(page, expression: str, timeout_s: float = 20.0) -> None:  # type: ignore[no-untyped-def]
    """Poll ``expression`` in the page until it is truthy.

    Playwright's ``wait_for_function`` compiles its predicate with ``eval`` inside the page, which the viewer's
    Content-Security-Policy forbids; ``page.evaluate`` goes through the DevTools protocol and is not affected.
    """
    deadline = time.monotonic() + timeout_s
    while not page.evaluate(expression):
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for: {expression}")
        page.wait_for_timeout(50)


def _csp_watch(page) -> list[str]:  # type: ignore[no-untyped-def]
    """Collect console messages and page errors that mention a Content Security Policy violation or a failure."""
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if "Content Security Policy" in m.text else None)
    page.on("pageerror", lambda e: problems.append(str(e)))
    return problems


@pytest.fixture()
def server(tmp_path: Path):  # type: ignore[no-untyped-def]
    _requirements()
    import uvicorn

    yy, xx = np.mgrid[:96, :96]
    disc = ((yy - 48) ** 2 + (xx - 44) ** 2 < 20**2).astype(np.int16)
    image = (100 + 80 * disc + np.random.default_rng(0).normal(0, 8, disc.shape)).astype("f4")[None]
    shifted = np.roll(disc, 4, axis=1)
    w = DatasetWriter(tmp_path / "ds", "browser-test", 2, ["background", "lesion"], ["r1", "r2"])
    w.add_case("case01", image, {"r1": disc, "r2": shifted})
    w.add_case("case02", image, {"r1": disc})
    w.finish()
    qa = tmp_path / "quality.csv"
    qa.write_text(
        f'case,structure,source,predicted_dice\n"{XSS}","{XSS2}",r1,0.31\ncase02,lesion,r1,0.74\n',
        encoding="utf-8",
    )
    ReviewStore(tmp_path / "ds").add_review("case02", "flag", comment=XSS2, user=XSS)
    port = _free_port()
    state = ViewerState(tmp_path / "ds", qa_csv=qa)
    config = uvicorn.Config(
        create_app(state, host="127.0.0.1", port=port), host="127.0.0.1", port=port, log_level="error"
    )
    srv = uvicorn.Server(config)
    thread = threading.Thread(target=srv.run, daemon=True)
    thread.start()
    deadline = time.time() + 20
    while not srv.started:
        if time.time() > deadline:
            pytest.fail("viewer server did not start")
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}", tmp_path / "ds"
    srv.should_exit = True
    thread.join(timeout=10)


def test_review_and_correct_in_browser(server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    url, dataset = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        problems = _csp_watch(page)
        page.goto(url)
        page.click("#case-list li[data-case=case01]")
        page.wait_for_selector("#layer-rater-r2")
        canvas = page.locator("#canvas")
        _wait_until(page, "document.getElementById('canvas').width > 256")
        before = canvas.screenshot()
        page.check("#layer-rater-r2")
        page.wait_for_timeout(300)
        assert canvas.screenshot() != before, "toggling a rater overlay did not change the picture"

        page.fill("#user", "e2e-tester")
        page.fill("#comment", "boundary ok")
        page.click("#btn-accept")
        _wait_until(page, "document.getElementById('review-state').textContent.includes('accept')")

        page.select_option("#edit-base", "empty")
        page.click("#tool-brush")
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 40, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + 80, box["y"] + 60, steps=5)
        page.mouse.up()
        page.click("#btn-save")
        _wait_until(page, "document.getElementById('status').textContent.includes('saved version 1')")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer_case.png"))
        browser.close()
    assert problems == [], "the page broke under its Content-Security-Policy"

    store = ReviewStore(dataset)
    review = store.reviews()["case01"][-1]
    assert review["decision"] == "accept" and review["user"] == "e2e-tester" and review["comment"] == "boundary ok"
    (version,) = store.versions("case01")
    assert version.user == "e2e-tester" and version.base == "empty"
    saved = store.latest("case01", 2)
    assert saved is not None
    assert 0 < int(saved.sum()) < saved.size // 4, "painted strokes should be saved, nothing else"
    # the canvas shows each voxel as 5x5 px (96 px -> 512 px display); the stroke went from px (40, 40) to (80, 60),
    # i.e. from voxel (row 8, col 8) to (row 12, col 16)
    assert saved[8, 8] == 1 and saved[12, 16] == 1
    assert saved[40:, :].sum() == 0 and saved[:, 40:].sum() == 0


def test_untrusted_text_renders_as_text(server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    url, _ = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        problems = _csp_watch(page)
        page.goto(url)
        page.wait_for_selector("#case-list li[data-case=case02]")
        page.click("#tab-queue")
        _wait_until(page, "document.querySelectorAll('#case-list li').length === 2")
        first = page.locator("#case-list li").first
        assert first.get_attribute("data-case") == XSS
        assert XSS in first.inner_text() and XSS2 in first.inner_text()
        assert page.locator("#case-list img, #case-list b").count() == 0, "QA fields were inserted as HTML"

        page.click("#tab-cases")
        page.click("#case-list li[data-case=case02]")
        _wait_until(page, "document.getElementById('review-state').textContent.includes('flag')")
        review_state = page.locator("#review-state")
        assert XSS in review_state.inner_text() and XSS2 in review_state.inner_text()
        assert page.locator("#review-state *").count() == 0, "review fields were inserted as HTML"
        page.wait_for_timeout(500)  # time for any injected <img> to fail and fire its handler
        assert page.evaluate("typeof window.__pwned") == "undefined"
        browser.close()
    assert problems == []


class _AttackerPage(http.server.BaseHTTPRequestHandler):
    """Serves an empty page on another origin (another port of 127.0.0.1): the hostile tab."""

    def do_GET(self) -> None:
        body = b"<!doctype html><title>attacker</title><p>hello</p>"
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture()
def attacker() -> Iterator[str]:
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", _free_port()), _AttackerPage)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    thread.join(timeout=10)


ATTACK = """async (target) => {
  const out = {};
  const body = JSON.stringify({ decision: "reject", comment: "csrf", user: "attacker" });
  // a classic CSRF: a "simple" request, sent without a CORS preflight
  try {
    await fetch(target + "/api/cases/case01/review", { method: "POST", mode: "no-cors",
      headers: { "Content-Type": "text/plain" }, body });
    out.simple = "sent";
  } catch (e) { out.simple = "blocked"; }
  // JSON with a guessed token: needs a preflight, which the viewer does not grant
  try {
    await fetch(target + "/api/cases/case01/review", { method: "POST",
      headers: { "Content-Type": "application/json", "X-Labelwise-Token": "guess" }, body });
    out.preflighted = "sent";
  } catch (e) { out.preflighted = "blocked"; }
  // reading the page (and its token) from another origin
  try { out.read = (await (await fetch(target + "/")).text()).slice(0, 50); } catch (e) { out.read = "blocked"; }
  return out;
}"""


def test_other_origin_and_other_host_are_refused(server, attacker, caplog) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    url, dataset = server
    port = url.rsplit(":", 1)[1]
    with caplog.at_level(logging.WARNING, logger="labelwise.viewer.app"), sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page()
        page.goto(attacker)
        out = page.evaluate(ATTACK, url)
        assert out["preflighted"] == "blocked" and out["read"] == "blocked", out

        # DNS rebinding: evil.example now resolves to 127.0.0.1, so the browser treats the viewer as evil.example
        response = page.goto(f"http://evil.example:{port}/")
        assert response is not None and response.status == 403
        assert "labelwise-token" not in page.content()
        rebound = page.evaluate("async () => (await fetch('/api/cases')).status")
        assert rebound == 403

        # the loopback names of the bound port still work
        response = page.goto(f"http://localhost:{port}/")
        assert response is not None and response.status == 200
        page.wait_for_selector("#case-list li[data-case=case01]")
        browser.close()
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert any(m.startswith("refused POST /api/cases/case01/review") for m in refusals), refusals
    assert any(m.startswith("refused OPTIONS /api/cases/case01/review") for m in refusals), refusals
    assert any("evil.example" in m for m in refusals), refusals
    assert "case01" not in ReviewStore(dataset).reviews(), "a request from another origin wrote a review"
