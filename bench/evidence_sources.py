"""Evidence 4 — comparing data sources: MNIST-5k against scikit-learn's 8×8 digits (resized to 28×28), one run.

Protocol. Both sources go into one ``core.pipeline.score_run`` (``--source mnist=mnist5k --source
digits=digits``: labels joined by class name, images resized to 28×28 as the loader does), every score, the
pipeline's recipe (SmallCNN, epochs from the dataset size with early stopping, 20% held out, seeded). For each score and source: the mean over the rows
where the score is defined with a 95% bootstrap confidence interval (1000 resamples, seeded), the ratio of the
means (digits ÷ MNIST), the two-sample Kolmogorov–Smirnov statistic (what the Sources page shows) with its p-value,
and the share of each source among the top 10% of rows by the score (a source holding more than its share of
the most informative rows is the more informative one).

Run: ``python bench/evidence_sources.py`` (``--quick`` for a smoke test on a few hundred images).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_common as ec  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--boot", type=int, default=1000)
    ec.common_args(ap)
    a = ap.parse_args()
    ec.setup(a.threads)
    from scipy.stats import ks_2samp

    rdir = ec.runs_dir(a.runs_dir)
    sources, epochs = ["mnist=mnist5k", "digits=digits"], a.epochs
    if a.quick:
        from core.data import load_sources

        m, d = ec.mnist5k(), load_sources(["digits=digits"])
        rm, rd = ec.per_class_subset(m.labels, 25, a.seed), ec.per_class_subset(d.labels, 10, a.seed)
        sources = ["mnist=npz:" + ec.write_npz(Path(rdir) / "quick_src_m.npz", m.images[rm],
                                               [m.class_names[i] for i in m.labels[rm]]),
                   "digits=npz:" + ec.write_npz(Path(rdir) / "quick_src_d.npz", d.images[rd],
                                                [d.class_names[i] for i in d.labels[rd]])]
        epochs = 1
    ec.log("scoring MNIST-5k + digits in one run")
    df, man = ec.pipeline_run(sources=sources, runs_dir=rdir, name="ev-sources", epochs=epochs, seed=a.seed,
                              device=a.device)
    src = df["source"].to_numpy()
    names = ["mnist", "digits"]
    rng = np.random.default_rng(a.seed)
    rows, top_rows, extra = [], [], {}
    for s in ec.SCORES:
        if s not in df or not np.isfinite(df[s]).any():
            continue
        v = df[s].to_numpy(float)
        ok = np.isfinite(v)
        stats = {n: ec.bootstrap_mean_ci(v[(src == n) & ok], rng, a.boot) for n in names}
        ks = ks_2samp(v[(src == "mnist") & ok], v[(src == "digits") & ok])
        ratio = stats["digits"][0] / stats["mnist"][0] if stats["mnist"][0] else float("nan")
        rows.append([s, f"{stats['mnist'][0]:.4g} [{stats['mnist'][1]:.4g}, {stats['mnist'][2]:.4g}]",
                     f"{stats['digits'][0]:.4g} [{stats['digits'][1]:.4g}, {stats['digits'][2]:.4g}]",
                     ratio, float(ks.statistic), float(ks.pvalue)])
        sign = ec.SIGN_MISLABELED[s]
        idx = np.flatnonzero(ok)
        top = ec.top_rows(sign * v, 0.1, a.seed)
        share_top = float((src[top] == "digits").mean())
        share_def = float((src[idx] == "digits").mean())
        top_rows.append([s if sign > 0 else f"−{s}", share_def, share_top, share_top / share_def if share_def else None])
        extra[s] = {"mean": {n: stats[n][0] for n in names}, "ci95": {n: stats[n][1:] for n in names},
                    "ratio_digits_over_mnist": ratio, "ks": float(ks.statistic), "ks_p": float(ks.pvalue),
                    "digits_share_defined": share_def, "digits_share_top10": share_top}
    acc = {n: float((df.loc[(src == n) & (df["split"] == "test"), "pred"]
                     == df.loc[(src == n) & (df["split"] == "test"), "label"]).mean()) for n in names}
    ctx = [["images", int((src == "mnist").sum()), int((src == "digits").sum())],
           ["test accuracy of the run's network", acc["mnist"], acc["digits"]]]
    tables = [
        ec.table("Per-source mean score [95% bootstrap CI], ratio digits ÷ MNIST, Kolmogorov–Smirnov statistic",
                 ["score", "MNIST-5k mean [CI]", "digits mean [CI]", "ratio digits/MNIST", "KS", "KS p-value"], rows),
        ec.table("Share of digits among all scored rows and among the top 10% by the score (harder/more "
                 "informative first; − = lower is harder)",
                 ["score", "digits share, all rows", "digits share, top 10%", "over-representation"], top_rows),
        ec.table("Context", ["", "MNIST-5k", "digits"], ctx),
    ]

    import matplotlib.pyplot as plt

    show = [s for s in ("si_function", "cg_score", "prediction_depth", "loss") if s in extra]
    fig, axes = plt.subplots(1, len(show), figsize=(3.4 * len(show), 3.2))
    for ax, s in zip(np.atleast_1d(axes), show, strict=False):
        v = df[s].to_numpy(float)
        pos = v[np.isfinite(v)]
        logx = s != "prediction_depth" and len(pos) > 0 and (pos > 0).all()
        bins = np.geomspace(pos.min(), pos.max(), 40) if logx else 40
        for n, col in (("mnist", "#1f77b4"), ("digits", "#d62728")):
            w = v[(src == n) & np.isfinite(v)]
            ax.hist(w, bins=bins, weights=np.full(len(w), 1.0 / max(len(w), 1)), alpha=0.5, color=col, label=n)
        if logx:
            ax.set_xscale("log")
        ax.set_title(f"{s} (KS {extra[s]['ks']:.2f})", fontsize=9)
        ax.set_ylabel("share of the source's rows", fontsize=8)
    np.atleast_1d(axes)[0].legend(fontsize=8)
    fig.suptitle("MNIST-5k vs sklearn digits (28×28), one run", fontsize=10)
    plot = ec.save_plot(fig, "sources")

    def say(s: str) -> str:
        e = extra[s]
        more = "digits" if (e["ratio_digits_over_mnist"] > 1) == (ec.SIGN_MISLABELED[s] > 0) else "MNIST-5k"
        return (f"{s}: digits/MNIST = {e['ratio_digits_over_mnist']:.2f} (KS {e['ks']:.2f}; top-10% share of "
                f"digits {e['digits_share_top10']:.0%} vs {e['digits_share_defined']:.0%} of rows) → {more}")

    key = [s for s in ("si_function", "si_weights", "cg_score", "prediction_depth", "loss") if s in extra]
    votes = [("digits" if (extra[s]["ratio_digits_over_mnist"] > 1) == (ec.SIGN_MISLABELED[s] > 0) else "MNIST-5k")
             for s in key]
    verdict = max(set(votes), key=votes.count) if votes else "n/a"
    conclusion = (f"{'; '.join(say(s) for s in key)}. By {votes.count(verdict)} of {len(votes)} of these scores "
                  f"the more informative (harder, more unique) source is {verdict}. Test accuracy of the run's network: "
                  f"digits {acc['digits']:.1%}, MNIST-5k {acc['mnist']:.1%} (held-out rows).")
    ec.write_results("sources", title="Comparing data sources", conclusion=conclusion, tables=tables,
                     scale="quick" if a.quick else ("full" if a.epochs is None else "reduced"), protocol=__doc__.split("\n\n")[1].replace("\n", " "),
                     plots=[plot], extra=extra,
                     notes=["Scores of different sources come from one run (one network, one kernel), so they "
                            "are comparable; a score's level is not comparable across runs.",
                            "SI and the training-dynamics scores cover the training rows only (80%)."])


if __name__ == "__main__":
    main()
