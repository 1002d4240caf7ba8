"""One scoring run, end to end: sources → corruptions → split → train → adversarial copies → scores →
map / neighbours / duplicates → flags → run store. Every step's wall time goes into the manifest.

``score_run(RunConfig(...))`` returns the run directory. A failure anywhere marks the run failed (with the
error) and re-raises; nothing half-written is ever reported as complete.
"""

from __future__ import annotations

import platform
import sys
import time
import tomllib
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import core
from core.data import load_sources, pair_label_noise, stratified_split, symmetric_label_noise, undersample
from core.data.dataset import Samples
from core.device import resolve_device
from core.embedding import map_2d, near_duplicates, neighbors
from core.errors import InfoscopeError
from core.models.training import TrainConfig, TrainResult, embed, train_model
from core.scores.registry import SCORE_SPECS, ScoreContext, ScoreResult, parse_score_names
from core.store import RunWriter
from core.store.layout import DUPLICATES, default_runs_dir

DEMO_SOURCES = ("mnist=mnist5k", "digits=digits")


@dataclass
class RunConfig:
    """Everything that defines a run (the CLI flags and the TOML config file map onto these fields)."""

    sources: list[str] = field(default_factory=lambda: list(DEMO_SOURCES))
    name: str | None = None
    runs_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    skip_bad: bool = False
    image_size: int | None = None
    # corruptions (ground truth recorded)
    label_noise: float = 0.0
    label_noise_pairs: str | None = None
    pair_noise_rate: float = 0.3
    undersample: str | None = None
    adversarial: float = 0.0
    attack: str = "fgsm"
    eps: float = 0.15
    # model and training
    model: str = "cnn"
    weights: str | None = None
    epochs: int = 8
    batch_size: int = 128
    lr: float = 2e-3
    holdout: float = 0.2
    # scores
    scores: list[str] = field(default_factory=lambda: list(SCORE_SPECS))
    score_params: dict[str, dict[str, Any]] = field(default_factory=dict)
    map_method: str = "umap"
    knn_k: int = 10
    duplicate_threshold: float = 0.995
    flag_thresholds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a TOML file (top-level keys = field names, ``[scores.<name>]`` tables = score parameters),
        then apply ``overrides`` (CLI flags that were given)."""
        try:
            data = tomllib.loads(Path(path).read_text())
        except FileNotFoundError as e:
            raise InfoscopeError(f"config file not found: {path}") from e
        except tomllib.TOMLDecodeError as e:
            raise InfoscopeError(f"config file {path} is not valid TOML: {e}") from e
        score_tables = data.pop("scores", None)
        if isinstance(score_tables, dict):
            names = score_tables.pop("names", None)
            data["score_params"] = {k: v for k, v in score_tables.items() if isinstance(v, dict)}
            if names is not None:
                data["scores"] = names
        elif score_tables is not None:
            data["scores"] = score_tables
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InfoscopeError(f"unknown key(s) in {path}: {', '.join(unknown)}")
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    def validate(self) -> None:
        self.scores = parse_score_names(self.scores)
        if not self.sources:
            raise InfoscopeError("no --source given")
        for name, lo, hi, v in [("label_noise", 0, 0.95, self.label_noise), ("adversarial", 0, 0.5, self.adversarial),
                                ("holdout", 0, 0.9, self.holdout), ("pair_noise_rate", 0, 1, self.pair_noise_rate)]:
            if not lo <= v <= hi:
                raise InfoscopeError(f"{name} must be in [{lo}, {hi}], got {v}")
        if self.epochs < 1:
            raise InfoscopeError("epochs must be at least 1")
        if self.attack not in ("fgsm", "pgd"):
            raise InfoscopeError(f"unknown attack {self.attack!r}: fgsm or pgd")


def demo_config(**overrides: Any) -> RunConfig:
    """The demo recipe: MNIST-5k + sklearn digits, 10% symmetric label noise, class 3 kept at 15%, 2% FGSM
    copies, every score."""
    cfg = RunConfig(sources=list(DEMO_SOURCES), name="demo", label_noise=0.10, undersample="3:0.15",
                    adversarial=0.02, attack="fgsm", eps=0.15)
    for k, v in overrides.items():
        setattr(cfg, k, v)
    return cfg


class Steps:
    """Times named steps and forwards progress to a reporter ``(step, message, fraction)``."""

    def __init__(self, report: Callable[[str, str, float | None], None] | None = None):
        self.times: dict[str, float] = {}
        self.report = report or (lambda step, msg, frac: None)
        self.current = ""

    @contextmanager
    def step(self, name: str):
        self.current = name
        self.report(name, "", 0.0)
        t0 = time.perf_counter()
        yield
        self.times[name] = round(time.perf_counter() - t0, 3)
        self.report(name, "done", 1.0)

    def progress(self, msg: str, frac: float | None = None) -> None:
        self.report(self.current, msg, frac)


def _versions() -> dict[str, str]:
    import duckdb
    import faiss
    import pyarrow

    return {"infoscope": core.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__, "faiss": getattr(faiss, "__version__", "?"),
            "platform": platform.platform()}


def _load(cfg: RunConfig) -> tuple[Samples, list[dict]]:
    size = (cfg.image_size, cfg.image_size) if cfg.image_size else None
    data = load_sources(cfg.sources, image_size=size, skip_bad=cfg.skip_bad)
    records: list[dict] = []
    if cfg.undersample:
        data, rec = undersample(data, cfg.undersample, cfg.seed)
        records.append(rec)
    if cfg.label_noise > 0:
        data, rec = symmetric_label_noise(data, cfg.label_noise, cfg.seed + 1)
        records.append(rec)
    if cfg.label_noise_pairs:
        data, rec = pair_label_noise(data, cfg.label_noise_pairs, cfg.pair_noise_rate, cfg.seed + 2)
        records.append(rec)
    return data, records


def _group_scores(names: list[str]) -> dict[str, list[str]]:
    """Adapter -> the requested score names it produces (each adapter runs once)."""
    groups: dict[str, list[str]] = {}
    for n in names:
        groups.setdefault(SCORE_SPECS[n].adapter, []).append(n)
    return groups


def score_run(cfg: RunConfig, report: Callable[[str, str, float | None], None] | None = None) -> Path:
    """Score a dataset as ``cfg`` says and write a complete run; return its directory."""
    cfg.validate()
    dev = resolve_device(cfg.device)
    steps = Steps(report)
    runs_dir = Path(cfg.runs_dir) if cfg.runs_dir else default_runs_dir()
    with steps.step("load"):
        data, corruptions = _load(cfg)
    with RunWriter(runs_dir, cfg.name or "run") as writer:
        path = _score_into(writer, cfg, data, corruptions, dev, steps)
    _carry_decisions(path, steps)
    return path


def _carry_decisions(path: Path, steps: Steps) -> None:
    """Copy the previous run's decisions (same dataset) into the new run by sample id (``core.store.carry``);
    a failure here never costs the finished run."""
    from core.store.carry import carry_over

    try:
        rep = carry_over(path)
    except Exception as e:  # noqa: BLE001 - the run is complete; say why nothing was carried
        steps.report("carry over decisions", f"skipped: {type(e).__name__}: {e}", 1.0)
        return
    if rep.carried:
        steps.report("carry over decisions", f"{rep.carried} decided sample(s) from run {rep.source_run} "
                     f"(undo in the dashboard)", 1.0)


def _score_into(writer: RunWriter, cfg: RunConfig, data: Samples, corruptions: list[dict],
                dev: torch.device, steps: Steps) -> Path:
    tcfg = TrainConfig(model=cfg.model, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                       weights=cfg.weights)
    split = stratified_split(data.labels, cfg.holdout, cfg.seed)

    def train(d: Samples, sp: np.ndarray, seed: int) -> TrainResult:
        return train_model(d.images, d.labels, np.flatnonzero(sp == "train"), d.n_classes, tcfg, seed=seed,
                           device=dev, test_idx=np.flatnonzero(sp == "test"), progress=steps.progress)

    with steps.step("train"):
        result = train(data, split, cfg.seed)
    model = result.model
    epoch_logits = result.epoch_logits
    if cfg.adversarial > 0:
        with steps.step("adversarial"):
            data, split, epoch_logits = _inject_adversarial(cfg, data, split, result, corruptions, dev)
    logits = epoch_logits[-1]
    with steps.step("features"):
        emb = embed(model, data.images, dev)
        nb_dist, nb_idx = neighbors(emb, cfg.knn_k, str(dev))

    def train_again(seed: int) -> TrainResult:
        return train(data, split, seed)

    ctx_base = dict(data=data, split=split, model=model, init_state=result.init_state, logits=logits,
                    epoch_logits=epoch_logits, embeddings=emb, device=dev, seed=cfg.seed,
                    train_model=lambda s: train_again(s).model, progress=steps.progress,
                    extra={"train_run": train_again, "neighbor_dist": nb_dist, "neighbor_idx": nb_idx,
                           "train_config": asdict(tcfg)})
    columns: dict[str, np.ndarray] = {}
    score_meta: dict[str, dict] = {}
    for names in _group_scores(cfg.scores).values():
        spec = SCORE_SPECS[names[0]]
        params: dict[str, Any] = {}
        for n in (*names, *spec.companions):
            params.update(cfg.score_params.get(n, {}))
        label = "+".join(names)
        with steps.step(f"score {label}"):
            res: ScoreResult = spec.load()(ScoreContext(params=params, **ctx_base))
        for col, values in res.columns.items():
            values = np.asarray(values, dtype=np.float64)
            if values.shape != (len(data),):
                raise InfoscopeError(f"score {col} returned shape {values.shape}, expected ({len(data)},)")
            columns[col] = values
        for col in res.columns:
            s = SCORE_SPECS.get(col)
            score_meta[col] = {"params": res.params, "info": res.info, "wall_time_s": steps.times[f"score {label}"],
                               "direction": s.direction if s else "", "summary": s.summary if s else "",
                               "paper": s.paper if s else "", "computed_with": names}

    with steps.step("map"):
        coords = map_2d(emb, method=cfg.map_method, seed=cfg.seed)
    with steps.step("duplicates"):
        dups = near_duplicates(data.images, data.sample_id, threshold=cfg.duplicate_threshold, device=str(dev))

    table = build_table(data, split, logits, columns, coords)
    with steps.step("flags"):
        from core.flags import compute_flags

        flags = compute_flags(table, emb, thresholds=cfg.flag_thresholds or None)
        for c in flags.columns:
            table[c] = flags[c].values

    with steps.step("write"):
        table["image_path"] = writer.write_images(data.images, data.image_path)
        writer.write_samples(table)
        writer.write_embeddings(emb)
        writer.write_neighbors(nb_idx)
        writer.write_table(DUPLICATES, dups)
    manifest = {
        "name": cfg.name or "run",
        "infoscope_version": core.__version__,
        "versions": _versions(),
        "device": str(dev),
        "config": asdict(cfg),
        "sources": _source_summary(cfg, data),
        "class_names": list(data.class_names),
        "n_samples": len(data),
        "image_shape": list(data.image_shape),
        "split_counts": {s: int((split == s).sum()) for s in ("train", "test")},
        "skipped": {"count": len(data.skipped), "rows": [list(s) for s in data.skipped[:1000]]},
        "corruptions": corruptions,
        "model": {"name": cfg.model, "n_params": result.n_params, "epochs": cfg.epochs,
                  "train_acc": result.train_acc, "test_acc": result.test_acc, "weights": cfg.weights,
                  "train_config": asdict(tcfg)},
        "scores": score_meta,
        "map": {"method": cfg.map_method},
        "near_duplicates": int(len(dups)),
        "flags": {"n_mislabeled": int(table["flag_mislabeled"].sum()),
                  "n_adversarial": int(table["flag_adversarial"].sum()),
                  "thresholds": cfg.flag_thresholds},
        "steps": dict(steps.times),
        "wall_time_s": round(sum(steps.times.values()), 3),
    }
    return writer.finish(manifest)


def _inject_adversarial(cfg: RunConfig, data: Samples, split: np.ndarray, result: TrainResult,
                        corruptions: list[dict], dev: torch.device) -> tuple[Samples, np.ndarray, np.ndarray]:
    """Append attacked copies of ``cfg.adversarial``·n rows, crafted against the trained network.

    Sources are rows the network classifies correctly whose label is clean (seeded choice). The copies are
    held-out rows (split ``test``): never trained on, so their training-dynamics scores are NaN, while the
    network's outputs, CG, prediction depth, uniqueness and the flags cover them. Their epoch logits are
    NaN (they did not exist while training).
    """
    from core.attacks import make_adversarial_copies
    from core.models.training import predict_logits

    n_adv = max(1, int(round(cfg.adversarial * len(data))))
    rng = np.random.default_rng(cfg.seed + 3)
    pred = result.epoch_logits[-1].argmax(1)
    candidates = np.flatnonzero((pred == data.labels) & ~data.is_mislabeled)
    rows = np.sort(rng.choice(candidates, size=min(n_adv, len(candidates)), replace=False))
    adv, record = make_adversarial_copies(result.model, data, rows, attack=cfg.attack, eps=cfg.eps,
                                          seed=cfg.seed, device=dev)
    corruptions.append({"kind": "adversarial", "split": "test", **record})
    adv_logits = predict_logits(result.model, adv.images, dev)
    epochs = np.full((result.epoch_logits.shape[0], len(adv), adv_logits.shape[1]), np.nan, np.float32)
    epochs[-1] = adv_logits
    return (Samples.concat([data, adv]), np.concatenate([split, np.full(len(adv), "test", dtype=split.dtype)]),
            np.concatenate([result.epoch_logits, epochs], axis=1))


def _source_summary(cfg: RunConfig, data: Samples) -> list[dict]:
    from core.data import parse_spec

    out = []
    for s in cfg.sources:
        spec = parse_spec(s)
        text = f"{spec.kind}:{spec.path}" if spec.path else spec.kind
        out.append({"name": spec.name, "spec": text, "count": int((data.source == spec.name).sum())})
    return out


def build_table(data: Samples, split: np.ndarray, logits: np.ndarray, columns: dict[str, np.ndarray],
                coords: np.ndarray) -> pd.DataFrame:
    """The ``samples.parquet`` table: identity, ground truth, model outputs, scores, map coordinates."""
    from core.scores.baselines import cross_entropy, margin, softmax

    names = np.asarray(data.class_names, dtype=object)
    pred = logits.argmax(1)
    t = pd.DataFrame({
        "sample_id": data.sample_id.astype(str), "source": data.source.astype(str), "split": split.astype(str),
        "label": data.labels, "label_name": names[data.labels], "image_path": data.image_path.astype(str),
        "true_label": data.true_label, "true_label_name": names[data.true_label],
        "is_mislabeled": data.is_mislabeled, "is_adversarial": data.is_adversarial,
        "pred": pred, "pred_name": names[pred], "pred_prob": softmax(logits.astype(np.float64)).max(1),
        "loss": cross_entropy(logits, data.labels), "margin": margin(logits, data.labels),
    })
    for col, values in columns.items():
        t[col] = values
    t["umap_x"], t["umap_y"] = coords[:, 0], coords[:, 1]
    return t
