"""Start the dashboard: ``streamlit run dashboard/app.py`` bound to 127.0.0.1 (called by ``infoscope app``)."""

from __future__ import annotations

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
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP), "--server.address", "127.0.0.1",
           "--server.port", str(int(port)), "--server.headless", str(not open_browser).lower(),
           "--browser.gatherUsageStats", "false", "--client.toolbarMode", "minimal", *theme_flags(), "--",
           "--runs-dir", str(Path(runs_dir).expanduser().resolve())]
    if run:
        cmd += ["--run", str(Path(run).expanduser().resolve())]
    return cmd


def launch(run: str | None, runs_dir: str, port: int, open_browser: bool) -> int:
    """Run the dashboard in the foreground until interrupted; returns streamlit's exit code."""
    cmd = build_command(run, runs_dir, port, open_browser)
    try:
        return subprocess.call(cmd)
    except KeyboardInterrupt:
        return 0
