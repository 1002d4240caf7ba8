"""Models: the shared staged interface, local weights (weights_only), deterministic training."""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch

from core.models import build_model, load_weights
from core.models.training import TrainConfig, train_model


@pytest.mark.parametrize("name", ["cnn", "mlp", "resnet18_small", "resnet18"])
def test_staged_interface(name):
    m = build_model(name, (1, 28, 28), 10).eval()
    x = torch.rand(3, 1, 28, 28)
    probes = m.probes(x)
    torch.testing.assert_close(probes[-1], m(x))
    assert probes[0].shape == (3, 784)
    assert m.embed(x).shape == (3, m.classifier.in_features)
    torch.testing.assert_close(m.classifier(m.embed(x)), m(x))


def test_small_cnn_size():
    n = sum(p.numel() for p in build_model("cnn", (1, 28, 28), 10).parameters())
    assert 15_000 < n < 25_000  # the "small CNN (~20k parameters)" of the NTK targets


def test_load_local_weights_and_torchvision_keys(tmp_path):
    src = build_model("resnet18_small", (1, 28, 28), 10)
    path = tmp_path / "w.pt"
    torch.save(src.state_dict(), path)
    dst = load_weights(build_model("resnet18_small", (1, 28, 28), 10), str(path))
    for a, b in zip(src.state_dict().values(), dst.state_dict().values(), strict=True):
        torch.testing.assert_close(a, b)
    # a torchvision-style state dict (conv1.weight, layer1..., fc...) maps onto the staged stages
    from torchvision.models import resnet18

    tv = resnet18(weights=None, num_classes=10)
    tv.conv1 = torch.nn.Conv2d(1, 64, 3, 1, 1, bias=False)
    torch.save({"state_dict": tv.state_dict()}, tmp_path / "tv.pt")
    got = load_weights(build_model("resnet18_small", (1, 28, 28), 10), str(tmp_path / "tv.pt"))
    torch.testing.assert_close(got.stages[5].weight, tv.fc.weight)


class _Evil:
    def __reduce__(self):
        return (print, ("code ran",))


def test_untrusted_pickle_is_refused(tmp_path, capsys):
    path = tmp_path / "evil.pt"
    with open(path, "wb") as fh:
        pickle.dump({"x": _Evil()}, fh)
    with pytest.raises(ValueError, match="could not load weights"):
        load_weights(build_model("cnn", (1, 28, 28), 10), str(path))
    assert "code ran" not in capsys.readouterr().out
    with pytest.raises(ValueError, match="not found"):
        load_weights(build_model("cnn", (1, 28, 28), 10), str(tmp_path / "missing.pt"))


def test_training_is_deterministic_and_learns(mnist_small):
    x, y = mnist_small
    idx = np.random.default_rng(0).permutation(len(x))  # the fixture is sorted by label
    cfg = TrainConfig(model="cnn", epochs=5, batch_size=32)
    a = train_model(x, y, idx[:320], 10, cfg, seed=3, device="cpu", test_idx=idx[320:])
    b = train_model(x, y, idx[:320], 10, cfg, seed=3, device="cpu", test_idx=idx[320:])
    c = train_model(x, y, idx[:320], 10, cfg, seed=4, device="cpu", test_idx=idx[320:])
    np.testing.assert_array_equal(a.epoch_logits, b.epoch_logits)
    assert not np.array_equal(a.epoch_logits, c.epoch_logits)
    assert a.epoch_logits.shape == (5, len(x), 10)
    assert a.train_acc > 0.6 and a.test_acc > 0.5  # far above chance (0.1)


def test_training_can_start_from_a_given_state(mnist_small):
    """``init_state``: the network starts from that state (another seed's w₀); the seed still orders batches."""
    x, y = mnist_small
    idx = np.random.default_rng(0).permutation(len(x))
    cfg = TrainConfig(model="cnn", epochs=1, batch_size=32)
    a = train_model(x, y, idx[:200], 10, cfg, seed=3, device="cpu")
    b = train_model(x, y, idx[:200], 10, cfg, seed=4, device="cpu", init_state=a.init_state)
    c = train_model(x, y, idx[:200], 10, cfg, seed=4, device="cpu")
    assert all(torch.equal(b.init_state[k], a.init_state[k]) for k in a.init_state)
    assert not all(torch.equal(c.init_state[k], a.init_state[k]) for k in a.init_state)
    assert not np.array_equal(a.epoch_logits, b.epoch_logits)  # same start, another batch order
    d = train_model(x, y, idx[:200], 10, cfg, seed=4, device="cpu", init_state=a.init_state)
    np.testing.assert_array_equal(b.epoch_logits, d.epoch_logits)


def test_not_recording_logits_trains_the_same_network(mnist_small):
    """``record_logits = False`` (fold networks) skips the per-epoch logits of all rows but not a single random
    draw: same weights, and the one recorded epoch is the last epoch of a recorded run. Early stopping still
    records (it needs the held-out logits)."""
    x, y = mnist_small
    idx = np.random.default_rng(1).permutation(len(x))
    cfg = TrainConfig(model="cnn", epochs=3, batch_size=32)
    a = train_model(x, y, idx[:200], 10, cfg, seed=5, device="cpu")
    b = train_model(x, y, idx[:200], 10, cfg, seed=5, device="cpu", record_logits=False)
    sa, sb = a.model.state_dict(), b.model.state_dict()
    assert any("running_mean" in k for k in sa)  # batch-norm statistics are part of what must not move
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert a.epoch_logits.shape == (3, len(x), 10) and b.epoch_logits.shape == (1, len(x), 10)
    np.testing.assert_array_equal(b.epoch_logits[0], a.epoch_logits[-1])
    assert b.train_acc == a.train_acc
    stop = TrainConfig(model="mlp", epochs=6, batch_size=32, patience=2)
    c = train_model(x, y, idx[:200], 10, stop, seed=5, device="cpu", test_idx=idx[200:], record_logits=False)
    d = train_model(x, y, idx[:200], 10, stop, seed=5, device="cpu", test_idx=idx[200:])
    np.testing.assert_array_equal(c.epoch_logits, d.epoch_logits)
    assert c.heldout_loss == d.heldout_loss and len(c.heldout_loss) >= 3


def test_auto_epochs_is_a_step_budget():
    from core.models.training import auto_epochs

    # ceil(400 / ceil(n / 128)) clipped to [5, 100]
    assert auto_epochs(4000, 128) == 13  # 32 steps per epoch
    assert auto_epochs(336, 128) == 100  # 3 steps per epoch: 134, capped
    assert auto_epochs(60000, 128) == 5  # 469 steps per epoch: at least 5 epochs
    assert auto_epochs(1280, 128, target_steps=100) == 10
    for n in (1, 50, 700, 5000, 10 ** 6):
        e = auto_epochs(n, 64)
        assert 5 <= e <= 100 and (e == 100 or e == 5 or e * -(-n // 64) >= 400)


def test_early_stopping_keeps_the_best_held_out_epoch(mnist_small):
    x, y = mnist_small
    rng = np.random.default_rng(0)
    idx = rng.permutation(len(x))
    noisy = y.copy()
    flip = idx[:120]  # 30% flipped labels: held-out loss rises once the flips are memorised
    noisy[flip] = (noisy[flip] + 1 + rng.integers(0, 9, len(flip))) % 10
    cfg = TrainConfig(model="mlp", epochs=40, batch_size=32, patience=3)
    r = train_model(x, noisy, idx[:320], 10, cfg, seed=0, device="cpu", test_idx=idx[320:])
    assert r.best_epoch is not None and r.epoch_logits.shape[0] == r.best_epoch
    assert len(r.heldout_loss) < 40  # it stopped early
    assert len(r.heldout_loss) == r.best_epoch + 3
    assert int(np.argmin(r.heldout_loss)) + 1 == r.best_epoch
    from core.models.training import predict_logits

    np.testing.assert_allclose(predict_logits(r.model, x), r.epoch_logits[-1], rtol=1e-5, atol=1e-5)
    off = train_model(x, noisy, idx[:320], 10, TrainConfig(model="mlp", epochs=r.best_epoch, batch_size=32),
                      seed=0, device="cpu", test_idx=idx[320:])
    np.testing.assert_allclose(off.epoch_logits, r.epoch_logits, rtol=1e-5, atol=1e-5)  # retrains reproduce it
