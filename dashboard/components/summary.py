"""Summary helpers of the Overview page: the retraining comparison, run by the engine in a subprocess.

The dashboard never trains: ``retrain_comparison`` starts ``python -m core.cli evaluate-summary`` (core's
``core.summary_eval``) in a child process, follows its ``progress DONE/TOTAL`` lines with a progress bar and
parses its final ``result {json}`` line.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import streamlit as st

REPO = Path(__file__).resolve().parents[2]
MODEL_LABELS = {"logistic": "logistic head on the run's embeddings (seconds)",
                "ridge": "ridge head on the run's embeddings (fastest)",
                "network": "a fresh network of the run's architecture on the images (slower)"}


def evaluate_command(run_path: Path, ids_file: Path, model: str, k_random: int, include_flagged: bool) -> list[str]:
    """The engine command that compares the summary with random subsets."""
    cmd = [sys.executable, "-m", "core.cli", "evaluate-summary", "--run", str(run_path), "--ids", str(ids_file),
           "--model", model, "--random", str(int(k_random))]
    if include_flagged:
        cmd += ["--include-flagged", "--include-removed"]
    return cmd


def retrain_comparison(run_path: Path, ids: list[str], model: str, k_random: int, include_flagged: bool,
                       timeout_s: float = 600.0) -> dict:
    """Run the comparison in a subprocess with a progress bar; returns the engine's result dict.

    Raises ``RuntimeError`` with the engine's error line when it fails.
    """
    bar = st.progress(0.0, text="Starting the engine…")
    with tempfile.TemporaryDirectory(prefix="infoscope-summary-") as tmp:
        ids_file = Path(tmp) / "ids.txt"
        ids_file.write_text("\n".join(ids))
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in (str(REPO), os.environ.get("PYTHONPATH"))
                                                             if p)}
        proc = subprocess.Popen(evaluate_command(run_path, ids_file, model, k_random, include_flagged),
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO), env=env)
        result: dict | None = None
        assert proc.stdout is not None
        for line in proc.stdout:
            line = line.strip()
            if line.startswith("progress "):
                parts = line.split(" ", 2)
                done, total = (int(v) for v in parts[1].split("/"))
                bar.progress(done / max(total, 1), text=f"Trained {done} of {total} models ({parts[2] if len(parts) > 2 else ''})")
            elif line.startswith("result "):
                result = json.loads(line.removeprefix("result "))
        try:
            err = proc.communicate(timeout=timeout_s)[1]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise RuntimeError("the comparison took too long and was stopped") from None
    bar.empty()
    if proc.returncode != 0 or result is None:
        last = [ln for ln in (err or "").strip().splitlines() if ln.strip()]
        raise RuntimeError(last[-1] if last else f"the engine exited with status {proc.returncode}")
    return result
