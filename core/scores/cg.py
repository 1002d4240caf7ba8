"""Complexity-gap score (CG-score): data valuation without training a model.

Source: Ki, Choi, Chung, "Data Valuation without Training of a Model", ICLR 2023, building on the
two-layer ReLU network analysis of Arora, Du, Hu, Li, Wang (ICML 2019).

Setting (the paper's). Every sample is a feature vector scaled to unit L2 norm (flattened pixels by default,
or the network's embeddings). The Gram matrix of the infinite-width two-layer ReLU NTK is

    H_ij = u_ij (π − arccos u_ij) / (2π),   u_ij = x_iᵀx_j clamped to [−1, 1],   H_ii = ½.

For a ±1 labelling y the *data complexity* is yᵀH⁻¹y (it controls the generalisation bound of the trained
two-layer network), and the complexity gap of sample i is what removing i takes away from it:

    CG(i) = yᵀH⁻¹y − y₋ᵢᵀ H₋ᵢ⁻¹ y₋ᵢ,

with H₋ᵢ the Gram without row and column i. Block inversion (Schur complement) gives the closed form

    CG(i) = (H⁻¹y)ᵢ² / (H⁻¹)ᵢᵢ

(write H⁻¹ = [[a, bᵀ], [b, C]] with i first: H₋ᵢ⁻¹ = C − bbᵀ/a, so the difference is (a yᵢ + bᵀy₋ᵢ)²/a),
so one Cholesky factorisation H = LLᵀ scores every sample of a problem: α = H⁻¹y by two triangular solves
and (H⁻¹)ᵢᵢ = ‖L⁻¹eᵢ‖². Only the positives of a problem are scored, so they are placed last: their diagonal
entries of H⁻¹ need only the inverse of L's trailing block. All algebra is float64.

Multi-class data (the paper's protocol): one-vs-rest per class. The class's samples are +1; with
``negatives="balanced"`` ``ratio × n_c`` samples of the other classes are drawn uniformly (without
replacement) as −1 and the positives' scores are averaged over ``repeats`` draws; ``negatives="all"`` uses
every other-class sample once (deterministic). Each sample is scored only in its own class's problem, with
its *given* label, so a mislabeled sample is an atypical positive and gets a large gap.

Dataset-level quantities (``class_complexity``, ``dataset_complexity``). The data complexity yᵀH⁻¹y of a ±1
labelling is the quantity the CG paper builds on, and Arora, Du, Hu, Li, Wang, "Fine-Grained Analysis of
Optimization and Generalization for Overparameterized Two-Layer Neural Networks", ICML 2019 (Theorem 5.1),
bound the test error of the trained two-layer ReLU network by

    sqrt(2 yᵀH⁻¹y / n) + O(sqrt(log(n / (λ₀δ)) / n)),

so ``bound = sqrt(2 yᵀH⁻¹y / n)`` (the leading term) is reported with every complexity. It is
``yᵀH⁻¹y = ‖L⁻¹y‖²`` from the same Cholesky factor the scores use (``z = L⁻¹y`` is computed anyway). Per class
it is reported twice: for the score's own one-vs-rest problems (class vs ``ratio × n_c`` drawn negatives,
averaged over draws and chunks), and for class c against *all* other rows of the dataset (one Cholesky of the
Gram of all rows, or of a seeded subsample of ``max_rows``, with targets y_c = ±1), whose mean over classes is the
dataset's complexity. Label noise raises it (a flipped label is an atypical target). Per source the same is
computed on the source's rows.

Engineering: the kernel of all rows is computed once (lower-triangular blocks, float64) when it fits the
memory budget, else per problem; classes larger than ``max_class_size`` (adapter default 5,000) are split
into seeded chunks, each a problem of its own (with ``ratio × chunk`` negatives). Up to 5,000 rows per class
the score is exact (one problem of ≤ 10,000 rows: a 10k×10k float64 Gram is 800 MB, its Cholesky as much);
beyond, chunking is an approximation whose rank agreement with the unchunked score is measured in
``bench/results/cg_chunk.md``; when the Cholesky fails or a pivot is tiny (duplicates,
near-singular H) a jitter λI is added, growing tenfold from 1e-8·mean(diag H), and the largest λ used is
reported. Draws use a content-derived canonical order of the rows, so the scores do not depend on the order
in which samples are given.
"""

from __future__ import annotations

import hashlib
import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Literal

import numpy as np
import torch

from core.data.image_store import ImageStore
from core.device import resolve_device
from core.errors import ScoreError
from core.executors import LocalExecutor

Negatives = Literal["balanced", "all"]

JITTER_START = 1e-8  # relative to mean(diag H)
JITTER_MAX = 1e-2
MIN_PIVOT = 1e-10  # smallest acceptable L_ii² relative to mean(diag H)
GRAM_BUDGET_BYTES = 2 * 1024**3  # precompute the kernel of all rows when n²·8 bytes fit


# ----------------------------------------------------------------------------------------------- kernel


def unit_rows(features: np.ndarray) -> np.ndarray:
    """Flatten to (n, d) float64 and scale every row to unit L2 norm (all-zero rows stay zero)."""
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if not np.isfinite(x).all():
        raise ScoreError("cg_score: features contain NaN or infinite values")
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


def ntk_relu_kernel(u: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """H = u(π − arccos u)/(2π) elementwise, u clamped to [−1, 1] (in place into ``out`` when given)."""
    out = np.clip(u, -1.0, 1.0, out=out)
    a = np.arccos(out)
    np.subtract(math.pi, a, out=a)
    np.multiply(out, a, out=out)
    out *= 1.0 / (2.0 * math.pi)
    return out


def ntk_gram(x: np.ndarray, block: int = 1024, threads: int = 2) -> np.ndarray:
    """Two-layer ReLU NTK Gram of unit rows ``x`` (n, d), float64, diagonal exactly ½.

    Computes lower-triangular row blocks (half the products and arccos calls of the full matrix), in
    ``threads`` worker threads (numpy releases the GIL), then mirrors the lower triangle.
    """
    n = len(x)
    k = np.empty((n, n), dtype=np.float64)

    xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float64))

    def fill(start: int) -> None:
        stop = min(start + block, n)
        blk = (xt[start:stop] @ xt[:stop].T).numpy()  # torch's BLAS: one thread pool for the whole score
        ntk_relu_kernel(blk, out=k[start:stop, :stop])

    with ThreadPoolExecutor(max(1, threads)) as ex:
        list(ex.map(fill, range(0, n, block)))
    _mirror_lower(k, block)
    np.fill_diagonal(k, 0.5)
    return k


def _mirror_lower(k: np.ndarray, block: int) -> None:
    """Copy the lower triangle onto the upper one, block by block."""
    n = len(k)
    for s in range(0, n, block):
        e = min(s + block, n)
        k[s:e, e:] = k[e:, s:e].T
        sub = k[s:e, s:e]
        iu = np.triu_indices(e - s, 1)
        sub[iu] = sub.T[iu]


# ----------------------------------------------------------------------------------- closed-form gap


def _cholesky_jittered(h: torch.Tensor) -> tuple[torch.Tensor, float]:
    """Cholesky factor of ``h`` (float64), adding λI when it fails or a pivot is below MIN_PIVOT·mean(diag).

    Returns ``(L, λ)`` with λ = 0 when no jitter was needed.
    """
    scale = float(h.diagonal().mean())
    lam = 0.0
    while True:
        chol, info = torch.linalg.cholesky_ex(h + lam * torch.eye(len(h), dtype=h.dtype, device=h.device) if lam else h)
        if int(info) == 0 and float(chol.diagonal().min()) ** 2 >= MIN_PIVOT * scale:
            return chol, lam
        lam = JITTER_START * scale if lam == 0.0 else lam * 10.0
        if lam > JITTER_MAX * scale:
            raise ScoreError(
                "cg_score: the NTK Gram stays singular after jitter "
                f"{JITTER_MAX:g}·mean(diag); are there many duplicate samples with conflicting labels?"
            )


def complexity_gap(
    h: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor, last: int | None = None
) -> tuple[np.ndarray, float]:
    """CG(i) = (H⁻¹y)ᵢ² / (H⁻¹)ᵢᵢ = yᵀH⁻¹y − y₋ᵢᵀH₋ᵢ⁻¹y₋ᵢ for the last ``last`` rows (all rows by default).

    ``h`` is a symmetric positive (semi-)definite Gram, ``y`` the ±1 targets. Float64 Cholesky H = LLᵀ;
    (H⁻¹)ᵢᵢ for the trailing rows = squared column norms of (L_tail)⁻¹, the inverse of L's trailing block.
    Returns ``(scores, jitter)``.
    """
    scores, lam, _ = _gap_and_complexity(h, y, last)
    return scores, lam


def _gap_and_complexity(h: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor,
                        last: int | None = None) -> tuple[np.ndarray, float, float]:
    """``complexity_gap`` plus the data complexity yᵀ(H + λI)⁻¹y = ‖L⁻¹y‖² from the same factor."""
    h = torch.as_tensor(h, dtype=torch.float64)
    y = torch.as_tensor(y, dtype=torch.float64, device=h.device).reshape(-1, 1)
    n = len(h)
    p = n if last is None else int(last)
    chol, lam = _cholesky_jittered(h)
    z = torch.linalg.solve_triangular(chol, y, upper=False)
    alpha = torch.linalg.solve_triangular(chol.T, z, upper=True).ravel()[n - p :]
    diag_inv = _tail_inverse_diag(chol, p)
    return (alpha * alpha / diag_inv).cpu().numpy(), lam, float(z.square().sum())


def generalization_bound(complexity: float, n: int) -> float:
    """Leading term sqrt(2 yᵀH⁻¹y / n) of the test-error bound of Arora et al., ICML 2019 (Theorem 5.1)."""
    return math.sqrt(2.0 * max(complexity, 0.0) / n) if n > 0 else float("nan")


def data_complexity(h: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> tuple[np.ndarray, float]:
    """yᵀH⁻¹y for every column of ``y`` (n, K) (or a single (n,) target) with one Cholesky H = LLᵀ.

    yᵀH⁻¹y = ‖L⁻¹y‖²: the data complexity of Arora et al., ICML 2019, used by Ki, Choi, Chung, ICLR 2023.
    A jitter λI is added when H is (near) singular, as for the scores. Returns ``(complexities, λ)``.
    """
    h = torch.as_tensor(h, dtype=torch.float64)
    yt = torch.as_tensor(y, dtype=torch.float64, device=h.device)
    yt = yt.reshape(-1, 1) if yt.ndim == 1 else yt
    chol, lam = _cholesky_jittered(h)
    z = torch.linalg.solve_triangular(chol, yt, upper=False)
    return z.square().sum(dim=0).cpu().numpy(), lam


def dataset_complexity(x: np.ndarray, labels: np.ndarray, *, groups: np.ndarray | None = None,
                       max_rows: int | None = 4096, seed: int = 0, device: str | torch.device = "auto",
                       gram: np.ndarray | torch.Tensor | None = None) -> dict[str, Any]:
    """Data complexity of the whole dataset (and of each group, e.g. source), one-vs-rest per class.

    ``x`` are unit rows (``unit_rows``), ``labels`` integer classes. For every class c the targets are y_c = +1
    on the class and −1 elsewhere, and c_c = y_cᵀH⁻¹y_c over all rows (one Cholesky). The dataset's complexity
    is the mean over classes, with the bound sqrt(2·mean / n) (see the module docstring). With more than
    ``max_rows`` rows a seeded uniform subsample of ``max_rows`` rows is used (reported: the bound is then the
    one of a training set of that size). ``gram`` is the precomputed Gram of ``x`` (same order), if any.

    Returns ``{"n", "n_total", "subsampled", "complexity", "bound", "jitter", "classes": {c: {"complexity",
    "bound"}}, "groups": {g: {"n", "complexity", "bound", "jitter"}}}``.
    """
    labels = np.asarray(labels).astype(np.int64)
    n_total = len(x)
    rows = np.arange(n_total)
    if max_rows is not None and n_total > max_rows:
        rows = np.sort(np.random.default_rng([seed, 7]).choice(n_total, int(max_rows), replace=False))
    dev = resolve_device(device)
    classes = np.unique(labels)

    def one(sub: np.ndarray) -> tuple[np.ndarray, float]:
        h = _take(gram, sub) if gram is not None else _gram_of(x[sub], dev)
        y = np.where(labels[sub][:, None] == classes[None, :], 1.0, -1.0)
        return data_complexity(torch.as_tensor(h, device=dev) if not isinstance(h, torch.Tensor) else h, y)

    comp, lam = one(rows)
    m = len(rows)
    out: dict[str, Any] = {
        "n": int(m), "n_total": int(n_total), "subsampled": bool(m < n_total),
        "complexity": float(comp.mean()), "bound": generalization_bound(float(comp.mean()), m), "jitter": lam,
        "classes": {int(c): {"complexity": float(v), "bound": generalization_bound(float(v), m)}
                    for c, v in zip(classes, comp, strict=True)},
        "groups": {},
    }
    if groups is not None:
        g_all = np.asarray(groups).astype(str)
        for g in np.unique(g_all[rows]):
            sub = rows[g_all[rows] == g]
            if len(sub) < 2:
                continue
            cg_, lam_g = one(sub)
            out["groups"][str(g)] = {"n": int(len(sub)), "complexity": float(cg_.mean()),
                                     "bound": generalization_bound(float(cg_.mean()), len(sub)), "jitter": lam_g}
    return out


def _tail_inverse_diag(chol: torch.Tensor, p: int) -> torch.Tensor:
    """(H⁻¹)ᵢᵢ for the last p rows: squared column norms of T⁻¹, T = L[-p:, -p:] (lower triangular).

    Stays in torch (mixing torch's and numpy's BLAS thread pools in one loop makes both wait on each other).
    """
    n = len(chol)
    tail = chol[n - p :, n - p :].contiguous()
    eye = torch.eye(p, dtype=chol.dtype, device=chol.device)
    tail_inv = torch.linalg.solve_triangular(tail, eye, upper=False)
    return tail_inv.square_().sum(dim=0)


# ------------------------------------------------------------------------------------ one-vs-rest


@dataclass
class CGResult:
    """Scores plus what the manifest should record."""

    scores: np.ndarray
    params: dict[str, Any]
    info: dict[str, Any] = field(default_factory=dict)


def _canonical_order(x: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """A permutation of the rows that depends on their content only (hash of label and features)."""
    keys = [
        hashlib.blake2b(int(lab).to_bytes(8, "little", signed=True) + row.tobytes(), digest_size=16).digest()
        for lab, row in zip(labels, x, strict=True)
    ]
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


def _canonical_order_batches(images: Any, labels: np.ndarray, batch: int = 4096) -> np.ndarray:
    """:func:`_canonical_order` of ``unit_rows(images)``, the unit rows computed ``batch`` rows at a time."""
    keys: list[bytes] = []
    for s in range(0, len(images), batch):
        x = unit_rows(images[s:s + batch])
        keys.extend(hashlib.blake2b(int(lab).to_bytes(8, "little", signed=True) + row.tobytes(),
                                    digest_size=16).digest() for lab, row in zip(labels[s:s + batch], x, strict=True))
    return np.array(sorted(range(len(keys)), key=keys.__getitem__), dtype=np.int64)


class _UnitRows:
    """``unit_rows`` of an image store's rows, computed when read: ``x[idx]`` = ``unit_rows(images[idx])``."""

    def __init__(self, images: Any) -> None:
        self.images = images

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, idx: np.ndarray) -> np.ndarray:
        return unit_rows(self.images[np.asarray(idx)])


def _chunks(pos: np.ndarray, max_size: int | None, rng: np.random.Generator) -> list[np.ndarray]:
    """Split a class into ⌈n/max⌉ near-equal seeded chunks (one chunk when it fits)."""
    if max_size is None or len(pos) <= max_size:
        return [pos]
    parts = math.ceil(len(pos) / max_size)
    return np.array_split(rng.permutation(pos), parts)


def _problems(
    canon_labels: np.ndarray, negatives: Negatives, ratio: float, repeats: int, seed: int, max_class_size: int | None
):
    """Yield (positives, negatives) index arrays (into the canonical order), one per one-vs-rest problem."""
    n_rep = 1 if negatives == "all" else repeats
    for c in np.unique(canon_labels):
        pos_all = np.flatnonzero(canon_labels == c)
        others = np.flatnonzero(canon_labels != c)
        for r in range(n_rep):
            rng = np.random.default_rng([seed, int(c) + 2**20, r])
            for pos in _chunks(pos_all, max_class_size, rng):
                if negatives == "all":
                    neg = others
                else:
                    m = min(len(others), max(1, int(round(ratio * len(pos)))))
                    neg = np.sort(rng.choice(others, size=m, replace=False))
                yield pos, neg


def _validate(negatives: str, ratio: float, repeats: int, labels: np.ndarray, n: int) -> None:
    if negatives not in ("balanced", "all"):
        raise ValueError(f"negatives must be 'balanced' or 'all', got {negatives!r}")
    if ratio <= 0 or repeats < 1:
        raise ValueError(f"cg_score needs ratio > 0 and repeats ≥ 1 (got ratio={ratio}, repeats={repeats})")
    if len(labels) != n:
        raise ValueError(f"cg_score: {n} feature rows but {len(labels)} labels")
    if len(np.unique(labels)) < 2:
        raise ScoreError("cg_score needs at least two classes (one-vs-rest)")


def cg_score_details(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    negatives: Negatives = "balanced",
    ratio: float = 1.0,
    repeats: int = 5,
    seed: int = 0,
    device: str | torch.device = "auto",
    max_class_size: int | None = None,
    groups: np.ndarray | None = None,
    dataset_level: bool = False,
    dataset_max_rows: int | None = 4096,
    executor: Any = None,
) -> CGResult:
    """``cg_score`` with the effective parameters and run notes (jitter, problem count, kernel mode).

    The one-vs-rest problems are solved by :func:`solve_problem` on ``executor`` (``core.executors``; default
    this process) and summed here in their order, so every executor gives the same scores.

    ``info["class_complexity"]`` holds, per class, the data complexity yᵀH⁻¹y of its one-vs-rest problems, their
    mean size n and the bound sqrt(2 yᵀH⁻¹y / n) (averaged over the class's problems). With ``dataset_level``,
    ``info["dataset_complexity"]`` is ``dataset_complexity`` on all rows (per ``groups`` too, e.g. sources).
    """
    t0 = time.perf_counter()
    labels = np.asarray(labels).astype(np.int64)
    n = len(features)
    full = n * n * 8 <= GRAM_BUDGET_BYTES
    _validate(negatives, ratio, repeats, labels, n)
    dev = resolve_device(device)
    if isinstance(features, ImageStore) and not full:  # unit rows read per problem, never all at once
        order = _canonical_order_batches(features, labels)
        x: np.ndarray | _UnitRows = _UnitRows(features.take(order))
    else:
        x = unit_rows(features)
        order = _canonical_order(x, labels)
        x = x[order]
    canon_labels = labels[order]
    gram = _full_gram(x, dev) if full else None
    total = np.zeros(n)
    count = np.zeros(n)
    jitters: list[float] = []
    per_class: dict[int, list[tuple[float, int]]] = {}
    problems = list(_problems(canon_labels, negatives, ratio, repeats, seed, max_class_size))
    ex = executor or LocalExecutor()
    source = gram if gram is not None else x
    if ex.remote and isinstance(source, torch.Tensor):  # a CUDA Gram travels as host memory
        source = source.cpu().numpy()
    solved = ex.map(partial(solve_problem, full=gram is not None, device=str(dev)),
                    [(np.concatenate([neg, pos]), len(pos)) for pos, neg in problems], shared=(source,),
                    gpu=dev.type == "cuda")
    for (pos, neg), (s, lam, comp) in zip(problems, solved, strict=True):  # summed in the problems' order
        idx = np.concatenate([neg, pos])
        total[pos] += s
        count[pos] += 1
        jitters.append(lam)
        per_class.setdefault(int(canon_labels[pos[0]]), []).append((comp, len(idx)))
    scores = np.empty(n)
    scores[order] = total / np.maximum(count, 1)
    params = {"negatives": negatives, "ratio": float(ratio), "repeats": int(repeats) if negatives == "balanced" else 1,
              "seed": int(seed), "max_class_size": max_class_size}
    info = {"problems": len(jitters), "jitter_max": max(jitters, default=0.0),
            "problems_jittered": int(sum(j > 0 for j in jitters)), "kernel": "full" if full else "per-problem",
            "seconds": round(time.perf_counter() - t0, 3), "device": str(dev)}
    info["class_complexity"] = {
        c: {"complexity": float(np.mean([v for v, _ in items])), "n": float(np.mean([m for _, m in items])),
            "bound": float(np.mean([generalization_bound(v, m) for v, m in items])), "problems": len(items)}
        for c, items in sorted(per_class.items())}
    if dataset_level:
        t1 = time.perf_counter()
        info["dataset_complexity"] = dataset_complexity(
            x, canon_labels, groups=None if groups is None else np.asarray(groups)[order], max_rows=dataset_max_rows,
            seed=seed, device=dev, gram=gram)
        info["dataset_complexity"]["seconds"] = round(time.perf_counter() - t1, 3)
    return CGResult(scores=scores, params=params, info=info)


def solve_problem(problem: tuple[np.ndarray, int], source: Any, *, full: bool,
                  device: str) -> tuple[np.ndarray, float, float]:
    """One one-vs-rest problem, the unit of the CG score on every executor: ``problem = (idx, p)`` lists the
    negatives then the ``p`` positives (canonical indices); ``source`` is the Gram of all rows (``full``) or
    the unit rows, whose sub-Gram is computed here. Returns (the positives' gaps, jitter λ, yᵀH⁻¹y)."""
    idx, p = problem
    dev = resolve_device(device)
    h = _take(source, idx) if full else _gram_of(source[idx], dev)
    y = np.concatenate([-np.ones(len(idx) - p), np.ones(p)])
    return _gap_and_complexity(torch.as_tensor(h, device=dev), torch.as_tensor(y, device=dev), last=p)


def _take(gram: np.ndarray | torch.Tensor, idx: np.ndarray) -> np.ndarray | torch.Tensor:
    """The sub-Gram of rows and columns ``idx``."""
    if isinstance(gram, torch.Tensor):
        t = torch.as_tensor(idx, device=gram.device)
        return gram.index_select(0, t).index_select(1, t)
    return gram[np.ix_(idx, idx)]


def _full_gram(x: np.ndarray, dev: torch.device) -> np.ndarray | torch.Tensor:
    if dev.type == "cuda":
        return _gram_of(x, dev)
    return ntk_gram(x, threads=max(1, torch.get_num_threads()))


def _gram_of(x: np.ndarray, dev: torch.device) -> np.ndarray | torch.Tensor:
    if dev.type == "cuda":
        xt = torch.as_tensor(x, dtype=torch.float64, device=dev)
        u = (xt @ xt.T).clamp_(-1.0, 1.0)
        h = u * (math.pi - torch.arccos(u)) / (2.0 * math.pi)
        h.fill_diagonal_(0.5)
        return h
    return ntk_gram(x, threads=1)


def cg_score(
    features: np.ndarray,
    labels: np.ndarray,
    *,
    negatives: Negatives = "balanced",
    ratio: float = 1.0,
    repeats: int = 5,
    seed: int = 0,
    device: str | torch.device = "auto",
    max_class_size: int | None = None,
) -> np.ndarray:
    """Complexity-gap score of every sample (float64, higher = more atypical for its label / more valuable).

    ``features`` (n, ...) are flattened and scaled to unit norm; ``labels`` (n,) integer classes. One-vs-rest
    per class, CG(i) = (H⁻¹y)ᵢ²/(H⁻¹)ᵢᵢ = yᵀH⁻¹y − y₋ᵢᵀH₋ᵢ⁻¹y₋ᵢ averaged over ``repeats`` balanced draws of
    ``ratio × n_c`` negatives (or once with ``negatives="all"``). See the module docstring.
    """
    return cg_score_details(features, labels, negatives=negatives, ratio=ratio, repeats=repeats, seed=seed,
                            device=device, max_class_size=max_class_size).scores


# ------------------------------------------------------------------------------------------- adapter

MAX_PIXEL_VALUES = 3 * 64 * 64  # "auto" features: pixels up to this many values per image, embeddings above

DEFAULT_PARAMS: dict[str, Any] = {
    "negatives": "balanced",
    "ratio": 1.0,
    "repeats": 5,
    "features": "auto",
    "max_class_size": 5000,
    "dataset_level": True,
    "dataset_max_rows": 4096,
}


def adapter(ctx) -> Any:
    """Pipeline adapter: ``cg_score`` over all rows (train and test) with their given labels.

    ``features="pixels"`` (the paper's setting) uses the images, ``"embeddings"`` the network's penultimate
    features (the CG paper's kernel applies to any input representation); ``"auto"`` (default) uses pixels
    while an image has at most ``MAX_PIXEL_VALUES`` values (3·64·64: MNIST, CIFAR and the small demo images) and
    the embeddings above (a 224×224 photo's 150,528 pixel values would make every class problem gigabytes, and
    pixel-space angles between photos say little); the manifest records which. The adapter bounds the problem size with ``max_class_size=5000`` by default (classes above it are
    scored in chunks, see ``bench/results/cg_chunk.md``); set it to ``None`` in the config to score whole classes.
    With ``dataset_level`` (default) it also records the dataset's, each class's and each source's data
    complexity and bound in ``info``, on a seeded subsample of ``dataset_max_rows`` (4096) rows when the run is
    larger (one Cholesky costs O(m³): about 3 s at 4096 rows, 10 s at 6340 on the 2-core reference machine
    under load).
    """
    from core.scores.registry import ScoreResult

    params = {**DEFAULT_PARAMS, **(ctx.params or {})}
    if params["features"] == "auto":
        values = int(np.prod(ctx.data.images.shape[1:]))
        params["features"] = "pixels" if values <= MAX_PIXEL_VALUES or ctx.embeddings is None else "embeddings"
    if params["features"] == "pixels":
        feats = ctx.data.images
    elif params["features"] == "embeddings":
        feats = ctx.embeddings
    else:
        raise ValueError(f"cg features must be 'auto', 'pixels' or 'embeddings', got {params['features']!r}")
    ctx.progress("cg_score: NTK Gram and one-vs-rest gaps", None)
    res = cg_score_details(
        feats, ctx.data.labels, negatives=params["negatives"], ratio=params["ratio"], repeats=params["repeats"],
        seed=int(params.get("seed", ctx.seed)), device=ctx.device, max_class_size=params["max_class_size"],
        groups=getattr(ctx.data, "source", None), dataset_level=bool(params["dataset_level"]),
        dataset_max_rows=params["dataset_max_rows"], executor=(getattr(ctx, "extra", None) or {}).get("executor"),
    )
    out_params = {**res.params, "features": params["features"], "dataset_level": bool(params["dataset_level"]),
                  "dataset_max_rows": params["dataset_max_rows"]}
    return ScoreResult(columns={"cg_score": res.scores.astype(np.float64)}, params=out_params,
                       info=name_classes(res.info, list(getattr(ctx.data, "class_names", []) or [])))


def name_classes(info: dict[str, Any], class_names: list[str]) -> dict[str, Any]:
    """The same info with class indices replaced by class names (JSON keys are strings)."""
    def name(c: int) -> str:
        return class_names[c] if 0 <= c < len(class_names) else str(c)

    out = dict(info)
    if "class_complexity" in out:
        out["class_complexity"] = {name(int(c)): v for c, v in out["class_complexity"].items()}
    if "dataset_complexity" in out:
        d = dict(out["dataset_complexity"])
        d["classes"] = {name(int(c)): v for c, v in d["classes"].items()}
        out["dataset_complexity"] = d
    return out
