"""Does a run's own estimate of its top-10% stability predict what two real runs share?

``core.scores.si_crossfit.top_overlap_estimate`` estimates, from one run's R per-cross-fitting SI vectors
(``per_repeat_*`` in ``si_model.npz``), the expected share of the top 10% of rows that an independent run
(other crossfit seed) would have in common with it. This bench takes pairs of stored runs that differ only in
``crossfit_seed`` (e.g. the runs ``bench/bench_si_repeats.py`` leaves in its temp folder) and puts the
estimate of each run beside the overlap measured between the pair, for the full runs and for the first
R = 8 and 16 cross-fittings of each (a shorter run of the same seeds: the geometric mean of a prefix of its
repeats).

Run: ``python bench/bench_si_top_overlap.py --pair RUN_A,RUN_B [--pair …] [--out FILE]``; writes
``bench/results/si_top_overlap.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_si_default import top_overlap  # noqa: E402
from core.scores.si_crossfit import average_repeats, top_overlap_estimate  # noqa: E402

OUT = Path(__file__).parent / "results" / "si_top_overlap.md"
COLS = ("si_weights", "si_function")


def _load(run: Path) -> tuple[dict[str, np.ndarray], np.ndarray]:
    z = np.load(run / "si_model.npz")
    train = (pd.read_parquet(run / "samples.parquet", columns=["split"]).split == "train").to_numpy()
    return {c: z[f"per_repeat_{c}"] for c in COLS}, train


def compare(a: Path, b: Path, prefixes: tuple[int, ...] = (8, 16)) -> list[dict]:
    """One row per column and repeat count: measured overlap of the pair, and each run's estimate."""
    pa, train = _load(a)
    pb, _ = _load(b)
    out = []
    for c in COLS:
        full = (len(pa[c]), len(pb[c]))
        for r in [*[p for p in prefixes if p < min(full)], None]:
            xa, xb = (pa[c], pb[c]) if r is None else (pa[c][:r], pb[c][:r])
            ga, gb = average_repeats(xa)[train], average_repeats(xb)[train]
            out.append({"column": c, "repeats": f"{len(xa)}, {len(xb)}" + ("" if r is None else " (first R)"),
                        "measured": top_overlap(ga, gb),
                        "estimates": (top_overlap_estimate(xa), top_overlap_estimate(xb))})
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pair", action="append", required=True, help="RUN_A,RUN_B: two runs differing only in crossfit_seed")
    ap.add_argument("--label", action="append", default=None, help="a label per pair (default: the run names)")
    ap.add_argument("--out", default=str(OUT))
    args = ap.parse_args()
    labels = args.label or [Path(p.split(",")[0]).name for p in args.pair]
    lines = ["## Estimated vs measured top-10% overlap of two runs (`bench/bench_si_top_overlap.py`)", "",
             "Each pair: two stored runs differing only in `crossfit_seed`. *Measured*: the share of the top 10% of "
             "training rows by the SI column that the two runs have in common. *Estimates*: each run's own "
             "`top_overlap_estimate` from its per-cross-fitting SI (what the stopping rule and the Overview use). "
             "Rows marked *first R* use the first R cross-fittings of each run.", "",
             "| setting | column | cross-fittings (a, b) | measured | estimated (a, b) |", "| --- | --- | --- | ---: | --- |"]
    diffs = []
    for label, pair in zip(labels, args.pair, strict=True):
        a, b = (Path(p) for p in pair.split(","))
        for row in compare(a, b):
            ea, eb = row["estimates"]
            diffs += [e - row["measured"] for e in (ea, eb) if e is not None]
            lines.append(f"| {label} | {row['column']} | {row['repeats']} | {row['measured']:.3f} | "
                         f"{ea:.3f}, {eb:.3f} |")
            print(lines[-1], flush=True)
    d = np.asarray(diffs)
    lines += ["", f"Estimate − measured over all {len(d)} estimates: mean {d.mean():+.3f}, mean absolute "
              f"{np.abs(d).mean():.3f}, largest {d[np.argmax(np.abs(d))]:+.3f}. One pair's overlap is itself noisy: "
              "with 56 rows in a top 10% one row is 0.018.", ""]
    Path(args.out).write_text("\n".join(lines))
    print("\n".join(lines[-2:]))


if __name__ == "__main__":
    main()
