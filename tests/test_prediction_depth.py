"""core.scores.prediction_depth: the depth definition, k-NN probes against brute force, the adapter."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from core.models.nets import MLP, SmallCNN
from core.scores.prediction_depth import adapter, depth_from_agreement, prediction_depth


def test_depth_definition_hand_made():
    # probes: input, stage1, stage2, logits  (rows = probes, columns = points)
    agree = np.array(
        [
            [1, 0, 1, 0, 1, 1],
            [1, 0, 0, 1, 1, 0],
            [1, 1, 1, 1, 0, 1],
            [1, 1, 1, 1, 1, 0],
        ],
        dtype=bool,
    )
    # all agree -> 0; agree from probe 2 on -> 2; from 2 -> 2; from 1 -> 1; only last -> 3; last disagrees -> 4
    assert depth_from_agreement(agree).tolist() == [0, 2, 2, 1, 3, 4]


def _torch_model(seed: int, cls=MLP, **kw):
    torch.manual_seed(seed)
    return cls(**kw).eval()


def _brute_depth(model, x_tr, y_tr, x_q, k):
    """Independent re-implementation: numpy distances, nearest k (self removed), majority vote, depth."""
    x = torch.as_tensor(np.concatenate([x_tr, x_q]))
    with torch.no_grad():
        probes = [p.double().numpy() for p in model.probes(x)]
    final = probes[-1].argmax(1)
    n = len(x_tr)
    agree = []
    for rep in probes:
        d = ((rep[:, None, :] - rep[None, :n, :]) ** 2).sum(-1)
        d[np.arange(n), np.arange(n)] = np.inf  # a training point is not its own neighbour
        nn_idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        votes = []
        for row in y_tr[nn_idx]:
            counts = np.bincount(row, minlength=10)
            tied = np.flatnonzero(counts == counts.max())
            votes.append(next(lab for lab in row if lab in tied))  # tie -> nearest tied class
        agree.append(np.array(votes) == final)
    return depth_from_agreement(np.stack(agree)), final


def test_matches_brute_force_on_real_digits(mnist_small):
    x, y = mnist_small
    x_tr, y_tr, x_q = x[:150], y[:150], x[150:200]
    model = _torch_model(0, MLP, in_features=784, hidden=(32, 16))
    res = prediction_depth(model, x_tr, y_tr, x_q, k=5, device="cpu")
    want, final = _brute_depth(model, x_tr, y_tr, x_q, 5)
    np.testing.assert_array_equal(res.final, final)
    assert (np.concatenate([res.train, res.query]) == want).mean() >= 0.99  # float32 near-ties aside
    assert res.n_probes == 4 and res.layers == ["input", "stage1", "stage2", "logits"]
    assert res.train.min() >= 0 and res.train.max() <= res.n_probes


def test_training_point_is_not_its_own_neighbour(mnist_small):
    x, y = mnist_small
    x_tr = x[:60]
    rng = np.random.default_rng(0)
    y_tr = rng.integers(0, 10, 60)  # random labels: own label and nearest other's label usually differ
    model = _torch_model(1, MLP, in_features=784, hidden=(8,))
    res = prediction_depth(model, x_tr, y_tr, x_tr, k=1, device="cpu")
    input_vote_train, input_vote_query = res.probe_pred[0, :60], res.probe_pred[0, 60:]
    np.testing.assert_array_equal(input_vote_query, y_tr)  # an outside copy finds the point itself
    d = ((x_tr.reshape(60, -1)[:, None] - x_tr.reshape(60, -1)[None]) ** 2).sum(-1)
    np.fill_diagonal(d, np.inf)
    np.testing.assert_array_equal(input_vote_train, y_tr[d.argmin(1)])  # the nearest *other* point


def test_named_layers_on_a_cnn(mnist_small):
    x, y = mnist_small
    model = _torch_model(2, SmallCNN)
    by_index = prediction_depth(model, x[:120], y[:120], layers=[0, 2, 5], k=5, device="cpu")
    by_name = prediction_depth(model, x[:120], y[:120], layers=["stages.1", "stages.4"], k=5, device="cpu")
    assert by_index.layers == ["input", "stage2", "logits"]
    assert by_name.layers == ["stages.1", "stages.4", "logits"]
    np.testing.assert_array_equal(by_index.probe_pred[1], by_name.probe_pred[0])  # stage 2 == stages.1 output
    np.testing.assert_array_equal(by_index.probe_pred[2], by_name.probe_pred[2])


def _adapter_ctx(x, y, split, params, train_model) -> SimpleNamespace:
    """The pipeline's score context, as the adapter reads it, with the seed-0 SmallCNN as the run's model."""
    return SimpleNamespace(
        data=SimpleNamespace(images=x, labels=y), split=split, model=_torch_model(0, SmallCNN),
        device=torch.device("cpu"), params=params, seed=7, train_model=train_model, progress=lambda *a, **k: None,
        train_idx=np.flatnonzero(split == "train"), test_idx=np.flatnonzero(split == "test"),
    )


def test_adapter_mean_over_models(mnist_small):
    x, y = mnist_small
    split = np.where(np.arange(len(y)) % 5 == 0, "test", "train")
    trained = []

    def train_model(seed):
        trained.append(seed)
        return _torch_model(seed, SmallCNN)

    res = adapter(_adapter_ctx(x, y, split, {"models": 2, "k": 10}, train_model))
    col = res.columns["prediction_depth"]
    assert trained == [8] and col.shape == (len(y),) and np.isfinite(col).all()
    assert 0 <= col.min() and col.max() <= res.info["n_probes"]
    assert np.any(col != np.round(col))  # a mean over two models has halves
    assert res.params["models"] == 2 and res.params["k"] == 10
    assert res.info["knn_index"] == "flat" and res.info["support_rows"] == int((split == "train").sum())


def test_adapter_records_the_approximate_index_it_used(mnist_small, monkeypatch):
    """Above ``APPROX_MIN_ROWS`` support rows the probes search an HNSW index, and the record says so."""
    import core.knn

    monkeypatch.setattr(core.knn, "APPROX_MIN_ROWS", 50)
    x, y = mnist_small
    split = np.where(np.arange(len(y)) % 5 == 0, "test", "train")
    res = adapter(_adapter_ctx(x, y, split, {"models": 1, "k": 10}, None))
    assert res.info["knn_index"] == "hnsw"
    assert np.isfinite(res.columns["prediction_depth"]).all()


def test_too_few_training_rows_is_a_clear_error(mnist_small):
    from core.errors import ScoreError

    x, y = mnist_small
    with pytest.raises(ScoreError):
        prediction_depth(_torch_model(0, MLP, in_features=784), x[:10], y[:10], k=30, device="cpu")


def _pooled_brute_depth(model, x_tr, y_tr, x_q, k, max_dim):
    """Brute force with the documented pooling: stage outputs (C, H, W) with C·H·W > max_dim average-pooled to
    the largest s × s grid with C·s² ≤ max_dim; numpy distances, nearest k (self removed), majority vote."""
    import math

    import torch.nn.functional as F

    x = torch.as_tensor(np.concatenate([x_tr, x_q]))
    reps = []
    with torch.no_grad():
        h = x
        outs = [h]
        for st in model.stages:
            h = st(h)
            outs.append(h)
    for o in outs:
        if o.dim() == 4 and o[0].numel() > max_dim:
            side = max(1, math.isqrt(max(max_dim // o.shape[1], 1)))
            o = F.adaptive_avg_pool2d(o, (min(o.shape[2], side), min(o.shape[3], side)))
        reps.append(o.reshape(len(o), -1).double().numpy())
    final = reps[-1].argmax(1)
    n = len(x_tr)
    agree = []
    for rep in reps:
        d = ((rep[:, None, :] - rep[None, :n, :]) ** 2).sum(-1)
        d[np.arange(n), np.arange(n)] = np.inf
        nn_idx = np.argsort(d, axis=1, kind="stable")[:, :k]
        votes = []
        for row in y_tr[nn_idx]:
            counts = np.bincount(row, minlength=10)
            tied = np.flatnonzero(counts == counts.max())
            votes.append(next(lab for lab in row if lab in tied))
        agree.append(np.array(votes) == final)
    return depth_from_agreement(np.stack(agree)), [r.shape[1] for r in reps]


def test_large_probes_are_pooled_as_documented_and_streamed_from_a_store(mnist_small):
    """A cap of 100 values per row pools the input (784 → 100) and the first conv maps (1568 → 72); the depth
    equals the brute force on the pooled representations, the adapter's record says which probes were pooled,
    and reading the rows from an image store in small batches gives the same depths as an array."""
    from core.data.image_store import ImageStore

    x, y = mnist_small
    x_tr, y_tr, x_q = x[:120], y[:120], x[120:160]
    model = _torch_model(2, SmallCNN)
    res = prediction_depth(model, x_tr, y_tr, x_q, k=5, device="cpu", max_dim=100)
    want, dims = _pooled_brute_depth(model, x_tr, y_tr, x_q, 5, 100)
    np.testing.assert_array_equal(np.concatenate([res.train, res.query]), want)
    assert res.pooled["input"] == [784, 100] and res.pooled["stage1"] == [1568, dims[1]] and dims[1] == 72
    assert "logits" not in res.pooled
    store = ImageStore.from_array(x[:160])
    streamed = prediction_depth(model, store.take(np.arange(120)), y_tr, store.take(np.arange(120, 160)), k=5,
                                device="cpu", max_dim=100, batch=7)
    np.testing.assert_array_equal(streamed.train, res.train)
    np.testing.assert_array_equal(streamed.query, res.query)
    unpooled = prediction_depth(model, x_tr, y_tr, x_q, k=5, device="cpu")
    assert unpooled.pooled == {} and unpooled.max_dim == 4096
