"""Your own model's outputs: ``--features PATH.npy`` (n×d) and ``--pred-probs PATH.npy`` (n×k), as in
cleanlab's API (``find_label_issues(labels, pred_probs)``, ``Datalab.find_issues(features=…)``): score a
dataset without training a network here.

Row i of each array is row i of the loaded dataset: sources in the order given, and within a source the
order it lists (``folder``: class folders sorted by name, files sorted by path; ``csv``/``npz``/``parquet``/
``hf``: row order). Because of this alignment, row-changing options (``--undersample``, ``--adversarial``)
are refused, and a row skipped with ``--skip-bad`` shows up as a row-count mismatch.

What is computed:

- ``--pred-probs``: the model's outputs (``pred``, ``pred_prob``), ``loss`` = −log p_y, ``margin`` =
  log p_y − max_{j≠y} log p_j (logits taken as log p), ``confidence`` = p_y (Data Maps with one snapshot).
- ``--features`` alone: a linear head is trained on them (the frozen-backbone recipe,
  ``core.models.training.train_linear_head``), giving the outputs and every training-dynamics baseline.
- ``--features``: ``uniqueness``, the stored neighbours, the map, the flags' feature space, and ``cg_score``
  with ``features="embeddings"``. ``cg_score`` on pixels needs no network and is always computed.
- NaN, with the reason in the manifest: scores that need the network itself (``si_weights``,
  ``si_function``, ``prediction_depth``), training dynamics when only one snapshot of probabilities is given
  (``el2n``, ``forgetting``, ``variability``), and ``uniqueness`` without ``--features`` (the map and the
  neighbours then use the probability vectors).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from core.errors import DataError

NEEDS_NETWORK = "needs the network itself (not available with --features/--pred-probs)"
NEEDS_DYNAMICS = "needs training dynamics over epochs; --pred-probs is one snapshot"
NEEDS_FEATURES = "needs --features"
PROB_SUM_TOL = 1e-3


def load_array(path: str | Path, what: str) -> np.ndarray:
    """A 2-D float array from a ``.npy`` file (no pickle), with one clear error for every problem."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise DataError(f"{what} file not found: {p}")
    try:
        a = np.load(p, allow_pickle=False)
    except (OSError, ValueError, EOFError) as e:
        raise DataError(f"{what} {p}: not a readable .npy array ({e})") from e
    if not isinstance(a, np.ndarray) or a.dtype.kind not in "fiu":
        raise DataError(f"{what} {p}: expected a numeric .npy array, got dtype {getattr(a, 'dtype', type(a))}")
    if a.ndim != 2:
        raise DataError(f"{what} {p}: expected a 2-D array (rows × columns), got shape {a.shape}")
    a = a.astype(np.float32 if what == "--features" else np.float64)
    bad = ~np.isfinite(a).all(axis=1)
    if bad.any():
        raise DataError(f"{what} {p}: {int(bad.sum())} row(s) hold NaN or infinite values, e.g. row {int(np.flatnonzero(bad)[0])}")
    return a


def check_rows(a: np.ndarray, n: int, what: str, path: str) -> None:
    if len(a) != n:
        raise DataError(f"{what} {path}: {len(a)} rows but the sources give {n} samples; row i must be sample i "
                        "(sources in order; folders sorted by class then path)")


def load_pred_probs(path: str, n: int, n_classes: int, class_names: list[str]) -> np.ndarray:
    """(n, k) probabilities: k = number of classes (in ``class_names`` order), values in [0, 1], rows sum to 1."""
    p = load_array(path, "--pred-probs")
    check_rows(p, n, "--pred-probs", path)
    if p.shape[1] != n_classes:
        raise DataError(f"--pred-probs {path}: {p.shape[1]} columns but {n_classes} classes "
                        f"({', '.join(class_names[:10])}{'…' if n_classes > 10 else ''}); column j is class j")
    if (p < 0).any() or (p > 1).any():
        row = int(np.flatnonzero(((p < 0) | (p > 1)).any(1))[0])
        raise DataError(f"--pred-probs {path}: values must lie in [0, 1] (row {row}); pass probabilities, not logits")
    sums = p.sum(1)
    off = np.abs(sums - 1) > PROB_SUM_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise DataError(f"--pred-probs {path}: every row must sum to 1 (±{PROB_SUM_TOL:g}); row {row} sums to {sums[row]:.6g}")
    return p


def load_features(path: str, n: int) -> np.ndarray:
    """(n, d) float32 features."""
    f = load_array(path, "--features")
    check_rows(f, n, "--features", path)
    if f.shape[1] < 1:
        raise DataError(f"--features {path}: no columns")
    return f


def probs_to_logits(p: np.ndarray) -> np.ndarray:
    """log p (clipped at 1e-12) as float32: softmax(log p) = p for rows that sum to 1."""
    return np.log(np.clip(p, 1e-12, 1.0)).astype(np.float32)


def unavailable_scores(has_features: bool, has_probs: bool) -> dict[str, str]:
    """Score name → why it is NaN for this combination of user arrays."""
    out = {"prediction_depth": NEEDS_NETWORK}
    if not has_features:  # with features, SI is the head on them (core.scores.si_crossfit, features "frozen")
        out.update({"si_weights": NEEDS_NETWORK, "si_function": NEEDS_NETWORK})
    if has_probs:
        out.update({"el2n": NEEDS_DYNAMICS, "forgetting": NEEDS_DYNAMICS, "variability": NEEDS_DYNAMICS})
    if not has_features:
        out["uniqueness"] = NEEDS_FEATURES
    return out
