"""Evidence 6 — cost: wall time of each score on one machine, and how it grows from n = 1 000 to 5 000 to 20 000.

Protocol. For each n, a dataset of n MNIST digits: a class-balanced seeded subset of MNIST-5k for n ≤ 5000;
above that, MNIST-5k plus copies shifted by 1–2 pixels (a seeded random non-zero shift in each of x and y,
zero fill, originals used in turn), written as an ``npz:`` source. Each dataset is scored by
``core.pipeline.score_run`` with every score and the pipeline's defaults (SmallCNN, epochs from the dataset size with early stopping, 20% held out; SI
the default head on cross-fitted features: 2 extra trainings on half the training rows each, exact leave-one-out
per problem of at most 5,000 rows; CG on pixels, 5 repeats, classes chunked above 5,000; prediction depth with 1
network; EL2N with 1 network; PCA map). The table gives the wall time the manifest records for each step and
each score adapter; the growth exponent b fits t ∝ n^b between consecutive sizes. Results are written after
each n, so a partial table lands even when the largest size does not finish.

Run: ``python bench/evidence_cost.py`` (``--sizes 1000,5000`` for the two small sizes; ``--quick`` for a smoke
test).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_common as ec  # noqa: E402


def shifted(img: np.ndarray, dx: int, dy: int) -> np.ndarray:
    """``img`` (1, H, W) moved by (dx, dy) pixels, zero fill."""
    out = np.zeros_like(img)
    h, w = img.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = img[..., ys, xs]
    return out


def dataset(n: int, seed: int) -> tuple[np.ndarray, np.ndarray, list[str]]:
    m = ec.mnist5k()
    if n <= len(m):
        rows = ec.per_class_subset(m.labels, n // m.n_classes, seed)
        return m.images[rows], m.labels[rows], m.class_names
    rng = np.random.default_rng(seed)
    extra = n - len(m)
    src = rng.permutation(np.resize(np.arange(len(m)), extra))
    choices = [-2, -1, 1, 2]
    dx, dy = rng.choice(choices, extra), rng.choice(choices, extra)
    copies = np.stack([shifted(m.images[i], int(a), int(b)) for i, a, b in zip(src, dx, dy, strict=True)])
    return np.concatenate([m.images, copies]), np.concatenate([m.labels, m.labels[src]]), m.class_names


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="1000,5000,20000")
    ap.add_argument("--append", action="store_true",
                    help="merge with the sizes already in bench/results/evidence_cost.json")
    ec.common_args(ap)
    a = ap.parse_args()
    ec.setup(a.threads)
    rdir = ec.runs_dir(a.runs_dir)
    sizes = [int(s) for s in a.sizes.split(",")]
    epochs = a.epochs
    if a.quick:
        sizes, epochs = [200, 400], 1
    times: dict[int, dict[str, float]] = {}
    prev = ec.RESULTS / "evidence_cost.json"
    if a.append and prev.exists():  # keep the sizes an earlier invocation measured (same machine assumed)
        import json

        old = json.loads(prev.read_text()).get("extra", {}).get("times_s", {})
        times.update({int(k): v for k, v in old.items() if int(k) not in sizes})
    for n in sizes:
        x, y, names = dataset(n, a.seed)
        spec = "mnist=npz:" + ec.write_npz(Path(rdir) / f"cost_{n}.npz", x, [names[i] for i in y])
        ec.log(f"n = {n}")
        t = ec.Timer()
        df, man = ec.pipeline_run(sources=[spec], runs_dir=rdir, name=f"ev-cost-{n}", epochs=epochs, seed=a.seed,
                                  device=a.device)
        total = t()
        steps = dict(man["steps"])
        row = {"train (SmallCNN, the default recipe's epochs; feeds loss/margin/EL2N/forgetting/Data Maps)": steps.get("train")}
        for k, v in steps.items():
            if k.startswith("score "):
                row[k[len("score "):]] = v
        row["features + kNN"] = steps.get("features")
        row["map (PCA)"] = steps.get("map")
        row["flags"] = steps.get("flags")
        row["write (parquet, PNGs)"] = steps.get("write")
        row["whole run (score_run)"] = total
        times[n] = row
        ec.log(f"  n={n}: " + ", ".join(f"{k.split(' (')[0]} {v:.1f}s" for k, v in row.items() if v is not None))
        write(times, a, epochs)


def write(times: dict[int, dict[str, float]], a, epochs: int) -> None:
    sizes = sorted(times)
    keys = list(dict.fromkeys(k for n in sizes for k in times[n]))
    cols = ["step / score"] + [f"n = {n:,} (s)" for n in sizes]
    pairs = list(zip(sizes[:-1], sizes[1:], strict=False))
    cols += [f"b ({n1:,}→{n2:,})" for n1, n2 in pairs]
    rows = []
    for k in keys:
        vals = [times[n].get(k) for n in sizes]
        b = []
        for n1, n2 in pairs:
            t1, t2 = times[n1].get(k), times[n2].get(k)
            b.append(math.log(t2 / t1) / math.log(n2 / n1) if t1 and t2 and t1 > 0.05 else None)
        rows.append([k, *vals, *b])
    tables = [ec.table("Wall time of each step and score adapter (seconds) and growth exponent b (t ∝ n^b)", cols, rows)]
    big = sizes[-1]
    r = times[big]
    ranked = sorted(((v, k) for k, v in r.items() if v is not None and not k.startswith(("whole", "write", "map",
                                                                                          "flags", "features"))),
                    reverse=True)
    parts = [f"{k.split(' (')[0]} {v:.0f} s" for v, k in ranked[:5]]
    conclusion = (f"At n = {big:,} the whole run took {r['whole run (score_run)']:.0f} s on this machine; the most "
                  f"expensive parts: {', '.join(parts)}. ")
    if pairs:
        gr = {row[0]: row[-1] for row in rows}
        conc = [f"{k.split(' (')[0]} b = {gr[k]:.2f}" for k in ("si_weights+si_function", "cg_score",
                                                                  "prediction_depth") if gr.get(k) is not None]
        if conc:
            conclusion += f"Growth between the last two sizes: {', '.join(conc)}."
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for k in keys:
        if k.startswith(("write", "map", "flags", "features")):
            continue
        pts = [(n, times[n][k]) for n in sizes if times[n].get(k) and times[n][k] > 0.01]
        if pts:
            ax.plot(*zip(*pts, strict=True), marker="o", label=k.split(" (")[0],
                    lw=2.2 if k.startswith(("si_", "cg", "whole")) else 1.0)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("samples n")
    ax.set_ylabel("wall time (s)")
    ax.set_title("Cost of each score (one run)", fontsize=10)
    ax.legend(fontsize=7)
    plot = ec.save_plot(fig, "cost")
    full = sizes == [1000, 5000, 20000] and epochs is None and not a.quick
    ec.write_results("cost", title="Cost of each score", conclusion=conclusion, tables=tables,
                     scale="quick" if a.quick else ("full" if full else "reduced"),
                     protocol=__doc__.split("\n\n")[1].replace("\n", " "), plots=[plot],
                     extra={"times_s": {str(n): times[n] for n in sizes}},
                     notes=["Scores sharing an adapter share its time (si_weights and si_function come from one "
                            "computation; confidence and variability too).",
                            "loss, margin, EL2N (1 network), forgetting and Data Maps reuse the logits recorded while "
                            "training the run's network: their own time is milliseconds, their real cost is the "
                            "training step.",
                            "Times on a shared machine vary by tens of percent from run to run."])


if __name__ == "__main__":
    main()
