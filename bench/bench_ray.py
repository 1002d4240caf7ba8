"""Ray bench: per-stage throughput of the executor-mapped stages, local executor vs Ray with 1 and 2 workers.

Run: .venv/bin/python bench/bench_ray.py --stage features --n 50000      (one stage per call, a few minutes each)
     .venv/bin/python bench/bench_ray.py --stage knn --n 50000
     .venv/bin/python bench/bench_ray.py --stage cg --n 5000
     .venv/bin/python bench/bench_ray.py --stage si --n 6000
     .venv/bin/python bench/bench_ray.py --report          (writes bench/results/ray.md from bench/results/ray.json)
     .venv/bin/python bench/bench_ray.py                   (all four as above, then the report: ~5 min)

Workload: the 50k synthetic-but-real 32×32 RGB images of ``bench/bench_scale.py`` (``make_parquet``: coloured
MNIST digits over photo crops, PNG bytes in a parquet file), decoded once through the ``parquet:`` source into
the run's shard cache (the decode is timed, in the driver: it is not an executor stage). Each stage is the
same function the pipeline maps, on the same units, on three executors:

- ``features``: :func:`core.pipeline.embed_rows` (shards of 4,096 rows, ``model.embed`` of the small CNN at
  random init; Ray: Ray Data ``map_batches`` with an actor pool of 1 or 2 actors);
- ``knn``: :func:`core.embedding.neighbors` of the n embeddings, k = 10 (exact flat index; query shards of
  ``--knn-shard`` rows; Ray: one task per shard against the serialized index);
- ``cg``: :func:`core.scores.cg.cg_score_details` on the pixels of the first ``n`` rows (one-vs-rest per
  class, ``--cg-repeats`` draws; Ray: one task per problem, the Gram shared once);
- ``si``: :func:`core.scores.si_crossfit.solve_item` on head problems of ``--si-rows`` rows cut from the
  embeddings (held-out 300 rows; Ray: one task per problem).

Ray runs on a local cluster started here with ``num_cpus`` = workers (1 or 2); a warm-up call starts the
workers (and their imports) before the clock starts, so the figures are steady-state throughput; the cold
start is reported apart. Every Ray result is checked equal to the local one. Results accumulate in
``bench/results/ray.json`` (one entry per stage and n); ``--report`` writes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np

HERE = Path(__file__).parent
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))
OUT_JSON = HERE / "results" / "ray.json"
OUT_MD = HERE / "results" / "ray.md"
CACHE = Path(os.environ.get("INFOSCOPE_BENCH_CACHE", Path(tempfile.gettempdir()) / "infoscope-bench"))


def _images(n: int):
    """The first ``n`` rows of the bench_scale workload, decoded (ImageStore) and their labels, plus decode s."""
    from bench.bench_scale import make_parquet
    from core.data import load_sources

    CACHE.mkdir(parents=True, exist_ok=True)
    path = CACHE / f"scale_{n}.parquet"
    if not path.exists():
        make_parquet(n, path)
    t0 = time.perf_counter()
    data = load_sources([f"synth=parquet:{path}"])
    return data, time.perf_counter() - t0


def _model(shape):
    import torch

    from core.models.training import TrainConfig, build_initial_model

    torch.manual_seed(0)
    return build_initial_model(TrainConfig(model="cnn"), tuple(shape), 10).eval()


def _executor(kind: str):
    from core.executors import LocalExecutor, RayExecutor

    if kind == "local":
        return LocalExecutor()
    import ray

    if ray.is_initialized():
        ray.shutdown()
    workers = int(kind.split("-")[1])
    t0 = time.perf_counter()
    ray.init(num_cpus=workers, include_dashboard=False, log_to_driver=False,
             object_store_memory=2 * 2**30)
    ex = RayExecutor(workers=workers)
    ex.map(_warm, list(range(workers)))  # start the workers (and their imports) before the clock
    return ex, time.perf_counter() - t0


def _warm(i: int) -> int:
    import torch  # noqa: F401 - the import a worker pays once

    import core.pipeline  # noqa: F401

    return i


def stage_features(n: int, ex, data) -> tuple[dict, np.ndarray]:
    import torch

    from core.pipeline import embed_rows

    model = _model(data.image_shape)
    t0 = time.perf_counter()
    emb = embed_rows(model, data.images, torch.device("cpu"), ex)
    return {"seconds": time.perf_counter() - t0, "units": n, "unit": "images"}, emb


def stage_knn(n: int, ex, emb: np.ndarray, shard: int) -> tuple[dict, np.ndarray]:
    from core.knn import knn

    t0 = time.perf_counter()
    d, i = knn(emb, emb, 10, exclude_self=True, device="cpu", batch=shard, executor=ex)
    return {"seconds": time.perf_counter() - t0, "units": n, "unit": "queries"}, i


def stage_cg(n: int, ex, data, repeats: int) -> tuple[dict, np.ndarray]:
    from core.data.image_store import take_rows
    from core.scores.cg import cg_score_details

    x = np.asarray(take_rows(data.images, np.arange(n)))
    t0 = time.perf_counter()
    res = cg_score_details(x, data.labels[:n], repeats=repeats, seed=0, device="cpu", max_class_size=5000,
                           executor=ex)
    return {"seconds": time.perf_counter() - t0, "units": res.info["problems"], "unit": "problems",
            "kernel": res.info["kernel"]}, res.scores


def stage_si(n: int, ex, emb: np.ndarray, labels: np.ndarray, rows: int) -> tuple[dict, np.ndarray]:
    from core.scores.si_crossfit import HeadProblem, solve_item

    val = np.arange(n - 300, n)
    probs = [HeadProblem(np.arange(s, min(s + rows, n - 300)), emb[s:min(s + rows, n - 300)].astype(np.float64),
                         val, emb[val].astype(np.float64), source=f"part {j}")
             for j, s in enumerate(range(0, n - 300, rows))]
    t0 = time.perf_counter()
    out = ex.map(partial(solve_item, n_classes=10, lam=1e-3, t="auto", sigma=0.01), [(p, None) for p in probs],
                 shared=(labels,))
    scores = np.concatenate([o["si_weights"] for o, _ in out])
    return {"seconds": time.perf_counter() - t0, "units": len(probs), "unit": f"problems of {rows} rows"}, scores


def _command(args: argparse.Namespace) -> str:
    extra = {"knn": f" --knn-shard {args.knn_shard}", "cg": f" --cg-repeats {args.cg_repeats}",
             "si": f" --si-rows {args.si_rows}"}.get(args.stage, "")
    return f"--stage {args.stage} --n {args.n}{extra}"


def run(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)
    n = args.n
    data, decode_s = _images(n)
    entry: dict = {"stage": args.stage, "n": n, "decode_s": round(decode_s, 2),
                   "machine": f"{platform.machine()}, {os.cpu_count()} CPU cores",
                   "load_before": round(os.getloadavg()[0], 1), "command": _command(args), "runs": {}}
    emb = None
    if args.stage in ("knn", "si"):
        from core.executors import LocalExecutor

        _, emb = stage_features(n, LocalExecutor(), data)
    ref = None
    for kind in ("local", "ray-1", "ray-2"):
        start_s = 0.0
        ex = _executor(kind)
        if isinstance(ex, tuple):
            ex, start_s = ex
        if args.stage == "features":
            res, value = stage_features(n, ex, data)
        elif args.stage == "knn":
            res, value = stage_knn(n, ex, emb, args.knn_shard)
        elif args.stage == "cg":
            res, value = stage_cg(n, ex, data, args.cg_repeats)
        else:
            res, value = stage_si(n, ex, emb, np.asarray(data.labels), args.si_rows)
        if ref is None:
            ref = value
        res["equal_to_local"] = bool(np.array_equal(value, ref))
        res["max_rel_diff"] = float(np.max(np.abs(value - ref) / np.maximum(np.abs(ref), 1e-30)))
        res["cluster_start_s"] = round(start_s, 2)
        res["seconds"] = round(res["seconds"], 3)
        entry["runs"][kind] = res
        print(kind, res, flush=True)
        ex.close()
        if kind != "local":
            import ray

            ray.shutdown()
    entry["load_after"] = round(os.getloadavg()[0], 1)
    results = json.loads(OUT_JSON.read_text()) if OUT_JSON.exists() else []
    results = [r for r in results if not (r["stage"] == entry["stage"] and r["n"] == entry["n"])] + [entry]
    OUT_JSON.write_text(json.dumps(results, indent=1))


def report() -> None:
    results = json.loads(OUT_JSON.read_text())
    order = {"features": 0, "knn": 1, "cg": 2, "si": 3}
    results.sort(key=lambda r: (order.get(r["stage"], 9), r["n"]))
    what = {"features": "features: read decoded shards + small CNN embed, 32×32 RGB (Ray Data map_batches, "
                        "4,096-row shards)",
            "knn": "kNN search, k = 10, exact flat index (Ray tasks over query shards)",
            "cg": "CG one-vs-rest problems on pixels (Ray tasks, Gram shared once)",
            "si": "SI head problems, exact LOO (Ray tasks)"}
    lines = ["## Ray executor: per-stage throughput, local vs Ray with 1 and 2 workers (`bench/bench_ray.py`)", "",
             f"Machine: {results[0]['machine']}, no GPU; every figure is CPU-only and one torch thread per "
             "process. Ray runs on a local cluster started by the bench (`num_cpus` = workers), warmed up before "
             "the clock (cold start in its own column). Throughput = units / wall seconds of the stage. "
             "'equal' = the Ray result is bitwise equal to the local one.", "",
             "| stage | n | executor | wall s | throughput | vs local | equal | cluster start s | load before/after |",
             "| --- | ---: | --- | ---: | ---: | ---: | :-: | ---: | --- |"]
    for r in results:
        loc = r["runs"]["local"]["seconds"]
        for kind, v in r["runs"].items():
            rate = v["units"] / v["seconds"] if v["seconds"] else float("nan")
            lines.append(f"| {what[r['stage']] if kind == 'local' else ''} | {r['n']:,} | {kind} | {v['seconds']:.2f} "
                         f"| {rate:,.1f} {v['unit']}/s | {loc / v['seconds']:.2f}× | "
                         f"{'yes' if v['equal_to_local'] else 'no (max rel ' + format(v['max_rel_diff'], '.1e') + ')'} "
                         f"| {v['cluster_start_s'] or ''} | {r['load_before']} / {r['load_after']} |")
    lines += ["", "Reading the table. The machine has 2 cores shared with other jobs (load average 4–6 during "
              "these runs, i.e. already oversubscribed), so a second Ray worker has little to gain and the figures "
              "are noisy (each configuration ran once). What the table shows: every Ray result equals the local one "
              "bit for bit; a warm Ray worker costs little over the local loop on stages made of a few large "
              "units (kNN shards, CG and SI problems) and 20–30% on the features stage, whose 13 shards each "
              "ship a 4,096-row block of features back through the object store; starting a 1–2 CPU cluster "
              "costs 6–9 s once. CG and SI were measured at n = 5,000 / 6,000, not the 50k workload: at 50k "
              "a CG problem is a 10k-row Gram and Cholesky (~1 min each on one core, 10 problems per draw) and "
              "the SI problems of the default size (5,000 rows) take ~30 s each, so the 3 executors × 50k would "
              "not fit a few minutes of bench; the per-problem rates above are what the cost model in the "
              "README scales from. The CG wall time includes the Gram of all rows, computed once in the driver "
              "before the problems are mapped.", "",
              "Decoding (PNG → shard cache, in the driver, not an executor stage): "
              + ", ".join(f"{r['n']:,} images in {r['decode_s']} s ({r['n'] / r['decode_s']:,.0f} images/s)"
                          for r in results if r["stage"] == "features") + ".", "",
              "Commands: " + "; ".join(f"`.venv/bin/python bench/bench_ray.py {r['command']}`" for r in results)
              + ", then `--report`.", ""]
    OUT_MD.write_text("\n".join(lines))
    print(f"wrote {OUT_MD}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--stage", choices=["features", "knn", "cg", "si"])
    ap.add_argument("--n", type=int, default=50000)
    ap.add_argument("--knn-shard", type=int, default=16384)
    ap.add_argument("--cg-repeats", type=int, default=1)
    ap.add_argument("--si-rows", type=int, default=1500)
    ap.add_argument("--report", action="store_true")
    args = ap.parse_args()
    if args.report:
        report()
    elif args.stage:
        run(args)
    else:  # `make bench`: every stage at the sizes of the committed table, then the table
        for stage, n in (("features", 50000), ("knn", 50000), ("cg", 5000), ("si", 6000)):
            run(argparse.Namespace(**{**vars(args), "stage": stage, "n": n,
                                      "cg_repeats": 5 if stage == "cg" else args.cg_repeats}))
        report()


if __name__ == "__main__":
    main()
