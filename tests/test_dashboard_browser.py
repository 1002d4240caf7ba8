"""Browser tests: Playwright drives Debian's chromium against ``streamlit run`` on 127.0.0.1.

They open every page (no exception shown), lasso-select on the map and see the grid change, make a decision and
see it after a reload, and export files that load back as sources. Screenshots of every page are written to
the test's tmp dir, and into ``assets/screenshot-<page>.png`` when ``INFOSCOPE_SAVE_SCREENSHOTS=1``.

The review walk of issue 13, step by step: a detail view from each page and *More like this* from it
(``test_every_page_at_1440_nothing_clipped_and_detail_from_each_page``, ``test_detail_view_keys_and_more_like_this``);
a view in the URL survives a reload and a saved view loads the same grid
(``test_view_survives_reload_and_saved_view_loads``, ``test_a_deep_link_first_on_a_fresh_server_keeps_the_navigation``);
ten flagged images reviewed with the keyboard only on the Flagged page
(``test_review_ten_flagged_cards_with_the_keyboard``); a confusion-matrix cell opens its images
(``test_confusion_cell_opens_its_images``); the duplicates view opens (``test_duplicates_view_opens``).
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
import pytest
from dashboard_fixtures import TinyRun, write_tiny_run

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        "--enable-unsafe-swiftshader"]  # software WebGL for the Scattergl map
PAGES = {"overview": "", "classes": "classes", "sources": "sources", "flagged": "flagged", "explore": "explore"}
TITLES = {"overview": "Overview", "classes": "Classes", "sources": "Sources", "flagged": "Flagged images",
          "explore": "Explore & export", "confusion": "Confusion", "duplicates": "Near-duplicates",
          "health": "Dataset health", "similar": "More like this", "score": "Score a dataset"}
REVIEW_PAGES = {"confusion": "confusion", "duplicates": "duplicates", "health": "health", "similar": "similar",
                "score": "score"}


def _need_chromium() -> None:
    if not Path(CHROMIUM).exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{CHROMIUM} is missing (install Debian's chromium); CI=true, so this is a failure")
        pytest.skip(f"{CHROMIUM} is missing: install Debian's chromium (apt-get install chromium) to run these")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def browser_run(tmp_path_factory, mnist_arrays) -> TinyRun:
    x, y = mnist_arrays
    return write_tiny_run(tmp_path_factory.mktemp("browser_runs"), x, y, per_class=24, missing_image=False)


def start_server(run: TinyRun) -> tuple[subprocess.Popen, str, object]:
    """``python -m dashboard.serve run dashboard/app.py`` (what ``infoscope app`` runs) on a free 127.0.0.1 port."""
    _need_chromium()
    port = _free_port()
    cmd = [sys.executable, "-m", "dashboard.serve", "run", str(ROOT / "dashboard" / "app.py"),
           "--server.address", "127.0.0.1", "--server.port", str(port), "--server.headless", "true",
           "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
           "--client.toolbarMode", "minimal",
           "--", "--run", str(run.path), "--runs-dir", str(run.path.parent)]
    log = open(run.path.parent / f"streamlit-{port}.log", "wb")  # noqa: SIM115 - closed by stop_server
    proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while True:
        try:
            if urllib.request.urlopen(f"{url}/_stcore/health", timeout=2).read() == b"ok":
                return proc, url, log
        except OSError:
            pass
        if proc.poll() is not None or time.time() > deadline:
            stop_server(proc, log)
            raise RuntimeError(f"streamlit did not start: {(run.path.parent / f'streamlit-{port}.log').read_text()}")
        time.sleep(0.3)


def stop_server(proc: subprocess.Popen, log) -> None:
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
    log.close()


@pytest.fixture(scope="module")
def server(browser_run) -> Iterator[str]:
    """The dashboard on the module's run; killed after the module."""
    proc, url, log = start_server(browser_run)
    try:
        yield url
    finally:
        stop_server(proc, log)


@pytest.fixture(scope="module")
def browser(server):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield b
        b.close()


@pytest.fixture()
def page(browser):
    ctx = browser.new_context(viewport={"width": 1440, "height": 1800}, accept_downloads=True)
    pg = ctx.new_page()
    yield pg
    ctx.close()


def settle(pg, title: str, timeout: float = 45) -> None:
    """Wait for the page title, then until Streamlit has stopped running for a moment."""
    pg.get_by_role("heading", level=1, name=title).wait_for(timeout=timeout * 1000)
    wait_quiet(pg, timeout)


def wait_quiet(pg, timeout: float = 45) -> None:
    """Wait until Streamlit has stopped running (no status widget, skeleton or stale element) for a second."""
    deadline, quiet_since = time.time() + timeout, None
    while time.time() < deadline:
        running = (pg.locator('[data-testid="stStatusWidget"]').count() > 0
                   or pg.locator('[data-testid="stSkeleton"]').count() > 0
                   or pg.locator('[data-stale="true"]').count() > 0)
        if running:
            quiet_since = None
        elif quiet_since is None:
            quiet_since = time.time()
        elif time.time() - quiet_since > 1.0:
            return
        time.sleep(0.1)
    raise AssertionError("the app kept running")


def open_page(pg, server: str, name: str) -> None:
    pg.goto(f"{server}/{PAGES.get(name, REVIEW_PAGES.get(name))}")
    settle(pg, TITLES[name])


def no_exception(pg) -> None:
    exc = pg.locator('[data-testid="stException"]')
    assert exc.count() == 0, exc.first.inner_text()


def match_count(pg) -> int:
    text = pg.get_by_text(re.compile(r"image\(s\) match")).first.inner_text()
    return int(re.search(r"([\d,]+) image\(s\) match", text).group(1).replace(",", ""))


# ---- tests ----------------------------------------------------------------------------------------
def test_every_page_opens_and_screenshots(page, server, tmp_path) -> None:
    save = os.environ.get("INFOSCOPE_SAVE_SCREENSHOTS") == "1"
    for name in PAGES:
        open_page(page, server, name)
        no_exception(page)
        assert page.locator('[data-testid="stSidebar"]').get_by_text("Run", exact=True).count() == 1
        time.sleep(1.0)  # let plotly finish drawing
        shot = tmp_path / f"screenshot-{name}.png"
        page.screenshot(path=str(shot), full_page=True)
        assert shot.stat().st_size > 20_000
        if save:
            shutil.copy(shot, ROOT / "assets" / f"screenshot-{name}.png")


def test_lasso_on_map_filters_grid(page, server, browser_run) -> None:
    open_page(page, server, "explore")
    assert match_count(page) == browser_run.n
    drag = page.locator('[data-testid="stPlotlyChart"] .nsewdrag').first
    drag.wait_for()
    box = drag.bounding_box()
    x0, y0, w, h = box["x"], box["y"], box["width"], box["height"]
    # a lasso around the left half of the map
    path = [(0.02, 0.02), (0.5, 0.02), (0.5, 0.98), (0.02, 0.98), (0.02, 0.03)]
    page.mouse.move(x0 + path[0][0] * w, y0 + path[0][1] * h)
    page.mouse.down()
    for fx, fy in path[1:]:
        page.mouse.move(x0 + fx * w, y0 + fy * h, steps=8)
    page.mouse.up()
    page.get_by_text(re.compile(r"Grid restricted to the")).wait_for(timeout=30_000)
    settle(page, TITLES["explore"])
    n = match_count(page)
    assert 0 < n < browser_run.n
    grid = page.locator('[data-testid="stImage"]')
    assert grid.count() == min(n, 24)
    page.get_by_role("button", name="Clear map selection").click()
    page.get_by_text(f"{browser_run.n:,} image(s) match").wait_for(timeout=30_000)


def test_decision_survives_reload_and_undo(page, server) -> None:
    open_page(page, server, "flagged")
    assert page.get_by_text("Decision: remove").count() == 0
    page.locator(".st-key-fl_card_box_0").get_by_role("button", name="Remove").click()  # the card's own button
    page.get_by_text(re.compile(r"Recorded remove")).wait_for(timeout=30_000)
    page.reload()
    settle(page, TITLES["flagged"])
    assert page.get_by_text("Decision: remove").count() >= 1
    assert page.get_by_text(re.compile(r"Last: remove")).count() == 1
    # undo from the sidebar, reload: the decision is gone
    page.get_by_role("button", name="Undo last decision").click()
    page.get_by_text(re.compile(r"Undid batch")).wait_for(timeout=30_000)
    page.reload()
    settle(page, TITLES["flagged"])
    assert page.get_by_text("Decision: remove").count() == 0
    assert page.get_by_text("Every decision has been undone.").count() == 1


def test_export_files_load_back(page, server, browser_run, tmp_path) -> None:
    from core.data.sources import load_one, parse_spec

    open_page(page, server, "explore")
    for i, (fmt_label, fmt, out) in enumerate((("CSV", "csv", tmp_path / "csv"),
                                               ("Image folders", "folder", tmp_path / "folder"))):
        page.get_by_text(re.compile(fmt_label)).first.click()
        time.sleep(0.5)
        settle(page, TITLES["explore"])
        box = page.get_by_role("textbox", name="Export folder (must be empty or new)")
        box.fill(str(out))
        box.press("Enter")
        time.sleep(1.0)  # let the rerun start before waiting for it to end
        settle(page, TITLES["explore"])
        # tmp_path lies outside the runs folder: the export waits for an explicit confirmation (asked once)
        if i == 0:
            assert page.get_by_role("button", name="Export selection").is_disabled()
            page.get_by_text("Yes, write the export outside the runs folder").click()
            time.sleep(0.5)
            settle(page, TITLES["explore"])
        page.get_by_role("button", name="Export selection").click()
        try:
            page.locator('[data-testid="stAlert"]').filter(has_text=f"Exported to {out}").wait_for(timeout=90_000)
        except Exception:
            page.screenshot(path=str(tmp_path / "export-failure.png"), full_page=True)
            shutil.copy(tmp_path / "export-failure.png", "/tmp/export-failure.png")
            raise
        settle(page, TITLES["explore"])
        with page.expect_download() as dl:
            page.get_by_role("button", name="Download as zip").click()
        data = Path(dl.value.path()).read_bytes()
        names = zipfile.ZipFile(io.BytesIO(data)).namelist()
        if fmt == "csv":
            # the zip holds the CSV and its images, the CSV's paths relative to the zip
            assert "selection.csv" in names and sum(n.startswith("images/") for n in names) == browser_run.n
            table = pd.read_csv(out / "selection.csv")
            assert len(table) == browser_run.n
            raw = load_one(parse_spec(f"back=csv:{out / 'selection.csv'}"), out, skip_bad=False)
            unzipped = tmp_path / "unzipped"
            zipfile.ZipFile(io.BytesIO(data)).extractall(unzipped)
            rel = pd.read_csv(unzipped / "selection.csv")["path"]
            assert not rel.str.startswith("/").any()
            assert len(load_one(parse_spec(f"z=csv:{unzipped / 'selection.csv'}"), unzipped, skip_bad=False)) == \
                browser_run.n
        else:
            assert "index.csv" in names and sum(n.endswith(".png") for n in names) == browser_run.n
            raw = load_one(parse_spec(f"back=folder:{out}"), out, skip_bad=False)
        assert len(raw) == browser_run.n


# ---- the review workflow (issue 13) ---------------------------------------------------------------------
def grid_ids(pg) -> list[str]:
    """Sample ids of the grid thumbnails (each image carries its sample id as alt text)."""
    return [a for a in pg.locator('[data-testid="stMain"] [data-testid="stImage"] img').evaluate_all(
        "els => els.map(e => e.alt)") if a]


def test_detail_view_keys_and_more_like_this(page, server) -> None:
    open_page(page, server, "explore")
    first = grid_ids(page)[:2]
    page.get_by_role("button", name="Details").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("1 of 24 in this list").wait_for(timeout=30_000)
    wait_quiet(page)  # the dialog's body renders after its header on a loaded machine
    dialog.get_by_text(first[0]).first.wait_for(timeout=30_000)
    dialog.get_by_text("percentile in class").or_(dialog.locator('[data-testid="stDataFrame"]')).first.wait_for(
        timeout=30_000)
    page.keyboard.press("ArrowRight")  # the Next button's shortcut
    dialog.get_by_text("2 of 24 in this list").wait_for(timeout=30_000)
    assert dialog.get_by_text(first[1]).count() >= 1
    dialog.get_by_role("button", name="More like this").click()
    settle(page, TITLES["similar"])
    no_exception(page)
    assert len(grid_ids(page)) == 1 + 48  # the query image and its 48 most similar images


def focused_index(pg) -> int | None:
    """Position on the page of the card that has the keyboard focus (its box holds the focus badge)."""
    return pg.evaluate("""() => {
        const m = document.querySelector('.st-key-fl_focus_mark');
        const box = m && m.closest('[class*="st-key-fl_card_box_"]');
        if (!box) return null;
        const cls = [...box.classList].find(c => c.startsWith('st-key-fl_card_box_'));
        return parseInt(cls.slice('st-key-fl_card_box_'.length));
    }""")


def test_review_ten_flagged_cards_with_the_keyboard(page, server, browser_run) -> None:
    """The walk's keyboard step on the Flagged page itself: K ten times (no mouse), each decision redraws only
    the cards it changed (no full rerun: the page's title is never sent again), the focus moves on visibly and
    lives in the URL, a reload comes back to it, U undoes."""
    from core.store import open_run

    frames: list[bytes] = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda f: frames.append(f if isinstance(f, bytes)
                                                                              else f.encode())))
    page.goto(f"{server}/flagged?flag_per_page=16")
    settle(page, TITLES["flagged"])
    assert page.get_by_text(re.compile(r"Keys act on the outlined card")).count() == 1  # the legend
    n_cards = page.locator('[class*="st-key-fl_card_box_"]').count()
    assert n_cards >= 11, n_cards
    assert focused_index(page) == 0
    outline = page.locator(".st-key-fl_card_box_0").evaluate("e => getComputedStyle(e).outlineStyle")
    assert outline == "solid" and page.locator(".st-key-fl_card_box_1").evaluate(
        "e => getComputedStyle(e).outlineStyle") == "none"
    ids = page.locator('[class*="st-key-fl_card_box_"] [data-testid="stImage"] img[alt]').evaluate_all(
        "els => els.map(e => e.alt)")
    times = []
    for i in range(1, 11):
        wait_quiet(page)  # a key pressed while the cards are re-rendering can be lost on a loaded machine
        frames.clear()
        t0 = time.time()
        page.keyboard.press("k")  # keep the outlined card, focus the next one
        deadline = time.time() + 60
        while focused_index(page) != i and time.time() < deadline:
            time.sleep(0.02)
        times.append(time.time() - t0)
        assert focused_index(page) == i
        wait_quiet(page)
        assert not any(b"Flagged images" in f for f in frames), "a decision reran the whole page"
        assert any(ids[i - 1].encode() in f for f in frames)  # the decided card was redrawn
    latest = open_run(browser_run.path).decisions.latest().set_index("sample_id")
    assert sorted(latest.index[latest["decision"] == "keep"]) == sorted(ids[:10])
    assert page.locator(".st-key-fl_card_box_9").get_by_text("Decision: keep").count() == 1
    assert json.loads(urllib.parse.parse_qs(urllib.parse.urlparse(page.url).query)["flag_focus"][0]) == ids[10]
    page.reload()
    settle(page, TITLES["flagged"])
    assert focused_index(page) == 10  # the focus and the page size came back from the URL
    page.keyboard.press("u")  # undo the last keep: its card takes the focus back
    page.get_by_text(re.compile(r"Undid batch")).wait_for(timeout=30_000)
    wait_quiet(page)
    assert focused_index(page) == 9
    latest = open_run(browser_run.path).decisions.latest()
    assert (latest["decision"] == "keep").sum() == 9
    # while the detail view is open its buttons carry the keys: K decides once, there, not on the cards too
    n_log = len(open_run(browser_run.path).decisions.history())
    page.locator(".st-key-fl_card_box_9").get_by_role("button", name="Details").click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text(re.compile(r"\d+ of \d+ in this list")).wait_for(timeout=30_000)
    wait_quiet(page)
    page.keyboard.press("k")
    dialog.get_by_text(re.compile(r"Recorded keep")).wait_for(timeout=30_000)
    wait_quiet(page)
    assert len(open_run(browser_run.path).decisions.history()) == n_log + 1
    page.keyboard.press("Escape")
    dialog.wait_for(state="detached", timeout=30_000)
    wait_quiet(page)
    assert focused_index(page) == 9
    page.keyboard.press("ArrowRight")  # and the keys are back on the cards
    deadline = time.time() + 30
    while focused_index(page) != 10 and time.time() < deadline:
        time.sleep(0.05)
    assert focused_index(page) == 10
    print(f"keyboard decision on a card -> next card focused: median {sorted(times)[5]:.2f} s")


def test_confusion_cell_opens_its_images(page, server) -> None:
    open_page(page, server, "confusion")
    no_exception(page)
    button = page.get_by_role("button", name=re.compile(r"^given \S+ → predicted \S+: \d+$")).first
    n = int(button.inner_text().rsplit(":", 1)[1])
    button.click()
    page.get_by_role("heading", name=re.compile(r"^Given .*image\(s\)")).wait_for(timeout=30_000)
    settle(page, TITLES["confusion"])
    assert len(grid_ids(page)) == min(n, 24)


def test_duplicates_view_opens(page, server) -> None:
    open_page(page, server, "duplicates")
    no_exception(page)
    assert page.get_by_text("Pairs", exact=True).count() == 1
    assert page.get_by_text(re.compile(r"^cosine 0\.\d{4}")).count() >= 1


def test_view_survives_reload_and_saved_view_loads(page, server) -> None:
    open_page(page, server, "explore")
    before = grid_ids(page)
    page.get_by_text("Highest first").click()  # lowest first: another grid
    page.wait_for_url(re.compile(r"ex_desc=false"), timeout=30_000)
    settle(page, TITLES["explore"])
    low = grid_ids(page)
    assert low and low != before
    page.reload()
    settle(page, TITLES["explore"])
    assert grid_ids(page) == low  # the URL holds the view
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Saved views", exact=True).click()
    sidebar.get_by_label("Name").fill("lowest first")
    sidebar.get_by_label("Name").press("Enter")
    settle(page, TITLES["explore"])
    sidebar.get_by_role("button", name="Save this view").click()
    sidebar.get_by_text("Saved the view").wait_for(timeout=30_000)
    page.get_by_text("Highest first").click()
    page.wait_for_url(re.compile(r"ex_desc=true"), timeout=30_000)
    settle(page, TITLES["explore"])
    assert grid_ids(page) == before
    sidebar.get_by_role("button", name="Load").click()
    sidebar.get_by_text("Loaded the view").wait_for(timeout=30_000)
    settle(page, TITLES["explore"])
    assert grid_ids(page) == low


#: Text cut off in the DOM: every visible text node of the main area, the sidebar and a dialog whose box pokes out
#: of an ancestor that hides overflow (ellipsis, ``overflow: hidden/clip``), unless a scrollable ancestor
#: (``overflow: auto/scroll``, deliberately scrollable) comes first; and every select box whose chosen option is
#: wider than the box. Canvas grids and plotly charts are checked separately / not at all; text typed into text
#: inputs (deliberately scrollable) is not checked.
CLIPPED_TEXT_JS = """() => {
  const out = [];
  const tag = (el) => { const t = el.closest('[data-testid]'); return t ? t.getAttribute('data-testid') : el.tagName; };
  for (const root of document.querySelectorAll('[data-testid="stMain"], [data-testid="stSidebar"], [role="dialog"]')) {
    const w = document.createTreeWalker(root, NodeFilter.SHOW_TEXT);
    for (let n = w.nextNode(); n; n = w.nextNode()) {
      const text = n.textContent.trim();
      const el = n.parentElement;
      if (!text || el.closest('canvas, svg, .js-plotly-plot, [data-testid="stDataFrame"], script, style')) continue;
      const range = document.createRange();
      range.selectNodeContents(n);
      const r = range.getBoundingClientRect();
      if (r.width === 0 && r.height === 0) continue;  // not displayed
      for (let a = el; a && a !== root.parentElement; a = a.parentElement) {
        const cs = getComputedStyle(a), ar = a.getBoundingClientRect();
        if (cs.display === 'none' || cs.visibility === 'hidden' || ar.width === 0 || ar.height === 0) break;
        if (cs.overflowX === 'auto' || cs.overflowX === 'scroll') break;
        const hides = (o) => o === 'hidden' || o === 'clip';
        if ((hides(cs.overflowX) && (r.right > ar.right + 1 || r.left < ar.left - 1))
            || (hides(cs.overflowY) && (r.bottom > ar.bottom + 1 || r.top < ar.top - 1))) {
          out.push({text: text.slice(0, 80), element: tag(el), px: Math.round(Math.max(r.right - ar.right, r.bottom - ar.bottom))});
          break;
        }
      }
    }
    // a select box shows its choice in an input: cut off when the text is wider than the box
    for (const inp of root.querySelectorAll('input[role="combobox"]')) {
      if (inp.offsetParent !== null && inp.value && inp.scrollWidth > inp.clientWidth + 1)
        out.push({text: inp.value.slice(0, 80), element: tag(inp), px: inp.scrollWidth - inp.clientWidth});
    }
  }
  return out;
}"""

#: Cells and headers cut off in Streamlit's canvas grids (st.dataframe, glide-data-grid): the grid's own column
#: widths and cell texts, read from its React props (the canvas has no text to measure), each text measured with
#: the grid's own font plus its cell padding on both sides. First 200 rows of every grid on screen. A grid whose
#: columns are wider than its box (columns hidden until a sideways scroll) counts as clipped too.
CLIPPED_GRID_JS = """() => {
  const out = [];
  const ctx = document.createElement('canvas').getContext('2d');
  document.querySelectorAll('[data-testid="stDataFrame"]').forEach((grid, gi) => {
    const c = grid.querySelector('canvas[data-testid="data-grid-canvas"]');
    if (!c || c.getBoundingClientRect().width === 0) return;
    const k = Object.keys(c).find(k => k.startsWith('__reactFiber'));
    let f = k && c[k], p = null;
    for (let d = 0; f && d < 80 && !p; d++, f = f.return) {
      const q = f.memoizedProps || {};
      if (Array.isArray(q.columns) && q.getCellContent && q.theme && q.columns.every(x => typeof x.width === 'number')) p = q;
    }
    if (!p) { out.push({grid: gi, problem: 'could not read the grid columns'}); return; }
    const th = p.theme, pad = th.cellHorizontalPadding;
    const total = p.columns.reduce((a, x) => a + x.width, 0);
    if (total > c.getBoundingClientRect().width + 1)  // some columns only show after a sideways scroll
      out.push({grid: gi, problem: 'columns wider than the grid', need: total, width: Math.round(c.getBoundingClientRect().width)});
    const rows = Math.min(200, Number(c.querySelector('table').getAttribute('aria-rowcount')) - 1);
    p.columns.forEach((col, ci) => {
      ctx.font = th.headerFontFull;
      const head = ctx.measureText(col.title).width + 2 * pad;
      if (head > col.width + 1) out.push({grid: gi, column: col.title, header: true, need: Math.round(head), width: col.width});
      ctx.font = th.baseFontFull;
      for (let r = 0; r < rows; r++) {
        const cell = p.getCellContent([ci, r]);
        if (typeof cell.displayData !== 'string') continue;  // progress bars, images, checkboxes
        const need = ctx.measureText(cell.displayData).width + 2 * pad;
        if (need > col.width + 1) { out.push({grid: gi, column: col.title, text: cell.displayData.slice(0, 60), need: Math.round(need), width: col.width}); break; }
      }
    });
  });
  return out;
}"""


def clipped(pg) -> list[dict]:
    return pg.evaluate(CLIPPED_TEXT_JS) + pg.evaluate(CLIPPED_GRID_JS)


def test_every_page_at_1440_nothing_clipped_and_detail_from_each_page(page, server) -> None:
    """At 1440 px no page is wider than the window and no text is cut off (labels, metric labels, buttons, table
    cells and headers, grid cells and headers; overview's evidence tabs one by one; the detail view); a thumbnail
    of every page with images opens the detail view, and from Classes, Sources and Flagged its *More like this*
    shows the image and its 48 most similar images (from Explore: ``test_detail_view_keys_and_more_like_this``)."""
    found = {}
    for name in ("overview", "classes", "sources", "flagged", "health", "confusion", "duplicates", "similar",
                 "score", "explore"):
        open_page(page, server, name)
        no_exception(page)
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 1440, (name, width)
        found[name] = clipped(page)
        if name == "overview":  # every tab of every tab group (the summary's, the evidence's), then back
            groups = page.locator('[data-testid="stMain"] [role="tablist"]')
            for g in range(groups.count()):
                tabs = groups.nth(g).locator('[role="tab"]')
                for t in [*range(1, tabs.count()), 0]:
                    tabs.nth(t).click()
                    time.sleep(0.3)
                    found[f"overview tabs {g}, tab {t}"] = clipped(page)
        if name in ("health", "confusion", "similar", "score"):
            continue  # their grids open from a count / a cell / a query (tested above), or have none
        page.get_by_role("button", name="Details").first.click()
        dialog = page.get_by_role("dialog")
        header = dialog.get_by_text(re.compile(r"\d+ of \d+ in this list"))
        header.wait_for(timeout=30_000)
        wait_quiet(page)
        if name == "explore":
            dialog.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=30_000)
            found["detail view"] = clipped(page)
        if name in ("classes", "sources", "flagged"):  # the walk: search similar from the detail view
            sid = header.locator("code").first.inner_text()
            dialog.get_by_role("button", name="More like this").click()
            settle(page, TITLES["similar"])
            no_exception(page)
            shown = grid_ids(page)
            assert shown[0] == sid and len(shown) == 1 + 48 and sid not in shown[1:], (name, sid, shown[:3])
            continue
        page.keyboard.press("Escape")
        dialog.wait_for(state="detached", timeout=30_000)
    bad = {k: v for k, v in found.items() if v}
    assert not bad, bad


def test_clicking_a_thumbnail_opens_it(page, server) -> None:
    open_page(page, server, "explore")
    first = grid_ids(page)[0]
    page.locator('[data-testid="stMain"] [data-testid="stImage"] img').first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_text("1 of 24 in this list").wait_for(timeout=30_000)
    assert dialog.get_by_text(first).count() >= 1


def test_a_deep_link_first_on_a_fresh_server_keeps_the_navigation(browser, browser_run) -> None:
    """A saved or shared view opened as the very first request of a new server: the app's own navigation, the
    view's grid (Streamlit would otherwise fall back to its pages-folder mode for the whole server)."""
    proc, url, log = start_server(browser_run)
    ctx = browser.new_context(viewport={"width": 1440, "height": 1800})
    try:
        pg = ctx.new_page()
        pg.goto(f"{url}/explore?ex_classes=%5B%227%22%5D")
        settle(pg, TITLES["explore"])
        nav = pg.locator('[data-testid="stSidebarNav"]')
        assert nav.get_by_text("Explore & export").count() == 1 and nav.get_by_text("app", exact=True).count() == 0
        assert re.search(r"\d+ image\(s\) match: class ∈ \{7\}", pg.get_by_text(re.compile(r"image\(s\) match"))
                         .first.inner_text())
    finally:
        ctx.close()
        stop_server(proc, log)
