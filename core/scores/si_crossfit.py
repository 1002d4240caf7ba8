"""The default SI of a run: a wide ReLU head on features that did not see the row (``core.scores.si_head``).

Where the features come from (``features`` parameter):

- ``"pretrained"`` (default when the run was given ``--weights``): the network at w₀ = the loaded weights,
  before any training on this data: every row's features are independent of every label.
- ``"crossfit"`` (default otherwise): the training rows are split into K folds (``folds``, default 2),
  stratified by class, with near-duplicate groups kept inside one fold (a copy in another fold would leak the
  row into its own features). For fold j, a network of the run's recipe is trained on the other folds'
  rows; it gives the features of fold j's rows and of the held-out rows. Each fold is its own head problem.
  With ``repeats`` = R > 1 the cross-fitting is done R times with other seeds (other folds, other networks)
  and each row's SI is the mean over the R problems it was in: the expectation over the algorithm's
  randomness, which makes the ranking less dependent on it (``bench/results/si_default.md`` measures how much).
- ``"frozen"`` (default when the run has frozen features: a frozen pretrained backbone, or the user's
  ``--features``): those features as they are (they were not trained on this data's labels; for
  ``--features`` that is the user's responsibility, stated in the manifest).
- ``"trained"``: the run's trained network (it saw every row: leaky, kept for comparison only).

A problem larger than ``max_problem`` rows is split into seeded random parts of at most that size (near
duplicates kept together): SI is then the unique information of a row among the rows of its part, which the
manifest records.

Each problem: features standardised over the problem's rows and held-out rows (fixed preprocessing), the
head's NTK θ (``relu_ntk``), λ = ``lam`` (the kernel's diagonal is ≈ 1 after standardisation), ηt chosen by
early stopping on the held-out MSE (``t = "auto"``) or given, σ stated; values in nats. Everything a
re-run needs (rows, features, λ, ηt, σ) is returned as arrays and stored in the run (``si_model.npz``) for
``infoscope verify-si``.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from core.data.image_store import take_rows
from core.errors import ScoreError
from core.scores.registry import ScoreContext, ScoreResult
from core.scores.si_head import choose_time, head_kernels, head_loo, head_set_loo

HEAD_DEFAULTS: dict[str, Any] = {
    "method": "head",
    "features": "auto",
    "folds": 2,
    "lam": 1e-3,
    "t": "auto",
    "sigma": 0.01,
    "max_val": 300,
    "max_problem": 5000,
    "crossfit_seed": None,
    "repeats": 1,
    "set_information": True,
}


@dataclass
class HeadProblem:
    """One head problem: training rows (run indices), their features, held-out rows and features."""

    rows: np.ndarray
    x: np.ndarray
    val_rows: np.ndarray
    xv: np.ndarray
    source: str
    repeat: int = 0
    info: dict[str, Any] = field(default_factory=dict)


def duplicate_groups(n: int, pairs: np.ndarray | None) -> np.ndarray:
    """Connected components (union–find) of the near-duplicate graph: a group id per row."""
    parent = np.arange(n)

    def find(a: int) -> int:
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    if pairs is not None:
        for a, b in np.asarray(pairs, dtype=int).reshape(-1, 2):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    return np.array([find(i) for i in range(n)])


def assign_folds(labels: np.ndarray, groups: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold id per row: groups (near-duplicates) never split, each class spread evenly over the folds.

    Groups are dealt in a seeded random order to the fold that currently has the fewest rows of the group's
    (first row's) class.
    """
    if k < 2:
        raise ScoreError(f"cross-fitting needs at least 2 folds, got {k}")
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(groups, return_inverse=True)
    order = rng.permutation(len(uniq))
    n_classes = int(labels.max()) + 1 if len(labels) else 0
    counts = np.zeros((k, max(n_classes, 1)), dtype=int)
    fold_of_group = np.empty(len(uniq), dtype=int)
    members = [[] for _ in range(len(uniq))]
    for i, g in enumerate(inv):
        members[g].append(i)
    for g in order:
        c = labels[members[g][0]]
        tot = counts.sum(1)
        cand = np.flatnonzero(counts[:, c] == counts[:, c].min())
        f = int(cand[np.argmin(tot[cand])])
        fold_of_group[g] = f
        counts[f, c] += len(members[g])
    return fold_of_group[inv]


def split_problem(rows: np.ndarray, groups: np.ndarray, max_rows: int, seed: int) -> list[np.ndarray]:
    """Seeded random parts of ``rows`` of at most ``max_rows`` rows (groups kept together)."""
    if len(rows) <= max_rows:
        return [rows]
    n_parts = int(np.ceil(len(rows) / max_rows))
    rng = np.random.default_rng(seed)
    g = groups[rows]
    uniq = rng.permutation(np.unique(g))
    part_of = {u: i % n_parts for i, u in enumerate(uniq)}
    lab = np.array([part_of[x] for x in g])
    return [np.sort(rows[lab == p]) for p in range(n_parts)]


def solve_problem(prob: HeadProblem, labels: np.ndarray, n_classes: int, *, lam: float, t: Any,
                  sigma: float, sets: dict[str, np.ndarray] | None = None) -> dict[str, Any]:
    """SI of every row of one problem (nats) and the problem's parameters."""
    kern, kern_val = head_kernels(prob.x, prob.xv)
    if not len(prob.xv):
        kern_val = None
    y = torch.nn.functional.one_hot(torch.as_tensor(labels[prob.rows]), n_classes).double()
    eig = torch.linalg.eigh(kern)
    path: list[tuple[float, float]] = []
    if t == "auto":
        if kern_val is None:
            raise ScoreError("t = 'auto' (early stopping) needs held-out rows; give t explicitly")
        yv = torch.nn.functional.one_hot(torch.as_tensor(labels[prob.val_rows]), n_classes).double()
        eta_t, path = choose_time(kern, kern_val, y, yv, lam=lam, eig=eig)
    else:
        eta_t = None if t in (None, "inf", float("inf")) else float(t)
    out = head_loo(kern, kern_val, y, lam=lam, eta_t=eta_t, eig=eig)
    set_info = {}
    if sets:
        names = list(sets)
        vals = head_set_loo(kern, kern_val, y, [sets[nm] for nm in names], lam=lam, eta_t=eta_t, eig=eig)
        set_info = {nm: (w / (2 * sigma**2), f / (2 * sigma**2)) for nm, (w, f) in zip(names, vals, strict=True)}
    return {"sets": set_info, "si_weights": out.dw2 / (2 * sigma**2), "si_function": out.df2 / (2 * sigma**2),
            "eta_t": eta_t, "path": path, "loo_resid": out.loo_resid,
            "val_acc": float((out.val_pred.argmax(1) == labels[prob.val_rows]).mean())
            if out.val_pred is not None and len(prob.val_rows) else None}


def _val_rows(ctx: ScoreContext, max_val: int) -> np.ndarray:
    adv = np.asarray(ctx.data.is_adversarial, dtype=bool)
    val = np.array([i for i in ctx.test_idx if not adv[i]], dtype=int)
    if max_val and len(val) > max_val:
        rng = np.random.default_rng(ctx.seed + 17)
        val = np.sort(rng.choice(val, max_val, replace=False))
    return val


def _embed_with(ctx: ScoreContext, model: Any, rows: np.ndarray) -> np.ndarray:
    from core.models.training import embed

    return embed(model, take_rows(ctx.data.images, rows), ctx.device).astype(np.float64)


def build_problems(ctx: ScoreContext, prm: dict[str, Any]) -> tuple[list[HeadProblem], dict[str, Any]]:
    """The head problems of a run and how their features were made."""
    tr = ctx.train_idx
    val = _val_rows(ctx, int(prm["max_val"]))
    if len(val) < 2:
        raise ScoreError("the head SI needs held-out rows (holdout > 0) for σ-scaled si_function and early stopping")
    feats = str(prm["features"])
    weights = (ctx.extra.get("train_config") or {}).get("weights")
    frozen = ctx.extra.get("frozen_features")
    if feats == "auto":
        feats = "frozen" if frozen is not None else "pretrained" if weights else "crossfit"
    n = len(ctx.data.labels)
    groups = duplicate_groups(n, ctx.extra.get("duplicate_pairs"))
    seed = ctx.seed if prm.get("crossfit_seed") is None else int(prm["crossfit_seed"])
    problems: list[HeadProblem] = []
    meta: dict[str, Any] = {"features": feats}
    if feats == "crossfit":
        train_subset = ctx.extra.get("train_subset")
        if train_subset is None:
            raise ScoreError("cross-fitted SI needs the run's training recipe (train_subset)")
        k = int(prm["folds"])
        reps = int(prm["repeats"])
        if reps < 1:
            raise ScoreError(f"repeats must be at least 1, got {reps}")
        from core.models.training import predict_logits

        accs = []
        meta["folds"] = k
        meta["fold_sizes"] = []
        for rep in range(reps):
            seed_r = seed + 7919 * rep
            fold = assign_folds(np.asarray(ctx.data.labels)[tr], groups[tr], k, seed_r)
            meta["fold_sizes"].append([int((fold == f).sum()) for f in range(k)])
            for f in range(k):
                ctx.progress(f"SI: cross-fitting, network {rep * k + f + 1}/{reps * k}", (rep * k + f) / (reps * k + 1))
                t0 = time.perf_counter()
                net = train_subset(tr[fold != f], seed_r + 1000 + f)
                meta.setdefault("crossfit_train_s", []).append(round(time.perf_counter() - t0, 2))
                rows_f = tr[fold == f]
                pred = predict_logits(net, take_rows(ctx.data.images, rows_f), ctx.device).argmax(1)
                accs.append(round(float((pred == ctx.data.labels[rows_f]).mean()), 4))
                xf = _embed_with(ctx, net, rows_f)
                xv = _embed_with(ctx, net, val)
                for part in split_problem(np.arange(len(rows_f)), groups[rows_f], int(prm["max_problem"]),
                                          seed_r + f):
                    problems.append(HeadProblem(rows_f[part], xf[part], val, xv, source=f"repeat {rep} fold {f}",
                                                repeat=rep))
        meta["fold_network_acc_on_unseen_fold"] = accs
    elif feats in ("pretrained", "trained", "frozen"):
        from core.models.training import clone_at

        if feats == "frozen":
            if frozen is None:
                raise ScoreError("features = 'frozen' needs a frozen backbone or --features")
            arr = np.asarray(frozen, dtype=np.float64)
            x_all, xv = arr[tr], arr[val]
        else:
            if feats == "pretrained":
                if not weights:
                    raise ScoreError("features = 'pretrained' needs --weights (a pretrained network)")
                model = clone_at(ctx.model, ctx.init_state)
            else:
                model = ctx.model
            x_all = _embed_with(ctx, model, tr)
            xv = _embed_with(ctx, model, val)
        for j, part in enumerate(split_problem(np.arange(len(tr)), groups[tr], int(prm["max_problem"]), seed)):
            problems.append(HeadProblem(tr[part], x_all[part], val, xv, source=f"part {j}"))
    else:
        raise ScoreError(f"unknown SI features {feats!r}: auto, crossfit, pretrained, frozen or trained")
    meta["n_problems"] = len(problems)
    meta["problem_sizes"] = [len(p.rows) for p in problems]
    return problems, meta


def _sets_of(ctx: ScoreContext, rows: np.ndarray) -> dict[str, np.ndarray]:
    """Positions (within ``rows``) of each class, each source and of every row: the sets whose unique
    information is reported at the dataset level."""
    labels = np.asarray(ctx.data.labels)[rows]
    srcs = np.asarray(ctx.data.source).astype(str)[rows]
    names = list(ctx.data.class_names)
    out = {"all": np.arange(len(rows))}
    for c in np.unique(labels):
        out[f"class:{names[int(c)]}"] = np.flatnonzero(labels == c)
    if len(np.unique(srcs)) > 1:
        for s in np.unique(srcs):
            out[f"source:{s}"] = np.flatnonzero(srcs == s)
    return out


def _set_table(totals: dict[str, list[float]], sigma: float) -> dict[str, Any]:
    def pick(prefix: str) -> dict[str, dict[str, float]]:
        return {k.split(":", 1)[1]: {"si_weights": round(v[0], 6), "si_function": round(v[1], 6)}
                for k, v in totals.items() if k.startswith(prefix)}

    allv = totals.get("all", [float("nan")] * 2)
    return {"unit": "nats", "sigma": sigma,
            "definition": "½‖w − w₋S‖²/σ² and ½·mean‖f − f₋S‖²/σ² with the whole set S left out of each head "
                          "problem at once (Harutyunyan et al. 2021), summed over the independent fold heads; "
                          "not a sum of per-sample scores",
            "all": {"si_weights": round(allv[0], 6), "si_function": round(allv[1], 6)},
            "classes": pick("class:"), "sources": pick("source:")}


def head_adapter(ctx: ScoreContext, params: dict[str, Any]) -> ScoreResult:
    """``si_weights`` / ``si_function`` (nats) of the training rows from the head on frozen features."""
    prm = {**HEAD_DEFAULTS, **params}
    lam, sigma = float(prm["lam"]), float(prm["sigma"])
    if not (lam >= 0 and np.isfinite(lam)):
        raise ScoreError(f"lam must be ≥ 0, got {lam}")
    if not (sigma > 0 and np.isfinite(sigma)):
        raise ScoreError(f"sigma must be > 0, got {sigma}")
    t = prm["t"]
    if t not in ("auto", None, "inf"):
        t = float(t)
        if not t > 0:
            raise ScoreError(f"t must be 'auto', 'inf' or > 0, got {t}")
    labels = np.asarray(ctx.data.labels)
    n_classes = int(ctx.data.n_classes)
    problems, meta = build_problems(ctx, prm)
    n_all = len(labels)
    sums = {c: np.zeros(n_all) for c in ("si_weights", "si_function")}
    count = np.zeros(n_all)
    n_reps = max(p.repeat for p in problems) + 1
    arrays: dict[str, np.ndarray] = {}
    runs = []
    set_totals: dict[str, list[float]] = {}
    for j, prob in enumerate(problems):
        ctx.progress(f"SI: head problem {j + 1}/{len(problems)} ({len(prob.rows)} rows)",
                     0.5 + 0.5 * j / max(len(problems), 1))
        t0 = time.perf_counter()
        sets = _sets_of(ctx, prob.rows) if prm.get("set_information", True) else None
        out = solve_problem(prob, labels, n_classes, lam=lam, t=t, sigma=sigma, sets=sets)
        for key, (w, f) in out["sets"].items():
            acc = set_totals.setdefault(key, [0.0, 0.0])
            acc[0] += w / n_reps  # summed over a repeat's fold heads, averaged over repeats
            acc[1] += f / n_reps
        meta.setdefault("solve_s", []).append(round(time.perf_counter() - t0, 2))
        sums["si_weights"][prob.rows] += out["si_weights"]
        sums["si_function"][prob.rows] += out["si_function"]
        count[prob.rows] += 1
        runs.append({"source": prob.source, "n": int(len(prob.rows)), "eta_t": out["eta_t"],
                     "head_val_acc": out["val_acc"]})
        arrays.update({f"p{j}_rows": prob.rows, f"p{j}_x": prob.x.astype(np.float32),
                       f"p{j}_val_rows": prob.val_rows, f"p{j}_xv": prob.xv.astype(np.float32),
                       f"p{j}_eta_t": np.array(np.nan if out["eta_t"] is None else out["eta_t"]),
                       f"p{j}_repeat": np.array(prob.repeat)})
    with np.errstate(invalid="ignore", divide="ignore"):
        cols = {c: np.where(count > 0, v / np.maximum(count, 1), np.nan) for c, v in sums.items()}
    effective = {"method": "head", "features": meta["features"], "lam": lam, "t": t, "sigma": sigma,
                 "sigma_unit": "one-hot output units (σ of the Gaussian smoothing of weights and outputs)",
                 "unit": "nats", "kernel": "NTK of an infinitely wide two-layer ReLU head (exact, no projection)",
                 "linearize_at": "w₀ of the head (random init; exact in the wide limit)",
                 "loss": "MSE to one-hot targets, f₀ = 0", "projection": None,
                 "folds": meta.get("folds"), "crossfit_seed": prm.get("crossfit_seed"), "repeats": n_reps, "max_problem": int(prm["max_problem"]), "max_val": int(prm["max_val"]),
                 "eta_t_per_problem": [r["eta_t"] for r in runs]}
    arrays["params_json"] = np.array(json.dumps({"lam": lam, "sigma": sigma, "n_classes": n_classes,
                                                 "n_problems": len(problems), "t": t}))
    info = {**meta, "problems": runs}
    if set_totals:
        info["set_information"] = _set_table(set_totals, sigma)
    return ScoreResult(columns=cols, params=effective, info=info, arrays={"si_model": arrays})
