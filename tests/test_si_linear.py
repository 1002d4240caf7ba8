"""The linear head's SI (core.scores.si_linear) against brute force: remove the row, re-solve, compare."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ScoreError
from core.scores.si_head import flow_filter, head_loo
from core.scores.si_linear import (
    choose_time_linear,
    linear_design,
    linear_head_loo,
    retrain_without,
    solve_linear_problem,
    solve_weights,
    time_grid,
)


def _problem(n: int = 40, d: int = 6, m: int = 9, k: int = 3, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    xv = rng.normal(size=(m, d))
    lab = rng.integers(0, k, n)
    lab[:k] = np.arange(k)
    y = torch.nn.functional.one_hot(torch.as_tensor(lab), k).double()
    phi, phiv = linear_design(x, xv)
    return phi, phiv, y


def _brute(phi, phiv, y, lam, eta_t):
    """Leave each row out by re-solving from scratch with a dense matrix function (no eigen-tricks shared)."""
    n = len(phi)

    def fit(p, t):
        a = p.T @ p + lam * torch.eye(p.shape[1], dtype=torch.float64)
        if eta_t is None:
            return torch.linalg.solve(a, p.T @ t)
        # g_t(A) B = A⁻¹ (I − e^{−ηtA}) B via the matrix exponential
        return torch.linalg.solve(a, (torch.eye(len(a), dtype=torch.float64) - torch.matrix_exp(-eta_t * a)) @ (p.T @ t))

    w = fit(phi, y)
    dw2, df2 = [], []
    for i in range(n):
        keep = np.r_[0:i, i + 1:n]
        dw = w - fit(phi[keep], y[keep])
        dw2.append(float((dw * dw).sum()))
        df2.append(float((phiv @ dw).pow(2).sum(1).mean()))
    return np.array(dw2), np.array(df2), w


@pytest.mark.parametrize("eta_t", [3.0, 40.0, None])
def test_loo_equals_removing_the_row_and_retraining(eta_t):
    phi, phiv, y = _problem()
    lam = 1e-2
    bw, bf, w = _brute(phi, phiv, y, lam, eta_t)
    out = linear_head_loo(phi, phiv, y, lam=lam, eta_t=eta_t, batch=7)  # odd batch: blocks cover every row
    np.testing.assert_allclose(out.dw2, bw, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(out.df2, bf, rtol=1e-7, atol=1e-14)
    np.testing.assert_allclose(solve_weights(phi, y, lam=lam, eta_t=eta_t).numpy(), w.numpy(), rtol=1e-9, atol=1e-12)
    # the leave-one-out residual is f₋ᵢ(xᵢ) − yᵢ of the re-solved head
    i = 5
    keep = np.r_[0:i, i + 1:len(phi)]
    wi = solve_weights(phi[keep], y[keep], lam=lam, eta_t=eta_t)
    np.testing.assert_allclose(out.loo_resid[i], (phi[i] @ wi - y[i]).numpy(), rtol=1e-7, atol=1e-10)


def test_agrees_with_the_dual_kernel_head_on_the_linear_kernel():
    """The primal linear head and the dual kernel head with Θ = Φ̃Φ̃ᵀ are the same algorithm."""
    phi, phiv, y = _problem(n=30, d=4, seed=3)
    dual = head_loo(phi @ phi.T, phiv @ phi.T, y, lam=1e-3, eta_t=25.0)
    prim = linear_head_loo(phi, phiv, y, lam=1e-3, eta_t=25.0)
    np.testing.assert_allclose(prim.dw2, dual.dw2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(prim.df2, dual.df2, rtol=1e-6, atol=1e-12)
    np.testing.assert_allclose(prim.loo_resid, dual.loo_resid, rtol=1e-6, atol=1e-10)


def test_many_held_out_rows_use_a_factor_with_the_same_value():
    """m > D switches to a D×D factor of the held-out second moment; the values must not change."""
    phi, phiv, y = _problem(n=25, d=3, m=40, seed=4)
    bw, bf, _ = _brute(phi, phiv, y, 1e-2, 10.0)
    out = linear_head_loo(phi, phiv, y, lam=1e-2, eta_t=10.0)
    np.testing.assert_allclose(out.df2, bf, rtol=1e-7, atol=1e-14)


def test_set_information_is_not_the_sum_of_row_scores():
    """Two copies of a row: each alone has small SI, the pair together much more (unique information)."""
    phi, phiv, y = _problem(n=30, d=5, seed=5)
    phi2 = torch.cat([phi, phi[:1]])
    y2 = torch.cat([y, y[:1]])
    loo = linear_head_loo(phi2, phiv, y2, lam=1e-3, eta_t=30.0)
    pair = retrain_without(phi2, phiv, y2, [np.array([0, 30])], lam=1e-3, eta_t=30.0)[0]
    assert pair[0] > 2.0 * (loo.dw2[0] + loo.dw2[30])
    # a set of one row is the row's leave-one-out
    single = retrain_without(phi, phiv, y, [np.array([4])], lam=1e-3, eta_t=30.0)[0]
    ref = linear_head_loo(phi, phiv, y, lam=1e-3, eta_t=30.0)
    np.testing.assert_allclose(single, (ref.dw2[4], ref.df2[4]), rtol=1e-7)
    # every row left out: W₋S = W₀ = 0
    full = retrain_without(phi, phiv, y, [np.arange(len(phi))], lam=1e-3, eta_t=30.0)[0]
    w = solve_weights(phi, y, lam=1e-3, eta_t=30.0)
    assert full[0] == pytest.approx(float((w * w).sum()), rel=1e-12)


def test_early_stopping_picks_the_grid_minimum():
    phi, phiv, y = _problem(n=50, d=8, seed=6)
    rng = np.random.default_rng(1)
    yv = torch.nn.functional.one_hot(torch.as_tensor(rng.integers(0, 3, len(phiv))), 3).double()
    grid = np.array([0.5, 5.0, 50.0, 500.0])
    best, path = choose_time_linear(phi, phiv, y, yv, lam=1e-3, grid=grid)
    mses = []
    for s in grid:  # brute force: train, predict, MSE
        w = solve_weights(phi, y, lam=1e-3, eta_t=float(s))
        mses.append(float(((phiv @ w - yv) ** 2).sum(1).mean()))
    np.testing.assert_allclose([m for _, m in path], mses, rtol=1e-9)
    assert best == grid[int(np.argmin(mses))]


def test_problem_solver_and_bad_input():
    rng = np.random.default_rng(7)
    x, xv = rng.normal(size=(20, 4)), rng.normal(size=(6, 4))
    y = torch.nn.functional.one_hot(torch.as_tensor(rng.integers(0, 2, 20)), 2).double()
    yv = torch.nn.functional.one_hot(torch.as_tensor(rng.integers(0, 2, 6)), 2).double()
    res = solve_linear_problem(x, xv, y, yv, lam=1e-3, t="auto", sets=[np.arange(5)])
    phi = linear_design(x, xv)[0]
    a = np.linalg.eigvalsh((phi.T @ phi).numpy()) + 1e-3
    grid = time_grid(a)
    assert res["eta_t"] in grid and grid[0] == pytest.approx(0.1 / a.max()) and grid[-1] == pytest.approx(100 / a.min())
    assert [p for p, _ in res["path"]] == pytest.approx(list(grid))
    assert np.all(np.isfinite(res["loo"].dw2)) and len(res["sets"]) == 1
    with pytest.raises(ScoreError, match="λ"):
        linear_head_loo(*linear_design(x, xv)[:1], None, y, lam=0.0, eta_t=None)
    with pytest.raises(ScoreError, match="NaN"):
        linear_design(np.full((3, 2), np.nan), xv[:, :2])
    with pytest.raises(ScoreError, match="set positions"):
        retrain_without(*linear_design(x, xv), y, [np.array([99])], lam=1e-3, eta_t=1.0)
    assert flow_filter(np.array([0.0]), 2.0)[0] == 2.0  # g_t(0) = ηt


def test_run_uses_the_linear_head_above_max_problem_and_verify_si_confirms_it(tiny_sources, tmp_path):
    """head = "auto": problems above ``max_problem`` rows get the exact linear head (not split); the manifest
    says so, the column is the linear head's leave-one-out, and verify-si's retraining agrees to 1e-5."""
    import json

    import pandas as pd

    from core.pipeline import score_run
    from core.scores.si_crossfit import HEAD_DEFAULTS, head_parts
    from core.verify_si import verify_si
    from tests.conftest import tiny_config

    assert head_parts(np.arange(10), np.arange(10), {**HEAD_DEFAULTS, "max_problem": 10}, 0)[0] == "relu"
    head, parts = head_parts(np.arange(11), np.arange(11), {**HEAD_DEFAULTS, "max_problem": 10}, 0)
    assert head == "linear" and len(parts) == 1
    head, parts = head_parts(np.arange(11), np.arange(11), {**HEAD_DEFAULTS, "max_problem": 10, "head": "relu"}, 0)
    assert head == "relu" and len(parts) == 2
    cfg = tiny_config(tiny_sources, tmp_path, scores=["si_weights", "si_function"], adversarial=0.0,
                      score_params={"si_function": {"repeats": 1, "max_problem": 50}})
    run = score_run(cfg)
    m = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]
    assert m["params"]["head"] == "linear" and "linear head" in m["params"]["kernel"]
    assert all(p["head"] == "linear" for p in m["info"]["problems"])
    assert len(m["info"]["problems"]) == 2  # one problem per fold: not split although > 50 rows
    assert "linear head" in m["info"]["label_information"]["skipped"]  # said, not silently missing
    z = np.load(run / "si_model.npz")
    df = pd.read_parquet(run / "samples.parquet")
    p0 = {k: z[f"p0_{k}"] for k in ("rows", "x", "val_rows", "xv", "eta_t")}
    phi, phiv = linear_design(p0["x"].astype(np.float64), p0["xv"].astype(np.float64))
    y = torch.nn.functional.one_hot(torch.as_tensor(df.label.to_numpy()[p0["rows"]]), 10).double()
    ref = linear_head_loo(phi, phiv, y, lam=HEAD_DEFAULTS["lam"], eta_t=float(p0["eta_t"]))
    sigma = HEAD_DEFAULTS["sigma"]
    np.testing.assert_allclose(df.si_weights.to_numpy()[p0["rows"]], ref.dw2 / (2 * sigma**2), rtol=1e-5)
    res = verify_si(run, samples=6, seed=1)
    assert res["max_rel_error_weights"] < 1e-5 and res["max_rel_error_function"] < 1e-5
