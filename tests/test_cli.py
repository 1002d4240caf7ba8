"""The command line, run as a user would: score → runs → export → re-import; clear errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from core.cli import app
from core.data import load_sources

runner = CliRunner()


def test_help_explains_every_option():
    out = runner.invoke(app, ["score", "--help"], terminal_width=200).output
    for opt in ["--source", "--label-noise", "--undersample", "--model", "--epochs", "--scores", "--device",
                "--seed", "--runs-dir", "--name", "--config", "--skip-bad", "--adversarial"]:
        assert opt in out, opt


def test_score_runs_export_roundtrip(tiny_sources, tmp_path):
    runs = tmp_path / "runs"
    res = subprocess.run([sys.executable, "-m", "core.cli", "score", "--source", tiny_sources[0], "--epochs", "1",
                          "--scores", "loss,margin,cg_score", "--map", "pca", "--label-noise", "0.1",
                          "--runs-dir", str(runs), "--name", "cli"], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    run_path = Path(res.stdout.strip().splitlines()[-1])
    assert run_path.parent == runs and (run_path / "manifest.json").exists()

    listed = runner.invoke(app, ["runs", "--runs-dir", str(runs)], env={"COLUMNS": "300"}).output
    assert run_path.name in listed and "complete" in listed and "cg_score" in listed

    out = tmp_path / "export"
    res = runner.invoke(app, ["export", "--run", str(run_path), "--where", "label_name = '2'", "--format", "csv",
                              "--out", str(out)])
    assert res.exit_code == 0, res.output
    exported = (out / "selection.csv").read_text().splitlines()
    assert exported[0].startswith("path,label,source") and len(exported) > 1
    assert all(",2,mnist," in line for line in exported[1:])
    res = runner.invoke(app, ["export", "--run", str(run_path), "--curated", "--format", "folder",
                              "--out", str(tmp_path / "folder")])
    assert res.exit_code == 0, res.output
    back = load_sources([f"back=folder:{tmp_path / 'folder'}"])
    assert len(back) == 600 and back.class_names == [str(i) for i in range(10)]


def test_clear_errors_exit_2(tmp_path):
    res = runner.invoke(app, ["score", "--source", f"x=folder:{tmp_path / 'nope'}", "--runs-dir", str(tmp_path)])
    assert res.exit_code == 2 and "nope" in res.output and "Traceback" not in res.output
    res = runner.invoke(app, ["export", "--run", str(tmp_path / "missing"), "--curated", "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "no run directory" in res.output
    res = runner.invoke(app, ["export", "--run", str(tmp_path), "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "exactly one of" in res.output
