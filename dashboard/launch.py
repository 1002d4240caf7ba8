"""Start the dashboard: ``streamlit run dashboard/app.py`` bound to 127.0.0.1 (called by ``infoscope app``).

The server runs headless (so Streamlit never asks a new user for an e-mail address) in its own process
group; ``infoscope app`` opens the browser itself once the port answers, forwards SIGTERM / SIGINT / SIGHUP
to that group and waits for it (SIGKILL after a grace period), so stopping ``infoscope app`` never leaves a
Streamlit server listening.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
import tomllib
import webbrowser
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"
LOCAL_ADDRESSES = ("127.0.0.1", "localhost", "::1")
GRACE_S = 10.0


def theme_flags(config: Path = CONFIG) -> list[str]:
    """``[theme]`` and ``[client]`` of ``.streamlit/config.toml`` as ``--section.key=value`` flags, so the app
    looks the same whatever directory it is started from."""
    if not config.is_file():
        return []
    conf = tomllib.loads(config.read_text())
    out = []
    for section in ("theme", "client"):
        for k, v in conf.get(section, {}).items():
            if isinstance(v, bool):
                out.append(f"--{section}.{k}={str(v).lower()}")
            elif isinstance(v, (str, int, float)):
                out.append(f"--{section}.{k}={v}")
    return out


def build_command(run: str | None, runs_dir: str, port: int, open_browser: bool = False) -> list[str]:
    """The ``streamlit run`` command line (paths made absolute: the server may run from another cwd). Always
    headless: the browser is opened by :func:`launch`, so Streamlit's first-run e-mail prompt never shows."""
    cmd = [sys.executable, "-m", "dashboard.serve", "run", str(APP), "--server.address", "127.0.0.1",
           "--server.port", str(int(port)), "--server.headless", "true",
           "--server.showEmailPrompt", "false",
           "--global.disableWidgetStateDuplicationWarning", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", *theme_flags(), "--",
           "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    if run:
        cmd += ["--run", str(Path(run).expanduser().resolve())]
    return cmd


def address_problem(address: str | None, environ: dict[str, str] | None = None) -> str:
    """Why the dashboard must not serve on ``address`` ("" when it may): anything but a loopback address
    (including Streamlit's default, all interfaces) is refused unless ``INFOSCOPE_ALLOW_REMOTE=1``."""
    env = os.environ if environ is None else environ
    if (address or "").strip() in LOCAL_ADDRESSES or env.get("INFOSCOPE_ALLOW_REMOTE") == "1":
        return ""
    shown = address or "all interfaces (Streamlit's default)"
    return (f"infoscope refuses to serve on {shown}: anyone on the network could read and change your "
            "curation. Start it with `infoscope app`, or `streamlit run dashboard/app.py --server.address "
            "127.0.0.1`; set INFOSCOPE_ALLOW_REMOTE=1 to serve on another address on purpose.")


def _stop(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """Signal the server's whole process group, wait, and SIGKILL it if it does not stop in time."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
        proc.wait(timeout=GRACE_S)
    except ProcessLookupError:
        return
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            return
        proc.wait()


def _open_browser_when_ready(port: int, proc: subprocess.Popen, timeout_s: float = 60.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                webbrowser.open(f"http://127.0.0.1:{port}")
                return
        except OSError:
            time.sleep(0.3)


def quiet_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: Streamlit's first-run e-mail prompt and usage statistics switched off
    through its ``STREAMLIT_*`` variables as well as the flags (a fresh machine has no
    ``~/.streamlit/credentials.toml``, and without these Streamlit would stop and ask for an e-mail address)."""
    env = dict(os.environ if base is None else base)
    env["STREAMLIT_SERVER_SHOW_EMAIL_PROMPT"] = "false"
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def launch(run: str | None, runs_dir: str, port: int, open_browser: bool) -> int:
    """Run the dashboard in the foreground until it exits or this process is told to stop (SIGTERM, SIGINT,
    SIGHUP are forwarded to the server's process group); returns streamlit's exit code, 0 when stopped."""
    proc = subprocess.Popen(build_command(run, runs_dir, port), start_new_session=True, env=quiet_env(),
                            stdin=subprocess.DEVNULL)
    stopped: list[int] = []

    def kill_if_alive() -> None:
        if proc.returncode is None:
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass

    def forward(signum, _frame) -> None:
        # only signal here: the main thread is inside proc.wait(), which must not be re-entered
        stopped.append(signum)
        try:
            os.killpg(proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        timer = threading.Timer(GRACE_S, kill_if_alive)
        timer.daemon = True
        timer.start()

    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    previous = {}
    if threading.current_thread() is threading.main_thread():
        previous = {s: signal.signal(s, forward) for s in handled}
    try:
        if open_browser:
            threading.Thread(target=_open_browser_when_ready, args=(port, proc), daemon=True).start()
        code = proc.wait()
        return 0 if stopped else code
    finally:
        _stop(proc)
        for s, h in previous.items():
            signal.signal(s, h)
