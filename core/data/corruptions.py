"""Controlled corruptions with known ground truth: under-sampling a class and injecting label noise.

Every function is seeded (``np.random.default_rng(seed)``), returns ``(new_samples, record)`` and never
modifies its input. ``record`` is a JSON-able dict for the run manifest::

    {"kind": ..., "params": {...}, "seed": int, "n_affected": int, ...}

The pipeline applies :func:`undersample` first, then the noise steps. A noise step only flips *clean* rows
(``is_mislabeled`` False), so ``true_label`` always stays the original label and ``is_mislabeled`` always
equals ``labels != true_label``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np

from core.data.dataset import Samples
from core.errors import DataError

# ------------------------------------------------------------------------------------------ parsing


def parse_undersample(text: str) -> dict[str, float]:
    """Parse ``"3:0.15,5:0.5"`` into ``{"3": 0.15, "5": 0.5}`` (class name → fraction kept, in (0, 1]).

    Raises:
        DataError: on bad syntax, a fraction outside (0, 1], or a class given twice.
    """
    out: dict[str, float] = {}
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise DataError("empty undersample spec; expected CLASS:FRACTION[,CLASS:FRACTION...], e.g. 3:0.15")
    for item in items:
        name, sep, frac_text = item.rpartition(":")
        name = name.strip()
        if not sep or not name or not frac_text.strip():
            raise DataError(f"undersample spec {text!r}: {item!r} is not CLASS:FRACTION (e.g. 3:0.15)")
        try:
            frac = float(frac_text)
        except ValueError as exc:
            raise DataError(f"undersample spec {text!r}: {frac_text.strip()!r} is not a number") from exc
        if name in out:
            raise DataError(f"undersample spec {text!r}: class {name!r} is given twice")
        out[name] = _check_fraction(frac, f"undersample spec {text!r}, class {name!r}")
    return out


def parse_pairs(text: str) -> list[tuple[str, str]]:
    """Parse ``"4:9,3:5"`` into ``[("4", "9"), ("3", "5")]``.

    Raises:
        DataError: on bad syntax, a pair of one class with itself, or a class in two pairs.
    """
    items = [item.strip() for item in str(text).split(",")]
    if not any(items):
        raise DataError("empty pair spec; expected A:B[,C:D...], e.g. 4:9,3:5")
    pairs: list[tuple[str, str]] = []
    for item in items:
        parts = [p.strip() for p in item.split(":")]
        if len(parts) != 2 or not all(parts):
            raise DataError(f"pair spec {text!r}: {item!r} is not A:B (two class names, e.g. 4:9)")
        pairs.append((parts[0], parts[1]))
    _check_pairs(pairs, f"pair spec {text!r}")
    return pairs


def _check_pairs(pairs: Sequence[tuple[str, str]], context: str) -> None:
    """Each pair holds two different classes and no class appears in two pairs."""
    seen: set[str] = set()
    for a, b in pairs:
        if a == b:
            raise DataError(f"{context}: pair {a}:{b} pairs a class with itself")
        for c in (a, b):
            if c in seen:
                raise DataError(f"{context}: class {c!r} appears in more than one pair")
            seen.add(c)


def _check_fraction(value: float, context: str) -> float:
    """A fraction kept must lie in (0, 1]."""
    if not math.isfinite(value) or not 0.0 < value <= 1.0:
        raise DataError(f"{context}: fraction {value} must be in (0, 1]")
    return float(value)


def _check_rate(rate: float, context: str) -> float:
    """A noise rate must lie in [0, 1]."""
    try:
        value = float(rate)
    except (TypeError, ValueError) as exc:
        raise DataError(f"{context}: rate {rate!r} is not a number") from exc
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise DataError(f"{context}: rate {rate} must be in [0, 1]")
    return value


def _check_seed(seed: int) -> int:
    """Seeds are plain non-negative integers (so the manifest can replay them)."""
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise DataError(f"seed must be a non-negative integer, got {seed!r}")
    return int(seed)


def _class_index(samples: Samples, name: str, context: str) -> int:
    """Index of class ``name`` (a DataError listing the known classes otherwise)."""
    try:
        return samples.class_names.index(str(name))
    except ValueError as exc:
        raise DataError(
            f"{context}: unknown class {name!r}; classes are {', '.join(samples.class_names)}"
        ) from exc


def _with_labels(samples: Samples, labels: np.ndarray) -> Samples:
    """A copy of ``samples`` with new given labels (``true_label`` kept, ``is_mislabeled`` recomputed)."""
    return Samples(
        images=samples.images,
        labels=labels,
        class_names=list(samples.class_names),
        source=samples.source.copy(),
        sample_id=samples.sample_id.copy(),
        image_path=samples.image_path.copy(),
        true_label=samples.true_label.copy(),
        is_mislabeled=labels != samples.true_label,
        is_adversarial=samples.is_adversarial.copy(),
        skipped=list(samples.skipped),
        load_info=dict(samples.load_info),
    )


# ------------------------------------------------------------------------------------- corruptions


def undersample(samples: Samples, spec: Mapping[str, float] | str, seed: int) -> tuple[Samples, dict]:
    """Keep only a fraction of the rows of some classes (by class name, judged on ``true_label``).

    Each named class keeps ``max(1, round(fraction * count))`` rows chosen uniformly; row order is kept.

    Raises:
        DataError: on an unknown class, a fraction outside (0, 1], or bad syntax.
    """
    seed = _check_seed(seed)
    fractions = parse_undersample(spec) if isinstance(spec, str) else dict(spec)
    rng = np.random.default_rng(seed)
    keep = np.ones(len(samples), dtype=bool)
    kept_counts: dict[str, dict[str, int]] = {}
    for name, frac in fractions.items():
        frac = _check_fraction(float(frac), f"undersample class {name!r}")
        c = _class_index(samples, name, "undersample")
        rows = np.flatnonzero(samples.true_label == c)
        n_keep = min(len(rows), max(1, round(frac * len(rows))))
        dropped = rng.choice(rows, size=len(rows) - n_keep, replace=False)
        keep[dropped] = False
        kept_counts[str(name)] = {"before": int(len(rows)), "after": int(n_keep)}
    out = samples.subset(np.flatnonzero(keep))
    record = {
        "kind": "undersample",
        "params": {"fractions": {str(k): float(v) for k, v in fractions.items()}, "counts": kept_counts},
        "seed": seed,
        "n_affected": int((~keep).sum()),
    }
    return out, record


def symmetric_label_noise(samples: Samples, rate: float, seed: int) -> tuple[Samples, dict]:
    """Flip exactly ``round(rate * n)`` clean rows, chosen uniformly, each to a uniformly drawn other class.

    Raises:
        DataError: on a rate outside [0, 1], fewer than two classes, or fewer clean rows than flips.
    """
    seed = _check_seed(seed)
    rate = _check_rate(rate, "symmetric label noise")
    n_classes = samples.n_classes
    if n_classes < 2:
        raise DataError("symmetric label noise needs at least two classes")
    rng = np.random.default_rng(seed)
    k = round(rate * len(samples))
    clean = np.flatnonzero(~samples.is_mislabeled)
    if k > len(clean):
        raise DataError(
            f"symmetric label noise: {k} flips asked but only {len(clean)} rows are still clean"
        )
    rows = np.sort(rng.choice(clean, size=k, replace=False))
    labels = samples.labels.copy()
    offsets = rng.integers(1, n_classes, size=k)
    labels[rows] = (samples.true_label[rows] + offsets) % n_classes
    record = {"kind": "symmetric_label_noise", "params": {"rate": rate}, "seed": seed, "n_affected": int(k)}
    return _with_labels(samples, labels), record


def pair_label_noise(
    samples: Samples, pairs: Sequence[tuple[str, str]] | str, rate: float, seed: int
) -> tuple[Samples, dict]:
    """Within each pair (A, B) flip ``round(rate * |A|)`` clean rows of A to B and ``round(rate * |B|)`` of B to A.

    Class sizes ``|A|`` count rows whose ``true_label`` is A; flipped rows are drawn among A's clean rows.

    Raises:
        DataError: on bad pair syntax, an unknown class, a class in two pairs, a rate outside [0, 1], or a
            class with fewer clean rows than flips.
    """
    seed = _check_seed(seed)
    rate = _check_rate(rate, "pair label noise")
    pair_list = parse_pairs(pairs) if isinstance(pairs, str) else [(str(a), str(b)) for a, b in pairs]
    _check_pairs(pair_list, "pair label noise")
    rng = np.random.default_rng(seed)
    labels = samples.labels.copy()
    flipped: dict[str, int] = {}
    for a_name, b_name in pair_list:
        a = _class_index(samples, a_name, "pair label noise")
        b = _class_index(samples, b_name, "pair label noise")
        for src, dst, src_name, dst_name in ((a, b, a_name, b_name), (b, a, b_name, a_name)):
            rows = _pick_clean(samples, src, rate, rng, f"pair label noise {src_name}->{dst_name}")
            labels[rows] = dst
            flipped[f"{src_name}->{dst_name}"] = int(len(rows))
    record = {
        "kind": "pair_label_noise",
        "params": {"pairs": [[a, b] for a, b in pair_list], "rate": rate, "flipped": flipped},
        "seed": seed,
        "n_affected": int(sum(flipped.values())),
    }
    return _with_labels(samples, labels), record


def _pick_clean(samples: Samples, cls: int, rate: float, rng: np.random.Generator, context: str) -> np.ndarray:
    """``round(rate * count(true_label == cls))`` rows drawn among the clean rows of class ``cls``."""
    of_class = samples.true_label == cls
    k = round(rate * int(of_class.sum()))
    clean = np.flatnonzero(of_class & ~samples.is_mislabeled)
    if k > len(clean):
        raise DataError(f"{context}: {k} flips asked but only {len(clean)} rows of the class are still clean")
    return np.sort(rng.choice(clean, size=k, replace=False))
