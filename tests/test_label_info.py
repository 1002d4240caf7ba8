"""Label-noise information I(W; Y | X) of the SI head: the closed forms against the explicit weight map M built by
re-solving the head for every unit target, and the properties the definition implies."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.errors import ScoreError
from core.scores.label_info import (
    gaussian_label_information,
    label_covariance,
    label_information,
    project_simplex,
)
from core.scores.si_head import solve_alpha


def _problem(n=9, m=5, p_dim=6, k=3, seed=0):
    """A head with an explicit finite feature map Φ (θ = ΦΦᵀ, rank ≤ p_dim) and label distributions pᵢ."""
    rng = np.random.default_rng(seed)
    phi, phi_v = rng.normal(size=(n, p_dim)), rng.normal(size=(m, p_dim))
    logits = 2.0 * rng.normal(size=(n, k))
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    probs[0] = np.eye(k)[1]  # one row whose label is certain
    return phi, phi_v, probs


def _brute(phi, phi_v, probs, lam, eta_t, sigma, rows=None):
    """½ log det(I + M Σ Mᵀ/σ²) with M the explicit map from vec(Y) to the weights Φᵀα (and to the outputs
    Φ_v Φᵀα / √m), built column by column from the training solve; Σ zero outside ``rows``."""
    n, k = probs.shape
    kern = torch.as_tensor(phi @ phi.T)
    cols_w, cols_f = [], []
    for i in range(n):
        for j in range(k):
            e = np.zeros((n, k))
            e[i, j] = 1.0
            alpha = solve_alpha(kern, torch.as_tensor(e), lam=lam, eta_t=eta_t).numpy()
            w = phi.T @ alpha  # (P, k): the weights' change from w₀
            cols_w.append(w.ravel())
            cols_f.append((phi_v @ w).ravel() / np.sqrt(len(phi_v)))
    mw, mf = np.array(cols_w).T, np.array(cols_f).T
    cov = label_covariance(probs)
    if rows is not None:
        keep = np.zeros(n, bool)
        keep[rows] = True
        mask = np.repeat(keep, k)
        cov = cov * np.outer(mask, mask)

    def info(mat):
        return 0.5 * np.linalg.slogdet(np.eye(len(mat)) + mat @ cov @ mat.T / sigma**2)[1]

    return info(mw), info(mf)


@pytest.mark.parametrize("eta_t,lam", [(None, 0.05), (0.7, 1e-3), (30.0, 0.0)])
def test_label_information_equals_the_explicit_weight_map(eta_t, lam):
    phi, phi_v, probs = _problem()
    sigma = 0.3
    kern, kern_val = torch.as_tensor(phi @ phi.T), torch.as_tensor(phi_v @ phi.T)
    sets = {"a": np.array([0, 2, 3]), "b": np.array([1, 4, 5, 6, 7, 8]), "all": np.arange(9)}
    got = label_information(kern, kern_val, probs, lam=lam, eta_t=eta_t, sigma=sigma, sets=sets)
    iw, if_ = _brute(phi, phi_v, probs, lam, eta_t, sigma)
    assert iw > 0.1 and if_ > 0.1
    assert got["weights"] == pytest.approx(iw, rel=1e-8)
    assert got["function"] == pytest.approx(if_, rel=1e-8)
    for name, rows in sets.items():
        bw, bf = _brute(phi, phi_v, probs, lam, eta_t, sigma, rows)
        assert got["sets"][name][0] == pytest.approx(bw, rel=1e-8)
        assert got["sets"][name][1] == pytest.approx(bf, rel=1e-8)


def test_both_sides_of_sylvester_agree():
    rng = np.random.default_rng(1)
    n, r, k = 12, 4, 3
    f = rng.normal(size=(r, n))
    probs = rng.dirichlet(np.ones(k), size=n)
    from core.scores.label_info import _logdet_factor, _logdet_gram

    assert _logdet_factor(f, probs, 0.5) == pytest.approx(_logdet_gram(f.T @ f, probs, 0.5), rel=1e-9)
    assert gaussian_label_information(probs, 0.5, factor=f) == pytest.approx(
        gaussian_label_information(probs, 0.5, gram=f.T @ f), rel=1e-9)


def test_information_grows_with_label_uncertainty_and_vanishes_without_it():
    phi, phi_v, probs = _problem(n=10, seed=3)
    kern, kern_val = torch.as_tensor(phi @ phi.T), torch.as_tensor(phi_v @ phi.T)
    kw = dict(lam=1e-2, eta_t=5.0)
    vals = [label_information(kern, kern_val, probs, sigma=s, **kw) for s in (1.0, 0.5, 0.1)]
    # Σ_Y scaled by c is σ scaled by 1/√c: more label uncertainty, more information
    assert vals[0]["weights"] < vals[1]["weights"] < vals[2]["weights"]
    assert vals[0]["function"] < vals[1]["function"] < vals[2]["function"]
    certain = np.eye(3)[probs.argmax(1)]
    zero = label_information(kern, kern_val, certain, sigma=0.1, **kw)
    assert zero["weights"] == pytest.approx(0.0, abs=1e-9) and zero["function"] == pytest.approx(0.0, abs=1e-9)


def test_sets_are_bounded_by_the_total_and_a_partition_sums_above_it():
    phi, phi_v, probs = _problem(n=12, seed=4)
    kern, kern_val = torch.as_tensor(phi @ phi.T), torch.as_tensor(phi_v @ phi.T)
    part = {"a": np.arange(0, 4), "b": np.arange(4, 9), "c": np.arange(9, 12)}
    got = label_information(kern, kern_val, probs, lam=1e-2, eta_t=3.0, sigma=0.2, sets=part)
    for v in (0, 1):
        total = got["weights"] if v == 0 else got["function"]
        each = [got["sets"][s][v] for s in part]
        assert all(0 < e < total for e in each)
        assert sum(each) > total  # independent labels: I(W;Y_S|rest) ≥ I(W;Y_S|earlier sets), chain rule


def test_function_information_obeys_data_processing():
    """F = Φ_v W + noise: I_f(σ) ≤ I_w(σ') with σ'² = mσ²/λ_max(θ_vv) (a Markov chain Y → W → F)."""
    phi, phi_v, probs = _problem(n=10, m=6, seed=5)
    kern, kern_val = torch.as_tensor(phi @ phi.T), torch.as_tensor(phi_v @ phi.T)
    lam_max = np.linalg.eigvalsh(phi_v @ phi_v.T).max()
    sigma = 0.2
    fun = label_information(kern, kern_val, probs, lam=1e-2, eta_t=8.0, sigma=sigma)["function"]
    sigma_w = sigma * np.sqrt(len(phi_v) / lam_max)
    wts = label_information(kern, kern_val, probs, lam=1e-2, eta_t=8.0, sigma=sigma_w)["weights"]
    assert fun <= wts
    assert fun > 0.3 * wts  # and not trivially so


def test_label_information_refuses_bad_probabilities():
    phi, phi_v, probs = _problem()
    kern = torch.as_tensor(phi @ phi.T)
    with pytest.raises(ScoreError, match="sum to 1"):
        label_information(kern, None, probs * 2, lam=0.1, eta_t=None, sigma=0.1)
    with pytest.raises(ScoreError, match="rows"):
        label_information(kern, None, probs[:3], lam=0.1, eta_t=None, sigma=0.1)
    with pytest.raises(ScoreError, match="σ"):
        gaussian_label_information(probs, 0.0, gram=phi @ phi.T)


def test_project_simplex():
    rng = np.random.default_rng(0)
    v = rng.normal(size=(50, 4))
    p = project_simplex(v)
    assert np.allclose(p.sum(1), 1) and (p >= 0).all()
    # brute force: no point of a fine grid on the simplex is closer to v
    grid = np.array([(a, b, c, 20 - a - b - c) for a in range(21) for b in range(21 - a) for c in range(21 - a - b)]) / 20
    for i in range(5):
        assert ((p[i] - v[i]) ** 2).sum() <= ((grid - v[i]) ** 2).sum(1).min() + 1e-12


@pytest.mark.parametrize("with_probs", [True, False])
def test_solve_problem_reports_the_heads_label_information(with_probs):
    from core.scores.si_crossfit import HeadProblem, solve_problem
    from core.scores.si_head import head_kernels, head_loo

    rng = np.random.default_rng(6)
    n, k = 40, 3
    x, xv = rng.normal(size=(n, 4)), rng.normal(size=(12, 4))
    labels = np.concatenate([rng.integers(0, k, n), rng.integers(0, k, 12)])
    probs = rng.dirichlet(np.ones(k), size=n) if with_probs else None
    prob = HeadProblem(np.arange(n), x, np.arange(n, n + 12), xv, source="part 0", probs=probs)
    sets = {"all": np.arange(n), "class:a": np.flatnonzero(labels[:n] == 0)}
    out = solve_problem(prob, labels, k, lam=1e-3, t=20.0, sigma=0.1, label_info=True, label_sets=sets)
    kern, kern_val = head_kernels(x, xv)
    y = torch.as_tensor(np.eye(k)[labels[:n]])
    if probs is None:  # fixed features: the head's own leave-one-out prediction, projected onto the simplex
        probs = project_simplex(head_loo(kern, kern_val, y, lam=1e-3, eta_t=20.0).loo_resid + y.numpy())
        assert "leave-one-out" in out["label_info"]["basis"]
    else:
        assert "cross-fitted" in out["label_info"]["basis"]
    ref = label_information(kern, kern_val, probs, lam=1e-3, eta_t=20.0, sigma=0.1, sets={"c": sets["class:a"]})
    assert out["label_info"]["weights"] == pytest.approx(ref["weights"], rel=1e-9) and ref["weights"] > 0
    assert out["label_info"]["function"] == pytest.approx(ref["function"], rel=1e-9)
    assert out["label_info"]["sets"]["class:a"] == pytest.approx(ref["sets"]["c"], rel=1e-9)
    assert "all" not in out["label_info"]["sets"]


def _frozen_ctx(params):
    from core.data.dataset import Samples
    from core.scores.registry import ScoreContext

    rng = np.random.default_rng(7)
    n, k = 90, 3
    labels = rng.integers(0, k, n)
    feats = rng.normal(size=(n, 5)) + 1.5 * np.eye(k)[labels] @ rng.normal(size=(k, 5))
    split = np.array(["train"] * 70 + ["test"] * 20)
    src = np.where(np.arange(n) % 2, "a", "b")
    data = Samples(images=np.zeros((n, 1, 4, 4), np.float32), labels=labels, class_names=["x", "y", "z"],
                   source=src, sample_id=np.array([f"s:{i}" for i in range(n)]), image_path=np.array([""] * n),
                   is_adversarial=np.zeros(n, bool))
    return ScoreContext(data=data, split=split, model=None, init_state={}, logits=np.zeros((n, k)),
                        epoch_logits=np.zeros((1, n, k)), embeddings=np.zeros((n, 2)), device="cpu", params=params,
                        seed=0, train_model=lambda s: None, extra={"frozen_features": feats})


def test_adapter_records_label_information_or_says_why_not():
    from core.scores.si_crossfit import head_adapter

    res = head_adapter(_frozen_ctx({}), {})
    li = res.info["label_information"]
    assert li["unit"] == "nats" and li["sigma"] == 0.01 and "leave-one-out" in li["labels_given_inputs"]
    assert set(li["classes"]) == {"x", "y", "z"} and set(li["sources"]) == {"a", "b"}
    assert li["all"]["weights"] > 0 and all(v["weights"] <= li["all"]["weights"] for v in li["classes"].values())
    off = head_adapter(_frozen_ctx({}), {"label_information_max_rows": 50})
    assert off.info["label_information"] == {"skipped": "70 training rows > label_information_max_rows = 50"}
    assert "label_information" not in head_adapter(_frozen_ctx({}), {"label_information": False}).info
    with pytest.raises(ScoreError, match="label_information_max_rows"):
        head_adapter(_frozen_ctx({}), {"label_information_max_rows": "many"})


def test_gaussian_value_bounds_the_categorical_labels_information():
    """Monte Carlo: with the labels really categorical (one-hot draws from pᵢ), I(W; Y | X) — W a mixture of
    k^n Gaussians, enumerated — is at most the Gaussian closed form (Gaussian inputs maximise the information of an
    additive Gaussian channel at a given covariance), and of the same order."""
    import itertools

    phi, phi_v, probs = _problem(n=3, m=2, p_dim=4, k=3, seed=8)
    probs = 0.6 * probs + 0.4 / 3
    lam, eta_t, sigma = 1e-2, 4.0, 0.5
    kern = torch.as_tensor(phi @ phi.T)
    closed = label_information(kern, None, probs, lam=lam, eta_t=eta_t, sigma=sigma)["weights"]

    def weights(y):
        return (phi.T @ solve_alpha(kern, torch.as_tensor(y), lam=lam, eta_t=eta_t).numpy()).ravel()

    configs = list(itertools.product(range(3), repeat=3))
    prior = np.array([np.prod([probs[i, c] for i, c in enumerate(cfg)]) for cfg in configs])
    means = np.array([weights(np.eye(3)[list(cfg)]) for cfg in configs])
    rng = np.random.default_rng(0)
    draws = rng.choice(len(configs), 20000, p=prior)
    w = means[draws] + sigma * rng.normal(size=(len(draws), means.shape[1]))
    d2 = ((w[:, None, :] - means[None]) ** 2).sum(-1) / (2 * sigma**2)  # (draws, configs)
    log_cond = -d2[np.arange(len(draws)), draws]
    log_marg = np.log((prior[None] * np.exp(-(d2 - d2.min(1, keepdims=True)))).sum(1)) - d2.min(1)
    terms = log_cond - log_marg
    est, se = terms.mean(), terms.std() / np.sqrt(len(terms))
    assert est <= closed + 3 * se
    assert est > 0.5 * closed and closed > 0.5


def test_a_failed_label_information_keeps_the_runs_si(monkeypatch):
    import core.scores.si_crossfit as sc

    def boom(*a, **k):
        raise np.linalg.LinAlgError("not positive definite")

    monkeypatch.setattr(sc, "label_information", boom)
    res = sc.head_adapter(_frozen_ctx({}), {})
    assert res.info["label_information"] == {"skipped": "failed on part 0: LinAlgError: not positive definite"}
    assert np.isfinite(res.columns["si_function"][:70]).all() and "set_information" in res.info
