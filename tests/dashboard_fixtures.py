"""Tiny real runs for the dashboard tests, written with ``core.store.RunWriter`` from real MNIST digits.

Scores are computed honestly from simple real quantities: an RBF kernel-ridge classifier on PCA features of the
pixels gives predictions, loss, margin and confidence; its closed-form leave-one-out algebra gives the
complexity gap ``cg_score`` (Σ_c α_ic² / (H⁻¹)_ii) and a functional unique-information ``si_function`` (mean
over the test rows of the squared change of the predictions when a train row is left out); ``uniqueness`` is
the mean distance to the 10 nearest neighbours. ``si_weights`` is written all-NaN and ``prediction_depth`` is
absent, so every page has to say that those scores are missing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from core.duplicates import near_duplicates
from core.store import RunWriter

CLASS_NAMES = [str(i) for i in range(10)]


@dataclass
class TinyRun:
    """A written run and facts the tests check against."""

    path: Path
    missing_image_id: str
    n: int
    n_mislabeled: int


def _rbf(a: np.ndarray, b: np.ndarray, gamma: float) -> np.ndarray:
    d2 = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * a @ b.T
    return np.exp(-gamma * np.maximum(d2, 0))


def _knn(emb: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    d2 = (emb * emb).sum(1)[:, None] + (emb * emb).sum(1)[None, :] - 2 * emb @ emb.T
    np.fill_diagonal(d2, np.inf)
    idx = np.argsort(d2, axis=1)[:, :k]
    return idx, np.sqrt(np.maximum(np.take_along_axis(d2, idx, 1), 0))


def write_tiny_run(runs_dir: Path, x: np.ndarray, y: np.ndarray, per_class: int = 24, name: str = "tiny-mnist",
                   seed: int = 0, missing_image: bool = True) -> TinyRun:
    """A complete 10-class run of about ``10 * per_class`` real digits from two sources, with injected label noise."""
    rng = np.random.default_rng(seed)
    # class 7 is under-sampled and class 9 half-sampled, so the Classes page has something to find
    counts = {c: per_class // 3 if c == 7 else per_class // 2 if c == 9 else per_class for c in range(10)}
    idx = np.sort(np.concatenate([rng.choice(np.flatnonzero(y == c), counts[c], replace=False) for c in range(10)]))
    imgs, true = x[idx].copy(), y[idx].astype(int)
    n = len(idx)
    source = np.where(rng.random(n) < 0.6, "mnist", "mnist-noisy")
    noisy = source == "mnist-noisy"
    imgs[noisy] = np.clip(imgs[noisy] + rng.normal(0, 0.25, imgs[noisy].shape), 0, 1).astype(np.float32)
    split = np.where(rng.random(n) < 0.8, "train", "test")
    train = np.flatnonzero(split == "train")
    test = np.flatnonzero(split == "test")
    # label noise on 5% of the train rows
    flip = rng.choice(train, max(3, n // 20), replace=False)
    label = true.copy()
    label[flip] = (true[flip] + rng.integers(1, 10, len(flip))) % 10
    # adversarial-looking rows: strong sign noise on 4 test rows
    adv = rng.choice(test, 4, replace=False)
    imgs[adv] = np.clip(imgs[adv] + 0.35 * np.sign(rng.normal(size=imgs[adv].shape)), 0, 1).astype(np.float32)
    # features: PCA of the pixels
    flat = imgs.reshape(n, -1).astype(np.float64)
    flat -= flat.mean(0)
    _, _, vt = np.linalg.svd(flat, full_matrices=False)
    feats = flat @ vt[:16].T
    feats /= feats[:, 0].std()
    emb = feats.astype(np.float32)
    # kernel ridge classifier on the train rows, one-vs-rest ±1 targets
    gamma = 1.0 / (2 * np.median(((feats[:, None] - feats[None]) ** 2).sum(-1)))
    lam = 1e-1
    ytr = -np.ones((len(train), 10))
    ytr[np.arange(len(train)), label[train]] = 1
    h_inv = np.linalg.inv(_rbf(feats[train], feats[train], gamma) + lam * np.eye(len(train)))
    alpha = h_inv @ ytr
    logits = _rbf(feats, feats[train], gamma) @ alpha * 3.0
    p = np.exp(logits - logits.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    pred = p.argmax(1)
    p_label = p[np.arange(n), label]
    other = logits.copy()
    other[np.arange(n), label] = -np.inf
    g = np.diag(h_inv)
    cg = np.full(n, np.nan)
    cg[train] = (alpha ** 2).sum(1) / g
    a_test = _rbf(feats[test], feats[train], gamma) @ h_inv  # (m, n_train)
    delta = a_test[:, :, None] * (alpha / g[:, None])[None]  # (m, n_train, C)
    si = np.full(n, np.nan)
    si[train] = 0.5 * (delta ** 2).sum(-1).mean(0)
    nbr, dist = _knn(feats, 10)
    uniq = dist.mean(1)
    susp_mis = 1 - p_label
    rank_u = pd.Series(uniq).rank(pct=True).to_numpy()
    flag_mis = (pred != label) & (susp_mis > 0.5)
    flag_adv = rank_u > 0.97
    reason = np.where(flag_mis, [f"model predicts {CLASS_NAMES[k]} with p={q:.2f}" for k, q in
                                 zip(pred, p.max(1), strict=True)], "")
    reason = np.where(flag_adv, np.char.add(reason.astype(str), np.where(flag_mis, "; ", "") + "isolated in "
                                            "feature space (top 3% uniqueness)"), reason)
    with RunWriter(runs_dir, name) as w:
        image_path = w.write_images(imgs, np.array([""] * n, dtype=object))
        df = pd.DataFrame({
            "sample_id": [f"{s}:{i}" for s, i in zip(source, idx, strict=True)], "source": source,
            "split": split, "label": label, "label_name": [CLASS_NAMES[k] for k in label],
            "image_path": image_path, "true_label": true, "is_mislabeled": label != true,
            "is_adversarial": np.isin(np.arange(n), adv), "pred": pred,
            "pred_name": [CLASS_NAMES[k] for k in pred], "pred_prob": p.max(1), "loss": -np.log(p_label + 1e-12),
            "margin": logits[np.arange(n), label] - other.max(1), "confidence": p_label,
            "uniqueness": uniq, "si_weights": np.full(n, np.nan), "si_function": si, "cg_score": cg,
            "umap_x": feats[:, 0], "umap_y": feats[:, 1], "flag_mislabeled": flag_mis, "flag_adversarial": flag_adv,
            "flag_reason": reason, "suspicion_mislabeled": susp_mis, "suspicion_adversarial": rank_u})
        w.write_samples(df)
        w.write_embeddings(emb)
        w.write_neighbors(nbr)
        # near-duplicate pairs by cosine similarity of the pixels, as the pipeline computes them (the threshold is
        # lowered from the pipeline's 0.995 so that a 200-image run has a dozen pairs to show)
        w.write_table("duplicates.parquet", near_duplicates(imgs, df["sample_id"].to_numpy(), threshold=0.85,
                                                            device="cpu"))
        specs = {s: {"params": {}, "wall_time_s": 0.01} for s in
                 ("loss", "margin", "confidence", "uniqueness", "si_function", "si_weights", "cg_score")}
        # the dataset-level CG quantities the engine records (real: the CG paper's kernel on these images)
        from core.scores.cg import cg_score_details, name_classes

        cg_res = cg_score_details(imgs, label, negatives="all", groups=source, dataset_level=True, device="cpu")
        specs["cg_score"]["info"] = name_classes(cg_res.info, CLASS_NAMES)
        path = w.finish({
            "name": name, "class_names": CLASS_NAMES,
            "sources": [{"name": s, "spec": s, "count": int((source == s).sum())} for s in ("mnist", "mnist-noisy")],
            "corruptions": [{"kind": "label_noise", "rate": 0.05, "seed": seed, "n_affected": int(len(flip))},
                            {"kind": "adversarial", "eps": 0.35, "seed": seed, "n_affected": 4}],
            "model": {"name": "rbf-kernel-ridge", "params": {"gamma": gamma, "lambda": lam}, "epochs": 0,
                      "train_acc": float((pred[train] == label[train]).mean()),
                      "test_acc": float((pred[test] == label[test]).mean())},
            "scores": specs, "steps": {"load": 0.2, "features": 0.1, "train": 0.3, "scores": 0.4},
            "device": "cpu", "n_samples": n, "skipped": 0})
    # one image file goes missing after the run was written (the grid must show a placeholder)
    miss_row = int(np.flatnonzero(label == 3)[0])
    if missing_image:
        (path / df["image_path"][miss_row]).unlink()
    return TinyRun(path=path, missing_image_id=str(df["sample_id"][miss_row]) if missing_image else "", n=n,
                   n_mislabeled=int((label != true).sum()))


def write_bare_run(runs_dir: Path, x: np.ndarray, y: np.ndarray, n: int = 40) -> Path:
    """A complete run with only the base columns: no scores, no map, no flags, no embeddings."""
    with RunWriter(runs_dir, "bare") as w:
        paths = w.write_images(x[:n], np.array([""] * n, dtype=object))
        w.write_samples(pd.DataFrame({"sample_id": [f"bare:{i}" for i in range(n)], "source": "bare",
                                      "split": "train", "label": y[:n], "label_name": [str(v) for v in y[:n]],
                                      "image_path": paths}))
        return w.finish({"name": "bare", "class_names": CLASS_NAMES, "sources": [{"name": "bare", "count": n}],
                         "scores": {}, "n_samples": n})


def write_broken_runs(runs_dir: Path, x: np.ndarray, y: np.ndarray) -> dict[str, Path]:
    """A half-written run (writer process died) and a failed run."""
    w = RunWriter(runs_dir, "half-written")
    w.write_samples(pd.DataFrame({"sample_id": ["a"], "source": "s", "split": "train", "label": [0],
                                  "label_name": ["0"], "image_path": [""]}))
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    status = json.loads((w.path / "status.json").read_text())
    status["pid"] = dead.pid
    (w.path / "status.json").write_text(json.dumps(status))
    f = RunWriter(runs_dir, "failed")
    f.fail("ScoreError: the NTK Gram matrix is singular")
    return {"half": w.path, "failed": f.path}
