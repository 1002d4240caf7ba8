"""``infoscope verify-si``: check a run's SI against retraining without the row, on the user's own data.

For ``--samples`` training rows (seeded, stratified over the range of ``si_function``: one row drawn from each
of as many quantile bins), the run's SI model (``si_model.npz``: the head problems of
``core.scores.si_crossfit``) is trained again **without the row**: the remaining rows' kernel (ReLU head) or
feature covariance C − φ̃ᵢφ̃ᵢᵀ (linear head) is eigendecomposed and the gradient-flow solution for the same λ and ηt is formed directly (no block-inverse
identity, no contour quadrature: an independent computation of the trained head). The real changes

    ‖w − w₋ᵢ‖² / (2σ²)   and   mean over held-out x of ‖f(x) − f₋ᵢ(x)‖² / (2σ²)

are averaged over the problems the row was in as the run's column is (``si_crossfit.average_repeats``: the
geometric mean by default) and compared with the run's ``si_weights`` and ``si_function`` (Pearson and
Spearman). The figures are
stored in the run as ``si_verification.json`` (beside, never inside, the immutable score files).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from core.errors import InfoscopeError, ScoreError
from core.scores.si_crossfit import average_repeats, check_average
from core.scores.si_head import head_kernels, solve_alpha
from core.store.atomic import atomic_write_json
from core.store.layout import SI_MODEL
from core.store.layout import SI_VERIFICATION as VERIFICATION


def choose_rows(si: np.ndarray, rows: np.ndarray, n: int, seed: int) -> np.ndarray:
    """``n`` rows drawn one per quantile bin of ``si`` (seeded): the check covers the whole SI range."""
    order = rows[np.argsort(si, kind="stable")]
    n = min(n, len(order))
    rng = np.random.default_rng(seed)
    bins = np.array_split(order, n)
    return np.array([rng.choice(b) for b in bins if len(b)], dtype=int)


def _problem_arrays(z: Any, j: int) -> dict[str, np.ndarray]:
    out = {k: z[f"p{j}_{k}"] for k in ("rows", "x", "val_rows", "xv", "eta_t")}
    out["head"] = str(z[f"p{j}_head"]) if f"p{j}_head" in z.files else "relu"  # runs before the linear head
    if out["head"] not in ("relu", "linear"):
        raise ValueError(f"unknown head {out['head']!r} in problem {j}")
    return out


def retrain_without(x: np.ndarray, xv: np.ndarray, labels: np.ndarray, n_classes: int, drop: list[int], *,
                    lam: float, eta_t: float | None, sigma: float, head: str = "relu") -> list[tuple[float, float]]:
    """For each position in ``drop``: (‖Δw‖²/2σ², mean‖Δf‖²/2σ²) from training with and without that row."""
    if head == "linear":
        from core.scores import si_linear

        phi, phiv = si_linear.linear_design(x, xv)
        y1 = torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).double()
        vals = si_linear.retrain_without(phi, phiv, y1, [np.array([i]) for i in drop], lam=lam, eta_t=eta_t)
        return [(w / (2 * sigma**2), f / (2 * sigma**2)) for w, f in vals]
    kern, kern_val = head_kernels(x, xv)
    y = torch.nn.functional.one_hot(torch.as_tensor(labels), n_classes).double()
    alpha = solve_alpha(kern, y, lam=lam, eta_t=eta_t)
    out = []
    n = len(x)
    for i in drop:
        keep = np.r_[0:i, i + 1:n]
        alpha_i = torch.zeros_like(alpha)
        alpha_i[keep] = solve_alpha(kern[keep][:, keep], y[keep], lam=lam, eta_t=eta_t)
        da = alpha - alpha_i
        dw2 = float((da * (kern @ da)).sum())
        df2 = float((kern_val @ da).pow(2).sum(1).mean())
        out.append((dw2 / (2 * sigma**2), df2 / (2 * sigma**2)))
    return out


def verify_si(run_path: str | Path, samples: int = 30, seed: int = 0, write: bool = True,
              progress: Any = None) -> dict[str, Any]:
    """Retrain the run's SI model without ``samples`` rows and compare with its SI (see module docstring)."""
    from core.store import open_run

    if samples < 3:
        raise InfoscopeError(f"--samples must be at least 3, got {samples}")
    run = open_run(run_path)
    path = Path(run.path)
    model_file = path / SI_MODEL
    if not model_file.exists():
        raise InfoscopeError(f"{path} has no {SI_MODEL}: its SI was not computed with the head method "
                             "(re-score with the default SI)")
    df = run.df
    for col in ("si_weights", "si_function"):
        if col not in df.columns:
            raise InfoscopeError(f"run {path} has no {col} column")
    t0 = time.perf_counter()
    try:
        z = np.load(model_file, allow_pickle=False)
        prm = json.loads(str(z["params_json"]))
        lam, sigma, n_classes = float(prm["lam"]), float(prm["sigma"]), int(prm["n_classes"])
        problems = [_problem_arrays(z, j) for j in range(int(prm["n_problems"]))]
        # the run's SI of a row is this average over the problems (repeats) it was in: so is the real change
        how = check_average(str(prm.get("average", "arithmetic")))  # runs before 2026-12: arithmetic
    except (KeyError, ValueError, OSError, ScoreError) as e:
        raise InfoscopeError(f"{model_file} is damaged or incomplete: {e}") from e
    labels = df["label"].to_numpy()
    si_w, si_f = df["si_weights"].to_numpy(), df["si_function"].to_numpy()
    ok = np.flatnonzero(np.isfinite(si_f) & np.isfinite(si_w))
    if len(ok) < 3:
        raise InfoscopeError("fewer than 3 rows have SI: nothing to verify")
    chosen = choose_rows(si_f[ok], ok, samples, seed)
    where: dict[int, list[tuple[int, int]]] = {}  # row -> every (problem, position) it is in (one per repeat)
    for j, p in enumerate(problems):
        for pos, r in enumerate(p["rows"]):
            where.setdefault(int(r), []).append((j, pos))
    by_problem: dict[int, list[tuple[int, int]]] = {}
    for r in chosen:
        if int(r) not in where:
            raise InfoscopeError(f"row {r} has SI but is in no stored SI problem: {model_file} does not match the run")
        for j, pos in where[int(r)]:
            by_problem.setdefault(j, []).append((int(r), pos))
    got: dict[int, list[tuple[float, float]]] = {}
    done, total = 0, sum(len(v) for v in by_problem.values())
    for j, items in by_problem.items():
        p = problems[j]
        eta = float(p["eta_t"])
        res = retrain_without(p["x"].astype(np.float64), p["xv"].astype(np.float64), labels[p["rows"]], n_classes,
                              [pos for _, pos in items], lam=lam, eta_t=None if np.isnan(eta) else eta, sigma=sigma,
                              head=p["head"])
        for (r, _), wf in zip(items, res, strict=True):
            got.setdefault(r, []).append(wf)
        done += len(items)
        if progress:
            progress(f"retrained {done}/{total} times", done / total)
    def avg(v: list[float]) -> float:
        return float(average_repeats(np.asarray(v, dtype=np.float64)[:, None], how)[0])

    real_w = [avg([w for w, _ in got[int(r)]]) for r in chosen]
    real_f = [avg([f for _, f in got[int(r)]]) for r in chosen]
    est_w = [si_w[r] for r in chosen]
    est_f = [si_f[r] for r in chosen]
    rw, rf, ew, ef = map(np.asarray, (real_w, real_f, est_w, est_f))
    result = {
        "pearson_weights": float(stats.pearsonr(ew, rw)[0]), "pearson_function": float(stats.pearsonr(ef, rf)[0]),
        "spearman_weights": float(stats.spearmanr(ew, rw)[0]),
        "spearman_function": float(stats.spearmanr(ef, rf)[0]),
        "max_rel_error_weights": float(np.max(np.abs(ew - rw) / np.maximum(np.abs(rw), 1e-300))),
        "max_rel_error_function": float(np.max(np.abs(ef - rf) / np.maximum(np.abs(rf), 1e-300))),
        "n": len(chosen), "seed": seed, "rows": [str(s) for s in df["sample_id"].to_numpy()[chosen]],
        "retrained_si_weights": rw.tolist(), "retrained_si_function": rf.tolist(),
        "method": "head re-trained without each row: eigendecomposition of the remaining rows' kernel (ReLU head) "
                  "or of their feature covariance (linear head), same λ, ηt",
        "wall_time_s": round(time.perf_counter() - t0, 2),
        "verified_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    if write:
        try:
            atomic_write_json(path / VERIFICATION, result)
            result["stored"] = str(path / VERIFICATION)
        except Exception as e:  # a read-only run can still be verified
            result["stored"] = None
            result["store_error"] = str(e)
    return result


def fidelity_line(res: dict[str, Any]) -> str:
    """The exact last line ``infoscope verify-si`` prints."""
    return (f"si fidelity: pearson_weights={res['pearson_weights']:.4f} pearson_function={res['pearson_function']:.4f} "
            f"spearman_weights={res['spearman_weights']:.4f} spearman_function={res['spearman_function']:.4f} "
            f"n={res['n']}")
