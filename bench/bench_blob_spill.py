"""Peak memory of loading + decoding a ``parquet:`` source of n small PNGs (the load step of the scale bench).

Run (peak RSS from /usr/bin/time; the file is made first, by ``bench_scale.make_parquet``, if missing):

    OMP_NUM_THREADS=1 /usr/bin/time -v .venv/bin/python bench/bench_blob_spill.py 50000 /tmp/scale_50000.parquet
    # decoding in the tasks of a local Ray instance of 1 CPU instead (wall time of the decode step):
    OMP_NUM_THREADS=1 .venv/bin/python bench/bench_blob_spill.py 50000 /tmp/scale_50000.parquet --ray 1

Prints the RSS after the imports, after loading (headers read, encoded images spilled to the blob file), after
decoding into the image store, the process's peak before exit (``VmHWM``; /usr/bin/time's figure also counts
the interpreter's teardown), and a checksum of all pixels read back in 512-row batches (equal before and
after a change to the load path means the same pixels).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path


def rss_mb(field: str = "VmRSS") -> int:
    return int(Path("/proc/self/status").read_text().split(f"{field}:")[1].split()[0]) // 1024


def main() -> None:
    n, path = int(sys.argv[1]), Path(sys.argv[2])
    ray_cpus = int(sys.argv[4]) if len(sys.argv) > 4 and sys.argv[3] == "--ray" else 0
    if not path.exists():
        sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
        from bench.bench_scale import make_parquet

        make_parquet(n, path)
    import numpy as np
    import torch  # noqa: F401 - imported by every run; counted in the start figure

    from core.data.sources import load_one, merge_sources, parse_spec

    executor = None
    if ray_cpus:
        import ray

        from core.executors import RayExecutor

        ray.init(num_cpus=ray_cpus, include_dashboard=False, log_to_driver=False)
        executor = RayExecutor()
    start, t0 = rss_mb(), time.time()
    raw = load_one(parse_spec(f"synth=parquet:{path}"), Path.cwd(), False)
    loaded, t1 = rss_mb(), time.time()
    s = merge_sources([raw], executor=executor)
    del raw
    decoded, t2 = rss_mb(), time.time()
    x, acc = s.images, 0.0
    for i in range(0, len(x), 512):
        acc += float(np.asarray(x[i:i + 512]).astype(np.float64).sum())
    print(f"rows {len(s)} shape {tuple(x.shape)} checksum {acc:.6f}; RSS MB: start {start}, after load {loaded} "
          f"({t1 - t0:.1f} s), after decode {decoded} ({t2 - t1:.1f} s), peak so far (VmHWM) {rss_mb('VmHWM')}")


if __name__ == "__main__":
    main()
