"""core.attacks: FGSM / PGD stay in the ε-ball and the image box, raise the loss, are seeded."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.attacks import choose_rows, fgsm, make_adversarial_copies, pgd, predict
from core.data.dataset import Samples
from core.models.nets import MLP

EPS = 0.1


@pytest.fixture(scope="module")
def trained(mnist_small):
    """An MLP trained (full batch, 150 Adam steps) on 400 real digits: ~100% train accuracy."""
    x, y = mnist_small
    torch.manual_seed(0)
    model = MLP(784, 10, hidden=(64,))
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    xt, yt = torch.as_tensor(x), torch.as_tensor(y)
    for _ in range(150):
        opt.zero_grad()
        F.cross_entropy(model(xt), yt).backward()
        opt.step()
    return model.eval(), x, y


def _loss(model, x, y) -> np.ndarray:
    with torch.no_grad():
        return F.cross_entropy(model(torch.as_tensor(np.asarray(x))), torch.as_tensor(y), reduction="none").numpy()


def test_fgsm_in_ball_and_box_and_raises_loss(trained):
    model, x, y = trained
    adv = fgsm(model, x, y, EPS, device="cpu").numpy()
    assert adv.shape == x.shape and adv.dtype == np.float32
    assert np.abs(adv - x).max() <= EPS + 1e-6
    assert adv.min() >= 0.0 and adv.max() <= 1.0
    before, after = _loss(model, x, y), _loss(model, adv, y)
    assert after.mean() > 3 * before.mean()
    assert (after >= before - 1e-6).mean() > 0.95
    np.testing.assert_array_equal(adv, fgsm(model, x, y, EPS, device="cpu", batch=37).numpy())


def test_pgd_in_ball_seeded_and_stronger_than_fgsm(trained):
    model, x, y = trained
    a = pgd(model, x, y, EPS, steps=10, seed=3, device="cpu").numpy()
    b = pgd(model, x, y, EPS, steps=10, seed=3, device="cpu", batch=64).numpy()
    c = pgd(model, x, y, EPS, steps=10, seed=4, device="cpu").numpy()
    np.testing.assert_array_equal(a, b)  # same seed, any batch size -> identical
    assert not np.array_equal(a, c)
    assert np.abs(a - x).max() <= EPS + 1e-6 and a.min() >= 0.0 and a.max() <= 1.0
    fg = fgsm(model, x, y, EPS, device="cpu").numpy()
    assert _loss(model, a, y).mean() >= _loss(model, fg, y).mean()
    acc = lambda z: (predict(model, z, "cpu") == y).mean()  # noqa: E731
    assert acc(a) <= acc(fg) < acc(x)


def test_attacks_leave_the_model_alone(trained):
    model, x, y = trained
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    pgd(model, x[:20], y[:20], EPS, steps=2, device="cpu")
    assert model.training
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.requires_grad for p in model.parameters())


def _samples(x, y) -> Samples:
    n = len(y)
    true = y.copy()
    given = y.copy()
    given[:5] = (given[:5] + 1) % 10  # five mislabeled rows must never be chosen
    return Samples(images=x, labels=given, class_names=[str(i) for i in range(10)], source=np.array(["mnist"] * n),
                   sample_id=np.array([f"mnist:{i}" for i in range(n)]), image_path=np.array([""] * n),
                   true_label=true)


def test_make_adversarial_copies(trained):
    model, x, y = trained
    s = _samples(x, y)
    new, rec = make_adversarial_copies(model, s, 0.05, attack="pgd", eps=EPS, seed=0, device="cpu")
    assert len(new) == rec["n"] == 20
    assert new.is_adversarial.all() and not new.is_mislabeled.any()
    src = np.array(rec["source_rows"])
    assert (src >= 5).all()  # mislabeled rows are never chosen
    assert (predict(model, x[src], "cpu") == s.labels[src]).all()
    assert list(new.sample_id) == [f"adv:mnist:{i}" for i in src]
    assert (new.labels == s.labels[src]).all() and (new.true_label == s.true_label[src]).all()
    assert (new.image_path == "").all() and (new.source == "mnist").all()
    assert np.abs(new.images - x[src]).max() <= EPS + 1e-6
    assert 0.0 <= rec["success_rate"] <= 1.0 and rec["attack"] == "pgd" and rec["steps"] == 10
    again, rec2 = make_adversarial_copies(model, s, 0.05, attack="pgd", eps=EPS, seed=0, device="cpu")
    np.testing.assert_array_equal(again.images, new.images)
    assert rec2 == rec
    Samples.concat([s, new])  # appendable
    np.testing.assert_array_equal(choose_rows(model, s, 0.05, seed=0, device="cpu"), src)


def test_explicit_rows_and_bad_arguments(trained):
    model, x, y = trained
    s = _samples(x, y)
    new, rec = make_adversarial_copies(model, s, np.array([10, 11]), attack="fgsm", eps=0.2, device="cpu")
    assert len(new) == 2 and rec["fraction"] is None and rec["steps"] == 1
    with pytest.raises(ValueError):
        make_adversarial_copies(model, s, 0.1, attack="cw", device="cpu")
    with pytest.raises(ValueError):
        make_adversarial_copies(model, s, 1.5, device="cpu")
