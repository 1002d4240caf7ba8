"""Start the dashboard: ``streamlit run dashboard/app.py`` bound to 127.0.0.1 (called by ``infoscope app``)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

APP = Path(__file__).resolve().parent / "app.py"
CONFIG = Path(__file__).resolve().parent.parent / ".streamlit" / "config.toml"


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


def build_command(run: str | None, runs_dir: str, port: int, open_browser: bool) -> list[str]:
    """The ``streamlit run`` command line (paths made absolute: the server may run from another cwd)."""
    cmd = [sys.executable, "-m", "dashboard.serve", "run", str(APP), "--server.address", "127.0.0.1",
           "--server.port", str(int(port)), "--server.headless", str(not open_browser).lower(),
           "--server.showEmailPrompt", "false",
           "--global.disableWidgetStateDuplicationWarning", "true", "--browser.gatherUsageStats", "false",
           "--client.toolbarMode", "minimal", *theme_flags(), "--",
           "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    if run:
        cmd += ["--run", str(Path(run).expanduser().resolve())]
    return cmd


def quiet_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for the server: Streamlit's first-run e-mail prompt and usage statistics switched off
    through its ``STREAMLIT_*`` variables as well as the flags (a fresh machine has no
    ``~/.streamlit/credentials.toml``, and without these Streamlit would stop and ask for an e-mail address)."""
    env = dict(os.environ if base is None else base)
    env["STREAMLIT_SERVER_SHOW_EMAIL_PROMPT"] = "false"
    env["STREAMLIT_BROWSER_GATHER_USAGE_STATS"] = "false"
    return env


def launch(run: str | None, runs_dir: str, port: int, open_browser: bool) -> int:
    """Run the dashboard in the foreground until interrupted; returns streamlit's exit code."""
    cmd = build_command(run, runs_dir, port, open_browser)
    try:
        return subprocess.call(cmd, env=quiet_env(), stdin=subprocess.DEVNULL)
    except KeyboardInterrupt:
        return 0
