"""Does a summary train a better model than random subsets of the same size? (held-out accuracy)

The summary S is compared with ``k`` random subsets of |S| rows drawn (seeded) from the same pool. Each is
used to fit the same model, and accuracy is measured on the evaluation rows: held-out rows (``split ==
"test"``) of the pool that are not in the summary. Random subsets are drawn from the pool minus the
evaluation rows, so no model ever sees an evaluation row.

Models:

``logistic`` (default)
    Multinomial logistic regression on the run's embeddings (standardised with the training subset's mean
    and spread, L2 penalty ``1e-3``, full-batch L-BFGS). Seconds for any budget.
``ridge``
    The ridge head of ``core.subset_info`` (MSE to one-hot, λ relative to the mean squared feature norm).
``network``
    A fresh network of the run's architecture (``SmallCNN`` etc.) trained on the images of the subset with
    Adam for a fixed number of steps (independent of the subset size, so every subset gets the same
    optimisation budget), then evaluated on the images of the evaluation rows.

The embeddings come from the run's network, which was trained on every training row; a head on embeddings
therefore measures how well the subset *covers* a representation learned on the full data, while
``network`` retrains from pixels and measures what the subset alone teaches.

Nothing here imports streamlit: the dashboard runs ``python -m core.cli evaluate-summary`` in a subprocess
and reads its progress lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np

from core.errors import InfoscopeError

MODELS: tuple[str, ...] = ("logistic", "ridge", "network")


@dataclass
class SummaryEvaluation:
    """Accuracy of the summary's model and of each random subset's model on the same evaluation rows."""

    model: str
    n_train: int
    n_eval: int
    summary_acc: float
    random_accs: list[float]
    seed: int
    notes: list[str] = field(default_factory=list)

    @property
    def random_mean(self) -> float:
        return float(np.mean(self.random_accs)) if self.random_accs else float("nan")

    @property
    def random_sd(self) -> float:
        return float(np.std(self.random_accs, ddof=1)) if len(self.random_accs) > 1 else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "random_mean": self.random_mean, "random_sd": self.random_sd}


def _fit_predict_logistic(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int,
                          l2: float = 1e-3, iters: int = 200) -> np.ndarray:
    import torch

    mu, sd = xtr.mean(0), xtr.std(0) + 1e-6
    a = torch.as_tensor((xtr - mu) / sd, dtype=torch.float64)
    b = torch.as_tensor(ytr, dtype=torch.long)
    w = torch.zeros(a.shape[1], n_classes, dtype=torch.float64, requires_grad=True)
    c = torch.zeros(n_classes, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, c], max_iter=iters, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        opt.zero_grad()
        loss = torch.nn.functional.cross_entropy(a @ w + c, b) + l2 * (w * w).sum()
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        return (torch.as_tensor((xte - mu) / sd, dtype=torch.float64) @ w + c).argmax(1).numpy()


def _fit_predict_ridge(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int) -> np.ndarray:
    from core.subset_info import _design, effective_lambda, ridge_weights

    phi = _design(xtr)
    y = np.zeros((len(ytr), n_classes))
    y[np.arange(len(ytr)), ytr] = 1.0
    w = ridge_weights(phi, y, effective_lambda(phi, 1.0, True))
    return (_design(xte) @ w).argmax(1)


def _fit_predict_network(xtr: np.ndarray, ytr: np.ndarray, xte: np.ndarray, n_classes: int, *, arch: str,
                         seed: int, steps: int = 150, batch: int = 64, lr: float = 2e-3) -> np.ndarray:
    import torch

    from core.models.nets import build_model
    from core.models.training import predict_logits, seed_everything

    gen = seed_everything(seed)
    model = build_model(arch, tuple(xtr.shape[1:]), n_classes)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    xt = torch.as_tensor(xtr, dtype=torch.float32)
    yt = torch.as_tensor(ytr, dtype=torch.long)
    model.train()
    for _ in range(steps):
        b = torch.randint(0, len(xt), (min(batch, len(xt)),), generator=gen)
        if len(b) < 2:
            b = torch.cat([b, b])
        opt.zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
        opt.step()
    return predict_logits(model, xte, "cpu").argmax(1)


def evaluate_subsets(inputs: np.ndarray, labels: np.ndarray, summary: np.ndarray, eval_rows: np.ndarray,
                     pool: np.ndarray, *, k_random: int = 5, model: str = "logistic", seed: int = 0,
                     arch: str = "cnn", progress: Callable[[int, int, str], None] | None = None
                     ) -> SummaryEvaluation:
    """Held-out accuracy of ``model`` fitted on ``summary`` vs on ``k_random`` random subsets of the same size.

    Args:
        inputs: (n, d) embeddings, or (n, C, H, W) images for ``model="network"``.
        labels: (n,) integer classes.
        summary: row positions of the summary.
        eval_rows: row positions to evaluate on (must not overlap ``summary``).
        pool: row positions random subsets are drawn from (``eval_rows`` are removed from it).
        progress: ``progress(done, total, message)`` after each fitted model.
    """
    if model not in MODELS:
        raise InfoscopeError(f"unknown model {model!r}; one of {', '.join(MODELS)}")
    summary, eval_rows = np.asarray(summary, np.int64), np.asarray(eval_rows, np.int64)
    if len(summary) == 0:
        raise InfoscopeError("the summary is empty")
    if len(eval_rows) == 0:
        raise InfoscopeError("no held-out rows to evaluate on (the run has no split = 'test' rows outside the summary)")
    if np.intersect1d(summary, eval_rows).size:
        raise InfoscopeError("evaluation rows overlap the summary")
    labels = np.asarray(labels, np.int64)
    n_classes = int(labels.max()) + 1
    draw_from = np.setdiff1d(np.asarray(pool, np.int64), eval_rows)
    if len(draw_from) < len(summary):
        raise InfoscopeError(f"the pool has {len(draw_from)} rows outside the evaluation rows, fewer than the "
                             f"summary's {len(summary)}")
    rng = np.random.default_rng(seed)
    subsets = [summary] + [rng.choice(draw_from, len(summary), replace=False) for _ in range(k_random)]
    accs = []
    for j, rows in enumerate(subsets):
        xtr, ytr, xte = inputs[rows], labels[rows], inputs[eval_rows]
        if model == "logistic":
            pred = _fit_predict_logistic(np.asarray(xtr, np.float64), ytr, np.asarray(xte, np.float64), n_classes)
        elif model == "ridge":
            pred = _fit_predict_ridge(np.asarray(xtr, np.float64), ytr, np.asarray(xte, np.float64), n_classes)
        else:
            pred = _fit_predict_network(np.asarray(xtr, np.float32), ytr, np.asarray(xte, np.float32), n_classes,
                                        arch=arch, seed=seed + j)
        accs.append(float((pred == labels[eval_rows]).mean()))
        if progress is not None:
            progress(j + 1, len(subsets), "summary" if j == 0 else f"random subset {j}/{k_random}")
    return SummaryEvaluation(model=model, n_train=len(summary), n_eval=len(eval_rows), summary_acc=accs[0],
                             random_accs=accs[1:], seed=seed)


def _run_images(run: Any, ids: list[str]) -> np.ndarray:
    """Images of ``ids`` as float32 (n, C, H, W) in [0, 1] (one shape for all, else a clear error)."""
    out = []
    for sid in ids:
        im = run.image(sid)
        if im is None:
            raise InfoscopeError(f"image of {sid} is missing or unreadable")
        a = np.asarray(im, np.float32) / 255.0
        out.append(a[None] if a.ndim == 2 else a.transpose(2, 0, 1))
    if len({a.shape for a in out}) > 1:
        raise InfoscopeError("the images have different sizes; use --model logistic (embeddings) instead")
    return np.stack(out)


def evaluate_run_summary(run_path: str, summary_ids: list[str], *, k_random: int = 5, model: str = "logistic",
                         seed: int = 0, exclude_flagged: bool = True, exclude_removed: bool = True,
                         progress: Callable[[int, int, str], None] | None = None) -> SummaryEvaluation:
    """``evaluate_subsets`` on a run: labels with relabel decisions applied, the pool and the evaluation rows
    respecting the same exclusions as the summary (flagged / removed rows), evaluation on held-out rows."""
    from core.selection import effective_labels, eligibility
    from core.store import open_run

    run = open_run(run_path)
    df = run.df.merge(run.decisions.latest()[["sample_id", "decision", "relabel_to"]], on="sample_id", how="left")
    pos = {sid: i for i, sid in enumerate(df["sample_id"])}
    unknown = [s for s in summary_ids if s not in pos]
    if unknown:
        raise InfoscopeError(f"{len(unknown)} sample id(s) of the summary are not in the run, e.g. {unknown[0]!r}")
    summary = np.array(sorted({pos[s] for s in summary_ids}), dtype=np.int64)
    mask, _ = eligibility(df, exclude_flagged=exclude_flagged, exclude_removed=exclude_removed)
    names = effective_labels(df, "label_name")
    classes = {c: i for i, c in enumerate(sorted(set(names)))}
    labels = np.array([classes[c] for c in names], dtype=np.int64)
    test = (df["split"].astype(str) == "test").to_numpy() & mask
    test[summary] = False
    eval_rows = np.flatnonzero(test)
    pool = np.flatnonzero(mask)
    arch = str((run.manifest.get("model") or {}).get("name") or run.manifest.get("config", {}).get("model") or "cnn")
    if model == "network":
        rows = np.union1d(np.union1d(summary, eval_rows), pool)
        loaded = _run_images(run, df["sample_id"].iloc[rows].tolist())
        inputs = np.zeros((len(df), *loaded.shape[1:]), np.float32)
        inputs[rows] = loaded
    else:
        emb = run.embeddings()
        if emb is None:
            raise InfoscopeError("this run has no embeddings.npy")
        inputs = np.asarray(emb, np.float64)
    res = evaluate_subsets(inputs, labels, summary, eval_rows, pool, k_random=k_random, model=model, seed=seed,
                           arch=arch, progress=progress)
    res.notes.append(f"evaluated on {len(eval_rows)} held-out rows outside the summary"
                     + (", flagged and removed rows left out" if exclude_flagged and exclude_removed else ""))
    return res
