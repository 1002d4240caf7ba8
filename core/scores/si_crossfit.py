"""The default SI of a run: a wide ReLU head on features that did not see the row (``core.scores.si_head``).

Where the features come from (``features`` parameter):

- ``"pretrained"`` (default when the run was given ``--weights``): the network at w₀ = the loaded weights,
  before any training on this data: every row's features are independent of every label.
- ``"crossfit"`` (default otherwise): the training rows are split into K folds (``folds``, default 2),
  stratified by class, with near-duplicate groups kept inside one fold (a copy in another fold would leak the
  row into its own features). For fold j, a network of the run's recipe is trained on the other folds'
  rows; it gives the features of fold j's rows and of the held-out rows. Each fold is its own head problem.
  Every fold network starts from the run's own w₀ (``crossfit_init = "w0"``, the default: the initialisation
  or pretrained weights the run's network started from), so the cross-fitting's randomness is only which rows
  share a fold and the batch order; ``"seed"`` draws a fresh initialisation per fold network instead (the
  behaviour before 2026-12; on digits it makes single cross-fittings agree less: Spearman 0.65–0.68 vs
  0.73–0.78 between two, ``bench/results/si_repeats.md``). The cross-fitting is done R times with other seeds
  (other folds, other batch orders) and each row's SI is the **geometric mean** over the R problems it was
  in (``average = "geometric"``, the default: exp of the mean of log SI, still in nats), the typical SI of
  the row over the algorithm's randomness. A row's SI varies between cross-fittings by a factor, not by an
  offset (one cross-fitting's value can be ten times another's), so the mean of logs converges faster than
  the mean: on digits, 8 cross-fittings give Spearman 0.95–0.96 between two runs with the geometric mean
  against 0.93–0.95 with the arithmetic one (``average = "arithmetic"``, the behaviour before 2026-12). With
  ``repeats = "auto"`` (default) R grows until the ranking's estimated reproducibility (below) reaches
  ``target_reproducibility`` (0.99) **and** the estimated overlap of the top ``top_fraction`` (10%) with an
  independent run reaches ``target_top_overlap`` (0.95; :func:`top_overlap_estimate`), or R reaches its
  budget (:func:`_repeat_plan`): at most ``max_repeats`` (200), and R · n ≤ ``max_repeat_rows`` (40,000: the
  demo's 4,973 training rows get 8, and from 1,600 training rows up no dataset pays more head rows than the
  demo) **or** R · n² ≤ ``max_repeat_rows_sq`` (6.4·10⁷, the small-data allowance: below 1,600 training rows a
  cross-fitting is cheap, ~1 s for 560 photo crops on one core, while its fold networks, trained on a few
  hundred rows, make noisier features; 560 crops get 200, 800 get 100, 1,000 get 64). The allowance came late
  on 2026-12-02 with fold networks that skip unused evaluations (1.8× faster): at 71 cross-fittings (the row
  budget alone) photo crops' own estimates of their predictions' top-10% overlap were 0.88–0.94, on the bar of
  0.9 rather than above it. ``max_repeats`` was 48 until 2026-12-02 and 100 until late 2026-12-02; an
  integer fixes R. A top-10% set is stable only when the whole ranking is very reproducible, and not always then: on
  700 photo crops Spearman 0.98 still changed 14% of the top 10%, and Spearman 0.989 changed 12.5% of the
  predictions' top 10% because the cut sat on a flat stretch; hence 0.99 and the top-overlap target (0.97, at
  most 12 and no top target before 2026-12-02; the top target since 2026-12-02 afternoon). The manifest states
  both estimates and why the repeats stopped.
- ``"frozen"`` (default when the run has frozen features: a frozen pretrained backbone, or the user's
  ``--features``): those features as they are (they were not trained on this data's labels; for
  ``--features`` that is the user's responsibility, stated in the manifest).
- ``"trained"``: the run's trained network (it saw every row: leaky, kept for comparison only).

**Reproducibility.** How much of the ranking is the data and how much the cross-fitting's randomness is
measured in the run: the R per-repeat SI vectors are split into even and odd repeats, the Spearman
correlation ρ_h of the two halves' averages (of the same kind as the column's) is stepped up to the reliability of the mean of all R with the
Spearman–Brown formula (ρ₁ = ρ_h / (h − (h−1)ρ_h) for halves of h = R/2 repeats, ρ_R = Rρ₁ / (1 + (R−1)ρ₁);
Spearman 1910, Brown 1910): the expected Spearman between this run's ranking and that of an independent run
with other seeds. Fixed features (pretrained, frozen, trained) have no such randomness (1.0).
``bench/bench_si_repeats.py`` checks the estimate against real pairs of runs.

Which head (``head``): ``"auto"`` (default) uses the wide ReLU head while a problem has at most
``max_problem`` rows (its n×n algebra costs O(n³)) and a **linear head** above (``core.scores.si_linear``: the
NTK kron(Φ̃Φ̃ᵀ, I) has rank d+1, so leave-one-out is exact at any n in (d+1)×(d+1) algebra, linear in n). The
manifest says which head each problem used. ``"relu"`` forces the ReLU head: a problem larger than
``max_problem`` rows is then split into seeded random parts of at most that size (near duplicates kept
together), and SI is the unique information of a row among the rows of its part. ``"linear"`` forces the
linear head everywhere.

Each problem: features standardised over the problem's rows and held-out rows (fixed preprocessing), the
head's NTK θ (``relu_ntk``), λ = ``lam`` (the kernel's diagonal is ≈ 1 after standardisation), σ stated; values
in nats. **Training time**: with ``t = "auto"`` (default) every head problem of the run is trained for one ηt,
the early-stopping grid point that minimises the held-out MSE *summed over all the run's problems*
(``t_choice = "pooled"``, :func:`pooled_time`). While cross-fittings are added, each is solved at the pooled
choice so far (the first at its own early stopping); at the end every problem solved at another ηt is solved
again at the final one, and the reproducibility estimate is recomputed on the final values. Per-problem early
stopping (``t_choice = "per_problem"``, the behaviour before 2026-12-02) let each problem pick its own ηt from a
flat held-out curve: on 700 photo crops one run's 96 problems chose 0.3 to 56, and a row's SI followed its
problem's draw; one ηt for the run took the top-10% overlap of two runs' si_weights from 0.75 to 0.86 (12
cross-fittings) and on a 1,500-image MNIST subset from 0.91 to 0.99 (``bench/results/si_repeats*.md``). A
number ``t`` trains every problem for that ηt. Everything a
re-run needs (rows, features, λ, ηt, σ) is returned as arrays and stored in the run (``si_model.npz``) for
``infoscope verify-si``.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np
import torch

from core.data.image_store import take_rows
from core.errors import ScoreError
from core.executors import LocalExecutor
from core.scores.label_info import DEFINITION as LABEL_INFO_DEFINITION
from core.scores.label_info import label_information, project_simplex
from core.scores.registry import ScoreContext, ScoreResult
from core.scores.si_head import choose_time, head_kernels, head_loo, head_set_loo

HEAD_DEFAULTS: dict[str, Any] = {
    "method": "head",
    "features": "auto",
    "folds": 2,
    "lam": 1e-3,
    "t": "auto",
    "t_choice": "pooled",
    "sigma": 0.01,
    "max_val": 300,
    "max_problem": 5000,
    "head": "auto",
    "crossfit_seed": None,
    "crossfit_init": "w0",
    "repeats": "auto",
    "average": "geometric",
    "target_reproducibility": 0.99,
    "target_top_overlap": 0.95,
    "top_fraction": 0.1,
    "min_repeats": 2,
    "max_repeats": 200,
    "max_repeat_rows": 40000,
    "max_repeat_rows_sq": 64_000_000,
    "set_information": True,
    "set_information_repeats": 3,
    "label_information": True,
    "label_information_max_rows": 12000,
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
    head: str = "relu"
    info: dict[str, Any] = field(default_factory=dict)
    probs: np.ndarray | None = None  # held-out predictive distribution of each row's label (cross-fitted network)


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


def head_parts(rows: np.ndarray, groups: np.ndarray, prm: dict[str, Any], seed: int) -> tuple[str, list[np.ndarray]]:
    """The head for a problem of ``rows`` and the parts it is solved in.

    ``head = "relu"``: the wide ReLU head (n×n algebra), split into parts of at most ``max_problem`` rows;
    ``"linear"``: the linear head (``core.scores.si_linear``, exact at any n), never split; ``"auto"``: the
    ReLU head while the problem fits ``max_problem`` rows, the linear head above (no split, no approximation).
    """
    head = str(prm.get("head", "auto"))
    if head == "auto":
        head = "relu" if len(rows) <= int(prm["max_problem"]) else "linear"
    if head == "linear":
        return head, [rows]
    return head, split_problem(rows, groups, int(prm["max_problem"]), seed)


def label_probs(prob: HeadProblem, loo_pred: np.ndarray) -> tuple[np.ndarray, str]:
    """The label distribution pᵢ given each input used by the label-noise information, and what it is.

    Cross-fitted features: the softmax of the fold's network, which did not train on the row. Fixed features
    (no such network): the head's own leave-one-out prediction f₋ᵢ(xᵢ) projected onto the simplex."""
    if prob.probs is not None:
        return np.asarray(prob.probs, dtype=np.float64), "softmax of the cross-fitted network that did not train on the row"
    return project_simplex(loo_pred), "the head's leave-one-out prediction f₋ᵢ(xᵢ) projected onto the probability simplex"


def solve_problem(prob: HeadProblem, labels: np.ndarray, n_classes: int, *, lam: float, t: Any,
                  sigma: float, sets: dict[str, np.ndarray] | None = None,
                  label_info: bool = False, label_sets: dict[str, np.ndarray] | None = None,
                  with_path: bool = False) -> dict[str, Any]:
    """SI of every row of one problem (nats) and the problem's parameters; with ``label_info`` also the
    label-noise information of the head (``core.scores.label_info``) for the whole problem and each set.
    ``t = "auto"``: this problem's own early stopping; a number: that ηt (with ``with_path`` the held-out MSE
    path is still returned, for the run-wide choice of :func:`pooled_time`)."""
    if prob.head == "linear":
        return _solve_linear(prob, labels, n_classes, lam=lam, t=t, sigma=sigma, sets=sets, with_path=with_path)
    kern, kern_val = head_kernels(prob.x, prob.xv)
    if not len(prob.xv):
        kern_val = None
    y = torch.nn.functional.one_hot(torch.as_tensor(labels[prob.rows]), n_classes).double()
    eig = torch.linalg.eigh(kern)
    path: list[tuple[float, float]] = []
    yv = (torch.nn.functional.one_hot(torch.as_tensor(labels[prob.val_rows]), n_classes).double()
          if kern_val is not None else None)
    if t == "auto":
        if kern_val is None:
            raise ScoreError("t = 'auto' (early stopping) needs held-out rows; give t explicitly")
        eta_t, path = choose_time(kern, kern_val, y, yv, lam=lam, eig=eig)
    else:
        eta_t = None if t in (None, "inf", float("inf")) else float(t)
        if with_path and kern_val is not None:
            path = choose_time(kern, kern_val, y, yv, lam=lam, eig=eig)[1]
    out = head_loo(kern, kern_val, y, lam=lam, eta_t=eta_t, eig=eig)
    names = list(sets or {})
    vals = head_set_loo(kern, kern_val, y, [sets[nm] for nm in names], lam=lam, eta_t=eta_t, eig=eig) if sets else []
    lab_info = None
    if label_info:
        probs, basis = label_probs(prob, out.loo_resid + y.numpy())
        t0 = time.perf_counter()
        try:
            lab_info = label_information(kern, kern_val, probs, lam=lam, eta_t=eta_t, sigma=sigma, eig=eig,
                                         sets={k: v for k, v in (label_sets or {}).items() if k != "all"})
        except (np.linalg.LinAlgError, ScoreError) as e:  # an extra: it must not cost the run its SI
            lab_info = {"error": f"{type(e).__name__}: {e}"}
        lab_info["basis"], lab_info["seconds"] = basis, time.perf_counter() - t0
    return _problem_result(prob, labels, out, eta_t, path, dict(zip(names, vals, strict=True)), sigma, lab_info)


def _problem_result(prob: HeadProblem, labels: np.ndarray, out: Any, eta_t: float | None, path: list,
                    set_vals: dict[str, tuple[float, float]], sigma: float,
                    lab_info: dict[str, Any] | None) -> dict[str, Any]:
    """One problem's outputs in nats (÷ 2σ²) from either head's leave-one-out (``HeadLOO``) and set values."""
    scale = 2 * sigma**2
    return {"sets": {nm: (w / scale, f / scale) for nm, (w, f) in set_vals.items()}, "label_info": lab_info,
            "si_weights": out.dw2 / scale, "si_function": out.df2 / scale, "eta_t": eta_t, "path": path,
            "loo_resid": out.loo_resid,
            "val_acc": float((out.val_pred.argmax(1) == labels[prob.val_rows]).mean())
            if out.val_pred is not None and len(prob.val_rows) else None}


def _solve_linear(prob: HeadProblem, labels: np.ndarray, n_classes: int, *, lam: float, t: Any, sigma: float,
                  sets: dict[str, np.ndarray] | None = None, with_path: bool = False) -> dict[str, Any]:
    from core.scores.si_linear import solve_linear_problem

    y = torch.nn.functional.one_hot(torch.as_tensor(labels[prob.rows]), n_classes).double()
    yv = (torch.nn.functional.one_hot(torch.as_tensor(labels[prob.val_rows]), n_classes).double()
          if len(prob.val_rows) else None)
    names = list(sets or {})
    res = solve_linear_problem(prob.x, prob.xv, y, yv, lam=lam, t=t, sets=[sets[nm] for nm in names] if sets else None,
                               with_path=with_path)
    return _problem_result(prob, labels, res["loo"], res["eta_t"], res["path"],
                           dict(zip(names, res["sets"], strict=True)), sigma, None)


def solve_item(item: tuple[HeadProblem, dict[str, np.ndarray] | None, bool, dict[str, np.ndarray] | None],
               labels: np.ndarray, *, n_classes: int, lam: float, t: Any, sigma: float,
               with_path: bool = False) -> tuple[dict[str, Any], float]:
    """:func:`solve_problem` of one ``(problem, sets, label_info, label_sets)`` and its wall time: the unit of
    the head SI on every executor (``core.executors``)."""
    prob, sets, with_labels, label_sets = item
    t0 = time.perf_counter()
    out = solve_problem(prob, labels, n_classes, lam=lam, t=t, sigma=sigma, sets=sets, label_info=with_labels,
                        label_sets=label_sets, with_path=with_path)
    return out, time.perf_counter() - t0


def pooled_time(paths: list[list[tuple[float, float]]]) -> float | None:
    """One ηt for a run: the grid point minimising the held-out MSE **summed over head problems**.

    Each problem's early-stopping path [(ηt, held-out MSE), ...] is interpolated (linear in log ηt, constant
    beyond its ends) onto the first path's grid; the sum is minimised there. Early stopping per problem picks
    its own ηt from a flat, noisy curve (on 700 photo crops the 96 problems of one run chose 0.3 to 56, and
    SI scales with ηt, so a row's value depended on its problem's draw); the summed curve is the held-out
    error of the run's heads as a whole, and every problem is then trained for the same time. None when no
    path is given.
    """
    paths = [p for p in paths if len(p)]
    if not paths:
        return None
    grid = np.array([g for g, _ in paths[0]], dtype=np.float64)
    lg = np.log(grid)
    total = np.zeros(len(grid))
    for p in paths:
        arr = np.asarray(p, dtype=np.float64)
        order = np.argsort(arr[:, 0])
        total += np.interp(lg, np.log(arr[order, 0]), arr[order, 1])
    return float(grid[int(np.argmin(total))])


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


def _repeat_plan(prm: dict[str, Any], n_train: int | None = None) -> tuple[int, int, float | None]:
    """(minimum, maximum, target) number of cross-fittings from ``repeats`` (an int, or "auto").

    With "auto", R ≤ ``max_repeats`` and R ≤ max(⌊``max_repeat_rows`` / n⌋, ⌊``max_repeat_rows_sq`` / n²⌋)
    for n = n_train (at least one cross-fitting): the cost of SI grows with R times the rows, so a large
    dataset gets fewer cross-fittings; the second budget lets a small one (below ``max_repeat_rows_sq`` /
    ``max_repeat_rows`` = 1,600 rows by default) have more, its cross-fittings being cheap and noisy (the
    manifest says how many, and the reproducibility estimate says what that bought)."""
    reps = prm["repeats"]
    if reps == "auto":
        try:
            lo, hi, target = int(prm["min_repeats"]), int(prm["max_repeats"]), float(prm["target_reproducibility"])
            budget, budget_sq = int(prm["max_repeat_rows"]), int(prm["max_repeat_rows_sq"])
        except (TypeError, ValueError) as e:
            raise ScoreError(f"SI min_repeats, max_repeats, target_reproducibility, max_repeat_rows and "
                             f"max_repeat_rows_sq must be numbers: {e}") from None
        if not 1 <= lo <= hi:
            raise ScoreError(f"SI needs 1 ≤ min_repeats ≤ max_repeats, got {lo} and {hi}")
        if not 0 < target <= 1:
            raise ScoreError(f"target_reproducibility must be in (0, 1], got {target}")
        if budget < 1 or budget_sq < 0:
            raise ScoreError(f"max_repeat_rows must be at least 1 and max_repeat_rows_sq at least 0, got {budget} "
                             f"and {budget_sq}")
        if n_train:
            hi = max(1, min(hi, max(budget // int(n_train), budget_sq // int(n_train) ** 2)))
            lo = min(lo, hi)
        return lo, hi, target
    try:
        r = int(reps)
    except (TypeError, ValueError):
        raise ScoreError(f"repeats must be 'auto' or an integer ≥ 1, got {reps!r}") from None
    if isinstance(reps, bool) or r < 1 or (isinstance(reps, float) and reps != r):
        raise ScoreError(f"repeats must be 'auto' or an integer ≥ 1, got {reps!r}")
    return r, r, None


def iter_problems(ctx: ScoreContext, prm: dict[str, Any], meta: dict[str, Any],
                  max_reps: int = 1) -> Iterator[list[HeadProblem]]:
    """The head problems of a run, one list per repeat (cross-fitting); ``meta`` records how the features
    were made. Fixed features (pretrained, frozen, trained) give one repeat: they have no randomness to
    average."""
    tr = ctx.train_idx
    val = _val_rows(ctx, int(prm["max_val"]))
    if len(val) < 2:
        raise ScoreError("the head SI needs held-out rows (holdout > 0) for σ-scaled si_function and early stopping")
    feats = str(prm["features"])
    weights = (ctx.extra.get("train_config") or {}).get("weights")
    frozen = ctx.extra.get("frozen_features")
    if feats == "auto":
        feats = "frozen" if frozen is not None else "pretrained" if weights else "crossfit"
    if feats not in ("crossfit", "pretrained", "trained", "frozen"):
        raise ScoreError(f"unknown SI features {feats!r}: auto, crossfit, pretrained, frozen or trained")
    n = len(ctx.data.labels)
    groups = duplicate_groups(n, ctx.extra.get("duplicate_pairs"))
    seed = ctx.seed if prm.get("crossfit_seed") is None else int(prm["crossfit_seed"])
    meta["features"] = feats
    if feats == "crossfit":
        train_subset = ctx.extra.get("train_subset")
        if train_subset is None:
            raise ScoreError("cross-fitted SI needs the run's training recipe (train_subset)")
        k = int(prm["folds"])
        from core.models.training import predict_logits

        meta["folds"] = k
        meta["fold_sizes"] = []
        meta["fold_network_acc_on_unseen_fold"] = []
        meta["crossfit_train_s"] = []
        for rep in range(max_reps):
            seed_r = seed + 7919 * rep
            fold = assign_folds(np.asarray(ctx.data.labels)[tr], groups[tr], k, seed_r)
            meta["fold_sizes"].append([int((fold == f).sum()) for f in range(k)])
            problems: list[HeadProblem] = []
            for f in range(k):
                ctx.progress(f"SI: cross-fitting {rep + 1}, network {f + 1}/{k}", None)
                t0 = time.perf_counter()
                net = train_subset(tr[fold != f], seed_r + 1000 + f, from_w0=prm["crossfit_init"] == "w0")
                meta["crossfit_train_s"].append(round(time.perf_counter() - t0, 2))
                rows_f = tr[fold == f]
                logits = predict_logits(net, take_rows(ctx.data.images, rows_f), ctx.device).astype(np.float64)
                probs = np.exp(logits - logits.max(1, keepdims=True))
                probs /= probs.sum(1, keepdims=True)
                pred = logits.argmax(1)
                meta["fold_network_acc_on_unseen_fold"].append(
                    round(float((pred == ctx.data.labels[rows_f]).mean()), 4))
                xf = _embed_with(ctx, net, rows_f)
                xv = _embed_with(ctx, net, val)
                head, parts = head_parts(np.arange(len(rows_f)), groups[rows_f], prm, seed_r + f)
                for part in parts:
                    problems.append(HeadProblem(rows_f[part], xf[part], val, xv, source=f"repeat {rep} fold {f}",
                                                repeat=rep, head=head, probs=probs[part]))
            yield problems
        return
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
    head, parts = head_parts(np.arange(len(tr)), groups[tr], prm, seed)
    yield [HeadProblem(tr[part], x_all[part], val, xv, source=f"part {j}", head=head)
           for j, part in enumerate(parts)]


AVERAGES = ("geometric", "arithmetic")


def check_average(how: str) -> str:
    """``how`` if it names an average over cross-fittings (``AVERAGES``), else a one-line ``ScoreError``."""
    if how not in AVERAGES:
        raise ScoreError(f"SI average must be one of {', '.join(AVERAGES)}, got {how!r}")
    return how


def _log_si(v: np.ndarray) -> np.ndarray:
    """log v with values floored at 1e-300 nats (an exact 0 would otherwise decide a geometric mean alone);
    NaN (not scored) stays NaN."""
    return np.where(np.isfinite(v), np.log(np.maximum(np.where(np.isfinite(v), v, 1.0), 1e-300)), np.nan)


def average_repeats(per_repeat: np.ndarray, how: str = "geometric") -> np.ndarray:
    """Each row's SI over the cross-fittings it was scored in ((R, n), NaN where not scored; NaN if none).

    ``"geometric"``: exp(mean log v) (``_log_si``); ``"arithmetic"``: mean v."""
    v = np.asarray(per_repeat, dtype=np.float64)
    if check_average(how) == "geometric":
        v = _log_si(v)
    seen = np.isfinite(v)
    tot = np.where(seen, v, 0.0).sum(0)
    cnt = seen.sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)
    return np.exp(mean) if how == "geometric" else mean


def reproducibility(per_repeat: np.ndarray, how: str = "arithmetic") -> float | None:
    """Estimated Spearman between the average of these R repeats' scores and that of R independent others.

    ``per_repeat`` is (R, n) with NaN where a row has no score; ``how`` is the average the column uses (its
    ranking is that of the mean of log scores for ``"geometric"``). The even and odd repeats' averages are
    rank-correlated (ρ_h, halves of h = R/2 repeats); the single-repeat reliability ρ₁ = ρ_h / (h − (h−1)ρ_h)
    is stepped up to R repeats with the Spearman–Brown formula ρ_R = Rρ₁ / (1 + (R−1)ρ₁) (Spearman 1910;
    Brown 1910). The step-up is exact for Pearson correlations of signal + independent noise; on ranks of a
    skewed signal it is optimistic by up to ~0.05 (``tests/test_si_head.py`` simulates both). None with fewer
    than 2 repeats or 3 rows scored in every repeat.
    """
    from scipy import stats

    per_repeat = np.asarray(per_repeat, dtype=np.float64)
    r = per_repeat.shape[0]
    if r < 2:
        return None
    ok = np.isfinite(per_repeat).all(0)
    if ok.sum() < 3:
        return None
    if check_average(how) == "geometric":
        per_repeat = _log_si(per_repeat)
    even, odd = per_repeat[0::2, ok].mean(0), per_repeat[1::2, ok].mean(0)
    rho_h = float(stats.spearmanr(even, odd)[0])
    if not np.isfinite(rho_h):
        return None
    rho_h = max(rho_h, 0.0)
    h = r / 2
    rho_1 = rho_h / (h - (h - 1) * rho_h) if rho_h < 1 else 1.0
    return float(r * rho_1 / (1 + (r - 1) * rho_1))


def top_overlap_estimate(per_repeat: np.ndarray, how: str = "geometric", q: float = 0.1, draws: int = 200,
                         seed: int = 0) -> float | None:
    """Expected overlap of the top ``q`` of this run's ranking with that of an independent run (other seeds).

    ``per_repeat`` is (R, n), NaN where a row was not scored; ``how`` is the column's average (log values for
    ``"geometric"``). Row i's average over its c_i cross-fittings has mean m_i and standard error
    s_i = sd_i / √c_i (sd_i: the spread of its values between cross-fittings, ddof 1; rows seen once get the
    median sd). The m_i spread more than the rows' true values by the noise, so they are first shrunk to their
    mean by √(1 − mean(s²)/var(m)). Two independent runs are drawn ``draws`` times as m + s·z₁ and m + s·z₂
    (z standard normal) and the share of the top k = round(q·n) rows they have in common is averaged. A rank-based figure the
    Spearman estimate does not give: a whole ranking can be reproducible at 0.99 while its top 10% sits on a
    flat stretch where a few rows trade places (700 photo crops: Spearman 0.989, top 10% 0.875). Checked
    against pairs of real runs in ``bench/results/si_top_overlap.md``; None with fewer than 2 repeats or
    fewer than 10 rows scored.
    """
    v = np.asarray(per_repeat, dtype=np.float64)
    if v.ndim != 2 or v.shape[0] < 2:
        return None
    if check_average(how) == "geometric":
        v = _log_si(v)
    seen = np.isfinite(v)
    cnt = seen.sum(0)
    keep = cnt > 0
    if keep.sum() < 10:
        return None
    v, seen, cnt = v[:, keep], seen[:, keep], cnt[keep]
    vz = np.where(seen, v, 0.0)
    mean = vz.sum(0) / cnt
    with np.errstate(invalid="ignore", divide="ignore"):
        var = np.where(cnt > 1, (np.where(seen, v - mean, 0.0) ** 2).sum(0) / np.maximum(cnt - 1, 1), np.nan)
    if not np.isfinite(var).any():
        return None
    var = np.where(np.isfinite(var), var, np.nanmedian(var))
    se = np.sqrt(var / cnt)
    spread = float(np.var(mean))  # the averages spread more than the rows' true values by the noise: shrink
    if spread > 0:
        mean = mean.mean() + (mean - mean.mean()) * np.sqrt(max(0.0, 1.0 - float(np.mean(se ** 2)) / spread))
    n = len(mean)
    k = min(n, max(1, int(round(q * n))))
    rng = np.random.default_rng(seed)
    hits = 0
    for _ in range(int(draws)):
        a = mean + se * rng.standard_normal(n)
        b = mean + se * rng.standard_normal(n)
        top_a = np.zeros(n, dtype=bool)
        top_a[np.argpartition(-a, k - 1)[:k]] = True
        hits += int(top_a[np.argpartition(-b, k - 1)[:k]].sum())
    return float(hits / (int(draws) * k))


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


def _set_table(totals: dict[str, list[float]], sigma: float, repeats: int) -> dict[str, Any]:
    def pick(prefix: str) -> dict[str, dict[str, float]]:
        return {k.split(":", 1)[1]: {"si_weights": round(v[0], 6), "si_function": round(v[1], 6)}
                for k, v in totals.items() if k.startswith(prefix)}

    allv = totals.get("all", [float("nan")] * 2)
    return {"unit": "nats", "sigma": sigma,
            "definition": "½‖w − w₋S‖²/σ² and ½·mean‖f − f₋S‖²/σ² with the whole set S left out of each head "
                          "problem at once (Harutyunyan et al. 2021), summed over the independent fold heads of a "
                          f"cross-fitting and averaged over the first {repeats} cross-fitting(s) "
                          "(set_information_repeats); not a sum of per-sample scores",
            "repeats": repeats,
            "all": {"si_weights": round(allv[0], 6), "si_function": round(allv[1], 6)},
            "classes": pick("class:"), "sources": pick("source:")}


def _label_table(totals: dict[str, list[float]], sigma: float, meta: dict[str, Any]) -> dict[str, Any]:
    """The manifest's ``label_information`` section (nats, σ stated) from the summed per-problem values."""
    def pick(prefix: str) -> dict[str, dict[str, float]]:
        return {k.split(":", 1)[1]: {"weights": round(v[0], 4), "function": round(v[1], 4)}
                for k, v in totals.items() if k.startswith(prefix)}

    allv = totals["all"]
    return {"unit": "nats", "sigma": sigma, "definition": LABEL_INFO_DEFINITION,
            "paper": "Harutyunyan, Reing, Ver Steeg, Galstyan, Improving Generalization by Controlling Label-Noise "
                     "Information in Neural Network Weights, ICML 2020",
            "labels_given_inputs": meta.get("basis"),
            "computed_on": f"the first cross-fitting's {meta.get('problems', 0)} head problem(s), summed (independent heads on "
                           "disjoint rows); features held fixed",
            "gaussian": "labels replaced by Gaussians of the same covariance: an upper bound for categorical labels",
            "seconds": round(meta.get("seconds", 0.0), 2),
            "all": {"weights": round(allv[0], 4), "function": round(allv[1], 4)},
            "classes": pick("class:"), "sources": pick("source:")}


def check_params(params: dict[str, Any]) -> dict[str, Any]:
    """The head SI's parameters merged with ``HEAD_DEFAULTS``, each checked (one-line ``ScoreError``); called
    by ``RunConfig.validate`` before any work starts and again by the adapter."""
    unknown = sorted(set(params) - set(HEAD_DEFAULTS))
    if unknown:
        raise ScoreError(f"unknown SI parameter(s) {unknown} for method 'head'; known: {', '.join(HEAD_DEFAULTS)}")
    prm = {**HEAD_DEFAULTS, **params}
    try:
        lam, sigma = float(prm["lam"]), float(prm["sigma"])
        folds, max_problem, max_val = int(prm["folds"]), int(prm["max_problem"]), int(prm["max_val"])
        prm["set_information_repeats"] = int(prm["set_information_repeats"])
        prm["label_information_max_rows"] = int(prm["label_information_max_rows"])
    except (TypeError, ValueError) as e:
        raise ScoreError(f"SI parameters lam, sigma, folds, max_problem, max_val and label_information_max_rows "
                         f"must be numbers: {e}") from None
    if not (lam >= 0 and np.isfinite(lam)):
        raise ScoreError(f"lam must be ≥ 0, got {lam}")
    if not (sigma > 0 and np.isfinite(sigma)):
        raise ScoreError(f"sigma must be > 0, got {sigma}")
    if prm["set_information_repeats"] < 1:
        raise ScoreError(f"set_information_repeats must be at least 1, got {prm['set_information_repeats']}")
    if folds < 2 or max_problem < 2 or max_val < 0:
        raise ScoreError(f"SI needs folds ≥ 2, max_problem ≥ 2 and max_val ≥ 0, got {folds}, {max_problem}, {max_val}")
    t = prm["t"]
    if t not in ("auto", None, "inf"):
        try:
            t = float(t)
        except (TypeError, ValueError):
            raise ScoreError(f"t must be 'auto', 'inf' or > 0, got {prm['t']!r}") from None
        if not t > 0:
            raise ScoreError(f"t must be 'auto', 'inf' or > 0, got {t}")
    prm["t"] = t
    check_average(prm["average"])
    if prm["t_choice"] not in ("pooled", "per_problem"):
        raise ScoreError(f"SI t_choice must be 'pooled' (one ηt for the run) or 'per_problem', got {prm['t_choice']!r}")
    try:
        prm["target_top_overlap"], prm["top_fraction"] = float(prm["target_top_overlap"]), float(prm["top_fraction"])
    except (TypeError, ValueError):
        raise ScoreError(f"SI target_top_overlap and top_fraction must be numbers, got {prm['target_top_overlap']!r} "
                         f"and {prm['top_fraction']!r}") from None
    if not 0 <= prm["target_top_overlap"] <= 1:
        raise ScoreError(f"target_top_overlap must be in [0, 1] (0: not used), got {prm['target_top_overlap']}")
    if not 0 < prm["top_fraction"] < 1:
        raise ScoreError(f"top_fraction must be in (0, 1), got {prm['top_fraction']}")
    if prm["crossfit_init"] not in ("w0", "seed"):
        raise ScoreError(f"SI crossfit_init must be 'w0' (fold networks start from the run's w₀) or 'seed', got "
                         f"{prm['crossfit_init']!r}")
    if prm["head"] not in ("auto", "relu", "linear"):
        raise ScoreError(f"SI head must be 'auto', 'relu' or 'linear', got {prm['head']!r}")
    _repeat_plan(prm)
    return prm


def crossfit_columns(prob_sum: np.ndarray, prob_count: np.ndarray, labels: np.ndarray) -> dict[str, np.ndarray]:
    """Out-of-sample predictions of the training rows from the cross-fitted networks (NaN where a row was in
    no cross-fitting, e.g. held-out rows, whose out-of-sample prediction is the run's own network's).

    p̂ᵢ = mean over the cross-fittings of the softmax of the network that did not train on row i (the fold's
    network); ``crossfit_label_prob`` = p̂ᵢ(yᵢ), ``crossfit_pred`` = argmax p̂ᵢ, ``crossfit_pred_prob`` = max p̂ᵢ.
    These are the out-of-sample predicted probabilities confident learning needs (Northcutt, Jiang, Chuang,
    JAIR 2021); ``core.flags`` uses them for its confident-joint vote.
    """
    seen = prob_count > 0
    p = np.where(seen[:, None], prob_sum / np.maximum(prob_count, 1)[:, None], np.nan)
    nan = np.full(len(p), np.nan)
    lab = np.asarray(labels, dtype=np.int64)
    label_prob, pred, pred_prob = nan.copy(), nan.copy(), nan.copy()
    label_prob[seen] = p[seen, lab[seen]]
    pred[seen] = p[seen].argmax(1)
    pred_prob[seen] = p[seen].max(1)
    return {"crossfit_label_prob": label_prob, "crossfit_pred": pred, "crossfit_pred_prob": pred_prob}


def _uses(runs: list[dict[str, Any]], head: str) -> bool:
    return any(r["head"] == head for r in runs)


def _heads_text(runs: list[dict[str, Any]]) -> str:
    return "+".join(h for h in ("relu", "linear") if _uses(runs, h))


def _kernel_text(runs: list[dict[str, Any]]) -> str:
    parts = []
    if _uses(runs, "relu"):
        parts.append("NTK of an infinitely wide two-layer ReLU head (exact, no projection)")
    if _uses(runs, "linear"):
        parts.append("linear head, NTK kron(Φ̃Φ̃ᵀ, I) (exact, (d+1)×(d+1) algebra; problems above max_problem rows)")
    return "; ".join(parts)


def _repeat_mean(solved: list[tuple[HeadProblem, dict[str, Any]]], col: str, n_all: int) -> np.ndarray:
    """One cross-fitting's ``col`` per row: the mean over its problems that contain the row (NaN if none)."""
    total, count = np.zeros(n_all), np.zeros(n_all)
    for prob, out in solved:
        total[prob.rows] += out[col]
        count[prob.rows] += 1
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def head_adapter(ctx: ScoreContext, params: dict[str, Any]) -> ScoreResult:
    """``si_weights`` / ``si_function`` (nats) of the training rows from the head on frozen features."""
    prm = check_params(params)
    lam, sigma, t = float(prm["lam"]), float(prm["sigma"]), prm["t"]
    min_reps, max_reps, target = _repeat_plan(prm, len(ctx.train_idx))
    top_target, q_top = float(prm["target_top_overlap"]), float(prm["top_fraction"])
    executor = ctx.extra.get("executor") or LocalExecutor()
    labels = np.asarray(ctx.data.labels)
    n_classes = int(ctx.data.n_classes)
    n_all = len(labels)
    meta: dict[str, Any] = {}
    arrays: dict[str, np.ndarray] = {}
    set_sums: dict[str, list[float]] = {}
    label_sums: dict[str, list[float]] = {}
    label_meta: dict[str, Any] = {}
    label_on = bool(prm.get("label_information", True))
    if label_on and len(ctx.train_idx) > int(prm["label_information_max_rows"]):
        # ≈ k·n³ per head problem: skipped above the cap rather than reported for part of the data
        label_on = False
        label_meta["skipped"] = (f"{len(ctx.train_idx)} training rows > label_information_max_rows = "
                                 f"{int(prm['label_information_max_rows'])}")
    set_reps = int(prm["set_information_repeats"])  # set information: averaged over the first cross-fittings
    per_rep: dict[str, list[np.ndarray]] = {"si_weights": [], "si_function": []}
    prob_sum = np.zeros((n_all, n_classes))  # cross-fitted softmax, summed over the cross-fittings
    prob_count = np.zeros(n_all)
    trace: list[dict[str, Any]] = []
    pooled = t == "auto" and prm["t_choice"] == "pooled"
    paths: dict[str, list[list[tuple[float, float]]]] = {}  # held-out MSE paths so far, per head kind
    done: list[tuple[HeadProblem, tuple, dict[str, Any], float]] = []  # (problem, item, output, seconds)
    stop_reason = "fixed features: nothing to repeat"
    solve = partial(solve_item, n_classes=n_classes, lam=lam, sigma=sigma)
    for rep, problems in enumerate(iter_problems(ctx, prm, meta, max_reps)):
        ctx.progress(f"SI: {len(problems)} head problem(s) ({sum(len(p.rows) for p in problems)} rows, "
                     f"cross-fitting {rep + 1})", None)
        if label_on and any(p.head == "linear" for p in problems) and "skipped" not in label_meta:
            label_on = False
            label_meta["skipped"] = ("not computed for the linear head (problems above max_problem rows); "
                                     "its k·n³ cost is what the linear head avoids")
        with_labels = label_on and rep == 0 and "skipped" not in label_meta
        items = []
        for prob in problems:
            with_sets = bool(prm.get("set_information", True)) and rep < set_reps
            all_sets = _sets_of(ctx, prob.rows) if with_sets or with_labels else None
            items.append((prob, all_sets if with_sets else None, with_labels, all_sets))
        by_head: dict[str, list[int]] = {}
        for i, prob in enumerate(problems):
            by_head.setdefault(prob.head, []).append(i)
        solved: list[Any] = [None] * len(problems)
        for head, idx in by_head.items():  # a run-wide ηt: the pooled choice so far (own early stopping at first)
            t_now = (pooled_time(paths[head]) if paths.get(head) else "auto") if pooled else t
            for i, res in zip(idx, executor.map(partial(solve, t=t_now, with_path=pooled), [items[i] for i in idx],
                                                shared=(labels,)), strict=True):
                solved[i] = res
        for prob, item, (out, seconds) in zip(problems, items, solved, strict=True):
            done.append((prob, item, out, seconds))
            if pooled:
                paths.setdefault(prob.head, []).append(out["path"])
            if prob.probs is not None:
                prob_sum[prob.rows] += prob.probs
                prob_count[prob.rows] += 1
        for c in per_rep:
            per_rep[c].append(_repeat_mean([(p, o) for p, (o, _) in zip(problems, solved, strict=True)], c, n_all))
        if meta["features"] != "crossfit":
            break
        est = [reproducibility(np.stack(per_rep[c]), prm["average"]) for c in per_rep]
        est_min = None if any(e is None for e in est) else min(est)
        top = ([top_overlap_estimate(np.stack(per_rep[c]), prm["average"], q_top) for c in per_rep]
               if top_target > 0 else [None, None])
        top_min = None if any(e is None for e in top) else min(top)
        trace.append({"repeats": rep + 1, "si_weights": est[0], "si_function": est[1],
                      "top_si_weights": top[0], "top_si_function": top[1]})
        if rep + 1 >= max_reps:
            if target is None:
                stop_reason = f"reached repeats = {max_reps}"
            elif max_reps < int(prm["max_repeats"]):
                n_tr = len(ctx.train_idx)
                stop_reason = (f"reached max_repeats = {max_reps} " + (
                    f"(max_repeat_rows {int(prm['max_repeat_rows'])} ÷ {n_tr} training rows)"
                    if int(prm["max_repeat_rows"]) // n_tr >= int(prm["max_repeat_rows_sq"]) // n_tr ** 2 else
                    f"(max_repeat_rows_sq {int(prm['max_repeat_rows_sq'])} ÷ {n_tr}² training rows)"))
            else:
                stop_reason = f"reached max_repeats = {max_reps}"
            if target is not None and top_target > 0 and top_min is not None and est_min is not None:
                stop_reason += (f"; estimated Spearman {est_min:.3f} (target {target}), top-{q_top:.0%} overlap "
                                f"{top_min:.3f} (target {top_target})")
            break
        top_ok = top_target <= 0 or (top_min is not None and top_min >= top_target)
        if target is not None and rep + 1 >= min_reps and est_min is not None and est_min >= target and top_ok:
            stop_reason = (f"estimated reproducibility {est_min:.3f} ≥ target {target}"
                           + (f" and top-{q_top:.0%} overlap {top_min:.3f} ≥ {top_target}" if top_target > 0 else ""))
            break
    time_choice: dict[str, Any] = {}
    if pooled:  # every problem trained for the run's final ηt: those solved at another one are solved again
        final = {head: pooled_time(ps) for head, ps in paths.items()}
        redo = [j for j, (prob, _, out, _) in enumerate(done) if out["eta_t"] != final[prob.head]]
        for head in final:
            idx = [j for j in redo if done[j][0].head == head]
            again = executor.map(partial(solve, t=final[head]), [done[j][1] for j in idx], shared=(labels,))
            for j, (out, seconds) in zip(idx, again, strict=True):
                out["path"] = done[j][2]["path"]
                done[j] = (done[j][0], done[j][1], out, done[j][3] + seconds)
        time_choice = {"eta_t": final, "problems_solved_again": len(redo)}
    # the columns and tables from every problem's final solution
    per_rep = {c: [_repeat_mean([(p, o) for p, _, o, _ in done if p.repeat == r], c, n_all)
                   for r in range(len(per_rep[c]))] for c in per_rep}
    runs: list[dict[str, Any]] = []
    for j, (prob, _, out, seconds) in enumerate(done):
        if out["label_info"] is not None and "error" in out["label_info"]:
            if "skipped" not in label_meta:
                label_sums = {}
                label_meta["skipped"] = f"failed on {prob.source}: {out['label_info']['error']}"
        elif out["label_info"] is not None and "skipped" not in label_meta:  # summed over the first
            li = out["label_info"]                                             # cross-fitting's heads
            for key, val in [("all", (li["weights"], li["function"])), *li["sets"].items()]:
                acc = label_sums.setdefault(key, [0.0, 0.0])
                acc[0] += val[0]
                acc[1] += val[1]
            label_meta["basis"] = li["basis"]
            label_meta["seconds"] = label_meta.get("seconds", 0.0) + li["seconds"]
            label_meta["problems"] = label_meta.get("problems", 0) + 1
        for key, (w, f) in out["sets"].items():  # summed over a repeat's disjoint problems
            acc = set_sums.setdefault(key, [0.0, 0.0])
            acc[0] += w
            acc[1] += f
        meta.setdefault("solve_s", []).append(round(seconds, 2))
        runs.append({"source": prob.source, "n": int(len(prob.rows)), "eta_t": out["eta_t"],
                     "head": prob.head, "head_val_acc": out["val_acc"]})
        arrays.update({f"p{j}_rows": prob.rows, f"p{j}_x": prob.x.astype(np.float32),
                       f"p{j}_val_rows": prob.val_rows, f"p{j}_xv": prob.xv.astype(np.float32),
                       f"p{j}_eta_t": np.array(np.nan if out["eta_t"] is None else out["eta_t"]),
                       f"p{j}_repeat": np.array(prob.repeat), f"p{j}_head": np.array(prob.head)})
    j = len(done)
    n_reps = len(per_rep["si_function"])
    cols = {c: average_repeats(np.stack(v), prm["average"]) for c, v in per_rep.items()}  # NaN where never scored
    if prob_count.any():
        cols.update(crossfit_columns(prob_sum, prob_count, labels))
    if meta["features"] == "crossfit":  # the estimate on the final values (the trace: as the stopping rule saw it)
        repro = {c: reproducibility(np.stack(per_rep[c]), prm["average"]) for c in per_rep}
        top_final = {c: top_overlap_estimate(np.stack(per_rep[c]), prm["average"], q_top) for c in per_rep}
        basis = (f"Spearman–Brown from the even vs odd halves of {n_reps} cross-fittings: expected Spearman "
                 "with an independent run that differs only in its seeds")
    else:
        repro = {c: 1.0 for c in per_rep}
        top_final = {c: 1.0 for c in per_rep}
        basis = f"{meta['features']} features: no randomness in the features or the head"
    effective = {"method": "head", "features": meta["features"], "lam": lam, "t": t, "sigma": sigma,
                 "sigma_unit": "one-hot output units (σ of the Gaussian smoothing of weights and outputs)",
                 "unit": "nats", "head": _heads_text(runs), "kernel": _kernel_text(runs),
                 "linearize_at": "w₀ of the head (random init; exact in the wide limit)" if _uses(runs, "relu")
                 else "w₀ = 0 of the linear head (a linear head is its own linearization: exact)",
                 "loss": "MSE to one-hot targets, f₀ = 0", "projection": None,
                 "folds": meta.get("folds"), "crossfit_seed": prm.get("crossfit_seed"),
                 "crossfit_init": (("the run's w₀" if prm["crossfit_init"] == "w0" else "a fresh initialisation per "
                                    "fold network (its seed)") if meta["features"] == "crossfit" else None),
                 "repeats": n_reps,
                 "repeats_requested": prm["repeats"],
                 "average": (f"{prm['average']} mean over the cross-fittings a row was in" if n_reps > 1
                             else "one cross-fitting: no average"),
                 "target_reproducibility": target, "max_repeats": max_reps if target is not None else None,
                 "target_top_overlap": (top_target or None) if target is not None else None,
                 "top_fraction": q_top,
                 "max_problem": int(prm["max_problem"]), "max_val": int(prm["max_val"]),
                 "t_choice": "pooled" if pooled else "per_problem" if t == "auto" else "given",
                 "t_rule": (("one ηt for the run: the early-stopping grid point minimising the held-out MSE summed "
                             f"over all {len(runs)} head problems (per head kind: {time_choice['eta_t']})")
                            if pooled else "each problem's own early stopping" if t == "auto" else "given"),
                 "eta_t_per_problem": [r["eta_t"] for r in runs]}
    for c, v in per_rep.items():  # (R, n): what the reproducibility estimate was computed from
        arrays[f"per_repeat_{c}"] = np.stack(v).astype(np.float64)
    arrays["params_json"] = np.array(json.dumps({"lam": lam, "sigma": sigma, "n_classes": n_classes,
                                                 "n_problems": j, "t": t, "average": prm["average"]}))
    info = {**meta, "problems": runs, "time_choice": time_choice,
            "reproducibility": {"si_weights": repro["si_weights"], "si_function": repro["si_function"],
                                "basis": basis, "repeats": n_reps, "stopped": stop_reason, "trace": trace,
                                "top_overlap": {**top_final, "fraction": q_top, "target": top_target or None,
                                                "basis": ("expected share of the top rows two runs with other seeds "
                                                          "have in common: each row's average drawn with its "
                                                          "standard error over the cross-fittings"
                                                          if meta["features"] == "crossfit" else basis)}}}
    if set_sums:
        n_set = min(n_reps, set_reps)
        info["set_information"] = _set_table({k: [v[0] / n_set, v[1] / n_set] for k, v in set_sums.items()},
                                             sigma, n_set)
    if label_sums:
        info["label_information"] = _label_table(label_sums, sigma, label_meta)
    elif "skipped" in label_meta:
        info["label_information"] = {"skipped": label_meta["skipped"]}
    return ScoreResult(columns=cols, params=effective, info=info, arrays={"si_model": arrays})
