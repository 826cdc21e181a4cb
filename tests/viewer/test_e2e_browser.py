"""End-to-end: the viewer in a real headless Chromium (Debian's), driven by Playwright.

Needs /usr/bin/chromium (or $LABELWISE_CHROMIUM) and the `playwright` package (its bundled driver; no browser
download). `.ci/run` installs both; elsewhere the test skips with the reason, and fails when CI=true.
"""

from __future__ import annotations

import os
import shutil
import socket
import threading
import time
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
]


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
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = uvicorn.Config(create_app(ViewerState(tmp_path / "ds")), host="127.0.0.1", port=port, log_level="error")
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
        page.goto(url)
        page.click("#case-list li[data-case=case01]")
        page.wait_for_selector("#layer-rater-r2")
        canvas = page.locator("#canvas")
        page.wait_for_function("document.getElementById('canvas').width > 256")
        before = canvas.screenshot()
        page.check("#layer-rater-r2")
        page.wait_for_timeout(300)
        assert canvas.screenshot() != before, "toggling a rater overlay did not change the picture"

        page.fill("#user", "e2e-tester")
        page.fill("#comment", "boundary ok")
        page.click("#btn-accept")
        page.wait_for_function("document.getElementById('review-state').textContent.includes('accept')")

        page.select_option("#edit-base", "empty")
        page.click("#tool-brush")
        box = canvas.bounding_box()
        assert box is not None
        page.mouse.move(box["x"] + 40, box["y"] + 40)
        page.mouse.down()
        page.mouse.move(box["x"] + 80, box["y"] + 60, steps=5)
        page.mouse.up()
        page.click("#btn-save")
        page.wait_for_function("document.getElementById('status').textContent.includes('saved version 1')")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "viewer_case.png"))
        browser.close()

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
