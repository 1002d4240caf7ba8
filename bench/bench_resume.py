"""What resumable runs cost and save: the time spent committing stage outputs in an uninterrupted run, and the
wall time of ``infoscope score --resume`` after a kill -9 late in a run, against the uninterrupted run.

Run: .venv/bin/python bench/bench_resume.py [--kill-after STAGE]   (writes bench/results/resume.md)

Recipe: MNIST-5k (bundled), 10% label noise, 2% FGSM copies, every score, PCA map (no UMAP compilation), one
CPU thread. The uninterrupted run is scored in this process with ``StageLedger.commit`` timed; the killed run
and its resume are CLI subprocesses (the kill comes from the ``INFOSCOPE_KILL_AFTER_STAGE`` test hook).
Equality of the resumed scores with an uninterrupted run is checked by ``tests/test_resume.py``, not here.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")

HERE = Path(__file__).parent
ARGS = ["--source", "mnist=mnist5k", "--label-noise", "0.1", "--adversarial", "0.02", "--map", "pca",
        "--device", "cpu", "--seed", "0", "--name", "bench-resume"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kill-after", default="score.cg_score", help="stage after which the run is killed")
    kill_after = ap.parse_args().kill_after

    import core.stages as stages
    from core.pipeline import RunConfig, score_run

    spent = {"s": 0.0, "n": 0, "bytes": 0}
    commit = stages.StageLedger.commit

    def timed(self, name, inputs, out, wall, output_fp=None):
        t = time.perf_counter()
        fp = commit(self, name, inputs, out, wall, output_fp)
        spent["s"] += time.perf_counter() - t
        spent["n"] += 1
        spent["bytes"] += sum(f["bytes"] for f in self.state["stages"][name]["files"].values())
        return fp

    stages.StageLedger.commit = timed
    load0 = os.getloadavg()[0]
    env = {**os.environ, "PYTHONPATH": str(HERE.parent)}
    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(sources=["mnist=mnist5k"], label_noise=0.1, adversarial=0.02, map_method="pca",
                        device="cpu", seed=0, runs_dir=f"{tmp}/full", name="bench-resume")
        t0 = time.perf_counter()
        score_run(cfg)
        full = time.perf_counter() - t0
        t0 = time.perf_counter()
        killed = subprocess.run([sys.executable, "-m", "core.cli", "score", *ARGS, "--runs-dir", f"{tmp}/killed"],
                                capture_output=True, text=True, env={**env, "INFOSCOPE_KILL_AFTER_STAGE": kill_after})
        to_kill = time.perf_counter() - t0
        if killed.returncode != -9:
            raise SystemExit(f"the run was not killed (status {killed.returncode}): {killed.stderr[-500:]}")
        (run,) = Path(f"{tmp}/killed").iterdir()
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "core.cli", "score", "--resume", str(run)], capture_output=True,
                       text=True, env=env, check=True)
        resume = time.perf_counter() - t0
    lines = [
        "## Resumable runs: commit cost and resume time (`bench/bench_resume.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, one thread; load "
        f"average before/after {load0:.1f} / {os.getloadavg()[0]:.1f}. Command: "
        f"`.venv/bin/python bench/bench_resume.py --kill-after {kill_after}`.",
        "",
        "Recipe: MNIST-5k, 10% label noise, 2% FGSM copies, every score, PCA map.",
        "",
        "| what | figure |",
        "| --- | ---: |",
        f"| uninterrupted run (in process) | {full:.1f} s |",
        f"| of which committing stage outputs ({spent['n']} commits, {spent['bytes'] / 1e6:.1f} MB in `stages/`) "
        f"| {spent['s']:.2f} s ({spent['s'] / full:.1%}) |",
        f"| CLI run until kill -9 after `{kill_after}` | {to_kill:.1f} s |",
        f"| `infoscope score --resume` to completion (fresh process) | {resume:.1f} s ({resume / full:.2f}× the "
        "uninterrupted run) |",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "resume.md").write_text(text)


if __name__ == "__main__":
    main()
