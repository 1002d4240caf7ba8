"""Dataset-level CG quantities: data complexity yᵀH⁻¹y and the bound sqrt(2 yᵀH⁻¹y / n), against explicit inverses."""

from __future__ import annotations

import json
import math
from types import SimpleNamespace

import numpy as np
import pytest

from core.scores.cg import (
    adapter,
    cg_score_details,
    data_complexity,
    dataset_complexity,
    generalization_bound,
    ntk_gram,
    unit_rows,
)


def _data(n: int = 36, d: int = 6, k: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, k, n)
    x = rng.normal(size=(k, d))[labels] + 0.7 * rng.normal(size=(n, d))
    return x, labels


def _brute_h(x: np.ndarray) -> np.ndarray:
    u = np.clip(unit_rows(x) @ unit_rows(x).T, -1, 1)
    h = u * (math.pi - np.arccos(u)) / (2 * math.pi)
    np.fill_diagonal(h, 0.5)
    return h


def _brute(h: np.ndarray, y: np.ndarray) -> float:
    return float(y @ np.linalg.inv(h) @ y)


def test_data_complexity_equals_explicit_inverse() -> None:
    x, labels = _data()
    h = _brute_h(x)
    y = np.where(labels[:, None] == np.arange(3)[None], 1.0, -1.0)
    comp, lam = data_complexity(h, y)
    assert lam == 0.0
    np.testing.assert_allclose(comp, [_brute(h, y[:, c]) for c in range(3)], rtol=1e-9)
    one, _ = data_complexity(h, y[:, 1])
    assert one[0] == pytest.approx(_brute(h, y[:, 1]), rel=1e-9)
    assert generalization_bound(comp[0], len(x)) == pytest.approx(math.sqrt(2 * comp[0] / len(x)))


def test_dataset_complexity_per_class_and_per_group() -> None:
    x, labels = _data(n=40)
    groups = np.where(np.arange(40) % 3 == 0, "b", "a")
    out = dataset_complexity(unit_rows(x), labels, groups=groups, device="cpu")
    h = _brute_h(x)
    per = [_brute(h, np.where(labels == c, 1.0, -1.0)) for c in range(3)]
    assert out["n"] == 40 and not out["subsampled"]
    for c in range(3):
        assert out["classes"][c]["complexity"] == pytest.approx(per[c], rel=1e-8)
        assert out["classes"][c]["bound"] == pytest.approx(math.sqrt(2 * per[c] / 40), rel=1e-8)
    assert out["complexity"] == pytest.approx(np.mean(per), rel=1e-8)
    assert out["bound"] == pytest.approx(math.sqrt(2 * np.mean(per) / 40), rel=1e-8)
    for g in ("a", "b"):
        m = groups == g
        hg = _brute_h(x[m])
        want = np.mean([_brute(hg, np.where(labels[m] == c, 1.0, -1.0)) for c in range(3)])
        assert out["groups"][g]["complexity"] == pytest.approx(want, rel=1e-8)
        assert out["groups"][g]["n"] == m.sum()
    sub = dataset_complexity(unit_rows(x), labels, max_rows=25, device="cpu")
    assert sub["n"] == 25 and sub["n_total"] == 40 and sub["subsampled"]


def test_label_noise_raises_complexity() -> None:
    x, labels = _data(n=60)
    noisy = labels.copy()
    noisy[:12] = (noisy[:12] + 1) % 3
    clean = dataset_complexity(unit_rows(x), labels, device="cpu")["complexity"]
    assert dataset_complexity(unit_rows(x), noisy, device="cpu")["complexity"] > 1.2 * clean


def test_class_complexity_of_the_score_problems() -> None:
    x, labels = _data(n=30)
    res = cg_score_details(x, labels, negatives="all", device="cpu", dataset_level=True)
    h = _brute_h(x)
    for c in range(3):
        want = _brute(h, np.where(labels == c, 1.0, -1.0))  # "all": class c against every other row
        cc = res.info["class_complexity"][c]
        assert cc["complexity"] == pytest.approx(want, rel=1e-8) and cc["n"] == 30 and cc["problems"] == 1
        assert cc["bound"] == pytest.approx(math.sqrt(2 * want / 30), rel=1e-8)
        assert res.info["dataset_complexity"]["classes"][c]["complexity"] == pytest.approx(want, rel=1e-8)
    # balanced draws: the complexity of each drawn problem, averaged (each checked by brute force)
    bal = cg_score_details(x, labels, negatives="balanced", repeats=2, device="cpu")
    assert set(bal.info["class_complexity"]) == {0, 1, 2} and "dataset_complexity" not in bal.info
    assert all(v["problems"] == 2 and v["complexity"] > 0 for v in bal.info["class_complexity"].values())


def test_adapter_records_named_classes_and_sources_as_json() -> None:
    x, labels = _data(n=30)
    imgs = x.reshape(30, 1, 2, 3).astype(np.float32)
    data = SimpleNamespace(images=imgs, labels=labels, class_names=["cat", "dog", "eel"],
                           source=np.where(np.arange(30) < 20, "s1", "s2"))
    ctx = SimpleNamespace(params={"negatives": "all"}, data=data, embeddings=None, seed=0, device="cpu",
                          progress=lambda *a: None)
    res = adapter(ctx)
    info = json.loads(json.dumps(res.info))
    assert set(info["class_complexity"]) == {"cat", "dog", "eel"}
    assert set(info["dataset_complexity"]["classes"]) == {"cat", "dog", "eel"}
    assert set(info["dataset_complexity"]["groups"]) == {"s1", "s2"}
    h = _brute_h(imgs.reshape(30, -1).astype(np.float64)[:20])  # the adapter reads the float32 images
    want = np.mean([_brute(h, np.where(labels[:20] == c, 1.0, -1.0)) for c in range(3)])
    assert info["dataset_complexity"]["groups"]["s1"]["complexity"] == pytest.approx(want, rel=1e-8)
    assert res.params["dataset_level"] is True
    assert np.allclose(ntk_gram(unit_rows(x)), _brute_h(x))
