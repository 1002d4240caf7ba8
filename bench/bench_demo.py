"""Time the demo recipe end to end (issue: it must finish in under 5 minutes on a 2-core CPU).

Run: .venv/bin/python bench/bench_demo.py   (writes bench/results/demo.md)

A fresh interpreter is used, like `infoscope demo --no-app`, so UMAP's numba compilation (paid once per
process) is included.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).parent
BUDGET_S = 300.0


def main() -> None:
    load0 = f"{os.getloadavg()[0]:.1f}"
    with tempfile.TemporaryDirectory() as runs:
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, "-m", "core.cli", "demo", "--no-app", "--runs-dir", runs, "--device", "cpu"],
                             capture_output=True, text=True, check=True)
        wall = time.perf_counter() - t0
        run = Path(out.stdout.strip().splitlines()[-1])
        m = json.loads((run / "manifest.json").read_text())
    steps = sorted(m["steps"].items(), key=lambda kv: -kv[1])
    lines = [
        "## Demo recipe wall time (`bench/bench_demo.py`)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPU cores, no GPU; "
        f"torch {m['versions']['torch']}. Command: `.venv/bin/python bench/bench_demo.py`.",
        "",
        f"Recipe: {', '.join(s['name'] + '=' + s['spec'] for s in m['sources'])}; n = {m['n_samples']} rows; "
        f"{', '.join(c['kind'] for c in m['corruptions'])}; scores: {', '.join(m['scores'])}.",
        "",
        f"**Total: {wall:.1f} s** for `infoscope demo --no-app` in a fresh process (load average before/after: "
        f"{load0} / {os.getloadavg()[0]:.1f}; budget {BUDGET_S:.0f} s: "
        f"{'within' if wall <= BUDGET_S else 'OVER'} budget, {wall / BUDGET_S:.2f}× of it).",
        "",
        "| step | wall time (s) | share |",
        "| --- | ---: | ---: |",
        *[f"| {k} | {v:.1f} | {v / wall:.0%} |" for k, v in steps],
        "",
        f"Model: {m['model']['name']} ({m['model']['n_params']} parameters), train accuracy "
        f"{m['model']['train_acc']:.3f}, test accuracy {m['model']['test_acc']:.3f}.",
        "",
    ]
    text = "\n".join(lines)
    print(text)
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "demo.md").write_text(text)


if __name__ == "__main__":
    main()
