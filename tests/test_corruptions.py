"""Corruptions (undersample, symmetric and pair label noise) and the stratified split, on real MNIST rows."""

from __future__ import annotations

import json

import numpy as np
import pytest

from core.data import (
    Samples,
    pair_label_noise,
    parse_pairs,
    parse_undersample,
    stratified_split,
    symmetric_label_noise,
    undersample,
)
from core.errors import DataError


@pytest.fixture()
def small(mnist_small) -> Samples:
    """400 MNIST rows (40 per class) as a fresh Samples."""
    x, y = mnist_small
    n = len(y)
    return Samples(
        images=x,
        labels=y.copy(),
        class_names=[str(i) for i in range(10)],
        source=np.array(["mnist5k"] * n, dtype=object),
        sample_id=np.array([f"mnist5k:{i}" for i in range(n)], dtype=object),
        image_path=np.array([""] * n, dtype=object),
    )


def assert_consistent(s: Samples, original_by_id: dict[str, int]) -> None:
    """Ground-truth invariants every corruption must keep."""
    np.testing.assert_array_equal(s.is_mislabeled, s.labels != s.true_label)
    np.testing.assert_array_equal(s.true_label, [original_by_id[i] for i in s.sample_id])
    assert s.labels.min() >= 0 and s.labels.max() < s.n_classes


def original(s: Samples) -> dict[str, int]:
    return dict(zip(s.sample_id, s.labels.tolist(), strict=True))


# -------------------------------------------------------------------------------------- parsing


def test_parse_helpers():
    assert parse_undersample("3:0.15") == {"3": 0.15}
    assert parse_undersample(" 3:0.15 , cat:1 ") == {"3": 0.15, "cat": 1.0}
    assert parse_pairs("4:9,3:5") == [("4", "9"), ("3", "5")]
    assert parse_pairs(" cat : dog ") == [("cat", "dog")]


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty undersample spec"),
        ("3", "is not CLASS:FRACTION"),
        ("3:abc", "'abc' is not a number"),
        ("3:0", "must be in \\(0, 1\\]"),
        ("3:1.5", "must be in \\(0, 1\\]"),
        ("3:0.5,3:0.2", "given twice"),
    ],
)
def test_parse_undersample_errors(text, fragment):
    with pytest.raises(DataError, match=fragment):
        parse_undersample(text)


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("", "empty pair spec"),
        ("4", "is not A:B"),
        ("4:9:1", "is not A:B"),
        ("4:", "is not A:B"),
        ("4:4", "with itself"),
        ("4:9,9:7", "more than one pair"),
    ],
)
def test_parse_pairs_errors(text, fragment):
    with pytest.raises(DataError, match=fragment):
        parse_pairs(text)


# ----------------------------------------------------------------------------------- undersample


def test_undersample_keeps_fraction_of_named_class(small):
    out, rec = undersample(small, "3:0.15", seed=0)
    counts = np.bincount(out.labels, minlength=10)
    assert counts[3] == round(0.15 * 40) == 6
    assert all(counts[c] == 40 for c in range(10) if c != 3)
    assert len(out) == 400 - 34
    assert rec["kind"] == "undersample" and rec["seed"] == 0 and rec["n_affected"] == 34
    assert rec["params"]["fractions"] == {"3": 0.15}
    json.dumps(rec)
    # kept rows are real rows of the input, order preserved, input untouched
    pos = {sid: i for i, sid in enumerate(small.sample_id)}
    idx = [pos[s] for s in out.sample_id]
    assert idx == sorted(idx)
    np.testing.assert_array_equal(out.images, small.images[idx])
    assert len(small) == 400
    assert_consistent(out, original(small))


def test_undersample_at_least_one_row_and_dict_spec(small):
    out, _ = undersample(small, {"7": 0.001, "2": 0.5}, seed=1)
    counts = np.bincount(out.labels, minlength=10)
    assert counts[7] == 1 and counts[2] == 20


def test_undersample_determinism(small):
    a, _ = undersample(small, "3:0.5", seed=5)
    b, _ = undersample(small, "3:0.5", seed=5)
    c, _ = undersample(small, "3:0.5", seed=6)
    assert list(a.sample_id) == list(b.sample_id)
    assert list(a.sample_id) != list(c.sample_id)


def test_undersample_unknown_class(small):
    with pytest.raises(DataError, match="unknown class 'cat'"):
        undersample(small, "cat:0.5", seed=0)


# ------------------------------------------------------------------------------------ symmetric


@pytest.mark.parametrize("rate", [0.0, 0.1, 0.333, 1.0])
def test_symmetric_noise_ground_truth(small, rate):
    out, rec = symmetric_label_noise(small, rate, seed=3)
    k = round(rate * 400)
    assert int(out.is_mislabeled.sum()) == k == rec["n_affected"]
    np.testing.assert_array_equal(out.true_label, small.labels)  # true label is the original
    assert np.all(out.labels[out.is_mislabeled] != small.labels[out.is_mislabeled])
    np.testing.assert_array_equal(out.labels[~out.is_mislabeled], small.labels[~out.is_mislabeled])
    assert_consistent(out, original(small))
    assert not small.is_mislabeled.any()  # input untouched
    json.dumps(rec)


def test_symmetric_noise_targets_every_other_class(small):
    out, _ = symmetric_label_noise(small, 1.0, seed=0)
    offsets = (out.labels - out.true_label) % 10
    counts = np.bincount(offsets, minlength=10)
    assert counts[0] == 0
    assert counts[1:].min() >= 20  # 400 flips over 9 targets: ~44 each, uniform


def test_symmetric_noise_determinism(small):
    a, _ = symmetric_label_noise(small, 0.2, seed=11)
    b, _ = symmetric_label_noise(small, 0.2, seed=11)
    c, _ = symmetric_label_noise(small, 0.2, seed=12)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)


def test_symmetric_noise_bad_rate(small):
    for rate in (-0.1, 1.5, float("nan")):
        with pytest.raises(DataError, match="rate"):
            symmetric_label_noise(small, rate, seed=0)


def test_second_noise_step_never_reflips(small):
    a, _ = symmetric_label_noise(small, 0.5, seed=1)
    b, _ = symmetric_label_noise(a, 0.3, seed=2)
    assert int(b.is_mislabeled.sum()) == 200 + 120
    first = a.is_mislabeled
    np.testing.assert_array_equal(b.labels[first], a.labels[first])  # earlier flips untouched
    np.testing.assert_array_equal(b.true_label, small.labels)
    with pytest.raises(DataError, match="still clean"):
        symmetric_label_noise(b, 0.9, seed=3)


# ----------------------------------------------------------------------------------------- pairs


def test_pair_noise_stays_within_pairs(small):
    out, rec = pair_label_noise(small, "4:9,3:5", 0.25, seed=4)
    flips = {(int(t), int(g)) for t, g in zip(out.true_label[out.is_mislabeled], out.labels[out.is_mislabeled], strict=True)}
    assert flips == {(4, 9), (9, 4), (3, 5), (5, 3)}
    for src, dst in ((4, 9), (9, 4), (3, 5), (5, 3)):
        n = int(((out.true_label == src) & (out.labels == dst)).sum())
        assert n == round(0.25 * 40) == 10
    assert rec["n_affected"] == 40 == int(out.is_mislabeled.sum())
    assert rec["params"]["flipped"] == {"4->9": 10, "9->4": 10, "3->5": 10, "5->3": 10}
    untouched = ~np.isin(small.labels, [3, 4, 5, 9])
    np.testing.assert_array_equal(out.labels[untouched], small.labels[untouched])
    assert_consistent(out, original(small))
    json.dumps(rec)


def test_pair_noise_list_form_determinism_and_errors(small):
    a, _ = pair_label_noise(small, [("4", "9")], 0.3, seed=8)
    b, _ = pair_label_noise(small, "4:9", 0.3, seed=8)
    c, _ = pair_label_noise(small, "4:9", 0.3, seed=9)
    np.testing.assert_array_equal(a.labels, b.labels)
    assert not np.array_equal(a.labels, c.labels)
    with pytest.raises(DataError, match="unknown class 'x'"):
        pair_label_noise(small, "4:x", 0.3, seed=0)
    with pytest.raises(DataError, match="more than one pair"):
        pair_label_noise(small, [("4", "9"), ("9", "1")], 0.3, seed=0)


def test_pair_noise_after_symmetric_noise_only_flips_clean_rows(small):
    a, _ = symmetric_label_noise(small, 0.5, seed=1)
    b, rec = pair_label_noise(a, "4:9", 0.25, seed=2)
    first = a.is_mislabeled
    np.testing.assert_array_equal(b.labels[first], a.labels[first])
    newly = b.is_mislabeled & ~first
    assert int(newly.sum()) == rec["n_affected"] == 20
    assert set(b.true_label[newly].tolist()) == {4, 9}
    with pytest.raises(DataError, match="still clean"):
        pair_label_noise(a, "4:9", 0.9, seed=2)


def test_pipeline_order_keeps_ground_truth(small):
    s0 = original(small)
    u, _ = undersample(small, "3:0.5", seed=0)
    n1, _ = symmetric_label_noise(u, 0.1, seed=1)
    n2, rec = pair_label_noise(n1, "3:5", 0.5, seed=2)
    assert_consistent(n2, s0)
    # pair step flipped only rows that were clean after the symmetric step
    assert np.all(n2.labels[n1.is_mislabeled] == n1.labels[n1.is_mislabeled])
    assert int(n2.is_mislabeled.sum()) == int(n1.is_mislabeled.sum()) + rec["n_affected"]
    assert rec["params"]["flipped"] == {"3->5": 10, "5->3": 20}


# ---------------------------------------------------------------------------------------- splits


def test_stratified_split_properties(small):
    split = stratified_split(small.labels, 0.25, seed=0)
    assert set(split) == {"train", "test"}
    for c in range(10):
        assert int((split[small.labels == c] == "test").sum()) == 10
    again = stratified_split(small.labels, 0.25, seed=0)
    other = stratified_split(small.labels, 0.25, seed=1)
    np.testing.assert_array_equal(split, again)
    assert not np.array_equal(split, other)


def test_stratified_split_edge_cases():
    labels = np.array(["a"] * 2 + ["b"] + ["c"] * 10)
    split = stratified_split(labels, 0.9, seed=0)
    assert list(split[labels == "a"]).count("train") == 1  # >= 2 rows: one train row kept
    assert list(split[labels == "b"]) == ["train"]  # single row: train
    assert list(split[labels == "c"]).count("test") == 9
    assert set(stratified_split(labels, 0.0, seed=0)) == {"train"}
    for bad in (-0.1, 1.0):
        with pytest.raises(DataError, match="test_fraction"):
            stratified_split(labels, bad, seed=0)
