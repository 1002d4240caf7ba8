"""Baselines against their definitions computed by hand / by torch on small arrays."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from core.scores.baselines import cross_entropy, datamaps, early_epoch, el2n, forgetting_events, margin


@pytest.fixture
def logits():
    rng = np.random.default_rng(0)
    return rng.normal(size=(7, 4, 3)).astype(np.float32), np.array([0, 2, 1, 2])


def test_loss_matches_torch(logits):
    z, y = logits
    ref = torch.nn.functional.cross_entropy(torch.tensor(z[-1], dtype=torch.float64), torch.tensor(y),
                                            reduction="none").numpy()
    np.testing.assert_allclose(cross_entropy(z[-1], y), ref, rtol=1e-10)


def test_margin_definition(logits):
    z, y = logits
    zf = z[-1].astype(np.float64)
    expected = [zf[i, y[i]] - max(zf[i, j] for j in range(3) if j != y[i]) for i in range(4)]
    np.testing.assert_allclose(margin(z[-1], y), expected)


def test_el2n_definition_and_seed_average(logits):
    z, y = logits
    p = np.exp(z[1]) / np.exp(z[1]).sum(1, keepdims=True)
    expected = np.linalg.norm(p - np.eye(3)[y], axis=1)
    np.testing.assert_allclose(el2n(z[1], y), expected, rtol=1e-6)
    both = (el2n(z[1], y) + el2n(z[2], y)) / 2
    np.testing.assert_allclose(el2n(z[1:3], y), both, rtol=1e-10)
    assert early_epoch(8) == 1 and early_epoch(1) == 0 and early_epoch(20) == 4


def test_forgetting_counts_transitions():
    y = np.array([0, 0, 0])
    # per epoch, predicted class of each of 3 rows: row0 learned, forgotten, learned, forgotten (2 events);
    # row1 always right (0); row2 never right (E = 5)
    preds = np.array([[0, 0, 1], [1, 0, 1], [0, 0, 2], [1, 0, 1], [1, 0, 1]])
    z = np.full((5, 3, 3), -5.0)
    for e in range(5):
        z[e, np.arange(3), preds[e]] = 5.0
    np.testing.assert_array_equal(forgetting_events(z, y), [2, 0, 5])


def test_datamaps_mean_std(logits):
    z, y = logits
    p = np.exp(z) / np.exp(z).sum(-1, keepdims=True)
    py = p[:, np.arange(4), y]
    conf, var = datamaps(z, y)
    np.testing.assert_allclose(conf, py.mean(0), rtol=1e-6)
    np.testing.assert_allclose(var, py.std(0), rtol=1e-5)


def test_bad_inputs_rejected(logits):
    z, y = logits
    with pytest.raises(ValueError, match="labels"):
        cross_entropy(z[-1], np.array([0, 1]))
    with pytest.raises(ValueError, match="range"):
        margin(z[-1], np.array([0, 1, 2, 3]))
    bad = z.copy()
    bad[0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        datamaps(bad, y)
