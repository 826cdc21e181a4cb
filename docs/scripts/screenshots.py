"""Regenerate the README's screenshots (docs/images/report.png, docs/images/viewer.png) from the current demo.

    labelwise demo --out labelwise-demo          # the full demo (the screenshots show its real numbers)
    python docs/scripts/screenshots.py labelwise-demo

Needs Debian's chromium (/usr/bin/chromium or $LABELWISE_CHROMIUM), the ``playwright`` package and the ``[viewer]``
extra (all in ``.[dev]``). The report is opened as a file; the viewer is served on a free loopback port in this
process, opened on the review queue's first case with the consensus and prediction layers on.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = os.environ.get("LABELWISE_CHROMIUM", shutil.which("chromium") or "/usr/bin/chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("demo", type=Path, help="Output folder of `labelwise demo`.")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "images", help="Where to write the PNGs.")
    args = parser.parse_args()
    demo: Path = args.demo
    for needed in ("report.html", "data", "pred/dpersona", "qa/quality.csv"):
        if not (demo / needed).exists():
            raise SystemExit(f"{demo / needed}: missing; run `labelwise demo --out {demo}` first")

    import uvicorn
    from playwright.sync_api import sync_playwright

    from labelwise.viewer import ViewerState, create_app

    port = _free_port()
    app = create_app(ViewerState(demo / "data", demo / "pred" / "dpersona", demo / "qa" / "quality.csv"), port=port)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=FLAGS)
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.goto((demo / "report.html").resolve().as_uri())
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(args.out / "report.png"), full_page=False)

            page.goto(f"http://127.0.0.1:{port}/")
            page.click("#tab-queue")
            page.click("#case-list li >> nth=0")
            for _ in range(200):  # the page's CSP forbids eval, so no wait_for_function: poll instead
                if page.evaluate("() => document.getElementById('canvas').width > 256"):
                    break
                page.wait_for_timeout(50)
            for layer in ("#layer-consensus", "#layer-pred"):
                if page.locator(layer).count():
                    page.check(layer)
            page.wait_for_timeout(500)
            page.screenshot(path=str(args.out / "viewer.png"), full_page=False)
            browser.close()
    finally:
        server.should_exit = True
        thread.join(timeout=10)
    print(f"wrote {args.out / 'report.png'} and {args.out / 'viewer.png'}")  # noqa: T201 - a script's result


if __name__ == "__main__":
    main()
