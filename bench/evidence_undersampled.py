"""Evidence 2 — under-sampled classes: does a class kept at 5–50% of its size stand out in the scores, and does
the Classes page's "few samples and high informativeness" ranking put it first?

Protocol. MNIST-5k (500 images per class). For each fraction f in 5%, 10%, 20%, 50%, one class (default "3") is
under-sampled to f (and f = 100%, the control: how the class scores when it is not under-sampled) with the pipeline's own corruption (``--undersample 3:f``) and the whole dataset is scored by
``core.pipeline.score_run`` with every score (the pipeline's recipe: SmallCNN, epochs from the dataset size with early stopping, 20% held out). For
each score: the mean over the under-sampled class divided by the mean over the other classes (rows where the
score is defined; SI and training-dynamics scores are defined on the training rows), and the position of the
class in the Classes page ranking (z(mean score) − z(log class size), recomputed from the page's formula; 1 =
the page names it first). Runs are seeded (``--seed``).

Run: ``python bench/evidence_undersampled.py`` (``--quick`` for a smoke test on 40 images per class).
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
    ap.add_argument("--classes", default="3", help="comma-separated classes to under-sample, one at a time")
    ap.add_argument("--fractions", default="0.05,0.1,0.2,0.5,1.0",
                    help="fractions kept; 1.0 is the control (the class at full size)")
    ec.common_args(ap)
    a = ap.parse_args()
    ec.setup(a.threads)
    fractions = [float(f) for f in a.fractions.split(",")]
    classes = [c.strip() for c in a.classes.split(",")]
    rdir = ec.runs_dir(a.runs_dir)
    sources = ["mnist=mnist5k"]
    epochs = a.epochs
    if a.quick:
        d = ec.mnist5k()
        rows = ec.per_class_subset(d.labels, 40, a.seed)
        sources = ["mnist=npz:" + ec.write_npz(Path(rdir) / "quick_mnist.npz", d.images[rows],
                                               [d.class_names[i] for i in d.labels[rows]])]
        epochs = 1

    ratio_rows, rank_rows, mean_rows, extra = [], [], [], {}
    results: dict[tuple[str, float], dict] = {}
    for c in classes:
        for f in fractions:
            ec.log(f"class {c} kept at {f:.0%}")
            df, man = ec.pipeline_run(sources=sources, runs_dir=rdir, name=f"ev-under-{c}-{f}",
                                      undersample=f"{c}:{f}", epochs=epochs, seed=a.seed, device=a.device)
            is_c = (df["label_name"] == c).to_numpy()
            res = {"n_class": int(is_c.sum()), "n_other_mean": float((~is_c).sum() / (df["label_name"].nunique() - 1)),
                   "test_acc_class": float((df.loc[is_c & (df["split"] == "test"), "pred_name"] == c).mean()),
                   "test_acc_all": man["model"]["test_acc"], "ratio": {}, "rank": {}, "rank_mean": {}, "auroc": {}}
            for s in ec.SCORES:
                if s not in df or not np.isfinite(df[s]).any():
                    continue
                v = df[s].to_numpy(float)
                ok = np.isfinite(v)
                res["ratio"][s] = float(v[is_c & ok].mean() / v[~is_c & ok].mean())
                res["auroc"][s] = ec.auroc(is_c, ec.SIGN_MISLABELED[s] * v)
                rk = ec.class_ranking(df, s)
                order = list(rk.index)
                res["rank"][s] = order.index(c) + 1 if c in order else None
                by_mean = list(rk.sort_values("mean", ascending=ec.SIGN_MISLABELED[s] < 0).index)
                res["rank_mean"][s] = by_mean.index(c) + 1 if c in by_mean else None
            results[(c, f)] = res
            extra[f"{c}@{f}"] = res
            ec.log(f"  n={res['n_class']} ratio si_function={res['ratio'].get('si_function')} "
                   f"rank={res['rank'].get('si_function')}")

    cols = [f"{c} at {f:.0%}" for c in classes for f in fractions]
    keys = [(c, f) for c in classes for f in fractions]
    for s in ec.SCORES:
        if all(s in results[k]["ratio"] for k in keys):
            ratio_rows.append([s] + [results[k]["ratio"][s] for k in keys])
            if s in ec.INFORMATIVE:
                rank_rows.append([s] + [results[k]["rank"][s] for k in keys])
            mean_rows.append([s if ec.SIGN_MISLABELED[s] > 0 else f"−{s}"]
                             + [results[k]["rank_mean"][s] for k in keys])
    auroc_rows = [[s if ec.SIGN_MISLABELED[s] > 0 else f"−{s}"] + [results[k]["auroc"][s] for k in keys]
                  for s in ec.SCORES if all(s in results[k]["auroc"] for k in keys)]
    ctx_rows = [["images in the class", *[results[k]["n_class"] for k in keys]],
                ["test accuracy on the class", *[results[k]["test_acc_class"] for k in keys]],
                ["test accuracy, all classes", *[results[k]["test_acc_all"] for k in keys]]]
    tables = [
        ec.table("Mean score of the under-sampled class ÷ mean score of the other classes", ["score", *cols],
                 ratio_rows),
        ec.table("Position of the under-sampled class in the Classes page ranking “few samples and high "
                 "informativeness” (1 = named first; 10 classes)", ["score", *cols], rank_rows),
        ec.table("Position of the class by its mean score alone, without the class-size term (1 = the class "
                 "has the highest mean of the 10; − = lower is harder, so the lowest mean ranks first)",
                 ["score", *cols], mean_rows),
        ec.table("AUROC of the score (harder = higher) for “row belongs to the under-sampled class” "
                 "(0.5 = no signal)",
                 ["score", *cols], auroc_rows),
        ec.table("Context", ["", *cols], ctx_rows),
    ]

    # plot
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for s in ec.SCORES:
        if all(s in results[(classes[0], f)]["ratio"] for f in fractions) and s in ec.INFORMATIVE:
            ax.plot([100 * f for f in fractions], [results[(classes[0], f)]["ratio"][s] for f in fractions],
                    marker="o", lw=2.2 if s.startswith(("si_", "cg")) else 1.0, label=s)
    ax.axhline(1.0, color="grey", ls=":")
    ax.set_xscale("log")
    ax.set_xticks([100 * f for f in fractions], [f"{f:.0%}" for f in fractions])
    ax.set_xlabel(f"share of class {classes[0]} kept")
    ax.set_ylabel("class mean ÷ other classes' mean")
    ax.set_title(f"Under-sampled class {classes[0]} (MNIST-5k)")
    ax.legend(fontsize=7, ncol=2)
    plot = ec.save_plot(fig, "undersampled")

    # conclusion in plain words
    under = [k for k in keys if k[1] < 1.0]
    control = [k for k in keys if k[1] >= 1.0]
    first = [s for s in ec.INFORMATIVE if all(results[k]["rank"].get(s) == 1 for k in under)]
    top_mean = [s for s in ec.SCORES if all(results[k]["rank_mean"].get(s) == 1 for k in under)]
    parts = []
    for s in ("si_function", "si_weights", "cg_score"):
        if s in results[keys[0]]["ratio"]:
            parts.append(f"{s}: ratio " + ", ".join(f"{results[k]['ratio'][s]:.2f}" for k in keys)
                         + "; rank " + ", ".join(str(results[k]["rank"][s]) for k in keys))
    conclusion = (f"Class {', '.join(classes)} kept at {', '.join(f'{f:.0%}' for f in fractions)} "
                  f"(ratio = class mean ÷ others, rank = position on the Classes page). " + "; ".join(parts) + ". "
                  + (f"Scores whose ranking puts the class first at every under-sampled fraction: {', '.join(first)}. "
                     if first else "No score puts the class first at every under-sampled fraction. ")
                  + "The ranking's class-size term alone favours the smallest class, so the stricter test is "
                  "the mean score alone: "
                  + (f"{', '.join(top_mean)} give the class the highest mean of all classes at every under-sampled "
                     "fraction. " if top_mean else "no score gives the class the highest mean at every under-sampled "
                     "fraction. ")
                  + ("Control (class at full size): " + ", ".join(
                      f"{s} ratio {results[control[0]]['ratio'][s]:.2f}, mean rank {results[control[0]]['rank_mean'][s]}"
                      for s in ("si_function", "cg_score") if s in results[control[0]]["ratio"]) + "."
                     if control else ""))
    ec.write_results("undersampled", title="Under-sampled classes", conclusion=conclusion, tables=tables,
                     scale="quick" if a.quick else ("full" if a.epochs is None and a.fractions == "0.05,0.1,0.2,0.5,1.0" else "reduced"), protocol=__doc__.split("\n\n")[1].replace("\n", " "),
                     plots=[plot], extra=extra,
                     notes=["Ratios of signed scores (margin) and of low-is-informative scores (margin, confidence) "
                            "read the other way: below 1 means the class is harder.",
                            "The ranking is only computed for the scores the dashboard treats as informative."])


if __name__ == "__main__":
    main()
