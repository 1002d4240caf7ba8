"""SI head cost against n: the wide ReLU head (n×n algebra) and the exact linear head ((d+1)×(d+1) algebra).

Run: .venv/bin/python bench/bench_si_linear.py [--sizes 2000 5000 20000 50000 200000] [--dims 48 512]
     (writes bench/results/si_linear.md; then `python bench/collect.py`)

Workload: the features the SI sees at scale, i.e. one head problem: n training rows of d-dimensional features
(a cross-fitted SmallCNN gives d = 48, a resnet18 backbone d = 512), 10 classes, 300 held-out rows, λ = 1e-3,
early stopping on the held-out MSE (``t = "auto"``), every row's leave-one-out si_weights and si_function. The
features are real: MNIST-5k digits embedded by a fixed random projection followed by a ReLU (rows beyond 5,000
reuse digits with 1–2 pixel shifts), so rows have the structure (classes, near duplicates) of image features.
Each problem is solved by ``core.scores.si_crossfit.solve_problem`` (the pipeline's path) with ``head`` forced;
the ReLU head only up to 5,000 rows (its O(n³) eigendecomposition; the default switches to the linear head
above ``max_problem`` = 5,000). Wall time and peak RSS of the solve (a fresh interpreter per cell), and the
growth exponent log(t₂/t₁)/log(n₂/n₁).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent


def features(n: int, d: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(x (n, d), labels (n,), x_val (300, d), labels_val) from MNIST-5k through a fixed random ReLU map."""
    from core.data.sources import _mnist5k_arrays

    x, y = _mnist5k_arrays()
    x = x.reshape(len(x), 28, 28)
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(784, d)) / 28.0
    idx = rng.permutation(len(x))[np.arange(n + 300) % len(x)]  # every prefix has every class
    imgs = x[idx].astype(np.float32)
    shift = (np.arange(n + 300) // len(x)) > 0
    for i in np.flatnonzero(shift):
        imgs[i] = np.roll(imgs[i], tuple(rng.integers(-2, 3, 2)), axis=(0, 1))
    f = np.maximum(imgs.reshape(len(imgs), -1) @ w, 0.0)
    lab = y[idx].astype(np.int64)
    return f[:n], lab[:n], f[n:], lab[n:]


def one(n: int, d: int, head: str) -> dict:
    import torch

    from core.scores.si_crossfit import HeadProblem, solve_problem

    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    x, y, xv, yv = features(n, d)
    labels = np.concatenate([y, yv])
    prob = HeadProblem(rows=np.arange(n), x=x, val_rows=np.arange(n, n + 300), xv=xv, source="bench", head=head)
    base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    t0 = time.perf_counter()
    out = solve_problem(prob, labels, 10, lam=1e-3, t="auto", sigma=0.01)
    wall = time.perf_counter() - t0
    assert np.isfinite(out["si_weights"]).all() and np.isfinite(out["si_function"]).all()
    return {"n": n, "d": d, "head": head, "wall_s": round(wall, 3), "eta_t": out["eta_t"],
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "rss_before_mb": round(base), "val_acc": out["val_acc"]}


def quality(seeds: list[int], rows: int) -> list[dict]:
    """The two heads on the same cross-fitted features of a real run: MNIST (``rows`` digits, 10% symmetric
    label noise, seeds never used by the other benches), SI columns only, one cross-fitting. Mislabel AUROC of
    each head's columns on training rows and the Spearman between the heads' rankings."""
    import tempfile

    import pandas as pd
    from scipy import stats
    from sklearn.metrics import roc_auc_score

    from core.data.sources import _mnist5k_arrays
    from core.pipeline import RunConfig, score_run

    x, y = _mnist5k_arrays()
    out = []
    with tempfile.TemporaryDirectory(prefix="infoscope-si-linear-") as tmp:
        sel = np.random.default_rng(0).permutation(len(x))[:rows]
        src = Path(tmp) / "mnist.npz"
        np.savez(src, x=x[sel], y=y[sel])
        for seed in seeds:
            cols = {}
            for head in ("relu", "linear"):
                cfg = RunConfig(sources=[f"mnist=npz:{src}"], runs_dir=f"{tmp}/runs", scores=["si_weights", "si_function"],
                                map_method="pca", seed=seed, label_noise=0.1, name=f"{head}-{seed}",
                                score_params={"si_function": {"head": head, "repeats": 1}})
                df = pd.read_parquet(score_run(cfg) / "samples.parquet")
                tr = df[df.split == "train"]
                cols[head] = tr
            r = {"seed": seed, "rows": rows}
            for head, tr in cols.items():
                for c in ("si_weights", "si_function"):
                    r[f"auroc_{head}_{c}"] = round(float(roc_auc_score(tr.is_mislabeled, tr[c])), 4)
            for c in ("si_weights", "si_function"):
                r[f"spearman_{c}"] = round(float(stats.spearmanr(cols["relu"][c], cols["linear"][c])[0]), 4)
            out.append(r)
            print(r, flush=True)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[2000, 5000, 20000, 50000, 200000])
    ap.add_argument("--dims", type=int, nargs="+", default=[48, 512])
    ap.add_argument("--relu-max", type=int, default=5000)
    ap.add_argument("--one", nargs=3, help=argparse.SUPPRESS)
    ap.add_argument("--quality-seeds", type=int, nargs="*", default=[21, 22])
    ap.add_argument("--quality-rows", type=int, default=5000)
    args = ap.parse_args()
    if args.one:
        n, d, head = args.one
        print(json.dumps(one(int(n), int(d), head)))
        return
    results = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    for d in args.dims:
        for n in args.sizes:
            for head in ("relu", "linear"):
                if head == "relu" and n > args.relu_max:
                    continue
                out = subprocess.run([sys.executable, __file__, "--one", str(n), str(d), head], capture_output=True,
                                     text=True, env=env, check=True)
                r = json.loads(out.stdout.strip().splitlines()[-1])
                r["load"] = round(os.getloadavg()[0], 1)
                results.append(r)
                print(r, flush=True)
    (HERE / "results" / "si_linear.json").write_text(json.dumps(results, indent=1))
    lines = [
        "## SI head cost against n: wide ReLU head vs exact linear head (`bench/bench_si_linear.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores (shared with other jobs; 1-min load after "
        f"each cell {min(r['load'] for r in results)}–{max(r['load'] for r in results)}), no GPU, "
        f"OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. Command: "
        f"`OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', '1')} .venv/bin/python bench/bench_si_linear.py "
        f"--sizes {' '.join(map(str, args.sizes))} --dims {' '.join(map(str, args.dims))}`.",
        "",
        "One head problem as the pipeline solves it (``solve_problem``): early stopping on 300 held-out rows, then "
        "every row's exact leave-one-out si_weights and si_function; features from MNIST digits through a fixed "
        "random ReLU map (see the module docstring). Peak RSS is the whole interpreter's (torch included). The "
        "held-out accuracy only shows that each head was trained (early stopping picked a sensible time); from "
        "n = 5,000 on the held-out rows are shifted copies of training digits, so it is not comparable across n.",
        "",
        "| d | n | head | wall (s) | peak RSS (MB) | held-out acc of the head |",
        "| ---: | ---: | --- | ---: | ---: | ---: |",
    ]
    for r in results:
        lines.append(f"| {r['d']} | {r['n']:,} | {r['head']} | {r['wall_s']:.2f} | {r['peak_rss_mb']:,} | "
                     f"{r['val_acc']:.3f} |")
    lines.append("")
    for d in args.dims:
        for head in ("relu", "linear"):
            rs = [r for r in results if r["d"] == d and r["head"] == head]
            ex = [f"{a['n']:,}→{b['n']:,}: {math.log(b['wall_s'] / a['wall_s']) / math.log(b['n'] / a['n']):.2f}"
                  for a, b in zip(rs, rs[1:], strict=False)]
            if ex:
                lines.append(f"- d = {d}, {head} head: time exponent " + ", ".join(ex))
    same = [(r, s) for r in results for s in results
            if r["head"] == "relu" and s["head"] == "linear" and r["n"] == s["n"] and r["d"] == s["d"]]
    if same:
        lines.append("- linear ÷ ReLU head time at the same n: " + ", ".join(
            f"d={r['d']} n={r['n']:,}: {s['wall_s'] / r['wall_s']:.3f}" for r, s in same))
    lines.append("")
    if args.quality_seeds:
        q = quality(args.quality_seeds, args.quality_rows)
        lines += [
            "### Do the two heads measure the same thing? (same cross-fitted features, real runs)",
            "",
            f"MNIST, {args.quality_rows:,} digits, 10% symmetric label noise, `score_run` with the SI columns only "
            "and one cross-fitting (``repeats = 1``), once with ``head = relu`` and once with ``head = linear`` "
            "(same seed: the same folds and fold networks). Seeds " + ", ".join(map(str, args.quality_seeds))
            + " are used by no other bench.",
            "",
            "| seed | AUROC mislabeled: ReLU si_weights / si_function | linear si_weights / si_function | "
            "Spearman ReLU vs linear: si_weights / si_function |",
            "| ---: | --- | --- | --- |",
        ]
        for r in q:
            lines.append(f"| {r['seed']} | {r['auroc_relu_si_weights']:.3f} / {r['auroc_relu_si_function']:.3f} | "
                         f"{r['auroc_linear_si_weights']:.3f} / {r['auroc_linear_si_function']:.3f} | "
                         f"{r['spearman_si_weights']:.3f} / {r['spearman_si_function']:.3f} |")
        lines.append("")
        (HERE / "results" / "si_linear_quality.json").write_text(json.dumps(q, indent=1))
    (HERE / "results" / "si_linear.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
