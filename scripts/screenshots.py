"""Take the README screenshots (assets/screenshot-<page>.png) of every dashboard page on a real run.

Run: .venv/bin/python scripts/screenshots.py --run runs/<demo run>   (needs Debian's /usr/bin/chromium)
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

from playwright.sync_api import sync_playwright

from dashboard.launch import build_command

ROOT = Path(__file__).resolve().parents[1]
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-unsafe-swiftshader"]
PAGES = {"overview": ("", "Overview"), "classes": ("classes", "Classes"), "sources": ("sources", "Sources"),
         "flagged": ("flagged", "Flagged images"), "explore": ("explore", "Explore & export")}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _settle(pg, title: str) -> None:
    pg.get_by_role("heading", level=1, name=title).wait_for(timeout=90_000)
    quiet = None
    for _ in range(900):
        busy = pg.locator('[data-testid="stStatusWidget"], [data-testid="stSkeleton"], [data-stale="true"]').count()
        quiet = None if busy else (quiet or time.time())
        if quiet and time.time() - quiet > 1.5:
            return
        time.sleep(0.1)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--run", required=True, type=Path)
    ap.add_argument("--out", type=Path, default=ROOT / "assets")
    args = ap.parse_args()
    port = _free_port()
    cmd = build_command(str(args.run), str(args.run.parent), port, open_browser=False)
    server = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        for _ in range(120):
            try:
                urllib.request.urlopen(f"{url}/_stcore/health", timeout=1)
                break
            except OSError:
                time.sleep(0.5)
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
            pg = browser.new_context(viewport={"width": 1440, "height": 1500}).new_page()
            for name, (path, title) in PAGES.items():
                pg.goto(f"{url}/{path}")
                _settle(pg, title)
                shot = args.out / f"screenshot-{name}.png"
                pg.screenshot(path=str(shot), full_page=False)
                print("wrote", shot)
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)


if __name__ == "__main__":
    main()
