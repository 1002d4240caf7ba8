"""Near-duplicate search: the filtered two-stage search (``core.duplicates``, the default) against indexing the full
unit pixel vectors (the previous method, kept here as the reference), on the scale bench's images.

Run: .venv/bin/python bench/bench_duplicates.py --sizes 50000 200000 [--workdir DIR]
     (writes bench/results/duplicates.md; then `python bench/collect.py`)

Each (size, method) runs in a fresh interpreter on the same decoded image store (the ``parquet:`` workload of
``bench/bench_scale.py``, 32×32 RGB): wall time of the search, and its peak RSS above the RSS before it started
(VmRSS sampled every 20 ms). Pairs are compared with the reference's: at an exact (flat) index both are the
same definition, so any difference is a bug; above 100,000 rows both use HNSW, so differences are the two
approximate indexes'.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent


def reference_pairs(images, sample_id, threshold: float = 0.995, k: int = 5) -> set[tuple[str, str]]:
    """The previous method: every row's k nearest rows among the full unit pixel vectors (faiss, the index
    choice of ``core.knn``), kept when cosine ≥ threshold; pairs (a, b) with a before b."""
    from core.duplicates import unit_reader
    from core.knn import knn_self_batches

    n = len(images)
    dim = int(np.prod(images.shape[1:]))  # 32×32 RGB: compared pixel for pixel, as by near_duplicates
    unit = unit_reader(images)

    d, idx = knn_self_batches(unit, n, dim, k, device="cpu", batch=16384)
    cos = 1.0 - d.astype(np.float64) ** 2 / 2.0
    return {(str(sample_id[i]), str(sample_id[idx[i, j]])) for i, j in zip(*np.nonzero(cos >= threshold),
                                                                          strict=True) if i < idx[i, j]}


def one(n: int, method: str, workdir: Path) -> dict:
    sys.path.insert(0, str(HERE))
    from bench_scale import RssSampler, make_parquet

    from core.data.sources import load_sources
    from core.duplicates import near_duplicates

    data = workdir / f"scale_{n}.parquet"
    if not data.exists():
        make_parquet(n, data)
    loaded = load_sources([f"synth=parquet:{data}"])
    images, ids = loaded.images, loaded.sample_id
    with RssSampler() as rss:
        start_mb = rss.rss_mb()
        t0 = time.perf_counter()
        if method == "reference":
            pairs = reference_pairs(images, ids)
            info: dict = {}
        else:
            frame = near_duplicates(images, ids, device="cpu")
            pairs = {(str(a), str(b)) for a, b in zip(frame.sample_id_a, frame.sample_id_b, strict=True)}
            info = dict(frame.attrs)
        wall = time.perf_counter() - t0
    out = workdir / f"dups_{n}_{method}.json"
    out.write_text(json.dumps(sorted(pairs)))
    return {"n": n, "method": method, "s": round(wall, 1), "peak_above_start_mb": round(max(rss.peak.values()) - start_mb),
            "pairs": len(pairs), **info}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[50000, 200000])
    ap.add_argument("--workdir", type=Path, default=Path("/tmp/bench_dups"))
    ap.add_argument("--one", nargs=2, metavar=("N", "METHOD"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.workdir.mkdir(parents=True, exist_ok=True)
    if args.one:
        print(json.dumps(one(int(args.one[0]), args.one[1], args.workdir)))
        return
    rows = []
    for n in args.sizes:
        for method in ("reference", "filtered"):
            res = subprocess.run([sys.executable, __file__, "--one", str(n), method, "--workdir", str(args.workdir)],
                                 capture_output=True, text=True, cwd=ROOT, check=True)
            rows.append(json.loads(res.stdout.strip().splitlines()[-1]))
            print(rows[-1], file=sys.stderr)
    lines = ["## Near-duplicate search: filtered two-stage vs full pixel vectors (`bench/bench_duplicates.py`)", "",
             f"Machine: {platform.machine()}, 2 CPU cores, no GPU. Command: `.venv/bin/python bench/bench_duplicates.py "
             f"--sizes {' '.join(map(str, args.sizes))}`. Images: the scale bench's 32×32 RGB `parquet:` workload "
             "(decoded into the shard store first, not timed). Threshold 0.995, k = 5. Each cell a fresh "
             "interpreter; peak RSS is above the RSS before the search.", "",
             "| n | index | reference s | filtered s | time ratio | reference peak MB | filtered peak MB | "
             "pairs ref / filtered | in both | truncated rows |", "|---:|---|---:|---:|---:|---:|---:|---|---:|---:|"]
    for n in args.sizes:
        ref = next(r for r in rows if r["n"] == n and r["method"] == "reference")
        new = next(r for r in rows if r["n"] == n and r["method"] == "filtered")
        a = {tuple(p) for p in json.loads((args.workdir / f"dups_{n}_reference.json").read_text())}
        b = {tuple(p) for p in json.loads((args.workdir / f"dups_{n}_filtered.json").read_text())}
        lines.append(f"| {n:,} | {new.get('index')} | {ref['s']} | {new['s']} | {new['s'] / max(ref['s'], 1e-9):.2f} | "
                     f"{ref['peak_above_start_mb']:,} | {new['peak_above_start_mb']:,} | {len(a):,} / {len(b):,} | "
                     f"{len(a & b):,} | {new.get('truncated_rows')} |")
    lines += ["", f"Filter index: {rows[-1].get('filter_values')} values per row (3,072 for the reference)."]
    (HERE / "results").mkdir(exist_ok=True)
    (HERE / "results" / "duplicates.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
