"""Scoring jobs started from the dashboard. The dashboard never trains: it starts ``python -m core.cli score …``
as a separate process (bound to nothing, stdin closed) and reads the progress lines the CLI prints when its
stderr is not a terminal (``core.cli.LineReporter``: ``[step] started``, ``[step] 40% message``,
``[step] done in 1.2 s``); the run's path is the last line the CLI prints on stdout.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import streamlit as st

ROOT = Path(__file__).resolve().parents[2]
LINE = re.compile(r"^\[(?P<step>[^\]]+)\](?: (?P<pct>\d{1,3})%)?(?: (?P<msg>.*))?$")


@dataclass
class Progress:
    """What the progress lines say so far."""

    step: str = ""
    fraction: float = 0.0
    message: str = ""
    done: list[tuple[str, float]] = field(default_factory=list)
    error: str = ""


def parse_progress(lines: list[str]) -> Progress:
    """Fold the CLI's progress lines into the current step, its fraction and message, and the finished steps."""
    p = Progress()
    for raw in lines:
        line = raw.strip()
        if line.startswith("error:"):
            p.error = line[len("error:"):].strip()
            continue
        m = LINE.match(line)
        if not m:
            continue
        step, pct, msg = m.group("step"), m.group("pct"), (m.group("msg") or "").strip()
        done = re.fullmatch(r"done in ([\d.]+) s", msg)
        if done and pct is None:
            p.done.append((step, float(done.group(1))))
            p.step, p.fraction, p.message = step, 1.0, "done"
            continue
        if msg == "started" and pct is None:
            p.step, p.fraction, p.message = step, 0.0, ""
            continue
        p.step = step
        if pct is not None:
            p.fraction = min(max(int(pct) / 100.0, 0.0), 1.0)
        p.message = msg
    return p


@dataclass
class Job:
    """One ``infoscope score`` process and what it printed."""

    cmd: list[str]
    proc: subprocess.Popen
    started: float
    err_lines: list[str] = field(default_factory=list)
    out_lines: list[str] = field(default_factory=list)

    @property
    def returncode(self) -> int | None:
        return self.proc.poll()

    @property
    def run_path(self) -> str | None:
        """The run directory the CLI printed (None until it finished successfully)."""
        if self.returncode != 0:
            return None
        for line in reversed(self.out_lines):
            if line.strip() and Path(line.strip()).is_dir():
                return line.strip()
        return None

    def progress(self) -> Progress:
        return parse_progress(list(self.err_lines))

    def cancel(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)


def _pump(stream, sink: list[str]) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line.rstrip("\n"))
    stream.close()


def start(args: list[str], runs_dir: str | Path) -> Job:
    """Start ``python -m core.cli score ARGS --runs-dir RUNS_DIR`` in the background."""
    cmd = [sys.executable, "-m", "core.cli", "score", *args, "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "PYTHONPATH": os.pathsep.join(
        [str(ROOT), *([os.environ["PYTHONPATH"]] if os.environ.get("PYTHONPATH") else [])])}
    proc = subprocess.Popen(cmd, cwd=os.getcwd(), env=env, stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                            start_new_session=True)
    job = Job(cmd=cmd, proc=proc, started=time.time())
    threading.Thread(target=_pump, args=(proc.stdout, job.out_lines), daemon=True).start()
    threading.Thread(target=_pump, args=(proc.stderr, job.err_lines), daemon=True).start()
    return job


@st.cache_resource
def registry() -> dict[str, Job]:
    """Jobs by id, shared by the sessions of this server (a job survives a page reload)."""
    return {}
