"""The default SI (wide ReLU head on features that did not see the row): closed forms against brute force,
the contour quadrature, cross-fitting folds, verify-si end to end, duplicates and the CLI line."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from core.errors import InfoscopeError, ScoreError
from core.scores.si_crossfit import assign_folds, duplicate_groups, split_problem
from core.scores.si_head import choose_time, flow_filter, flow_poles, head_kernels, head_loo, relu_ntk


def _problem(n=24, m=6, d=5, k=3, seed=0):
    rng = np.random.default_rng(seed)
    x, xv = rng.normal(size=(n, d)), rng.normal(size=(m, d))
    y = np.eye(k)[rng.integers(0, k, n)]
    return (*head_kernels(x, xv), torch.as_tensor(y))


def _solve(kern: np.ndarray, y: np.ndarray, lam: float, eta_t):
    ev, vec = np.linalg.eigh(kern)
    return vec @ (flow_filter(np.clip(ev, 0, None) + lam, eta_t)[:, None] * (vec.T @ y))


@pytest.mark.parametrize("eta_t", [None, 0.3, 7.0, 2500.0])
def test_head_loo_equals_removing_the_row_and_retraining(eta_t):
    kern, kern_val, y = _problem()
    lam = 1e-2
    out = head_loo(kern, kern_val, y, lam=lam, eta_t=eta_t)
    k_np, kv_np, y_np = kern.numpy(), kern_val.numpy(), y.numpy()
    alpha = _solve(k_np, y_np, lam, eta_t)
    for i in range(len(y_np)):
        keep = np.r_[0:i, i + 1:len(y_np)]
        alpha_i = np.zeros_like(alpha)
        alpha_i[keep] = _solve(k_np[np.ix_(keep, keep)], y_np[keep], lam, eta_t)
        da = alpha - alpha_i
        assert out.dw2[i] == pytest.approx(np.einsum("ik,ij,jk->", da, k_np, da), rel=1e-7, abs=1e-12)
        assert out.df2[i] == pytest.approx(((kv_np @ da) ** 2).sum(1).mean(), rel=1e-7, abs=1e-12)
        np.testing.assert_allclose(out.loo_resid[i], k_np[i] @ alpha_i - y_np[i], atol=1e-9)
    np.testing.assert_allclose(out.resid, k_np @ alpha - y_np, atol=1e-9)


def test_contour_quadrature_of_the_flow_filter():
    a = np.logspace(-3, 5, 500)
    for eta_t in (0.05, 1.0, 40.0, 1e4):
        p, b = flow_poles(eta_t)
        approx = np.real(b[0] / (a + p[0])) + 2 * np.real((b[None, 1:] / (a[:, None] + p[None, 1:])).sum(1))
        np.testing.assert_allclose(approx, flow_filter(a, eta_t), rtol=1e-6)
    with pytest.raises(ScoreError):
        flow_poles(-1.0)


def test_relu_ntk_is_the_wide_network_limit():
    """The closed-form kernel equals the empirical NTK of a wide two-layer ReLU network (Monte Carlo)."""
    rng = np.random.default_rng(0)
    x = torch.as_tensor(rng.normal(size=(5, 3)))
    width = 200_000
    w = torch.as_tensor(rng.normal(size=(3, width)))
    a = torch.as_tensor(rng.normal(size=width))
    pre = x @ w
    act, der = pre.clamp_min(0), (pre > 0).double()
    # f = a·relu(Wᵀx)/√width: ∂f/∂a = relu/√width, ∂f/∂W = x (a ∘ relu')/√width
    emp = (act @ act.T + (x @ x.T) * ((der * a) @ (der * a).T)) / width
    np.testing.assert_allclose(relu_ntk(x, x).numpy(), emp.numpy(), rtol=0.03, atol=0.01)


def test_early_stopping_picks_the_held_out_minimum():
    kern, kern_val, y = _problem(n=40, m=20)
    rng = np.random.default_rng(3)
    yv = torch.as_tensor(np.eye(3)[rng.integers(0, 3, 20)])
    best, path = choose_time(kern, kern_val, y, yv, lam=1e-3)
    assert best == min(path, key=lambda p: p[1])[0]
    # recompute one point of the path by brute force
    s, mse = path[5]
    alpha = _solve(kern.numpy(), y.numpy(), 1e-3, s)
    assert mse == pytest.approx((((kern_val.numpy() @ alpha) - yv.numpy()) ** 2).sum(1).mean(), rel=1e-9)


def test_folds_keep_duplicates_together_and_balance_classes():
    labels = np.repeat(np.arange(3), 20)
    pairs = np.array([[0, 1], [1, 2], [30, 45]])
    groups = duplicate_groups(60, pairs)
    assert groups[0] == groups[1] == groups[2] and groups[30] == groups[45] and groups[3] != groups[0]
    fold = assign_folds(labels, groups, 2, seed=4)
    assert fold[0] == fold[1] == fold[2] and fold[30] == fold[45]
    for c in range(3):
        counts = np.bincount(fold[labels == c], minlength=2)
        assert abs(counts[0] - counts[1]) <= 3
    parts = split_problem(np.arange(60), groups, 25, seed=0)
    assert sorted(np.concatenate(parts).tolist()) == list(range(60)) and all(len(p) <= 27 for p in parts)
    assert any({0, 1, 2} <= set(p.tolist()) for p in parts)


def test_duplicate_rows_carry_little_unique_information():
    """A row duplicated inside the problem keeps far less unique information than it had alone."""
    rng = np.random.default_rng(5)
    n, d, k = 60, 6, 3
    x = rng.normal(size=(n, d))
    y = np.eye(k)[rng.integers(0, k, n)]
    xv = rng.normal(size=(15, d))
    single = head_loo(*head_kernels(x, xv), torch.as_tensor(y), lam=1e-3, eta_t=50.0)
    x2, y2 = np.concatenate([x, x[:10]]), np.concatenate([y, y[:10]])
    dup = head_loo(*head_kernels(x2, xv), torch.as_tensor(y2), lam=1e-3, eta_t=50.0)
    ratio = dup.df2[:10] / single.df2[:10]
    assert np.median(ratio) < 0.5
    assert np.median(dup.df2[10:n] / single.df2[10:n]) > 0.5  # the other rows barely change


def test_run_si_is_the_head_and_verify_si_confirms_it(tiny_run):
    from core.store import open_run
    from core.verify_si import fidelity_line, verify_si

    m = json.loads((tiny_run / "manifest.json").read_text())
    p = m["scores"]["si_function"]["params"]
    assert p["method"] == "head" and p["features"] == "crossfit" and p["projection"] is None
    assert p["unit"] == "nats" and p["sigma"] > 0 and all(t is not None for t in p["eta_t_per_problem"])
    df = pd.read_parquet(tiny_run / "samples.parquet")
    tr = df[df.split == "train"]
    assert tr["si_function"].notna().all() and df.loc[df.split == "test", "si_function"].isna().all()
    sets = m["scores"]["si_function"]["info"]["set_information"]
    assert sets["unit"] == "nats" and set(sets["sources"]) == set(df["source"]) and len(sets["classes"]) == 10
    per_class_sum = tr.groupby("label_name")["si_function"].sum()
    # a class's information is what leaving the whole class out changes: not the sum of its rows' scores
    assert all(abs(sets["classes"][c]["si_function"] - per_class_sum[c]) > 1e-3 * per_class_sum[c]
               for c in sets["classes"])
    # label-noise information (Harutyunyan et al. 2020): each set's value is at most the total and the classes,
    # a partition of the training rows, sum to at least it (labels of different rows are independent)
    li = m["scores"]["si_function"]["info"]["label_information"]
    assert li["unit"] == "nats" and li["sigma"] == p["sigma"] and "cross-fitted" in li["labels_given_inputs"]
    for v in ("weights", "function"):
        total = li["all"][v]
        assert total > 0 and all(0 <= c[v] <= total * (1 + 1e-9) for c in li["classes"].values())
        assert sum(c[v] for c in li["classes"].values()) >= total * (1 - 1e-9)
    assert set(li["sources"]) == set(df["source"]) and len(li["classes"]) == 10
    res = verify_si(tiny_run, samples=8, seed=1)
    assert res["n"] == 8 and res["max_rel_error_weights"] < 1e-5 and res["max_rel_error_function"] < 1e-5
    line = fidelity_line(res)
    assert re.fullmatch(r"si fidelity: pearson_weights=\S+ pearson_function=\S+ spearman_weights=\S+ "
                        r"spearman_function=\S+ n=8", line)
    stored = open_run(tiny_run).si_verification()
    assert stored is not None and stored["rows"] == res["rows"]


def test_verify_si_cli_prints_the_line_last(tiny_run):
    from typer.testing import CliRunner

    from core.cli import app

    out = CliRunner().invoke(app, ["verify-si", "--run", str(tiny_run), "--samples", "4", "--seed", "2"])
    assert out.exit_code == 0, out.output
    last = out.stdout.strip().splitlines()[-1]
    assert last.startswith("si fidelity: pearson_weights=") and last.endswith("n=4")
    bad = CliRunner().invoke(app, ["verify-si", "--run", str(tiny_run), "--samples", "1"])
    assert bad.exit_code == 2 and "--samples" in bad.output


def test_verify_si_refuses_a_run_without_the_head_model(tiny_run, tmp_path):
    import shutil

    from core.verify_si import verify_si

    copy = tmp_path / "run"
    shutil.copytree(tiny_run, copy)
    (copy / "si_model.npz").unlink()
    with pytest.raises(InfoscopeError, match="si_model.npz"):
        verify_si(copy, samples=4)


@pytest.mark.parametrize("eta_t", [None, 4.0, 900.0])
def test_set_information_equals_leaving_the_set_out(eta_t):
    from core.scores.si_head import head_set_loo

    kern, kern_val, y = _problem(n=30, m=8)
    lam = 1e-2
    sets = [np.array([3]), np.array([0, 5, 7]), np.arange(10, 30), np.arange(2, 30), np.arange(30)]
    got = head_set_loo(kern, kern_val, y, sets, lam=lam, eta_t=eta_t)
    k_np, kv_np, y_np = kern.numpy(), kern_val.numpy(), y.numpy()
    alpha = _solve(k_np, y_np, lam, eta_t)
    for s, (dw2, df2) in zip(sets, got, strict=True):
        keep = np.setdiff1d(np.arange(30), s)
        alpha_s = np.zeros_like(alpha)
        if len(keep):
            alpha_s[keep] = _solve(k_np[np.ix_(keep, keep)], y_np[keep], lam, eta_t)
        da = alpha - alpha_s
        assert dw2 == pytest.approx(np.einsum("ik,ij,jk->", da, k_np, da), rel=1e-7)
        assert df2 == pytest.approx(((kv_np @ da) ** 2).sum(1).mean(), rel=1e-7)
    single = head_loo(kern, kern_val, y, lam=lam, eta_t=eta_t)
    assert got[0][0] == pytest.approx(single.dw2[3], rel=1e-7)


def test_a_duplicated_pair_carries_more_information_than_its_two_scores():
    from core.scores.si_head import head_set_loo

    rng = np.random.default_rng(9)
    x = rng.normal(size=(40, 5))
    x = np.concatenate([x, x[:1]])  # row 40 duplicates row 0
    y = np.eye(3)[rng.integers(0, 3, 40)]
    y = np.concatenate([y, y[:1]])
    kern, kern_val = head_kernels(x, rng.normal(size=(10, 5)))
    yt = torch.as_tensor(y)
    single = head_loo(kern, kern_val, yt, lam=1e-3, eta_t=100.0)
    (pair_w, pair_f), = head_set_loo(kern, kern_val, yt, [np.array([0, 40])], lam=1e-3, eta_t=100.0)
    assert pair_f > 3 * (single.df2[0] + single.df2[40])


def test_repeats_average_over_cross_fitting_and_verify_follows(tiny_sources, tmp_path):
    """With repeats = 2 every training row is in two head problems; its SI is the mean, and verify-si
    retrains it out of both."""
    from core.pipeline import score_run
    from core.verify_si import verify_si
    from tests.conftest import tiny_config

    cfg = tiny_config(tiny_sources, tmp_path, scores=["loss", "si_weights", "si_function"], adversarial=0.0,
                      score_params={"si_function": {"repeats": 2}})
    run = score_run(cfg)
    z = np.load(run / "si_model.npz")
    reps = [int(z[f"p{j}_repeat"]) for j in range(int(json.loads(str(z["params_json"]))["n_problems"]))]
    assert sorted(set(reps)) == [0, 1]
    m = json.loads((run / "manifest.json").read_text())
    assert m["scores"]["si_function"]["params"]["repeats"] == 2
    res = verify_si(run, samples=5, seed=0)
    assert res["max_rel_error_weights"] < 1e-5 and res["max_rel_error_function"] < 1e-5


@pytest.mark.parametrize("init", ["w0", "seed"])
def test_fold_networks_start_from_the_runs_w0(init, tiny_sources, tmp_path, monkeypatch):
    """Default ``crossfit_init = "w0"``: every cross-fitted network starts from the run's own network's
    initial state (the seed only orders its batches); ``"seed"`` draws a fresh initialisation per network."""
    import core.pipeline as pipeline
    from core.pipeline import score_run
    from tests.conftest import tiny_config

    calls: list[tuple[object, object]] = []
    real = pipeline.train_model

    def spy(*a, **k):
        out = real(*a, **k)
        calls.append((k.get("init_state"), out.init_state))
        return out

    monkeypatch.setattr(pipeline, "train_model", spy)
    cfg = tiny_config(tiny_sources, tmp_path, scores=["loss", "si_function"], adversarial=0.0,
                      score_params={"si_function": {"repeats": 1, "crossfit_init": init}})
    run = score_run(cfg)
    (given0, w0), *folds = calls
    assert given0 is None and len(folds) == 2  # the run's network, then one network per fold
    for given, started in folds:
        same = all(torch.equal(started[k], w0[k]) for k in w0)
        assert same == (init == "w0")
        assert (given is not None) == (init == "w0")
    p = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]["params"]
    assert p["crossfit_init"].startswith("the run's w₀" if init == "w0" else "a fresh initialisation")


def _noisy_repeats(rng, signal, noise, r):
    return signal[None, :] + noise * rng.normal(size=(r, len(signal)))


@pytest.mark.parametrize(("r", "kind", "tol"), [(2, "normal", 0.02), (4, "normal", 0.02), (6, "normal", 0.02),
                                               (2, "lognormal", 0.06), (6, "lognormal", 0.06)])
def test_reproducibility_predicts_the_spearman_of_independent_runs(r, kind, tol):
    """The Spearman–Brown estimate from one set of R repeats matches the Spearman actually measured between
    the means of two independent sets of R repeats (simulated: a row signal plus per-repeat noise). Exact for
    a Gaussian signal; for a skewed one (like SI) it is optimistic by up to ~0.05 (documented)."""
    from scipy import stats

    from core.scores.si_crossfit import reproducibility

    rng = np.random.default_rng(r)
    signal = rng.normal(size=4000) if kind == "normal" else rng.lognormal(size=4000)
    ests, real = [], []
    for _ in range(6):
        a, b = _noisy_repeats(rng, signal, 1.2, r), _noisy_repeats(rng, signal, 1.2, r)
        ests.append(reproducibility(a))
        real.append(stats.spearmanr(a.mean(0), b.mean(0))[0])
    assert abs(np.mean(ests) - np.mean(real)) < tol
    # and it is not the single-repeat figure: more repeats, higher reproducibility
    single = np.mean([stats.spearmanr(*_noisy_repeats(rng, signal, 1.2, 2))[0] for _ in range(3)])
    assert np.mean(real) > single + 0.05


@pytest.mark.parametrize(("noise", "r"), [(0.6, 4), (1.0, 8), (1.5, 16)])
def test_top_overlap_estimate_predicts_the_overlap_of_independent_runs(noise, r):
    """The top-10% overlap estimated from one run's R repeats matches, on average, the overlap actually
    measured between the averages of two independent sets of R repeats (brute force: the two runs simulated
    as a lognormal row signal times per-repeat lognormal noise, like SI over cross-fittings)."""
    from core.scores.si_crossfit import average_repeats, top_overlap_estimate

    rng = np.random.default_rng(int(10 * noise) + r)
    log_signal = rng.normal(size=2000)
    def run():
        return np.exp(log_signal[None, :] + noise * rng.normal(size=(r, len(log_signal))))
    ests, real = [], []
    for _ in range(8):
        a, b = run(), run()
        ests.append(top_overlap_estimate(a, "geometric", 0.1, draws=50))
        ga, gb = average_repeats(a), average_repeats(b)
        k = 200
        real.append(len(set(np.argsort(-ga)[:k]) & set(np.argsort(-gb)[:k])) / k)
    assert abs(np.mean(ests) - np.mean(real)) < 0.03
    assert 0.3 < np.mean(real) < 0.97  # the settings are neither trivial nor hopeless


def test_top_overlap_estimate_edge_cases():
    from core.scores.si_crossfit import top_overlap_estimate

    x = np.random.default_rng(0).lognormal(size=(1, 50))
    assert top_overlap_estimate(x) is None  # one repeat: nothing to compare
    assert top_overlap_estimate(np.repeat(x, 3, axis=0)) == pytest.approx(1.0)  # no spread: the same top rows
    y = np.repeat(x, 3, axis=0)
    y[:, 5:] = np.nan
    assert top_overlap_estimate(y) is None  # fewer than 10 rows scored
    z = np.random.default_rng(1).lognormal(size=(6, 400))
    z[1:, :200] = np.nan  # half the rows seen once: they borrow the median spread instead of a zero one
    est = top_overlap_estimate(z)
    assert est is not None and est < 0.6  # pure noise: the top 10% is mostly chance
    assert top_overlap_estimate(z, "arithmetic") is not None


def test_average_over_repeats_by_definition():
    """The column's average over cross-fittings, against its definition on a tiny table (NaN = not scored)."""
    from core.scores.si_crossfit import average_repeats

    v = np.array([[1.0, 4.0, np.nan, 0.0], [100.0, 1.0, np.nan, 2.0], [10.0, np.nan, np.nan, 8.0]])
    g = average_repeats(v, "geometric")
    np.testing.assert_allclose(g[:2], [10.0, 2.0])  # (1·100·10)^(1/3), (4·1)^(1/2)
    assert np.isnan(g[2]) and 0 < g[3] < 1e-90  # never scored; an exact 0 is floored, not -inf
    np.testing.assert_allclose(average_repeats(v, "arithmetic")[[0, 1, 3]], [37.0, 2.5, 10 / 3])
    with pytest.raises(ScoreError, match="average must be one of"):
        average_repeats(v, "median")


def test_reproducibility_edge_cases():
    from core.scores.si_crossfit import reproducibility

    x = np.random.default_rng(0).normal(size=(1, 50))
    assert reproducibility(x) is None  # one repeat: nothing to compare
    assert reproducibility(np.repeat(x, 4, axis=0)) == pytest.approx(1.0)
    y = np.vstack([x, x + 1e-3])
    y[:, :48] = np.nan
    assert reproducibility(y) is None  # fewer than 3 rows scored in every repeat


@pytest.mark.parametrize("bad", [{"repeats": 0}, {"repeats": "many"}, {"repeats": 2.5},
                                 {"min_repeats": 4, "max_repeats": 3}, {"target_reproducibility": 1.5},
                                 {"lam": -1}, {"t": "soon"}, {"folds": 1}, {"no_such_thing": 1},
                                 {"crossfit_init": "random"}, {"average": "median"},
                                 {"t_choice": "each"}, {"target_top_overlap": 1.5}, {"top_fraction": 0},
                                 {"target_top_overlap": "high"}, {"max_repeat_rows_sq": -1},
                                 {"max_repeat_rows": "lots"}, {"max_repeat_rows": 0}])
def test_bad_si_parameters_are_refused_before_any_work(bad, tiny_sources, tmp_path):
    from core.pipeline import RunConfig

    cfg = RunConfig(sources=tiny_sources, runs_dir=str(tmp_path / "runs"),
                    score_params={"si_function": bad})
    with pytest.raises(ScoreError) as e:
        cfg.validate()
    assert "\n" not in str(e.value)
    assert not (tmp_path / "runs").exists()


def test_auto_repeats_stop_at_the_target_or_the_cap(tiny_sources, tmp_path):
    """repeats = "auto": cross-fittings are added until the estimated reproducibility reaches the target, or
    max_repeats; the stored per-repeat SI gives back both the column (its geometric mean) and the reported
    estimate."""
    from core.pipeline import score_run
    from core.scores.si_crossfit import reproducibility, top_overlap_estimate
    from tests.conftest import tiny_config

    out = {}
    for name, prm in [("cap", {"target_reproducibility": 1.0, "max_repeats": 3}),
                      ("target", {"target_reproducibility": 0.05, "min_repeats": 2, "max_repeats": 5,
                                  "target_top_overlap": 0.0}),
                      ("top", {"target_reproducibility": 0.05, "min_repeats": 2, "max_repeats": 3,
                               "target_top_overlap": 1.0})]:
        cfg = tiny_config(tiny_sources, tmp_path, scores=["si_weights", "si_function"], adversarial=0.0,
                          name=name, score_params={"si_function": prm})
        run = score_run(cfg)
        m = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]
        z = np.load(run / "si_model.npz")
        per = {c: z[f"per_repeat_{c}"] for c in ("si_weights", "si_function")}
        df = pd.read_parquet(run / "samples.parquet")
        for c in per:
            seen = np.isfinite(per[c]).any(0)
            np.testing.assert_allclose(df[c].to_numpy()[seen], np.exp(np.nanmean(np.log(per[c][:, seen]), axis=0)),
                                       rtol=1e-6)
            assert df[c].isna().to_numpy()[~seen].all() and seen.sum() == (df.split == "train").sum()
            assert m["info"]["reproducibility"][c] == pytest.approx(reproducibility(np.log(per[c])))
            assert m["info"]["reproducibility"][c] == pytest.approx(reproducibility(per[c], "geometric"))
            assert m["info"]["reproducibility"]["top_overlap"][c] == pytest.approx(top_overlap_estimate(per[c]))
        out[name] = (m["params"]["repeats"], m["info"]["reproducibility"])
    reps, rep = out["cap"]
    assert reps == 3 and "max_repeats" in rep["stopped"] and rep["si_function"] < 1.0
    reps, rep = out["target"]
    assert reps == 2 and "target" in rep["stopped"] and min(rep["si_weights"], rep["si_function"]) >= 0.05
    reps, rep = out["top"]  # the Spearman target alone would stop at 2; the unreachable top target does not
    assert reps == 3 and "max_repeats" in rep["stopped"] and "top-10% overlap" in rep["stopped"]
    assert min(rep["trace"][1]["si_weights"], rep["trace"][1]["si_function"]) >= 0.05  # R = 2 met it
    assert rep["top_overlap"]["si_function"] < 1.0 and rep["top_overlap"]["fraction"] == 0.1
    n = int((df.split == "train").sum())  # the small-data budget R · n² ≤ max_repeat_rows_sq decides, and says so
    prm = {"target_reproducibility": 1.0, "max_repeats": 50, "max_repeat_rows": 1, "max_repeat_rows_sq": 3 * n * n + n}
    run = score_run(tiny_config(tiny_sources, tmp_path, scores=["si_weights", "si_function"], adversarial=0.0,
                                name="sq", score_params={"si_function": prm}))
    m = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]
    assert m["params"]["repeats"] == 3
    assert f"(max_repeat_rows_sq {3 * n * n + n} ÷ {n}² training rows)" in m["info"]["reproducibility"]["stopped"]


def test_auto_repeats_are_capped_by_the_rows_budget():
    """repeats = "auto" never plans more than max(max_repeat_rows / n, max_repeat_rows_sq / n²) cross-fittings
    for n training rows (at least one), nor more than max_repeats (200): from 1,600 rows up the rows budget
    decides exactly as before the small-data allowance (the demo's 4,973 rows: 8); below, R · n² ≤ 6.4e7
    (560 photo crops: 204 → 200, 800 rows: 100)."""
    from core.scores.si_crossfit import HEAD_DEFAULTS, _repeat_plan

    prm = dict(HEAD_DEFAULTS)
    assert _repeat_plan(prm, 200) == (2, 200, 0.99)
    assert _repeat_plan(prm, 560) == (2, 200, 0.99)
    assert _repeat_plan(prm, 640) == (2, 156, 0.99)
    assert _repeat_plan(prm, 800) == (2, 100, 0.99)
    assert _repeat_plan(prm, 1000) == (2, 64, 0.99)
    assert _repeat_plan(prm, 1600) == (2, 25, 0.99)  # both budgets agree here
    assert _repeat_plan(prm, 3000) == (2, 13, 0.99)
    assert _repeat_plan(prm, 4973) == (2, 8, 0.99)
    assert _repeat_plan(prm, 5000) == (2, 8, 0.99)
    assert _repeat_plan(prm, 20000) == (2, 2, 0.99)
    assert _repeat_plan(prm, 50000) == (1, 1, 0.99)
    for n in (300, 559, 700, 1200, 1599, 1601, 2500, 7000):  # brute force: the largest R both rules allow
        want = max(r for r in range(1, 201) if r * n <= 40000 or r * n * n <= 64_000_000 or r == 1)
        assert _repeat_plan(prm, n)[1] == want
    assert _repeat_plan({**prm, "max_repeat_rows_sq": 0}, 560) == (2, 71, 0.99)  # the allowance off: rows only
    assert _repeat_plan({**prm, "repeats": 4}, 50000) == (4, 4, None)  # an explicit number is kept


def test_pooled_time_minimises_the_summed_held_out_error():
    """One ηt for the run: the argmin of the held-out MSE summed over problems; paths on other grids are
    interpolated in log ηt (brute force: the sum evaluated at every grid point by hand)."""
    from core.scores.si_crossfit import pooled_time

    grid = np.logspace(-1, 3, 9)
    a = [(g, (np.log10(g) - 0.0) ** 2) for g in grid]            # alone: minimum at ηt = 1
    b = [(g, 3 * (np.log10(g) - 2.0) ** 2) for g in grid]        # alone: minimum at ηt = 100
    assert pooled_time([a]) == pytest.approx(1.0) and pooled_time([b]) == pytest.approx(100.0)
    total = [sum(p[i][1] for p in (a, b)) for i in range(len(grid))]
    assert pooled_time([a, b]) == pytest.approx(grid[int(np.argmin(total))])
    assert pooled_time([a, b]) == pytest.approx(10 ** 1.5)      # 1·x² + 3·(x − 2)² is least at x = 1.5
    fine = np.logspace(-1, 3, 33)                                  # another grid: interpolated onto a's
    c = [(g, 3 * (np.log10(g) - 2.0) ** 2) for g in fine]
    assert pooled_time([a, c]) == pytest.approx(pooled_time([a, b]))
    assert pooled_time([]) is None and pooled_time([[]]) is None


@pytest.mark.parametrize("choice", ["pooled", "per_problem"])
def test_every_head_problem_is_trained_for_the_runs_time(choice, tiny_sources, tmp_path):
    """Default ``t_choice = "pooled"``: every head problem of every cross-fitting is trained for one ηt, the
    grid point minimising the held-out MSE summed over all problems (recomputed here from the stored features
    with ``choose_time``); ``"per_problem"``: each problem's own minimum. verify-si retrains at the stored ηt."""
    from core.pipeline import score_run
    from core.verify_si import verify_si
    from tests.conftest import tiny_config

    cfg = tiny_config(tiny_sources, tmp_path, scores=["si_weights", "si_function"], adversarial=0.0,
                      score_params={"si_function": {"repeats": 3, "t_choice": choice}})
    run = score_run(cfg)
    z = np.load(run / "si_model.npz")
    labels = pd.read_parquet(run / "samples.parquet")["label"].to_numpy().astype(int)
    k = int(json.loads(str(z["params_json"]))["n_classes"])
    n_prob = int(json.loads(str(z["params_json"]))["n_problems"])
    assert n_prob == 6  # 3 cross-fittings × 2 folds
    own, paths = [], []
    for j in range(n_prob):
        kern, kern_val = head_kernels(z[f"p{j}_x"].astype(np.float64), z[f"p{j}_xv"].astype(np.float64))
        y = torch.as_tensor(np.eye(k)[labels[z[f"p{j}_rows"]]])
        yv = torch.as_tensor(np.eye(k)[labels[z[f"p{j}_val_rows"]]])
        best, path = choose_time(kern, kern_val, y, yv, lam=1e-3)
        own.append(best)
        paths.append(np.array(path))
    stored = np.array([float(z[f"p{j}_eta_t"]) for j in range(n_prob)])
    if choice == "pooled":
        total = sum(p[:, 1] for p in paths)
        np.testing.assert_allclose(stored, paths[0][int(np.argmin(total)), 0], rtol=1e-12)
    else:
        np.testing.assert_allclose(stored, own, rtol=1e-12)
    m = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]
    assert m["params"]["eta_t_per_problem"] == pytest.approx(list(stored))
    res = verify_si(run, samples=5, seed=0)
    assert res["max_rel_error_weights"] < 1e-5 and res["max_rel_error_function"] < 1e-5
