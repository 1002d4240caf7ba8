"""How much the default SI ranking depends on the cross-fitting's randomness, and whether the run's own
reproducibility estimate predicts it.

Two runs of the same data and recipe that differ only in ``crossfit_seed`` (which rows share a fold, and the
fold networks' batch order; every fold network starts from the run's w₀, the default ``crossfit_init``) are compared: Spearman of the SI columns over the training
rows and the overlap of their top 10%. Each run also reports its own estimate of that Spearman
(``core.scores.si_crossfit.reproducibility``: split-half of its R cross-fittings, stepped up by
Spearman–Brown); the table puts the estimate beside the measured figure. ``repeats`` = R averages each row's SI
over R cross-fittings (geometric mean, the default ``average``); ``auto`` (the default) adds cross-fittings until
the estimate reaches 0.99 (and, since the afternoon of 2026-12-02, the estimated top-10% overlap 0.95) or
R = min(max_repeats, max(40,000 ÷ n, 6.4·10⁷ ÷ n²)) for n training rows (the n² allowance since late 2026-12-02);
max_repeats is 200 since late 2026-12-02 (100 from the evening of 2026-12-02, 48 before;
0.97 and 12 before 2026-12-02, when each head problem also chose its own ηt; now one ηt per run,
``t_choice = "pooled"``).
Data: a 1,500-image class-balanced subset of MNIST-5k (seed 123) and scikit-learn's digits, 10% symmetric
label noise, run seed 6; crossfit seeds 11 and 99. The defaults (``crossfit_init``, ``average``, the 0.97 target)
were chosen after seeing these two settings; ``--data photos,mnist1500,demo --run-seed 31 --crossfit-seeds 5,77
--out bench/results/si_repeats_holdout.md`` measures settings fixed afterwards.

Run: ``python bench/bench_si_repeats.py [--repeats 1,auto] [--data mnist1500,digits]``; writes
``bench/results/si_repeats.md``.
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

from bench.bench_si_default import datasets, mnist_subset, top_overlap  # noqa: E402
from core.pipeline import RunConfig, demo_config, score_run  # noqa: E402
from core.scores.si_crossfit import HEAD_DEFAULTS  # noqa: E402

OUT = Path(__file__).parent / "results" / "si_repeats.md"


def _fmt(v: float | None) -> str:
    return "—" if v is None else f"{v:.3f}"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", default="1,auto")
    ap.add_argument("--data", default="mnist1500,digits", help="mnist1500, digits, mnist800 (80 per digit), photos (700 RGB crops of "
                    "scikit-image's photos, 7 classes, 32 px), demo (the demo recipe: MNIST-5k + digits with its "
                    "corruptions)")
    ap.add_argument("--run-seed", type=int, default=6)
    ap.add_argument("--crossfit-seeds", default="11,99")
    ap.add_argument("--crop-seed", type=int, default=3, help="seed of the photo crops (photos only)")
    ap.add_argument("--crop-per-class", type=int, default=100, help="photo crops per class (photos only; 7 classes)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="si-repeats-"))
    specs = datasets(tmp)
    if "photos" in args.data.split(","):
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from photo_crops import make_photo_crops

        specs["photos"] = f"photos=folder:{make_photo_crops(tmp / 'photos', per_class=args.crop_per_class, size=32, seed=args.crop_seed)}"
    if "mnist800" in args.data.split(","):  # a small task: 80 images per digit (640 training rows)
        specs["mnist800"] = f"mnist=npz:{mnist_subset(tmp / 'mnist800.npz', per_class=80, seed=321)}"
    if "demo" in args.data.split(","):
        specs["demo"] = "demo"  # the demo recipe (core.pipeline.demo_config): its sources and corruptions
    cfs = [int(c) for c in args.crossfit_seeds.split(",")]
    out_path = Path(args.out)
    rows = []
    t_all = time.perf_counter()
    for data in args.data.split(","):
        for reps in args.repeats.split(","):
            reps_v = reps if reps == "auto" else int(reps)
            t0 = time.perf_counter()
            dfs, mans = [], []
            for cf in cfs:
                kw = dict(runs_dir=str(tmp / "runs"), scores=["loss", "si_weights", "si_function"], map_method="pca",
                          seed=args.run_seed, score_params={"si_function": {"crossfit_seed": cf, "repeats": reps_v}},
                          name=f"{data}-r{reps}-{cf}")
                cfg = (demo_config(**kw) if data == "demo" else
                       RunConfig(sources=[specs[data]], label_noise=0.1, **kw))
                path = score_run(cfg)
                dfs.append(pd.read_parquet(path / "samples.parquet"))
                mans.append(json.loads((path / "manifest.json").read_text()))
            m = dfs[0].split == "train"
            si = [mn["scores"]["si_function"] for mn in mans]
            row = {"data": data, "repeats": reps, "used": [s["params"]["repeats"] for s in si],
                   "si_step_s": [mn["steps"]["score si_weights+si_function"] for mn in mans],
                   "pair_wall_s": round(time.perf_counter() - t0, 1)}
            for c in ("si_weights", "si_function"):
                a, b = dfs[0][c][m].to_numpy(), dfs[1][c][m].to_numpy()
                row[f"{c}_spearman"] = round(float(stats.spearmanr(a, b)[0]), 4)
                row[f"{c}_top10"] = round(top_overlap(a, b), 4)
                row[f"{c}_estimate"] = [s["info"]["reproducibility"][c] for s in si]
                row[f"{c}_top_estimate"] = [(s["info"]["reproducibility"].get("top_overlap") or {}).get(c) for s in si]
            rows.append(row)
            print(row, flush=True)
    lines = ["## Default SI: dependence on the cross-fitting seed (`bench/bench_si_repeats.py`)", "",
             "Two runs differing only in `crossfit_seed` (fold assignment and the fold networks' batch order; every fold "
             "network starts from the run's w₀), default SI otherwise (geometric mean over cross-fittings), "
             f"10% label noise, run seed {args.run_seed}, crossfit seeds {cfs[0]} and {cfs[1]}"
             f"{f', photo crop seed {args.crop_seed}' if 'photos' in args.data.split(',') else ''}: measured Spearman and "
             "top-10% overlap "
             "of the two rankings, beside each run's own estimate of that Spearman (split-half of its cross-fittings, "
             "Spearman–Brown). `repeats` = R averages each row's SI over R cross-fittings; `auto` is the default "
             "(until the estimate reaches 0.99 and the estimated top-10% overlap 0.95, at most "
             f"{HEAD_DEFAULTS['max_repeats']} (48 before the evening of 2026-12-02, 100 before late 2026-12-02) and at "
             f"most max({HEAD_DEFAULTS['max_repeat_rows']:,} ÷ n, {HEAD_DEFAULTS['max_repeat_rows_sq']:,} ÷ n²) for "
             "n training rows (the n² allowance for small data since late 2026-12-02, before then the first "
             "alone); one ηt for the run, `t_choice = pooled`; the top-overlap target since the afternoon of "
             "2026-12-02, before then 0.97, 12 and per-problem ηt). Each run also estimates its top-10% overlap with "
             "an independent run (`top_overlap_estimate`; — where the run predates it). Data: MNIST-5k subset of "
             "1,500 images; MNIST800: 80 images per digit; scikit-learn "
             f"digits (1,797); photos: {7 * args.crop_per_class:,} crops (32 px) of 7 scikit-image photos; demo: the demo recipe (6,340 "
             "images, its own corruptions instead of the 10% noise).", "",
             "| data | repeats (used) | measured Spearman w / f | estimated (run a, run b) w / f | top-10% overlap w / f "
             "| estimated top-10% (run a, run b) w / f | SI step s (a, b) |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        est = " / ".join(", ".join(_fmt(v) for v in r[f"{c}_estimate"]) for c in ("si_weights", "si_function"))
        top_est = " / ".join(", ".join(_fmt(v) for v in r[f"{c}_top_estimate"]) for c in ("si_weights", "si_function"))
        lines.append(f"| {r['data']} | {r['repeats']} ({', '.join(map(str, r['used']))}) | "
                     f"{r['si_weights_spearman']} / {r['si_function_spearman']} | {est} | "
                     f"{r['si_weights_top10']} / {r['si_function_top10']} | {top_est} | "
                     f"{', '.join(str(s) for s in r['si_step_s'])} |")
    lines += ["", f"Whole bench: {time.perf_counter() - t_all:.0f} s on a 2-core CPU shared with other jobs "
              "(times are not compared here).", ""]
    out_path.write_text("\n".join(lines))
    print(out_path.read_text())


if __name__ == "__main__":
    main()
