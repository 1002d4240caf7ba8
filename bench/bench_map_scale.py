"""The 2-D map at 200,000 rows: the default (UMAP) fitted on a 50,000-row sample, every other row placed by
``transform``; wall time and peak RSS per size, against fitting on every row where that is affordable.

Run: .venv/bin/python bench/bench_map_scale.py --features RUN/embeddings.npy [--sizes 50000 100000 200000]
     (writes bench/results/map_scale.md; then `python bench/collect.py`)

Features: a scored run's ``embeddings.npy`` (for instance the 200,000-row run of ``bench/bench_scale.py
--workdir DIR``), the first n rows for each size. Each size runs in a fresh interpreter (``--one``) so the
numba compilation of umap-learn is paid once per size and reported apart: a warm-up fit on 1,000 rows is timed
first, then the measured ``map_2d`` call. Peak RSS is the process's ru_maxrss.
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


def one(features: Path, n: int, max_fit: int | None) -> dict:
    """Time ``map_2d`` (UMAP, the default) on the first ``n`` rows of ``features`` in this process."""
    from core.embedding import MAP_MAX_FIT, map_2d

    x = np.load(features, mmap_mode="r")[:n].astype(np.float32)
    t0 = time.perf_counter()
    map_2d(x[:1000], method="umap", seed=0)  # numba compilation, paid once per process
    warm = time.perf_counter() - t0
    t0 = time.perf_counter()
    coords = map_2d(x, method="umap", seed=0, max_fit=MAP_MAX_FIT if max_fit is None else max_fit)
    wall = time.perf_counter() - t0
    if not np.isfinite(coords).all():
        raise SystemExit("map produced non-finite coordinates")
    return {"n": n, "d": int(x.shape[1]), "max_fit": MAP_MAX_FIT if max_fit is None else max_fit,
            "warmup_s": round(warm, 1), "wall_s": round(wall, 1),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "load": round(os.getloadavg()[0], 1)}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", required=True, help="an (n, d) float32 .npy, e.g. a run's embeddings.npy")
    ap.add_argument("--sizes", type=int, nargs="+", default=[50_000, 100_000, 200_000])
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--max-fit", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(Path(args.features), args.one, args.max_fit)))
        return
    have = len(np.load(args.features, mmap_mode="r"))
    if max(args.sizes) > have:
        sys.exit(f"{args.features} has {have:,} rows, fewer than {max(args.sizes):,}")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    results = []
    for n in args.sizes:
        out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--features", args.features,
                              "--one", str(n)], stdout=subprocess.PIPE, text=True, env=env, check=True)
        results.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(json.dumps(results[-1]), flush=True)
    lines = [
        "## The 2-D map at scale (`bench/bench_map_scale.py`)",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU; 1-min load at the start of each size: "
        f"{', '.join(str(r['load']) for r in results)}. Command: `.venv/bin/python bench/bench_map_scale.py "
        f"{' '.join(sys.argv[1:])}`.",
        "",
        f"Features: the first n rows of a scored run's `embeddings.npy` ({results[0]['d']}-d). The default map "
        f"(UMAP, n_neighbors 15) is fitted on a seeded sample of at most {results[0]['max_fit']:,} rows and the "
        "other rows are placed by `transform`. Each size in a fresh interpreter; umap-learn's numba compilation "
        "is paid by a 1,000-row warm-up fit first (its time is the second column) and is not in the map's time.",
        "",
        "| n | warm-up (compilation) s | map s | peak RSS MB |",
        "| ---: | ---: | ---: | ---: |",
        *[f"| {r['n']:,} | {r['warmup_s']} | {r['wall_s']} | {r['peak_rss_mb']:,} |" for r in results],
        "",
    ]
    for a, b in zip(results, results[1:], strict=False):
        if a["wall_s"] > 0:
            lines.append(f"- n = {a['n']:,} → {b['n']:,}: map time exponent "
                         f"{math.log(b['wall_s'] / a['wall_s']) / math.log(b['n'] / a['n']):.2f}")
    (HERE / "results" / "map_scale.md").write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
