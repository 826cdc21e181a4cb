"""End-to-end: the viewer in a real headless Chromium (Debian's), driven by Playwright.

Besides reviewing and correcting, it checks the defences of issue 15 in a real browser: text from untrusted files
(quality.csv, review files) renders as text and runs no script, the page works under its Content-Security-Policy,
another origin can neither write nor read, and a foreign Host (DNS rebinding, simulated with Chromium's
``--host-resolver-rules``) gets nothing.

Needs /usr/bin/chromium (or $LABELWISE_CHROMIUM) and the `playwright` package (its bundled driver; no browser
download). `.ci/run` installs both; elsewhere the test skips with the reason, and fails when CI=true.
"""

from __future__ import annotations

import contextlib
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


def _wait_until(page, expression: str, timeout_s: float = 60.0) -> None:  # type: ignore[no-untyped-def]
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
    with _serve(ViewerState(tmp_path / "ds", qa_csv=qa)) as url:
        yield url, tmp_path / "ds"


@contextlib.contextmanager
def _serve(state: ViewerState) -> Iterator[str]:
    """Run the viewer for ``state`` on a free loopback port in a thread; yield its URL."""
    import uvicorn

    port = _free_port()
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
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
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
        page.select_option("#queue-strategy", "qa-table")  # every row of quality.csv, as read
        first_row = "document.querySelector('#case-list li')?.dataset.case"
        _wait_until(page, f"document.querySelectorAll('#case-list li').length === 2 && {first_row} !== 'case01'")
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


# ----------------------------------------------------------------------------------------------- working all day
def _text(page, element: str) -> str:  # type: ignore[no-untyped-def]
    return str(page.evaluate(f"document.getElementById('{element}').textContent"))


def _stroke(page, dx: int = 0) -> None:  # type: ignore[no-untyped-def]
    box = page.locator("#canvas").bounding_box()
    assert box is not None
    page.mouse.move(box["x"] + 40 + dx, box["y"] + 40)
    page.mouse.down()
    page.mouse.move(box["x"] + 80 + dx, box["y"] + 60, steps=4)
    page.mouse.up()


def _picture_becomes(page, canvas, ok, timeout_s: float = 5.0) -> bool:  # type: ignore[no-untyped-def]
    """Whether a screenshot of ``canvas`` satisfies ``ok`` within ``timeout_s`` (drawing is asynchronous)."""
    deadline = time.monotonic() + timeout_s
    while not ok(canvas.screenshot()):
        if time.monotonic() > deadline:
            return False
        page.wait_for_timeout(50)
    return True


def test_keyboard_shortcuts(server) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    url, dataset = server
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        problems = _csp_watch(page)
        page.goto(url)
        page.wait_for_selector("#case-list li[data-case=case02]")
        # the queue: `labelwise next` by the strategy chosen, each case with its reason
        page.click("#tab-queue")
        page.select_option("#queue-strategy", "disagreement")
        _wait_until(page, "document.getElementById('queue-info').textContent.startsWith('disagreement: 1 of 1')")
        assert page.locator("#case-list li").count() == 1  # case02 is flagged already: left out
        assert "pairwise Dice" in page.inner_text("#case-list li[data-case=case01] .reason")
        page.select_option("#queue-strategy", "random")
        _wait_until(page, "document.getElementById('queue-info').textContent.startsWith('random')")
        assert "random draw" in page.inner_text("#case-list li[data-case=case01] .reason")
        page.click("#tab-cases")

        title = "document.getElementById('case-title').textContent"
        page.keyboard.press("n")
        _wait_until(page, f"{title} === 'case01'")
        page.keyboard.press("j")
        _wait_until(page, f"{title} === 'case02'")
        page.keyboard.press("p")
        _wait_until(page, f"{title} === 'case01'")

        page.keyboard.press("?")
        assert page.is_visible("#help") and "brush size" in page.inner_text("#help")
        page.keyboard.press("a")  # the overlay is modal: nothing happens
        page.keyboard.press("Escape")
        assert not page.is_visible("#help")

        page.click("#comment")
        page.keyboard.type("fair")  # "f" and "a" are shortcuts, but not while typing
        assert page.input_value("#comment") == "fair"
        assert "case01" not in ReviewStore(dataset).reviews()
        page.click("#case-title")  # focus leaves the text field
        page.keyboard.press("a")
        _wait_until(page, "document.getElementById('review-state').textContent.includes('accept')")
        assert ReviewStore(dataset).reviews()["case01"][-1]["comment"] == "fair"

        page.select_option("#edit-base", "empty")
        page.click("#case-title")
        page.keyboard.press("b")
        page.keyboard.press("]")
        page.keyboard.press("]")
        page.keyboard.press("[")
        _wait_until(page, "document.getElementById('brush-size-label').textContent === '4'")  # keys act in order
        assert page.input_value("#brush-size") == "4"
        assert "active" in (page.get_attribute("#tool-brush", "class") or "")

        canvas = page.locator("#canvas")
        clean = canvas.screenshot()
        _stroke(page)
        _wait_until(page, "document.getElementById('edits').textContent.includes('slice 1')")
        assert _picture_becomes(page, canvas, lambda shot: shot != clean), "the stroke is not drawn"
        page.keyboard.press("Control+z")  # undo the stroke: nothing unsaved, the picture as before
        _wait_until(page, "document.getElementById('edits').textContent === ''")
        assert _picture_becomes(page, canvas, lambda shot: shot == clean), "undo did not restore the picture"
        page.keyboard.press("Control+Shift+Z")  # redo
        _wait_until(page, "document.getElementById('edits').textContent.includes('slice 1')")
        page.keyboard.press("s")
        _wait_until(page, "document.getElementById('status').textContent.includes('saved version 1')")
        store = ReviewStore(dataset)
        saved = store.latest("case01", 2)
        assert saved is not None and saved[8, 8] == 1 and store.versions("case01")[0].base == "empty"

        page.keyboard.press("Control+z")  # no stroke left: undo the saved version as a new one
        _wait_until(page, "document.getElementById('status').textContent.includes('saved as v2')")
        restored = store.latest("case01", 2)
        assert restored is not None and int(restored.sum()) == 0
        assert store.versions("case01")[-1].base == "revert of v0001"
        page.keyboard.press("y")  # redo: the stroke is back, as v3
        _wait_until(page, "document.getElementById('status').textContent.includes('as v3')")
        again = store.latest("case01", 2)
        assert again is not None and (again == saved).all()
        browser.close()
    assert problems == []


@pytest.fixture()
def server3d(tmp_path: Path):  # type: ignore[no-untyped-def]
    _requirements()
    zz, yy, xx = np.mgrid[:6, :48, :48]
    ball = ((yy - 24) ** 2 + (xx - 22) ** 2 < (12 - abs(zz - 3)) ** 2).astype(np.int16).transpose(1, 2, 0)
    image = (100 + 80 * ball + np.random.default_rng(0).normal(0, 4, ball.shape)).astype("f4")[None]
    w = DatasetWriter(tmp_path / "ds3", "browser-3d", 3, ["background", "lesion"], ["r1"])
    w.add_case("vol01", image, {"r1": ball})
    w.finish()
    run = tmp_path / "run"
    run.mkdir()
    (run / "meta.json").write_text('{"status": "finished"}', encoding="utf-8")
    with _serve(ViewerState(tmp_path / "ds3", run_dir=run)) as url:
        yield url, tmp_path / "ds3"


def test_slices_propagation_proposal_and_changed_filter(server3d) -> None:  # type: ignore[no-untyped-def]
    from playwright.sync_api import sync_playwright

    url, dataset = server3d
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        problems = _csp_watch(page)
        page.goto(url)
        page.wait_for_selector("#case-list li[data-case=vol01]")
        page.keyboard.press("n")
        _wait_until(page, "document.getElementById('case-title').textContent === 'vol01'")
        start = int(page.input_value("#slice"))
        slice_is = "document.getElementById('slice').value === '{}'"
        page.keyboard.press("ArrowUp")
        _wait_until(page, slice_is.format(start + 1))
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        _wait_until(page, slice_is.format(start - 1))
        page.keyboard.press("ArrowUp")
        _wait_until(page, slice_is.format(start))
        z = start

        page.select_option("#edit-base", "rater/r1")
        page.click("#case-title")
        page.keyboard.press("e")  # erase a bite out of the lesion, save, propagate
        _stroke(page, dx=40)
        page.keyboard.press("s")
        _wait_until(page, "document.getElementById('status').textContent.includes('saved version 1')")
        page.keyboard.press("g")
        _wait_until(page, "document.querySelectorAll('#proposal-list li').length > 0")
        rows = page.locator("#proposal-list li")
        assert rows.count() == 5  # every other slice of the 6
        assert "confidence" in rows.first.inner_text()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer_proposal.png"))
        store = ReviewStore(dataset)
        assert len(store.versions("vol01")) == 1, "a proposal is not saved until accepted"

        page.keyboard.press("ArrowUp")
        page.keyboard.press("Enter")  # accept the proposal on this slice
        _wait_until(page, f"document.getElementById('status').textContent.includes('accepted slice {z + 2}')")
        assert rows.count() == 4
        (accepted,) = [v for v in store.versions("vol01") if v.action == "propagate"]
        assert accepted.slices == (z + 1,)
        page.keyboard.press("ArrowDown")
        page.keyboard.press("ArrowDown")
        page.keyboard.press("Delete")  # discard the one below the painted slice
        _wait_until(page, "document.querySelectorAll('#proposal-list li').length === 3")
        assert len(store.versions("vol01")) == 2
        page.keyboard.press("Control+z")  # undo the accepted slice: v3 restores v1
        _wait_until(page, "document.getElementById('status').textContent.includes('saved as v3')")
        first, last = store.read(store.versions("vol01")[0]), store.latest("vol01", 3)
        assert last is not None and (first == last).all()

        page.select_option("#filter-changed", "since")  # the run's meta.json is older than every correction
        _wait_until(page, "document.getElementById('status').textContent.includes('changed since the last model')")
        assert page.locator("#case-list li").count() == 1
        assert "correction v3" in page.inner_text("#case-list li")
        page.fill("#filter-since", "2999-01-01")
        page.dispatch_event("#filter-since", "change")
        _wait_until(page, "document.querySelectorAll('#case-list li').length === 0")
        browser.close()
    assert problems == []
