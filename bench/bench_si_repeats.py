"""How much the default SI ranking depends on the cross-fitting's randomness, and how repeats reduce it.

Two runs of the same data and recipe that differ only in ``crossfit_seed`` (which rows share a fold, and the
fold networks' initialisation and batch order) are compared: Spearman of the SI columns over the training
rows and the overlap of their top 10%. With ``repeats`` = R the cross-fitting is done R times and each row's
SI is averaged (``core.scores.si_crossfit``). Data: a 1,500-image class-balanced subset of MNIST-5k (seed
123), 10% symmetric label noise, run seed 6; crossfit seeds 11 and 99 (none of them tuned on).

Run: ``python bench/bench_si_repeats.py [--repeats 1,3]``; writes ``bench/results/si_repeats.md``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_si_default import datasets, top_overlap  # noqa: E402
from core.pipeline import RunConfig, score_run  # noqa: E402

OUT = Path(__file__).parent / "results" / "si_repeats.md"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", default="1,3")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="si-repeats-"))
    spec = datasets(tmp)["mnist1500"]
    rows = []
    for reps in [int(r) for r in args.repeats.split(",")]:
        t0 = time.perf_counter()
        dfs = []
        for cf in (11, 99):
            cfg = RunConfig(sources=[spec], runs_dir=str(tmp / "runs"), scores=["loss", "si_weights", "si_function"],
                            map_method="pca", seed=6, label_noise=0.1,
                            score_params={"si_function": {"crossfit_seed": cf, "repeats": reps}}, name=f"r{reps}-{cf}")
            path = score_run(cfg)
            dfs.append(pd.read_parquet(path / "samples.parquet"))
            si_s = json.loads((path / "manifest.json").read_text())["steps"]["score si_weights+si_function"]
        m = dfs[0].split == "train"
        row = {"repeats": reps, "si_step_s": si_s, "pair_wall_s": round(time.perf_counter() - t0, 1)}
        for c in ("si_weights", "si_function"):
            a, b = dfs[0][c][m].to_numpy(), dfs[1][c][m].to_numpy()
            row[f"{c}_spearman"] = round(float(stats.spearmanr(a, b)[0]), 4)
            row[f"{c}_top10"] = round(top_overlap(a, b), 4)
        rows.append(row)
        print(row, flush=True)
    lines = ["## Default SI: dependence on the cross-fitting seed (`bench/bench_si_repeats.py`)", "",
             "Two runs differing only in `crossfit_seed` (fold assignment, fold networks' initialisation and batch "
             "order); MNIST-5k subset of 1,500 images, 10% label noise, run seed 6, crossfit seeds 11 and 99. "
             "`repeats` = R averages each row's SI over R cross-fittings.", "",
             "| repeats | Spearman w / f | top-10% overlap w / f | SI step (s, one run) |", "| --- | --- | --- | --- |"]
    for r in rows:
        lines.append(f"| {r['repeats']} | {r['si_weights_spearman']} / {r['si_function_spearman']} | "
                     f"{r['si_weights_top10']} / {r['si_function_top10']} | {r['si_step_s']} |")
    lines.append("")
    OUT.write_text("\n".join(lines))
    print(OUT.read_text())


if __name__ == "__main__":
    main()
