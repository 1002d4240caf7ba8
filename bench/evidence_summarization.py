"""Evidence 1 — dataset summarization (SI paper, Harutyunyan et al. 2021, Fig. 3): remove a fraction p of the
training set in a score's order, retrain the same network, and measure accuracy on a test split that the scores
never saw.

Protocol. Task ``4v9``: the 1000 MNIST-5k images of digits 4 and 9 (two classes); task ``mnist10``: all 5000
MNIST-5k images (ten classes). A seeded stratified 20% of the task is set aside as the *evaluation* split: it is
used for nothing but the final accuracies. The other 80% is the scored pool, split (seeded, stratified) like the
pipeline does into training rows and 20% held-out rows (the held-out rows are SI's held-out inputs x). The
pipeline's recipe is trained on the training rows and the registry adapters of ``si_function``, ``cg_score``
and ``el2n`` score them (the same ``ScoreContext`` the pipeline builds; defaults). Then, for p = 0, 0.1, …, 0.9,
the p·n training rows that come first in an order are removed and the same network (SmallCNN, same recipe, same
seed) is retrained on the rest with ``core.models.training.train_model``; its accuracy on the evaluation split is
recorded. The retraining runs for as many optimizer steps as the full-data training (epochs scaled by the ratio of
batches per epoch):
with a fixed number of epochs a small subset also gets fewer steps, which confounds "less information" with
"less training" (``--fixed-epochs`` restores the fixed count). Orders: lowest ``si_function`` first, highest ``si_function`` first, random (5 seeds), lowest
``cg_score`` first, lowest EL2N first. Iterative variant: remove the 5% of the remaining rows with the lowest
``si_function``, retrain and rescore on what is left, repeat (its accuracies are those of the network trained on
what is left; read at the table's p by linear interpolation). Ties are broken at random (seeded).

Run: ``python bench/evidence_summarization.py --task 4v9`` and ``--task mnist10`` (``--quick`` for a smoke test;
``--fractions``, ``--random-seeds``, ``--iter-max-p`` shrink the work).
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_common as ec  # noqa: E402

LABEL = {"si_low": "lowest si_function first", "si_high": "highest si_function first", "random": "random",
         "cg_low": "lowest cg_score first", "el2n_low": "lowest EL2N first",
         "si_iter": "lowest si_function first, iterative (rescored after each step)"}


def order_by(values: np.ndarray, ascending: bool, seed: int) -> np.ndarray:
    """Positions 0..len-1 sorted by ``values`` (NaN last), ties broken at random (seeded)."""
    v = np.where(np.isfinite(values), values, np.inf if ascending else -np.inf)
    tie = np.random.default_rng(seed).random(len(v))
    return np.lexsort((tie, v if ascending else -v))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", choices=["4v9", "mnist10"], default="4v9")
    ap.add_argument("--fractions", default="0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9")
    ap.add_argument("--orders", default="si_low,si_high,random,cg_low,el2n_low,si_iter")
    ap.add_argument("--random-seeds", type=int, default=5)
    ap.add_argument("--iter-step", type=float, default=0.05)
    ap.add_argument("--iter-max-p", type=float, default=0.9)
    ap.add_argument("--eval-fraction", type=float, default=0.2)
    ap.add_argument("--holdout", type=float, default=0.2)
    ap.add_argument("--fixed-epochs", action="store_true",
                    help="retrain every subset for the recipe's epochs (default: as many optimizer steps as the "
                         "full-data training, i.e. epochs × n_full / n_kept)")
    ap.add_argument("--suffix", default="", help="appended to the results name (e.g. run the iterative order "
                                                  "apart: --orders si_iter --suffix _iterative)")
    ap.add_argument("--per-class", type=int, default=None, help="use at most this many images per class")
    ec.common_args(ap)
    a = ap.parse_args()
    ec.setup(a.threads)
    from core.data import Samples, stratified_split

    fractions = [float(f) for f in a.fractions.split(",")]
    if 0.0 not in fractions:
        fractions = [0.0, *fractions]
    orders = [o for o in a.orders.split(",") if o]
    epochs, seeds = a.epochs, a.random_seeds
    m = ec.mnist5k()
    rows = np.flatnonzero(np.isin(m.labels, [4, 9])) if a.task == "4v9" else np.arange(len(m))
    if a.per_class:
        rows = rows[np.isin(rows, ec.per_class_subset(m.labels, a.per_class, a.seed))]
    if a.quick:
        rows = rows[np.isin(rows, ec.per_class_subset(m.labels, 30, a.seed))]
        epochs, seeds = 1, 2
    names = ["4", "9"] if a.task == "4v9" else list(m.class_names)
    y_all = np.searchsorted([4, 9], m.labels[rows]) if a.task == "4v9" else m.labels[rows]
    x_all = m.images[rows]
    ev_split = stratified_split(y_all, a.eval_fraction, a.seed + 100)
    ev, pool_rows = np.flatnonzero(ev_split == "test"), np.flatnonzero(ev_split == "train")
    eval_x, eval_y = x_all[ev], y_all[ev]
    n_pool = len(pool_rows)
    pool = Samples(images=x_all[pool_rows], labels=y_all[pool_rows], class_names=names,
                   source=np.array(["mnist"] * n_pool), sample_id=np.array([f"mnist:{i}" for i in rows[pool_rows]]),
                   image_path=np.array([""] * n_pool))
    split = stratified_split(pool.labels, a.holdout, a.seed)
    tr, val = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    n_tr = len(tr)
    ec.log(f"task {a.task}: {n_tr} training rows, {len(val)} held-out rows (SI's x), {len(ev)} evaluation rows")
    t = ec.Timer()
    sc = ec.score_in_process(pool, split, ["si_function", "cg_score", "el2n"], epochs=epochs, seed=a.seed,
                             device=a.device, eval_x=eval_x, eval_y=eval_y)
    score_s = t()
    epochs = sc["epochs"]  # the epochs the default recipe kept (early stopping): the retrainings' step budget
    scores = {k: v[tr] for k, v in sc["scores"].items()}
    ec.log(f"scored in {score_s:.0f}s (train {sc['train_s']:.0f}s, {sc['times']}); eval acc {sc['eval_acc']:.4f}")

    def epochs_for(n_keep: int) -> int:
        """The recipe's epochs, scaled so that every retraining takes as many optimizer steps as the full one
        (``--fixed-epochs``: the recipe's epochs whatever the size, which also starves small sets of steps)."""
        if a.fixed_epochs:
            return epochs
        steps = epochs * math.ceil(n_tr / 128)  # the pipeline's batch size is 128
        return max(1, int(round(steps / math.ceil(max(n_keep, 1) / 128))))

    def acc_without(removed_pos: np.ndarray) -> float:
        keep = np.setdiff1d(tr, tr[removed_pos])
        return ec.retrain_accuracy(pool.images, pool.labels, keep, eval_x, eval_y, pool.n_classes,
                                   epochs=epochs_for(len(keep)), seed=a.seed, device=a.device)

    curves: dict[str, dict[float, float]] = {}
    t = ec.Timer()
    full = acc_without(np.array([], dtype=int))
    retrain_s = t()
    ec.log(f"full-data accuracy {full:.4f} (retrain {retrain_s:.1f}s)")
    perms = {"si_low": order_by(scores["si_function"], True, a.seed),
             "si_high": order_by(scores["si_function"], False, a.seed),
             "cg_low": order_by(scores["cg_score"], True, a.seed),
             "el2n_low": order_by(scores["el2n"], True, a.seed)}
    for r in range(seeds):
        perms[f"random_{r}"] = np.random.default_rng(a.seed + 1 + r).permutation(n_tr)
    todo = [o for o in orders if o not in ("random", "si_iter")]
    if "random" in orders:
        todo += [f"random_{r}" for r in range(seeds)]
    state = dict(a=a, task=a.task + a.suffix, fixed_epochs=a.fixed_epochs, fractions=fractions, full=full, n_tr=n_tr, n_val=len(val), n_eval=len(ev),
                 seeds=seeds, epochs=epochs, score_s=score_s, retrain_s=retrain_s, sc_times=sc["times"])
    for o in todo:
        curves[o] = {0.0: full}
        for p in fractions:
            if p > 0:
                curves[o][p] = acc_without(perms[o][: int(round(p * n_tr))])
        ec.log(f"{o}: " + " ".join(f"{p:.1f}:{v:.3f}" for p, v in curves[o].items()))
        write(curves, state)
    if "si_iter" in orders:
        cur = tr.copy()
        si = scores["si_function"].copy()
        it = {0.0: full}
        while 1 - len(cur) / n_tr < a.iter_max_p - 1e-9:
            k = max(1, math.ceil(a.iter_step * len(cur)))
            drop = order_by(si, True, a.seed + len(cur))[:k]
            cur = np.delete(cur, drop)
            sub_rows = np.sort(np.concatenate([cur, val]))
            sub = pool.subset(sub_rows)
            sub_split = split[sub_rows]
            out = ec.score_in_process(sub, sub_split, ["si_function"], epochs=epochs_for(len(cur)), seed=a.seed,
                                      device=a.device, eval_x=eval_x, eval_y=eval_y)
            pos = np.searchsorted(sub_rows, cur)
            si = out["scores"]["si_function"][pos]
            p_now = 1 - len(cur) / n_tr
            it[p_now] = out["eval_acc"]
            ec.log(f"si_iter: removed {p_now:.3f}, accuracy {out['eval_acc']:.4f}")
            curves["si_iter_raw"] = dict(it)
            write(curves, state)
    write(curves, state, final=True)


def interp(curve: dict[float, float], p: float) -> float | None:
    ps = sorted(curve)
    if p > ps[-1] + 1e-9:
        return None
    return float(np.interp(p, ps, [curve[q] for q in ps]))


def write(curves: dict, st: dict, final: bool = False) -> None:
    a, fractions, full = st["a"], st["fractions"], st["full"]
    rows, first_drop = [], []
    rand = [k for k in curves if k.startswith("random_")]
    table_curves: dict[str, dict[float, float | None]] = {}
    for o in ("si_low", "si_high", "cg_low", "el2n_low"):
        if o in curves:
            table_curves[o] = {p: curves[o].get(p) for p in fractions}
    if rand:
        table_curves["random"] = {p: float(np.mean([curves[r][p] for r in rand])) for p in fractions}
        sd = {p: float(np.std([curves[r][p] for r in rand])) for p in fractions}
    if "si_iter_raw" in curves:
        table_curves["si_iter"] = {p: interp(curves["si_iter_raw"], p) for p in fractions}
    for o, c in table_curves.items():
        lab = LABEL[o] + (f" (mean of {len(rand)} seeds)" if o == "random" else "")
        rows.append([lab] + [c[p] for p in fractions])
        drop = next((p for p in fractions if c[p] is not None and c[p] < full - 0.01), None)
        done = max(p for p in fractions if c[p] is not None)
        first_drop.append([lab, drop if drop is not None else f"none up to {done:g}"])
    if rand:
        rows.append([f"random, standard deviation over {len(rand)} seeds"] + [sd[p] for p in fractions])
    cols = ["order"] + [f"p={p:g}" for p in fractions]
    tables = [ec.table(f"Test accuracy after removing a fraction p of the {st['n_tr']} training rows (evaluation "
                       f"split: {st['n_eval']} images never used for scoring)", cols, rows),
              ec.table(f"First p at which accuracy falls more than 1 point below the full-data accuracy "
                       f"({full:.4f})", ["order", "p"], first_drop)]
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    style = {"si_low": ("#1f77b4", "-"), "si_high": ("#d62728", "-"), "random": ("grey", "--"),
             "cg_low": ("#2ca02c", "-"), "el2n_low": ("#9467bd", "-"), "si_iter": ("#17becf", ":")}
    for o, c in table_curves.items():
        ps = [p for p in fractions if c[p] is not None]
        if o == "si_iter":
            raw = curves["si_iter_raw"]
            ps_raw = sorted(raw)
            ax.plot(ps_raw, [raw[p] for p in ps_raw], color=style[o][0], ls=style[o][1], marker=".", label=LABEL[o])
            continue
        ax.plot(ps, [c[p] for p in ps], color=style[o][0], ls=style[o][1], marker="o", ms=3, label=LABEL[o])
        if o == "random":
            ax.fill_between(ps, [c[p] - sd[p] for p in ps], [c[p] + sd[p] for p in ps], color="grey", alpha=0.2)
    ax.axhline(full - 0.01, color="k", lw=0.6, ls=":", label="full data − 1 point")
    ax.set_xlabel("fraction of the training set removed")
    ax.set_ylabel("test accuracy (held-out evaluation split)")
    ax.set_title(f"Dataset summarization, MNIST {'4 vs 9' if st['task'].startswith('4v9') else '10 classes'} "
                 f"({st['n_tr']} training rows)", fontsize=10)
    ax.legend(fontsize=7)
    plot = ec.save_plot(fig, f"summarization_{st['task']}")

    fd = {r[0]: r[1] for r in first_drop}
    parts = [f"{k}: {v}" for k, v in fd.items()]
    si_low, si_high = table_curves.get("si_low"), table_curves.get("si_high")
    verdict = ""
    if si_low and si_high and "random" in table_curves:
        big = [p for p in fractions if p >= 0.3 and si_low[p] is not None and si_high[p] is not None]
        lo_beats = sum(si_low[p] > table_curves["random"][p] for p in big)
        hi_below = sum(si_high[p] < table_curves["random"][p] for p in big)
        verdict = (f" The SI paper's claim (removing the least informative samples first keeps accuracy longer than "
                   f"random, removing the most informative first loses it faster): lowest-si_function-first is "
                   f"above random at {lo_beats} of {len(big)} fractions p ≥ 0.3 and highest-first below random "
                   f"at {hi_below} of {len(big)}; "
                   + ("reproduced." if lo_beats == len(big) and hi_below == len(big) else
                      "partly reproduced." if lo_beats + hi_below > len(big) else "not reproduced."))
    conclusion = (f"Full-data accuracy {full:.4f} ({st['n_tr']} training rows, {st['epochs']} epochs). First p with "
                  f"more than 1 point lost — " + "; ".join(parts) + "." + verdict)
    if not final:
        conclusion += " (Partial: the script was still running when this was written.)"
    a_full = (a.fractions == "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9" and st["a"].epochs is None
              and not a.fixed_epochs and not a.per_class
              and ("si_iter" not in a.orders or a.iter_max_p >= 0.9)
              and ("random" not in a.orders or st["seeds"] == 5))
    ec.write_results(f"summarization_{st['task']}",
                     title=f"Dataset summarization, MNIST {'4 vs 9' if st['task'].startswith('4v9') else '10 classes'}"
                     + (" (iterative)" if st["task"].endswith("_iterative") else ""),
                     conclusion=conclusion, tables=tables,
                     scale="quick" if a.quick else ("full" if a_full and final else "reduced"),
                     protocol=__doc__.split("\n\n")[1].replace("\n", " "), plots=[plot],
                     extra={"curves": {k: {f"{p:.4f}": v for p, v in c.items()} for k, c in curves.items()},
                            "full_accuracy": full, "n_train": st["n_tr"], "n_heldout": st["n_val"],
                            "n_eval": st["n_eval"], "scoring_s": st["score_s"], "retrain_s": st["retrain_s"],
                            "adapter_s": st["sc_times"]},
                     notes=["Every retraining uses the same initialisation seed, so the curves differ only by "
                            "which rows were removed.",
                            ("Every retraining ran for the recipe's number of epochs." if st["fixed_epochs"] else
                             "Every retraining ran for as many optimizer steps as the full-data training "
                             f"({st['epochs']} epochs on all {st['n_tr']} rows)."),
                            f"One full retraining took {st['retrain_s']:.1f} s; scoring took {st['score_s']:.0f} s."])


if __name__ == "__main__":
    main()
