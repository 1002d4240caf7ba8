"""Terminal hygiene (issue 13, item 9): ``infoscope app`` never stops at Streamlit's first-run e-mail prompt, and
pipeline progress is printed line by line when stderr is not a terminal."""

from __future__ import annotations

import os
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from core.cli import LineReporter

ROOT = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_line_reporter_prints_one_line_per_event() -> None:
    lines: list[str] = []
    t = iter([0.0, 2.5, 10.0, 10.0])
    rep = LineReporter(lines.append, every=0.25, clock=lambda: next(t))
    rep("train", "", 0.0)
    for i in range(1, 11):  # ten fractional updates with the same message: only the 25 % steps are printed
        rep("train", "epoch", i / 10)
    rep("train", "done", 1.0)
    rep("map", "", 0.0)
    rep("map", "umap", None)
    rep("map", "done", 1.0)
    assert lines[0] == "[train] started"
    assert lines[1] == "[train] 10% epoch"  # a new message always prints
    assert lines[2:5] == ["[train] 40% epoch", "[train] 70% epoch", "[train] 100% epoch"]
    assert lines[5] == "[train] done in 2.5 s"
    assert lines[6:] == ["[map] started", "[map] umap", "[map] done in 0.0 s"]
    assert all("\r" not in line for line in lines)


def _serve_and_read(args: list[str], home: Path, runs: Path) -> tuple[bool, str]:
    """Start the CLI in a fresh HOME; return (page served, everything it printed in the first seconds)."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("STREAMLIT_")}
    env.update(HOME=str(home), BROWSER="true", DISPLAY="", PYTHONPATH=str(ROOT), INFOSCOPE_RUNS=str(runs))
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "app", "--port", str(port), "--runs-dir", str(runs),
                             *args], cwd=home, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True)
    out = b""
    served = False
    try:
        deadline = time.time() + 60
        while time.time() < deadline and proc.poll() is None:
            r, _, _ = select.select([proc.stdout], [], [], 0.3)
            if r:
                out += os.read(proc.stdout.fileno(), 65536)
            if b"Email" in out:
                break
            try:
                if urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health", timeout=2).read() == b"ok":
                    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).read()
                    served = b"<html" in page.lower() or b"<!doctype html" in page.lower()
                    time.sleep(1.0)  # anything printed right after start-up
                    r, _, _ = select.select([proc.stdout], [], [], 0.5)
                    if r:
                        out += os.read(proc.stdout.fileno(), 65536)
                    break
            except OSError:
                pass
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
    return served, out.decode(errors="replace")


@pytest.mark.parametrize("args", [["--no-browser"], []], ids=["no-browser", "browser"])
def test_app_never_asks_for_an_email(tmp_path, args) -> None:
    home = tmp_path / "home"
    home.mkdir()
    served, out = _serve_and_read(args, home, tmp_path / "runs")
    assert "Email" not in out and "email" not in out.lower(), out
    assert served, out
    assert "127.0.0.1" in out  # the URL is printed
    assert not (home / ".streamlit" / "credentials.toml").exists()  # nothing written into the user's home
