"""One ηt per run against each head problem's own early stopping, on the same stored features.

Two runs of ``bench/bench_si_repeats.py`` (same data and recipe, two cross-fitting seeds) store every head
problem's features in ``si_model.npz``. This script re-solves every problem (``core.scores.si_head``) three ways
and compares the two runs' rankings (Spearman, top-10% overlap) after averaging the first R cross-fittings
(geometric mean, as the default):

- ``per_problem``: each problem trained for the ηt its own held-out MSE picks (the behaviour before 2026-12-02);
- ``pooled``: every problem of a run trained for the ηt minimising the held-out MSE summed over all the run's
  problems (``core.scores.si_crossfit.pooled_time``, the default since 2026-12-02);
- ``pooled_first``: the sum over the first cross-fitting's problems only (a cheaper rule, for comparison).

Run: ``python bench/bench_si_time_choice.py RUNS_DIR [--max-repeats 24] [--out FILE]`` where RUNS_DIR holds the
two runs (e.g. ``bench_si_repeats.py --repeats 24`` keeps them under ``/tmp/si-repeats-*/runs``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_si_default import top_overlap  # noqa: E402
from core.scores.si_crossfit import pooled_time  # noqa: E402
from core.scores.si_head import choose_time, head_kernels, head_loo  # noqa: E402


def load(run: Path, max_rep: int) -> tuple[list[dict], pd.DataFrame, dict]:
    """Every stored head problem of ``run`` (first ``max_rep`` cross-fittings) with its kernel and held-out path."""
    import json

    z = np.load(run / "si_model.npz")
    prm = json.loads(str(z["params_json"]))
    df = pd.read_parquet(run / "samples.parquet")
    lab = df["label"].to_numpy().astype(int)
    k = int(prm["n_classes"])
    probs = []
    for j in range(int(prm["n_problems"])):
        rep = int(z[f"p{j}_repeat"])
        if rep >= max_rep:
            continue
        rows, vr = z[f"p{j}_rows"], z[f"p{j}_val_rows"]
        kern, kern_val = head_kernels(z[f"p{j}_x"].astype(np.float64), z[f"p{j}_xv"].astype(np.float64))
        y = torch.as_tensor(np.eye(k)[lab[rows]])
        eig = torch.linalg.eigh(kern)
        eta, path = choose_time(kern, kern_val, y, torch.as_tensor(np.eye(k)[lab[vr]]), lam=float(prm["lam"]), eig=eig)
        probs.append({"rows": rows, "rep": rep, "K": kern, "Kv": kern_val, "y": y, "eig": eig, "eta": eta,
                      "path": path})
    return probs, df, prm


def log_si(probs: list[dict], n: int, max_rep: int, prm: dict, pick) -> dict[str, np.ndarray]:
    """(R, n) log SI of every problem's rows, each problem trained for ``pick(problem)``."""
    out = {c: np.full((max_rep, n), np.nan) for c in ("si_weights", "si_function")}
    scale = 2 * float(prm["sigma"]) ** 2
    for p in probs:
        res = head_loo(p["K"], p["Kv"], p["y"], lam=float(prm["lam"]), eta_t=pick(p), eig=p["eig"])
        out["si_weights"][p["rep"], p["rows"]] = np.log(res.dw2 / scale)
        out["si_function"][p["rep"], p["rows"]] = np.log(res.df2 / scale)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("runs_dir")
    ap.add_argument("--max-repeats", type=int, default=24)
    ap.add_argument("--label", default="")
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    runs = sorted(p for p in Path(args.runs_dir).iterdir() if (p / "si_model.npz").is_file())
    if len(runs) != 2:
        raise SystemExit(f"{args.runs_dir}: expected two runs with si_model.npz, found {len(runs)}")
    loaded = [load(r, args.max_repeats) for r in runs]
    n = len(loaded[0][1])
    train = np.flatnonzero(loaded[0][1]["split"].to_numpy() == "train")
    rules = {
        "per_problem": lambda probs: (lambda p: p["eta"]),
        "pooled": lambda probs: (lambda p, e=pooled_time([q["path"] for q in probs]): e),
        "pooled_first": lambda probs: (lambda p, e=pooled_time([q["path"] for q in probs if q["rep"] == 0]): e),
    }
    lines = [f"### {args.label or args.runs_dir}: runs {runs[0].name} and {runs[1].name}", "",
             "| rule | ηt (run a, run b) | R | Spearman w / f | top-10% overlap w / f |", "| --- | --- | --- | --- | --- |"]
    kept: dict[str, list[dict[str, np.ndarray]]] = {}
    for name, rule in rules.items():
        vals, etas = [], []
        for probs, _, prm in loaded:
            pick = rule(probs)
            etas.append(sorted({round(float(pick(p)), 3) for p in probs}))
            vals.append(log_si(probs, n, args.max_repeats, prm, pick))
        kept[name] = vals
        eta_txt = "; ".join(f"{e[0]}–{e[-1]}" if len(e) > 1 else f"{e[0]}" for e in etas)
        for r in sorted({min(x, args.max_repeats) for x in (4, 12, args.max_repeats)}):
            cells = []
            for c in ("si_weights", "si_function"):
                a, b = (v[c][:r][:, train].mean(0) for v in vals)
                cells.append((stats.spearmanr(a, b)[0], top_overlap(a, b)))
            lines.append(f"| {name} | {eta_txt} | {r} | {cells[0][0]:.4f} / {cells[1][0]:.4f} | "
                         f"{cells[0][1]:.3f} / {cells[1][1]:.3f} |")
            print(lines[-1], flush=True)
    r = args.max_repeats
    within = [(c, [stats.spearmanr(kept["per_problem"][i][c][:r][:, train].mean(0),
                                   kept["pooled"][i][c][:r][:, train].mean(0))[0] for i in range(2)])
              for c in ("si_weights", "si_function")]
    lines += ["", f"Within each run, the ranking with one ηt against each problem's own ({r} cross-fittings): "
              + "; ".join(f"{c} Spearman {v[0]:.4f} (run a), {v[1]:.4f} (run b)" for c, v in within) + "."]
    text = "\n".join(lines) + "\n"
    if args.out:
        with open(args.out, "a") as fh:
            fh.write(text + "\n")
    print(text)


if __name__ == "__main__":
    main()
