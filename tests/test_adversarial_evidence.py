"""core.adversarial_evidence: each measurement against a hand / brute-force computation on tiny inputs."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from core.adversarial_evidence import (
    adversarial_evidence,
    noise_level,
    noise_response,
    noise_z,
    pixel_neighbour_shares,
    pixel_vectors,
    reverse_eps,
)


def _identity_net() -> nn.Module:
    """logits = the two pixels of a 1×1×2 image: class 0 wins when x₀ > x₁."""
    lin = nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.eye(2))
    return nn.Sequential(nn.Flatten(), lin)


def _img(a: float, b: float) -> np.ndarray:
    return np.array([[[[a, b]]]], dtype=np.float32)


def _brute_reverse(a: float, b: float, target: int, step: float, steps: int) -> float:
    """The same iteration written out for the identity net: the sign of ∇CE towards class 0 is (−, +)."""
    x = np.array([a, b], dtype=np.float64)
    sign = np.array([-1.0, 1.0]) if target == 0 else np.array([1.0, -1.0])
    for t in range(steps + 1):
        if int(np.argmax(x)) == target and x[0] != x[1]:
            return t * step
        x = np.clip(x - step * sign, 0.0, 1.0)
    return float("nan")


@pytest.mark.parametrize("a,b,target", [(0.31, 0.5, 0), (0.45, 0.5, 0), (0.0, 1.0, 0), (0.8, 0.1, 0), (0.6, 0.3, 1),
                                        (0.0, 0.05, 0)])
def test_reverse_eps_matches_the_iteration(a, b, target):
    net = _identity_net()
    got = reverse_eps(net, _img(a, b), np.array([target]), step=0.02, steps=10)[0]
    want = _brute_reverse(a, b, target, 0.02, 10)
    if np.isnan(want):
        assert np.isnan(got)
    else:
        assert got == pytest.approx(want)
    # by hand for the first case: 0.31 + 0.02t > 0.5 − 0.02t first at t = 5
    if (a, b) == (0.31, 0.5):
        assert got == pytest.approx(0.10)


def test_reverse_eps_is_zero_when_already_the_target_and_nan_when_out_of_budget():
    net = _identity_net()
    x = np.concatenate([_img(0.9, 0.1), _img(0.0, 1.0)])
    out = reverse_eps(net, x, np.array([0, 0]), step=0.02, steps=10)
    assert out[0] == 0.0 and np.isnan(out[1])
    assert net.training  # the model's mode is restored
    assert all(p.requires_grad for p in net.parameters())


def test_noise_response_replays_the_seeded_draws():
    net = _identity_net()
    x = np.concatenate([_img(0.50, 0.48), _img(0.9, 0.1), _img(0.3, 0.31)])
    pred, label = np.array([0, 0, 1]), np.array([1, 0, 0])
    sigma, draws, seed = 0.1, 16, 3
    flip, to_label = noise_response(net, x, pred, label, sigma=sigma, draws=draws, seed=seed)
    gen = torch.Generator().manual_seed(seed)
    want_flip, want_label = np.zeros(3), np.zeros(3)
    xt = torch.as_tensor(x)
    for _ in range(draws):
        noisy = (xt + (torch.rand(xt.shape, generator=gen) * 2 - 1) * sigma).clamp(0, 1).reshape(3, 2)
        p = (noisy[:, 1] > noisy[:, 0]).long().numpy()
        want_flip += p != pred
        want_label += p == label
    np.testing.assert_allclose(flip, want_flip / draws)
    np.testing.assert_allclose(to_label, want_label / draws)
    assert flip[1] == 0.0  # 0.8 away from the boundary: noise of ±0.1 never crosses it
    assert 0 < flip[0] < 1  # 0.02 from the boundary: some draws cross


def test_pixel_vectors_pool_centre_and_normalise():
    rng = np.random.default_rng(0)
    x = rng.random((5, 3, 28, 28)).astype(np.float32)
    v = pixel_vectors(x, max_side=14)
    assert v.shape == (5, 3 * 14 * 14)
    pooled = x.reshape(5, 3, 14, 2, 14, 2).mean(axis=(3, 5)).reshape(5, -1)
    pooled = pooled - pooled.mean(1, keepdims=True)
    np.testing.assert_allclose(v, pooled / np.linalg.norm(pooled, axis=1, keepdims=True), atol=1e-5)
    shifted = pixel_vectors(np.clip(x * 0.5 + 0.2, 0, 1), max_side=14)  # brightness/contrast change
    np.testing.assert_allclose(shifted, v, atol=1e-5)
    assert np.all(pixel_vectors(np.zeros((2, 1, 4, 4), np.float32)) == 0)


def test_pixel_neighbour_shares_against_brute_force():
    rng = np.random.default_rng(1)
    x = rng.random((30, 1, 6, 6)).astype(np.float32)
    labels = rng.integers(0, 3, 30)
    pred = rng.integers(0, 3, 30)
    lab_share, pred_share = pixel_neighbour_shares(x, labels, pred, k=4)
    v = pixel_vectors(x)
    d = ((v[:, None, :] - v[None, :, :]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    nn_idx = np.argsort(d, axis=1)[:, :4]
    np.testing.assert_allclose(lab_share, (labels[nn_idx] == labels[:, None]).mean(1))
    np.testing.assert_allclose(pred_share, (labels[nn_idx] == pred[:, None]).mean(1))


def test_adversarial_evidence_only_measures_disagreements():
    net = _identity_net()
    x = np.concatenate([_img(0.9, 0.1), _img(0.31, 0.5), _img(0.2, 0.7), _img(0.6, 0.55)])
    labels = np.array([0, 0, 1, 0])
    pred = np.array([0, 1, 1, 0])
    ev = adversarial_evidence(net, x, labels, pred, k=2)
    assert list(ev.columns) == ["reverse_eps", "noise_flip", "noise_to_label", "px_label_share", "px_pred_share",
                                "noise_level", "noise_z"]
    assert ev["noise_level"].isna().all()  # 1×2 images: no 3×3 interior, no noise estimate
    assert ev["reverse_eps"].isna().tolist() == [True, False, True, True]
    assert ev.loc[1, "reverse_eps"] == pytest.approx(0.10)
    assert ev["px_label_share"].notna().all()


def test_only_judged_rows_get_network_measurements_and_the_cap_keeps_the_pixel_side_first():
    """judge = the rows the flag may judge (held-out); max_model_rows keeps those whose pixel neighbours side
    most with the label (what the flag needs as well); everything else stays NaN (not measured)."""
    net = _identity_net()
    x = np.concatenate([_img(0.31, 0.5), _img(0.30, 0.52), _img(0.32, 0.51), _img(0.9, 0.1), _img(0.85, 0.2)])
    labels = np.array([0, 0, 0, 0, 0])
    pred = np.array([1, 1, 1, 0, 0])  # rows 0–2 disagree
    judge = np.array([True, False, True, True, True])
    ev = adversarial_evidence(net, x, labels, pred, k=2, judge=judge)
    assert ev["noise_flip"].notna().tolist() == [True, False, True, False, False]
    full = adversarial_evidence(net, x, labels, pred, k=2)
    assert ev.loc[0, "reverse_eps"] == full.loc[0, "reverse_eps"]  # same measurement where taken
    capped = adversarial_evidence(net, x, labels, pred, k=2, max_model_rows=1)
    measured = np.flatnonzero(capped["noise_flip"].notna())
    assert len(measured) == 1
    px = full["px_label_share"].to_numpy()[:3] - 1e-9 * full["px_pred_share"].to_numpy()[:3]
    assert measured[0] == int(np.argmax(px))
    with pytest.raises(ValueError, match="judge"):
        adversarial_evidence(net, x, labels, pred, judge=np.ones(2, bool))


def test_batches_shrink_with_the_image_not_the_dataset():
    from core.device import rows_per_batch

    assert rows_per_batch((1, 28, 28)) == 256
    assert rows_per_batch((3, 224, 224)) == (1 << 22) // (3 * 224 * 224)
    assert rows_per_batch((3, 4096, 4096)) == 1
    # the measurement does not depend on the batch size
    net = _identity_net()
    rng = np.random.default_rng(0)
    x = rng.uniform(size=(40, 1, 1, 2)).astype(np.float32)
    t = np.zeros(40, dtype=np.int64)
    np.testing.assert_array_equal(reverse_eps(net, x, t, batch=3), reverse_eps(net, x, t))


def test_unmeasured_rows_get_no_reverse_step_reason_or_flag():
    """A disagreeing row without network measurements is not 'no small step restores the label'."""
    import pandas as pd

    from core.flags import compute_flags

    table = pd.DataFrame({"label": [0, 0, 1, 1, 0, 1], "pred": [1, 1, 1, 1, 0, 0],
                          "pred_prob": [0.9] * 6, "loss": [3.0, 3.0, 0.1, 0.1, 0.1, 3.0],
                          "split": ["test", "train", "train", "test", "train", "train"],
                          "reverse_eps": [0.02, np.nan, np.nan, np.nan, np.nan, np.nan],
                          "noise_flip": [0.0, np.nan, np.nan, np.nan, np.nan, np.nan],
                          "px_label_share": [1.0, 0.0, 1.0, 1.0, 1.0, 0.0],
                          "px_pred_share": [0.0, 1.0, 0.0, 0.0, 0.0, 1.0]})
    out = compute_flags(table, None, thresholds={"min_votes": 1}, flag_train_adversarial=True)
    assert out["flag_adversarial"].tolist() == [True, False, False, False, False, False]
    assert out["flag_mislabeled"].tolist() == [False, True, False, False, False, True]
    assert "a step of ε=0.02 restores" in out.loc[0, "flag_reason"]
    assert all("no small step" not in r and "restores" not in r for r in out.loc[[1, 5], "flag_reason"])
    measured = table.assign(reverse_eps=[0.02, np.nan, np.nan, np.nan, np.nan, np.nan],
                            noise_flip=[0.0, 0.0, np.nan, np.nan, np.nan, np.nan])
    again = compute_flags(measured, None, thresholds={"min_votes": 1}, flag_train_adversarial=True)
    assert "no small step restores" in again.loc[1, "flag_reason"]  # measured and not restored: said


def _brute_immerkaer(img: np.ndarray) -> float:
    """Immerkær (1996) written out: √(π/2)/(6(W−2)(H−2)) Σ |I ∗ N| over interior pixels, mean over channels."""
    mask = np.array([[1, -2, 1], [-2, 4, -2], [1, -2, 1]], dtype=np.float64)
    c, h, w = img.shape
    per_channel = []
    for ch in range(c):
        total = 0.0
        for y in range(1, h - 1):
            for x in range(1, w - 1):
                total += abs(float((img[ch, y - 1:y + 2, x - 1:x + 2] * mask).sum()))
        per_channel.append(np.sqrt(np.pi / 2) * total / (6 * (w - 2) * (h - 2)))
    return float(np.mean(per_channel))


def test_noise_level_matches_the_formula_on_tiny_images():
    rng = np.random.default_rng(0)
    x = rng.random((5, 2, 4, 6)).astype(np.float32)
    got = noise_level(x, batch=2)  # several batches
    np.testing.assert_allclose(got, [_brute_immerkaer(im.astype(np.float64)) for im in x], rtol=1e-6)
    gray = rng.random((3, 5, 5))
    np.testing.assert_allclose(noise_level(gray), [_brute_immerkaer(im[None]) for im in gray], rtol=1e-9)
    # the mask sums to zero along every row and column: constant and linear images have no noise
    yy, xx = np.mgrid[0:8, 0:8] / 8.0
    assert np.allclose(noise_level(np.stack([np.full((8, 8), 0.3), 0.2 + 0.5 * xx + 0.1 * yy])), 0.0)
    assert np.isnan(noise_level(np.zeros((2, 1, 2, 8)))).all()


def test_noise_level_recovers_the_sigma_of_added_gaussian_noise():
    """Known-noise check: σ of i.i.d. Gaussian noise added to a smooth image is recovered within 10%."""
    from core.data.image_store import ImageStore

    rng = np.random.default_rng(1)
    yy, xx = np.mgrid[0:96, 0:96] / 96.0
    smooth = 0.5 + 0.2 * np.sin(2 * np.pi * xx) * np.cos(np.pi * yy) + 0.1 * xx
    for sigma in (0.01, 0.03, 0.1):
        noisy = smooth[None, None] + rng.normal(0, sigma, (4, 3, 96, 96))
        est = noise_level(noisy)
        np.testing.assert_allclose(est, sigma, rtol=0.1)
    store = ImageStore.from_array(noisy.astype(np.float32))  # an image store is read a batch at a time
    np.testing.assert_allclose(noise_level(store, batch=3), noise_level(noisy.astype(np.float32)), rtol=1e-6)
    assert store.materialized == 0


def test_noise_z_is_a_robust_z_within_the_reference_rows_of_the_class():
    rng = np.random.default_rng(2)
    labels = np.r_[np.zeros(30, int), np.ones(30, int), [2, 2]]
    level = np.r_[rng.uniform(0.01, 0.02, 30), rng.uniform(0.1, 0.3, 30), [0.05, 0.5]]
    ref = np.ones(len(level), bool)
    ref[[0, 31]] = False  # two rows not in the reference
    z = noise_z(level, labels, ref)
    logv = np.log(level)
    for c in (0, 1):
        sel = ref & (labels == c)
        med = np.median(logv[sel])
        mad = 1.4826 * np.median(np.abs(logv[sel] - med))
        np.testing.assert_allclose(z[labels == c], (logv[labels == c] - med) / max(mad, 0.05))
    sel = ref  # class 2 has 2 reference rows (< min_rows): every reference row is its reference
    med = np.median(logv[sel])
    mad = 1.4826 * np.median(np.abs(logv[sel] - med))
    np.testing.assert_allclose(z[labels == 2], (logv[labels == 2] - med) / mad)
    # relative to the class: a row 10× its class's level is far out, whatever the class's own level
    z2 = noise_z(np.r_[level, 0.15, 2.0], np.r_[labels, 0, 1], np.r_[ref, False, False])
    assert z2[-2] > 5 and z2[-1] > 5
    assert np.isnan(noise_z(np.array([np.nan, 0.1]), np.array([0, 0]))[0])


def test_adversarial_evidence_noise_columns_use_the_reference_rows():
    rng = np.random.default_rng(3)
    x = np.clip(0.5 + rng.normal(0, 0.02, (12, 1, 8, 8)), 0, 1).astype(np.float32)
    x[-1] = np.clip(x[-1] + 0.2 * np.sign(rng.standard_normal((1, 8, 8))), 0, 1)  # a sign perturbation
    labels = np.zeros(12, int)
    ref = np.r_[np.ones(10, bool), False, False]
    ev = adversarial_evidence(None, x, labels, labels, k=2, reference=ref)
    np.testing.assert_allclose(ev["noise_level"], noise_level(x))
    np.testing.assert_allclose(ev["noise_z"], noise_z(noise_level(x), labels, ref))
    assert ev["noise_z"].iloc[-1] > 5 > ev["noise_z"].iloc[:-1].max()
    with pytest.raises(ValueError, match="reference"):
        adversarial_evidence(None, x, labels, labels, reference=np.ones(2, bool))


def test_the_measured_rows_shrink_with_the_image_cost():
    from core.adversarial_evidence import evidence_row_cap

    assert evidence_row_cap((1, 28, 28)) == 5000 and evidence_row_cap((3, 32, 32)) == 5000
    assert evidence_row_cap((3, 64, 64)) == 1250
    assert evidence_row_cap((3, 224, 224)) == 200  # 102 by cost, raised to the floor
