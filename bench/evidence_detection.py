"""Evidence 5 — finding mislabeled and adversarial images: every score, the flag rule and cleanlab.

Protocol. MNIST-5k, four seeded runs of ``core.pipeline.score_run`` (every score, SmallCNN, epochs from the dataset size with early stopping, 20% held
out), each with one label-noise setting and one attack, injected by the pipeline itself:

- symmetric noise 10% (``--label-noise 0.1``) + FGSM ε = 0.1;
- symmetric noise 20% + FGSM ε = 0.3;
- class-conditional noise between confusable pairs, 30% within 4↔9, 3↔5, 1↔7 (``--label-noise-pairs 4:9,3:5,1:7
  --pair-noise-rate 0.3``) + PGD-10 ε = 0.1;
- clean labels + PGD-10 ε = 0.3.

Adversarial copies are 5% of the rows, crafted against the run's trained network from correctly classified,
clean-label rows, appended as held-out rows (the pipeline's ``--adversarial 0.05``).

Mislabeled: AUROC and precision among the top 5% for "the given label is wrong", on the training rows (where
every score is defined; SI and the training-dynamics baselines are not defined on held-out rows), each score
oriented so that higher = more suspicious (registry directions: low margin / confidence are suspicious). Next to
them: the flag rule's ``suspicion_mislabeled`` (``core.flags``) and cleanlab's label-quality score
(``cleanlab.rank.get_label_quality_scores``, self-confidence) from K-fold cross-validated probabilities of the
same network and recipe on the same training rows (``--cv-folds``, default 5).

Adversarial: AUROC and precision among the top 5% for "is an injected adversarial copy", over all rows where the
score is defined, and AUROC against the other held-out rows only (copies are held out, so a score that is
simply lower on training rows gets a free advantage in the first number). Orientation: high loss, low margin,
low ``cg_score`` (an attacked copy's pixels stay typical of its label: the flag rule's reading), high prediction
depth, high uniqueness, high ``suspicion_adversarial``.

Run: ``python bench/evidence_detection.py`` (``--quick`` for a smoke test; ``--settings`` picks a subset).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
import evidence_common as ec  # noqa: E402

SETTINGS = {
    "sym10_fgsm0.1": dict(label_noise=0.1, attack="fgsm", eps=0.1),
    "sym20_fgsm0.3": dict(label_noise=0.2, attack="fgsm", eps=0.3),
    "pairs30_pgd0.1": dict(label_noise_pairs="4:9,3:5,1:7", pair_noise_rate=0.3, attack="pgd", eps=0.1),
    "clean_pgd0.3": dict(attack="pgd", eps=0.3),
}
NOISE_NAME = {"sym10_fgsm0.1": "symmetric 10%", "sym20_fgsm0.3": "symmetric 20%",
              "pairs30_pgd0.1": "pairs 4↔9, 3↔5, 1↔7 at 30%", "clean_pgd0.3": None}
ATTACK_NAME = {"sym10_fgsm0.1": "FGSM ε=0.1", "sym20_fgsm0.3": "FGSM ε=0.3", "pairs30_pgd0.1": "PGD ε=0.1",
               "clean_pgd0.3": "PGD ε=0.3"}
SIGN_ADV = {"loss": 1, "margin": -1, "cg_score": -1, "prediction_depth": 1, "uniqueness": 1,
            "suspicion_adversarial": 1}


def cleanlab_scores(df, images: np.ndarray, folds: int, epochs: int, seed: int, device: str) -> np.ndarray:
    """cleanlab label-quality scores (lower = more likely mislabeled) of the training rows, from K-fold
    cross-validated probabilities of the pipeline's network and recipe; NaN elsewhere."""
    from cleanlab.rank import get_label_quality_scores

    from core.models.training import TrainConfig, predict_logits, train_model
    from core.scores.baselines import softmax

    tr = np.flatnonzero((df["split"] == "train").to_numpy())
    y = df["label"].to_numpy()
    k = int(y.max()) + 1
    rng = np.random.default_rng(seed)
    fold = rng.permutation(len(tr)) % folds
    probs = np.zeros((len(tr), k))
    for f in range(folds):
        fit, held = tr[fold != f], tr[fold == f]
        res = train_model(images, y, fit, k, TrainConfig(model="cnn", epochs=epochs), seed=seed + f, device=device)
        probs[fold == f] = softmax(predict_logits(res.model, images[held], device).astype(np.float64))
        ec.log(f"  cleanlab fold {f + 1}/{folds}")
    out = np.full(len(df), np.nan)
    out[tr] = get_label_quality_scores(y[tr], probs)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--settings", default=",".join(SETTINGS))
    ap.add_argument("--adversarial", type=float, default=0.05)
    ap.add_argument("--cv-folds", type=int, default=5)
    ap.add_argument("--top", type=float, default=0.05)
    ec.common_args(ap)
    a = ap.parse_args()
    ec.setup(a.threads)
    rdir = ec.runs_dir(a.runs_dir)
    sources, epochs, folds = ["mnist=mnist5k"], a.epochs, a.cv_folds
    m = ec.mnist5k()
    base_rows = np.arange(len(m))
    if a.quick:
        base_rows = ec.per_class_subset(m.labels, 30, a.seed)
        sources = ["mnist=npz:" + ec.write_npz(Path(rdir) / "quick_det.npz", m.images[base_rows],
                                               [m.class_names[i] for i in m.labels[base_rows]])]
        epochs, folds = 1, 2
    settings = [s for s in a.settings.split(",") if s]
    out_mis, out_adv, extra = {}, {}, {}
    for name in settings:
        ec.log(f"setting {name}")
        df, man = ec.pipeline_run(sources=sources, runs_dir=rdir, name=f"ev-detect-{name}", epochs=epochs,
                                  seed=a.seed, device=a.device, adversarial=a.adversarial, **SETTINGS[name])
        is_adv = df["is_adversarial"].to_numpy(bool)
        mis = df["is_mislabeled"].to_numpy(bool)
        train = (df["split"] == "train").to_numpy() & ~is_adv
        res_m, res_a = {}, {}
        if NOISE_NAME[name]:
            # cleanlab needs the pixels: rebuild them exactly as the pipeline loaded them (same loader)
            from core.data import load_sources

            data = load_sources(sources)
            imgs = np.zeros((len(df), *data.images.shape[1:]), np.float32)
            imgs[: len(data)] = data.images  # source rows come first, in load order (checked below)
            assert (df["sample_id"].to_numpy()[: len(data)] == data.sample_id).all()
            t = ec.Timer()
            cl = cleanlab_scores(df, imgs, folds, epochs or int(man["model"]["epochs"]), a.seed, a.device)
            cl_s = t()
            cols = {s: ec.SIGN_MISLABELED[s] * df[s].to_numpy(float) for s in ec.SCORES if s in df}
            cols["flag rule (suspicion_mislabeled)"] = df["suspicion_mislabeled"].to_numpy(float)
            cols["cleanlab (−label quality)"] = -cl
            for s, v in cols.items():
                vv = np.where(train, v, np.nan)
                if np.isfinite(vv).any():
                    res_m[s] = {"auroc": ec.auroc(mis[train], vv[train]),
                                "p_at_top": ec.precision_at(mis[train], vv[train], a.top, a.seed)}
            flagged = df["flag_mislabeled"].to_numpy(bool) & train
            res_m["_flag"] = {"precision": float(mis[flagged].mean()) if flagged.any() else float("nan"),
                              "recall": float(flagged[mis & train].mean()) if (mis & train).any() else float("nan"),
                              "n_flagged": int(flagged.sum())}
            res_m["_noise_rate_train"] = float(mis[train].mean())
            res_m["_cleanlab_s"] = cl_s
            out_mis[name] = res_m
        held = (df["split"] == "test").to_numpy()
        for s, sign in SIGN_ADV.items():
            if s not in df:
                continue
            v = sign * df[s].to_numpy(float)
            if not np.isfinite(v[is_adv]).any():
                continue
            res_a[s] = {"auroc": ec.auroc(is_adv, v), "p_at_top": ec.precision_at(is_adv, v, a.top, a.seed),
                        "auroc_heldout": ec.auroc(is_adv[held], v[held])}
        fa = df["flag_adversarial"].to_numpy(bool)
        res_a["_flag"] = {"precision": float(is_adv[fa].mean()) if fa.any() else float("nan"),
                          "recall": float(fa[is_adv].mean()), "n_flagged": int(fa.sum())}
        adv_rows = df[is_adv]
        res_a["_attack_success"] = float((adv_rows["pred"] != adv_rows["label"]).mean())
        res_a["_n_adv"] = int(is_adv.sum())
        out_adv[name] = res_a
        extra[name] = {"mislabeled": res_m, "adversarial": res_a, "test_acc": man["model"]["test_acc"],
                       "score_wall_time_s": {k: v["wall_time_s"] for k, v in man["scores"].items()}}
        ec.log(f"  done {name}: mislabeled AUROC si_function={res_m.get('si_function', {}).get('auroc')} "
               f"cleanlab={res_m.get('cleanlab (−label quality)', {}).get('auroc')}")

    tables = []
    mn = list(out_mis)
    if mn:
        keys = [k for k in out_mis[mn[0]] if not k.startswith("_")]
        rows = []
        for k in keys:
            lab = k if k not in ec.SIGN_MISLABELED or ec.SIGN_MISLABELED[k] > 0 else f"−{k}"
            rows.append([lab] + [out_mis[n].get(k, {}).get("auroc") for n in mn]
                        + [out_mis[n].get(k, {}).get("p_at_top") for n in mn])
        tables.append(ec.table(
            f"Mislabeled: AUROC and precision in the top {a.top:.0%} (training rows)",
            ["score"] + [f"AUROC {NOISE_NAME[n]}" for n in mn] + [f"P@{a.top:.0%} {NOISE_NAME[n]}" for n in mn], rows))
        tables.append(ec.table(
            "Mislabeled: the flag rule's binary flag (flag_mislabeled) on training rows",
            ["noise", "true noise rate (train)", "flagged", "precision", "recall"],
            [[NOISE_NAME[n], out_mis[n]["_noise_rate_train"], out_mis[n]["_flag"]["n_flagged"],
              out_mis[n]["_flag"]["precision"], out_mis[n]["_flag"]["recall"]] for n in mn]))
    an = list(out_adv)
    keys = [k for k in SIGN_ADV if any(k in out_adv[n] for n in an)]
    rows = []
    for k in keys:
        lab = k if SIGN_ADV[k] > 0 else f"−{k}"
        rows.append([lab] + [out_adv[n].get(k, {}).get("auroc") for n in an]
                    + [out_adv[n].get(k, {}).get("auroc_heldout") for n in an]
                    + [out_adv[n].get(k, {}).get("p_at_top") for n in an])
    tables.append(ec.table(
        f"Adversarial copies: AUROC over all rows, AUROC against held-out rows only, precision in the top {a.top:.0%}",
        ["score"] + [f"AUROC {ATTACK_NAME[n]}" for n in an] + [f"AUROC vs held-out {ATTACK_NAME[n]}" for n in an]
        + [f"P@{a.top:.0%} {ATTACK_NAME[n]}" for n in an], rows))
    tables.append(ec.table(
        "Adversarial: attack success (copies the network misclassifies) and the flag rule (flag_adversarial)",
        ["attack", "copies", "attack success", "flagged", "precision", "recall"],
        [[ATTACK_NAME[n], out_adv[n]["_n_adv"], out_adv[n]["_attack_success"], out_adv[n]["_flag"]["n_flagged"],
          out_adv[n]["_flag"]["precision"], out_adv[n]["_flag"]["recall"]] for n in an]))
    plots = []
    import matplotlib.pyplot as plt

    if mn:
        fig, ax = plt.subplots(figsize=(8, 3.8))
        keys_m = [k for k in out_mis[mn[0]] if not k.startswith("_")]
        w = 0.8 / len(mn)
        for j, n in enumerate(mn):
            ax.bar(np.arange(len(keys_m)) + j * w, [out_mis[n].get(k, {}).get("auroc", np.nan) for k in keys_m],
                   w, label=NOISE_NAME[n])
        ax.axhline(0.5, color="grey", ls=":")
        ticks = [("−" if ec.SIGN_MISLABELED.get(k, 1) < 0 else "") + k.split(" (")[0] for k in keys_m]
        ax.set_xticks(np.arange(len(keys_m)) + 0.4 - w / 2, ticks, rotation=45,
                      ha="right", fontsize=8)
        ax.set_ylim(0, 1)
        ax.set_ylabel("AUROC, mislabeled")
        ax.legend(fontsize=7)
        ax.set_title("Finding flipped labels (MNIST-5k, training rows)", fontsize=10)
        plots.append(ec.save_plot(fig, "detection"))

    # plain-words conclusion
    parts = []
    for n in mn:
        r = {k: v for k, v in out_mis[n].items() if not k.startswith("_")}
        best = max(r, key=lambda k: r[k]["auroc"] if r[k]["auroc"] is not None and np.isfinite(r[k]["auroc"]) else -1)
        cl = r.get("cleanlab (−label quality)", {})
        parts.append(f"{NOISE_NAME[n]}: best {best} AUROC {r[best]['auroc']:.3f} (P@{a.top:.0%} {r[best]['p_at_top']:.2f}); "
                     f"si_function {r['si_function']['auroc']:.3f}, cg_score {r['cg_score']['auroc']:.3f}, "
                     f"cleanlab {cl.get('auroc', float('nan')):.3f}")
    for n in an:
        r = {k: v for k, v in out_adv[n].items() if not k.startswith("_")}
        best = max(r, key=lambda k: r[k]["auroc_heldout"] if np.isfinite(r[k]["auroc_heldout"] or np.nan) else -1)
        parts.append(f"{ATTACK_NAME[n]} (success {out_adv[n]['_attack_success']:.0%}): best {best} AUROC vs held-out "
                     f"{r[best]['auroc_heldout']:.3f}; −cg_score {r.get('cg_score', {}).get('auroc_heldout', float('nan')):.3f}")
    conclusion = "; ".join(parts) + "."
    ec.write_results("detection", title="Mislabeled and adversarial images", conclusion=conclusion, tables=tables,
                     scale="quick" if a.quick else ("full" if len(settings) == len(SETTINGS) and a.epochs is None else "reduced"),
                     protocol=" ".join(p.replace("\n", " ") for p in __doc__.split("\n\n")[1:5]), plots=plots,
                     extra=extra,
                     notes=["SI, EL2N, forgetting and Data Maps are not defined on held-out rows, so on the "
                            "adversarial copies (held out by construction): they are left out of the adversarial "
                            "table.",
                            "cleanlab's probabilities come from K extra trainings of the same network (K-fold "
                            "cross-validation on the training rows); the scores come from the run's one training."])


if __name__ == "__main__":
    main()
