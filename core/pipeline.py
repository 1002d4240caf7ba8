"""One scoring run, end to end: sources → corruptions → split → train → adversarial copies → scores →
map / neighbours / duplicates → flags → run store. Every step's wall time goes into the manifest.

``score_run(RunConfig(...))`` returns the run directory. A failure anywhere marks the run failed (with the
error) and re-raises; nothing half-written is ever reported as complete.
"""

from __future__ import annotations

import hashlib
import os
import platform
import sys
import tempfile
import time
import tomllib
import types
import typing
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

import core
from core.adversarial_evidence import evidence_row_cap
from core.data import (
    load_sources,
    pair_label_noise,
    parse_pairs,
    parse_undersample,
    stratified_split,
    symmetric_label_noise,
    undersample,
)
from core.data.dataset import Samples
from core.data.image_store import take_rows
from core.device import resolve_device
from core.duplicates import near_duplicates
from core.embedding import map_2d, neighbors
from core.errors import InfoscopeError, RunStoreError
from core.executors import Executor, make_executor, shard_bounds
from core.flags import thresholds_record
from core.models.training import TrainConfig, TrainResult, embed, train_model
from core.scores.registry import SCORE_SPECS, ScoreContext, ScoreResult, parse_score_names
from core.stages import StageLedger, StageOutput, StageRunner, samples_digest
from core.store import RunWriter
from core.store.layout import CROSSFIT_COLUMNS, DUPLICATES, default_runs_dir

DEMO_SOURCES = ("mnist=mnist5k", "digits=digits")
# held-out rows the network gets wrong that get the network-based adversarial measurements (reverse steps,
# noise draws: ~40 network passes each) for 32×32 images; fewer for larger ones (core.adversarial_evidence.
# evidence_row_cap); beyond it, those whose pixel neighbours side most with the label
MAX_EVIDENCE_ROWS = 5000


@dataclass
class RunConfig:
    """Everything that defines a run (the CLI flags and the TOML config file map onto these fields)."""

    sources: list[str] = field(default_factory=list)  # no silent demo: `infoscope demo` scores that
    name: str | None = None
    runs_dir: str | None = None
    seed: int = 0
    device: str = "auto"
    skip_bad: bool = False
    image_size: int | None = None
    max_image_pixels: int | None = None  # largest decoded image; default $INFOSCOPE_MAX_PIXELS or 50 M
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
    freeze_backbone: bool | None = None  # None: frozen for an ImageNet backbone on CPU or with pretrained weights
    # your own model's outputs instead of training here (core.user_outputs)
    features: str | None = None
    pred_probs: str | None = None
    epochs: int | None = None  # None: from the dataset size (core.models.training.auto_epochs) + early stopping
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
    flag_train_adversarial: bool = False  # also flag training rows as adversarial (off: only held-out rows)
    min_heldout_acc: float = 0.75  # below this held-out accuracy the flags are withheld and a warning is given
    # where the parallel steps run (core.executors): not part of any stage fingerprint (same numbers either way)
    executor: str = "local"
    ray_address: str | None = None

    @classmethod
    def from_toml(cls, path: str | Path, **overrides: Any) -> RunConfig:
        """Read a TOML file (top-level keys = field names, ``[scores.<name>]`` tables = score parameters),
        then apply ``overrides`` (CLI flags that were given)."""
        data = cls.toml_values(path)
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**data)

    @classmethod
    def toml_values(cls, path: str | Path) -> dict[str, Any]:
        """The fields a TOML config file sets (type-checked), as ``{field: value}``."""
        path = Path(path)
        if path.is_dir():
            raise InfoscopeError(f"--config {path} is a folder; give a TOML file")
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise InfoscopeError(f"config file not found: {path}") from e
        except UnicodeDecodeError as e:
            raise InfoscopeError(f"config file {path} is not UTF-8 text ({e.reason} at byte {e.start})") from e
        except OSError as e:
            raise InfoscopeError(f"config file {path} cannot be read: {e.strerror or e}") from e
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
        for key, value in data.items():  # name the file in type errors (the CLI flags are typed by typer)
            _check_type(key, value, _HINTS.get(key, Any), f"{path}: ")
        return data

    def validate(self) -> None:
        """Check every option before any data is loaded or any run folder is created (one-line errors)."""
        for f in fields(self):
            _check_type(f.name, getattr(self, f.name), _HINTS.get(f.name, Any))
        if not self.sources:
            raise InfoscopeError("no data source given: pass --source NAME=SPEC (e.g. --source mine=folder:PATH), "
                                 "or run `infoscope demo` to score the bundled demo")
        for s in self.sources:
            _check_utf8(s, "--source")
        if isinstance(self.scores, str) and not self.scores.strip(", "):
            raise InfoscopeError(f"--scores {self.scores!r} names no score; give e.g. loss,cg_score or 'all'")
        self.scores = parse_score_names(self.scores)
        if not self.scores:
            raise InfoscopeError("--scores names no score; give e.g. loss,cg_score or 'all'")
        for name, lo, hi, v in [("label_noise", 0, 0.95, self.label_noise), ("adversarial", 0, 0.5, self.adversarial),
                                ("holdout", 0, 0.9, self.holdout), ("pair_noise_rate", 0, 1, self.pair_noise_rate),
                                ("duplicate_threshold", 0, 1, self.duplicate_threshold),
                                ("min_heldout_acc", 0, 1, self.min_heldout_acc)]:
            if not lo <= v <= hi:
                raise InfoscopeError(f"{name} must be in [{lo}, {hi}], got {v}")
        for name, v in [("epochs", self.epochs), ("batch_size", self.batch_size), ("knn_k", self.knn_k)]:
            if v is not None and v < 1:
                raise InfoscopeError(f"{name} must be at least 1, got {v}")
        if self.image_size is not None and not 1 <= int(self.image_size) <= 4096:
            raise InfoscopeError(f"image_size must be in [1, 4096], got {self.image_size}")
        if self.max_image_pixels is not None and self.max_image_pixels < 1:
            raise InfoscopeError(f"max_image_pixels must be at least 1, got {self.max_image_pixels}")
        if not 0 <= self.seed < 2**63:
            raise InfoscopeError(f"--seed must be in [0, 2^63), got {self.seed}")
        if not 0 < self.eps <= 1:
            raise InfoscopeError(f"--eps must be in (0, 1] (pixels lie in [0, 1]), got {self.eps}")
        if not self.lr > 0:
            raise InfoscopeError(f"lr must be positive, got {self.lr}")
        if self.attack not in ("fgsm", "pgd"):
            raise InfoscopeError(f"unknown attack {self.attack!r}: fgsm or pgd")
        from core.models.backbones import is_backbone
        from core.models.nets import MODEL_NAMES

        if self.model not in MODEL_NAMES and not is_backbone(self.model):
            raise InfoscopeError(f"unknown --model {self.model!r}; choose one of {', '.join(MODEL_NAMES)} or timm:<name>")
        if (self.features or self.pred_probs) and (self.adversarial > 0 or self.undersample):
            raise InfoscopeError("--features/--pred-probs align with the loaded rows; --adversarial and --undersample "
                                 "change the rows and cannot be combined with them")
        if self.freeze_backbone and not is_backbone(self.model):
            raise InfoscopeError(f"freeze_backbone needs an ImageNet backbone (e.g. resnet18), not {self.model!r}")
        if self.map_method not in ("umap", "pca"):
            raise InfoscopeError(f"unknown --map {self.map_method!r}; choose umap or pca")
        if self.weights is not None and self.weights != "torchvision":  # torchvision: its own download/cache
            _check_utf8(self.weights, "--weights")
            w = Path(self.weights).expanduser()
            if not w.is_file():
                raise InfoscopeError(f"--weights {w}: {'is a folder' if w.is_dir() else 'file not found'}")
        si_params = {**self.score_params.get("si_weights", {}), **self.score_params.get("si_function", {})}
        if str(si_params.get("method", "head")) == "head":
            from core.scores.si_crossfit import check_params

            check_params(si_params)
        if self.undersample:
            parse_undersample(self.undersample)
        if self.label_noise_pairs:
            parse_pairs(self.label_noise_pairs)
        for name, v in [("name", self.name), ("runs_dir", self.runs_dir)]:
            if v is not None:
                _check_utf8(v, f"--{name.replace('_', '-')}")
        from core.executors import check_executor

        check_executor(self.executor, self.ray_address)

    def frozen(self, dev: torch.device) -> bool:
        """Whether only the head is trained: ``freeze_backbone`` if set, else True for an ImageNet backbone
        on CPU or with pretrained weights (features computed once, head trained on them)."""
        from core.models.backbones import is_backbone

        if self.freeze_backbone is not None:
            return bool(self.freeze_backbone)
        return is_backbone(self.model) and (dev.type == "cpu" or bool(self.weights))


def _field_hints() -> dict[str, Any]:
    try:
        return typing.get_type_hints(RunConfig)
    except Exception:  # noqa: BLE001 - an unresolvable annotation: check what can be resolved
        return {f.name: Any for f in fields(RunConfig)}


_HINTS = _field_hints()
_TYPE_WORDS = {int: "an integer", float: "a number", str: "a string", bool: "true or false", list: "a list",
               dict: "a table"}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_type_ok(value, h) for h in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is Any:
        return True
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_type_ok(v, item) for v in value)
    if origin is dict:
        key, item = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(_type_ok(k, key) and _type_ok(v, item) for k, v in value.items())
    return True  # a type this checker does not know: left to the code that uses it


def _describe(hint: Any) -> str:
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return " or ".join(_describe(h) for h in typing.get_args(hint) if h is not type(None))
    if typing.get_origin(hint) is list:
        (item,) = typing.get_args(hint) or (Any,)
        return f"a list of {_describe(item).removeprefix('a ').removeprefix('an ')}s"
    return _TYPE_WORDS.get(typing.get_origin(hint) or hint, str(hint))


def _check_type(name: str, value: Any, hint: Any, where: str = "") -> None:
    """Raise a one-line error when option ``name`` does not hold a value of type ``hint``."""
    if name == "scores" and isinstance(value, str):
        return  # "a,b,c" or "all"
    if not _type_ok(value, hint):
        raise InfoscopeError(f"{where}option {name!r} should be {_describe(hint)}, got {type(value).__name__} "
                             f"{value!r}"[:300])


def _check_utf8(text: str, option: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        shown = text.encode("utf-8", "backslashreplace").decode("ascii", "backslashreplace")
        raise InfoscopeError(f"{option} {shown}: not valid UTF-8 (rename the file or folder)") from e


def _check_runs_dir(runs_dir: Path) -> None:
    """The runs folder must be (or become) a writable folder: checked before any data is loaded."""
    if runs_dir.exists() and not runs_dir.is_dir():
        raise InfoscopeError(f"--runs-dir {runs_dir} is a file, not a folder")
    try:
        runs_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=runs_dir):
            pass
    except OSError as e:
        raise InfoscopeError(f"--runs-dir {runs_dir} is not writable: {e.strerror or e}") from e


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

    def reused(self, name: str, wall_time_s: float) -> None:
        """A step whose stage finished before an interruption: its recorded wall time, nothing computed."""
        self.report(name, "reused (finished before the interruption)", 1.0)
        self.times[name] = round(float(wall_time_s), 3)
        self.report(name, "done", 1.0)


def _versions() -> dict[str, str]:
    import duckdb
    import faiss
    import pyarrow

    return {"infoscope": core.__version__, "python": sys.version.split()[0], "torch": torch.__version__,
            "numpy": np.__version__, "pandas": pd.__version__, "pyarrow": pyarrow.__version__,
            "duckdb": duckdb.__version__, "faiss": getattr(faiss, "__version__", "?"),
            "platform": platform.platform()}


def _load(cfg: RunConfig, executor: Executor | None = None) -> tuple[Samples, list[dict]]:
    from core.models.nets import default_image_size, model_channels

    side = cfg.image_size or default_image_size(cfg.model)  # 224 for ImageNet backbones, else most common
    size = (side, side) if side else None
    data = load_sources(cfg.sources, image_size=size, skip_bad=cfg.skip_bad, channels=model_channels(cfg.model),
                        max_pixels=cfg.max_image_pixels, executor=executor)
    data.load_info["image_size_from"] = ("--image-size" if cfg.image_size else
                                         f"default of {cfg.model}" if side else data.load_info.get("size_rule"))
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
    """Score a dataset as ``cfg`` says and write a complete run; return its directory.

    Every stage commits its outputs into the run's ``stages/`` as it finishes (``core.stages``), so a killed
    run can be continued with :func:`resume_run`; ``stages/`` is removed once the run is complete."""
    cfg.validate()
    dev = resolve_device(cfg.device)
    steps = Steps(report)
    runs_dir = Path(cfg.runs_dir).expanduser() if cfg.runs_dir else default_runs_dir()
    _check_runs_dir(runs_dir)
    executor = make_executor(cfg.executor, cfg.ray_address)  # joins the cluster before any run folder exists
    try:
        executor.check_device(dev)
        with steps.step("load"):
            data, corruptions = _load(cfg, executor)
        with RunWriter(runs_dir, cfg.name or "run") as writer:
            ledger = StageLedger.create(writer.path, asdict(cfg), _stage_context(dev))
            _check_load(ledger, cfg, data, corruptions, steps)
            try:
                path = _score_into(writer, ledger, cfg, data, corruptions, dev, steps, executor)
            finally:
                ledger.release()
    finally:
        executor.close()
    _carry_decisions(path, steps)
    return path


def _stage_context(dev: torch.device) -> dict[str, str]:
    """What every stage's fingerprint depends on besides the config: the device and the infoscope version."""
    return {"device": str(dev), "infoscope": core.__version__}


def find_partial_run(run: str | Path, runs_dir: str | Path | None = None) -> Path:
    """The run folder ``run`` names: a path to it, or its name inside ``runs_dir`` (default runs folder)."""
    p = Path(run).expanduser()
    if p.is_dir():
        return p
    root = Path(runs_dir).expanduser() if runs_dir else default_runs_dir()
    if not Path(run).is_absolute() and (root / str(run)).is_dir():
        return root / str(run)
    raise InfoscopeError(f"--resume {run}: no such run folder (nor a run of that name in {root})")


def config_conflicts(stored: RunConfig, given: dict[str, Any]) -> list[str]:
    """The options in ``given`` (field -> value, as the CLI or a TOML file sets them; ``score_params`` merged
    per score) whose value differs from ``stored``, as ``"name: run has X, given Y"`` (``runs_dir`` ignored: it
    only says where to find the run; ``executor`` / ``ray_address`` too: a run may continue on another
    executor, the numbers are the same)."""
    import copy

    cand = copy.deepcopy(stored)
    for key, value in given.items():
        if key in _RESUME_FREE or value is None:
            continue
        if key == "score_params":
            for score, params in value.items():
                cand.score_params[score] = {**cand.score_params.get(score, {}), **params}
        elif key not in {f.name for f in fields(RunConfig)}:
            raise InfoscopeError(f"unknown option {key!r}")
        else:
            setattr(cand, key, value)
    cand.validate()
    a, b = asdict(stored), asdict(cand)
    return [f"{k}: the run has {a[k]!r}, given {b[k]!r}"[:200] for k in a if k not in _RESUME_FREE and a[k] != b[k]]


_RESUME_FREE = ("runs_dir", "executor", "ray_address")


def resume_run(run: str | Path, *, runs_dir: str | Path | None = None, given: dict[str, Any] | None = None,
               report: Callable[[str, str, float | None], None] | None = None) -> Path:
    """Continue a killed (or failed) run from its last finished stage; return the complete run's directory.

    ``run`` is the partial run's folder or its name in ``runs_dir``. Its config comes from the run itself
    (``stages/ledger.json``); ``given`` options must agree with it. The sources are read again and must give
    the same data (their digest is in the ledger); every stage whose inputs are unchanged and whose files are
    intact is read back instead of computed. Raises ``InfoscopeError`` (one line) when the folder is not a
    partial run, is complete, is still being written, is damaged, or the options or the data differ.
    """
    from core.store.run import COMPLETE, RUNNING, read_status

    path = find_partial_run(run, runs_dir)
    status, reason = read_status(path)
    if status == COMPLETE:
        raise RunStoreError(f"run {path.name} is already complete: nothing to resume")
    ledger = StageLedger.open(path)
    ledger.acquire()
    try:
        status, reason = read_status(path)
        if status == RUNNING:
            raise RunStoreError(f"run {path.name} is still {reason}; stop it first or wait")
        try:
            stored = RunConfig(**ledger.config)
        except TypeError as e:
            raise RunStoreError(f"{path} cannot be resumed: its stored config does not fit this version ({e})") from e
        conflicts = config_conflicts(stored, given or {})
        if conflicts:
            raise InfoscopeError(f"--resume {path.name}: option(s) differ from the run's own config ("
                                 f"{'; '.join(conflicts)}); drop them to continue the run, or start a new run")
        cfg = stored
        if given and given.get("executor") is not None:  # the executor may change; the numbers do not
            cfg.executor, cfg.ray_address = given["executor"], given.get("ray_address")
        elif given and given.get("ray_address") is not None:
            cfg.ray_address = given["ray_address"]
        cfg.validate()
        dev = resolve_device(cfg.device)
        steps = Steps(report)
        executor = make_executor(cfg.executor, cfg.ray_address)
        try:
            executor.check_device(dev)
            with steps.step("load"):
                data, corruptions = _load(cfg, executor)
            ledger.set_context(_stage_context(dev))
            _check_load(ledger, cfg, data, corruptions, steps)  # before the run is taken over: a refusal changes nothing
            ledger.begin_attempt()
            with RunWriter.reopen(path) as writer:
                out = _score_into(writer, ledger, cfg, data, corruptions, dev, steps, executor)
        finally:
            executor.close()
    finally:
        ledger.release()
    _carry_decisions(out, steps)
    return out


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


def _score_into(writer: RunWriter, ledger: StageLedger, cfg: RunConfig, data: Samples, corruptions: list[dict],
                dev: torch.device, steps: Steps, executor: Executor | None = None) -> Path:
    """The stages after ``load``, each reused from ``ledger`` when it finished before (``core.stages``):
    split → train → adversarial → features → duplicates → one stage per score adapter → map → flags, then
    the run's files and manifest."""
    executor = executor or make_executor("local")
    stages = StageRunner(ledger, steps)
    split = stages.run("split", ["load"], lambda: stratified_split(data.labels, cfg.holdout, cfg.seed),
                       lambda sp: StageOutput(arrays={"split": sp.astype(str)}),
                       lambda o: o.arrays["split"].astype(object))
    data_deps = ["load", "split"]
    tcfg = _train_config(cfg, int((split == "train").sum()), dev)
    # frozen backbone with weights from a file or hub: its features do not depend on the seed, compute them once
    feature_cache: dict[int, np.ndarray] = {}

    user = _user_arrays(cfg, data)  # None unless --features / --pred-probs

    if tcfg.freeze_backbone and cfg.weights and user is None:  # w₀ from a file: one pass, sharded, resumable
        def backbone_pass() -> np.ndarray:
            import copy

            from core.models.training import build_initial_model

            net0 = build_initial_model(tcfg, tuple(data.image_shape), data.n_classes)
            steps.progress("backbone features (computed once, in shards)", None)
            gpu = dev.type == "cuda"
            net = copy.deepcopy(net0).cpu() if executor.remote else net0.to(dev)
            unit = partial(backbone_shard, device="cuda" if gpu else str(dev))

            def waves(bounds: list[tuple[int, int]]) -> list[np.ndarray]:  # the same unit on either executor
                out = executor.map_batches(unit, bounds, shared=(net, data.images), gpu=gpu)
                return np.split(out, np.cumsum([hi - lo for lo, hi in bounds])[:-1])

            return stages.sharded("backbone_features", data_deps, len(data), waves,
                                  wave=getattr(executor, "workers", None) or 1 if executor.remote else 1)

        feature_cache[len(data)] = stages.run(
            "backbone_features", data_deps, backbone_pass, lambda f: StageOutput(arrays={"features": f}),
            lambda o: o.arrays["features"], step="backbone features")

    def train(d: Samples, sp: np.ndarray, seed: int) -> TrainResult:
        if user is not None:
            return _user_result(user, d, sp, tcfg, seed, dev, steps)
        cached = feature_cache.get(len(d)) if tcfg.freeze_backbone and cfg.weights else None
        return train_model(d.images, d.labels, np.flatnonzero(sp == "train"), d.n_classes, tcfg, seed=seed,
                           device=dev, test_idx=np.flatnonzero(sp == "test"), progress=steps.progress,
                           features=cached)

    def restore_train(o: StageOutput) -> TrainResult:
        return _restore_train(o, tcfg, data.image_shape, data.n_classes, dev)

    result = stages.run("train", data_deps, lambda: train(data, split, cfg.seed), _dump_train, restore_train,
                        step="train")
    budget = tcfg.epochs
    if tcfg.patience:  # retrains (SI, depth) reproduce the kept epochs exactly, without early stopping
        tcfg = replace(tcfg, epochs=int(result.epoch_logits.shape[0]), patience=0)
    quality = model_quality(result, data.n_classes, cfg.min_heldout_acc)
    model = result.model
    epoch_logits = result.epoch_logits
    if cfg.adversarial > 0:
        adv, adv_epochs, record = stages.run(
            "adversarial", [*data_deps, "train"], lambda: _adversarial_copies(cfg, data, result, dev),
            _dump_adversarial, _restore_adversarial, step="adversarial")
        corruptions.append(record)
        data = Samples.concat([data, adv])
        split = np.concatenate([split, np.full(len(adv), "test", dtype=split.dtype)])
        epoch_logits = np.concatenate([result.epoch_logits, adv_epochs], axis=1)
        data_deps = [*data_deps, "adversarial"]
    logits = epoch_logits[-1]

    def features() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if result.features is not None:  # frozen backbone: reuse the features computed for training
            n0 = len(result.features)
            extra = (embed(model, take_rows(data.images, np.arange(n0, len(data))), dev) if len(data) > n0
                     else result.features[:0])
            emb = np.concatenate([result.features, extra]).astype(np.float32)
        else:
            emb = embed_rows(model, data.images, dev, executor)
        return (emb, *neighbors(emb, cfg.knn_k, str(dev), executor=executor))

    emb, nb_dist, nb_idx = stages.run(
        "features", [*data_deps, "train"], features,
        lambda v: StageOutput(arrays={"embeddings": v[0], "neighbor_dist": v[1], "neighbor_idx": v[2]}),
        lambda o: (o.arrays["embeddings"], o.arrays["neighbor_dist"], o.arrays["neighbor_idx"]), step="features")
    if result.features is not None:
        feature_cache[len(result.features)], feature_cache[len(data)] = result.features, emb
    model_deps = [*data_deps, "train"]

    def train_again(seed: int) -> TrainResult:
        """Another network of the run's recipe (a sub-stage: committed, reused on resume)."""
        return stages.run(f"retrain.seed{int(seed)}", model_deps, lambda: train(data, split, seed), _dump_train,
                          restore_train)

    def train_subset(rows: np.ndarray, seed: int, from_w0: bool = False) -> torch.nn.Module:
        """The run's recipe trained on ``rows`` only (cross-fitting: features for rows it never saw); a
        sub-stage keyed by the rows and the seed. ``from_w0``: start from the run's own network's w₀ (its
        initialisation or pretrained weights), so that the seed only orders the batches."""
        rows = np.asarray(rows)
        key = hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]
        w0 = result.init_state if from_w0 else None
        return stages.run(
            f"subset.{key}.seed{int(seed)}{'.w0' if from_w0 else ''}", model_deps,
            lambda: train_model(data.images, data.labels, rows, data.n_classes, tcfg, seed=seed, device=dev,
                                init_state=w0, record_logits=False).model,
            lambda m: StageOutput(states={"model": m.state_dict()}, meta={"kind": "net"}),
            lambda o: _rebuild_model(o.states["model"], tcfg, data.image_shape, data.n_classes, dev))

    def duplicates() -> tuple[pd.DataFrame, np.ndarray, dict[str, Any]]:
        dups = near_duplicates(data.images, data.sample_id, threshold=cfg.duplicate_threshold, device=str(dev))
        row_of = {sid: i for i, sid in enumerate(data.sample_id.astype(str))}
        dup_pairs = np.array([(row_of[a], row_of[b]) for a, b in zip(dups["sample_id_a"], dups["sample_id_b"],
                                                                    strict=True)], dtype=int).reshape(-1, 2)
        return dups, dup_pairs, {"threshold": cfg.duplicate_threshold, **dups.attrs}

    dups, dup_pairs, dup_search = stages.run(
        "duplicates", data_deps, duplicates,
        lambda v: StageOutput(tables={"duplicates": v[0]}, arrays={"pairs": v[1]}, meta={"search": v[2]}),
        lambda o: (o.tables["duplicates"], o.arrays["pairs"], o.meta.get("search", {})), step="duplicates")

    ctx_base = dict(data=data, split=split, model=model, init_state=result.init_state, logits=logits,
                    epoch_logits=epoch_logits, embeddings=emb, device=dev, seed=cfg.seed,
                    train_model=lambda s: train_again(s).model, progress=steps.progress,
                    extra={"train_run": train_again, "train_subset": train_subset, "neighbor_dist": nb_dist,
                           "neighbor_idx": nb_idx, "train_config": asdict(tcfg), "duplicate_pairs": dup_pairs,
                           "executor": executor,
                           # features of a frozen backbone at w0 (or the user's --features), for a head-only SI
                           "frozen_features": emb if (tcfg.freeze_backbone and user is None)
                           or (user is not None and user["features"] is not None) else None})
    score_deps = [*model_deps, "features", "duplicates"]
    columns: dict[str, np.ndarray] = {}
    score_meta: dict[str, dict] = {}
    score_arrays: dict[str, dict[str, np.ndarray]] = {}
    score_stages: list[str] = []
    for names in _group_scores(cfg.scores).values():
        spec = SCORE_SPECS[names[0]]
        params: dict[str, Any] = {}
        for n in (*names, *spec.companions):
            params.update(cfg.score_params.get(n, {}))
        label = "+".join(names)
        skip = user["unavailable"] if user is not None else {}

        def compute(names: list[str] = names, spec: Any = spec, params: dict[str, Any] = params,
                    skip: dict[str, str] = skip) -> ScoreResult:
            if all(n in skip for n in names):
                res = ScoreResult({n: np.full(len(data), np.nan) for n in (*names, *spec.companions)})
            else:
                res = spec.load()(ScoreContext(params=params, **ctx_base))
            for col in set(res.columns) & set(skip):
                res.columns[col] = np.full(len(data), np.nan)
                res.info = {**res.info, f"{col}_not_computed": skip[col]}
            for col, values in res.columns.items():
                values = np.asarray(values, dtype=np.float64)
                if values.shape != (len(data),):
                    raise InfoscopeError(f"score {col} returned shape {values.shape}, expected ({len(data)},)")
                res.columns[col] = values
            return res

        res = stages.run(f"score.{label}", score_deps, compute, _dump_score, _restore_score, step=f"score {label}")
        score_stages.append(f"score.{label}")
        columns.update(res.columns)
        score_arrays.update(res.arrays)
        for col in res.columns:
            if col in CROSSFIT_COLUMNS:  # per-row evidence for the flags, not a score of its own
                continue
            s = SCORE_SPECS.get(col)
            score_meta[col] = {"params": res.params, "info": res.info, "wall_time_s": steps.times[f"score {label}"],
                               "direction": s.direction if s else "", "summary": s.summary if s else "",
                               "paper": s.paper if s else "", "computed_with": names}

    coords = stages.run("map", ["features"], lambda: map_2d(emb, method=cfg.map_method, seed=cfg.seed),
                        lambda c: StageOutput(arrays={"coords": c}), lambda o: o.arrays["coords"], step="map")

    table = build_table(data, split, logits, columns, coords)

    evidence_cap = evidence_row_cap(data.image_shape, MAX_EVIDENCE_ROWS)

    def flags() -> tuple[pd.DataFrame, pd.DataFrame]:
        from core.adversarial_evidence import adversarial_evidence, pixel_neighbours
        from core.flags import compute_flags

        judge = None if cfg.flag_train_adversarial else table["split"].to_numpy().astype(str) != "train"
        px_idx = pixel_neighbours(data.images, k=cfg.knn_k)
        evidence = adversarial_evidence(model, data.images, data.labels, table["pred"].to_numpy(), k=cfg.knn_k,
                                        seed=cfg.seed, device=dev, judge=judge,
                                        max_model_rows=evidence_cap,
                                        reference=table["split"].to_numpy().astype(str) == "train",
                                        pixel_idx=px_idx)
        t = table.copy()
        for c in evidence.columns:
            t[c] = evidence[c].values
        return evidence, compute_flags(t, emb, thresholds=cfg.flag_thresholds or None,
                                       flag_train_adversarial=cfg.flag_train_adversarial,
                                       class_names=list(data.class_names), trust_model=quality["trust_flags"],
                                       pixel_neighbours=px_idx)

    evidence, flag_table = stages.run("flags", [*score_deps, *score_stages, "map"], flags,
                                      lambda v: StageOutput(tables={"evidence": v[0], "flags": v[1]}),
                                      lambda o: (o.tables["evidence"], o.tables["flags"]), step="flags")
    for part in (evidence, flag_table):
        for c in part.columns:
            table[c] = part[c].values

    with steps.step("write"):
        table["image_path"] = writer.write_images(data.images, data.image_path)
        writer.write_samples(table)
        writer.write_embeddings(emb)
        writer.write_neighbors(nb_idx)
        writer.write_table(DUPLICATES, dups)
        for name, arrays in score_arrays.items():
            writer.write_arrays(name, arrays)
    manifest = {
        "name": cfg.name or "run",
        "infoscope_version": core.__version__,
        "versions": _versions(),
        "device": str(dev),
        "executor": executor.info(),
        "config": asdict(cfg),
        "sources": _source_summary(cfg, data),
        "class_names": list(data.class_names),
        "image_roots": image_roots(data.image_path),
        "n_samples": len(data),
        "image_shape": list(data.image_shape),
        "image_mode": dict(data.load_info),
        "split_counts": {s: int((split == s).sum()) for s in ("train", "test")},
        "skipped": {"count": len(data.skipped), "rows": [list(s) for s in data.skipped[:1000]]},
        "corruptions": corruptions,
        "model": {"name": cfg.model, "n_params": result.n_params, "epochs": tcfg.epochs,
                  "epochs_requested": cfg.epochs, "epoch_budget": budget, "best_epoch": result.best_epoch,
                  "heldout_loss": [round(v, 5) for v in result.heldout_loss],
                  "train_acc": result.train_acc, "test_acc": result.test_acc, "weights": cfg.weights,
                  "weights_info": getattr(model, "weights_info", None), "frozen_backbone": tcfg.freeze_backbone,
                  "train_config": asdict(tcfg), "quality": quality},
        "scores": score_meta,
        "map": {"method": cfg.map_method},
        "near_duplicates": int(len(dups)),
        "near_duplicate_search": dup_search,
        "flags": {"n_mislabeled": int(table["flag_mislabeled"].sum()),
                  "n_adversarial": int(table["flag_adversarial"].sum()),
                  "thresholds": cfg.flag_thresholds, "thresholds_used": thresholds_record(cfg.flag_thresholds),
                  "withheld": not quality["trust_flags"],
                  "train_rows_adversarial": cfg.flag_train_adversarial,
                  "adversarial_measured_rows": int(np.isfinite(table["noise_flip"]).sum())
                  if "noise_flip" in table.columns else 0,
                  "adversarial_measured_cap": evidence_cap},
        "user_outputs": None if user is None else {
            "features": cfg.features, "pred_probs": cfg.pred_probs, "not_computed": user["unavailable"],
            "outputs_from": "--pred-probs" if cfg.pred_probs else "linear head trained on --features"},
        "steps": dict(steps.times),
        "wall_time_s": round(sum(steps.times.values()), 3),
    }
    if ledger.attempts > 1:  # a resumed run says what it read back and what it computed
        manifest["resumed"] = {"attempts": ledger.attempts, "reused_stages": list(ledger.reused),
                               "computed_stages": list(ledger.computed),
                               "stage_counts": {k: dict(v) for k, v in ledger.state["counts"].items()}}
    path = writer.finish(manifest)
    ledger.discard()
    return path


EMBED_SHARD_ROWS = 4096
"""Rows per features shard (a multiple of ``embed``'s batch of 512, so the local executor makes the calls it
always made)."""


def embed_shard(bounds: tuple[int, int], model: Any, images: Any, device: str) -> np.ndarray:
    """Penultimate features of rows ``[lo, hi)`` of ``images`` (an array or an image store, read lazily):
    the unit of the features stage on every executor."""
    lo, hi = bounds
    part = images[lo:hi] if isinstance(images, np.ndarray) else take_rows(images, np.arange(lo, hi))
    return embed(model, part, device)


def backbone_shard(bounds: tuple[int, int], model: Any, images: Any, device: str) -> np.ndarray:
    """A frozen backbone's penultimate features of rows ``[lo, hi)`` (the network at w₀, eval mode): the unit
    of the sharded ``backbone_features`` stage on every executor."""
    from core.models.backbones import backbone_features

    lo, hi = bounds
    return backbone_features(model, take_rows(images, np.arange(lo, hi)), device)


def embed_rows(model: Any, images: Any, dev: torch.device, executor: Executor) -> np.ndarray:
    """``embed(model, images)`` over shards of :data:`EMBED_SHARD_ROWS` rows on ``executor`` (a remote one gets
    a CPU copy of the network; its actors move it to their GPU when the run's device is CUDA)."""
    import copy

    bounds = shard_bounds(len(images), EMBED_SHARD_ROWS)
    gpu = dev.type == "cuda"
    net = copy.deepcopy(model).cpu() if executor.remote else model
    device = "cuda" if gpu else str(dev)
    return executor.map_batches(partial(embed_shard, device=device), bounds, shared=(net, images),
                                gpu=gpu).astype(np.float32)


def _user_arrays(cfg: RunConfig, data: Samples) -> dict[str, Any] | None:
    """The validated ``--features`` / ``--pred-probs`` arrays and the scores they cannot give (None if neither)."""
    if not (cfg.features or cfg.pred_probs):
        return None
    from core.user_outputs import load_features, load_pred_probs, unavailable_scores

    feats = load_features(cfg.features, len(data)) if cfg.features else None
    probs = load_pred_probs(cfg.pred_probs, len(data), data.n_classes, data.class_names) if cfg.pred_probs else None
    return {"features": feats, "probs": probs, "unavailable": unavailable_scores(feats is not None, probs is not None)}


def _user_result(user: dict[str, Any], data: Samples, split: np.ndarray, tcfg: TrainConfig, seed: int,
                 dev: torch.device, steps: Steps) -> TrainResult:
    """A TrainResult from the user's arrays: their probabilities as the outputs (one snapshot), or a linear head
    trained on their features. ``features`` is the space for neighbours, the map and the flags."""
    from core.models.training import train_linear_head
    from core.user_outputs import probs_to_logits

    train_idx, test_idx = np.flatnonzero(split == "train"), np.flatnonzero(split == "test")
    feats, probs = user["features"], user["probs"]
    if probs is None:
        return train_linear_head(feats, data.labels, train_idx, data.n_classes, tcfg, seed=seed, device=dev,
                                 test_idx=test_idx, progress=steps.progress)
    logits = probs_to_logits(probs)
    pred = logits.argmax(1)

    def acc(idx: np.ndarray) -> float | None:
        return float((pred[idx] == data.labels[idx]).mean()) if len(idx) else None

    return TrainResult(model=None, init_state={}, epoch_logits=logits[None], train_acc=acc(train_idx) or 0.0,
                       test_acc=acc(test_idx), wall_time_s=0.0, n_params=0,
                       features=(feats if feats is not None else probs).astype(np.float32))


def _train_config(cfg: RunConfig, n_train: int, dev: torch.device) -> TrainConfig:
    """The recipe; without ``cfg.epochs`` the length comes from the dataset size (``auto_epochs``), with early
    stopping on held-out loss after max(``AUTO_PATIENCE``, ⌈budget/4⌉) epochs without improvement."""
    from core.models.training import AUTO_PATIENCE, auto_epochs

    frozen = cfg.frozen(dev)
    if cfg.epochs is not None:
        return TrainConfig(model=cfg.model, epochs=cfg.epochs, batch_size=cfg.batch_size, lr=cfg.lr,
                           weights=cfg.weights, freeze_backbone=frozen)
    epochs = auto_epochs(n_train, cfg.batch_size)
    # patience grows with the budget: on a small dataset an epoch is a few noisy steps
    return TrainConfig(model=cfg.model, epochs=epochs, batch_size=cfg.batch_size, lr=cfg.lr, weights=cfg.weights,
                       patience=max(AUTO_PATIENCE, -(-epochs // 4)), freeze_backbone=frozen)


def model_quality(result: TrainResult, n_classes: int, min_acc: float) -> dict[str, Any]:
    """Whether the network is good enough for its flags to mean anything: held-out accuracy (on the given
    labels) at least ``min_acc``. Returns ``heldout_acc``, ``train_acc``, ``chance`` (1/k), ``min_heldout_acc``,
    ``trust_flags`` and a one-line ``message`` (a warning when not trusted)."""
    acc = result.test_acc
    chance = 1.0 / max(1, n_classes)
    if acc is None:
        ok, msg = True, "no held-out rows: the network's accuracy is unknown; treat flags with care"
    elif acc >= min_acc:
        ok, msg = True, f"held-out accuracy {acc:.1%} (≥ {min_acc:.0%}): flags are usable leads"
    else:
        ok = False
        msg = (f"WARNING: held-out accuracy {acc:.1%} is below {min_acc:.0%} (chance {chance:.0%}): the network is "
               f"too weak for its flags to be trusted, so no image is flagged (suspicion ranks are kept). Train "
               f"longer (--epochs), use pretrained --weights, add data, or check the labels (heavy label noise "
               f"also lowers held-out accuracy).")
    return {"heldout_acc": acc, "train_acc": result.train_acc, "chance": chance, "min_heldout_acc": min_acc,
            "trust_flags": ok, "message": msg}


def _adversarial_copies(cfg: RunConfig, data: Samples, result: TrainResult,
                        dev: torch.device) -> tuple[Samples, np.ndarray, dict]:
    """Attacked copies of ``cfg.adversarial``·n rows, crafted against the trained network, to append to the run:
    ``(copies, their epoch logits (E, m, k), corruption record)``.

    Sources are rows the network classifies correctly whose label is clean (seeded choice). The copies are
    held-out rows (split ``test``): never trained on, so their training-dynamics scores are NaN, while the
    network's outputs, CG, prediction depth, uniqueness and the flags cover them. Their epoch logits are
    NaN (they did not exist while training) except the last (the final network's).
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
    adv_logits = predict_logits(result.model, adv.images, dev)
    epochs = np.full((result.epoch_logits.shape[0], len(adv), adv_logits.shape[1]), np.nan, np.float32)
    epochs[-1] = adv_logits
    return adv, epochs, {"kind": "adversarial", "split": "test", **record}


# ---- stage outputs: what each stage commits into stages/ and how it is read back (core.stages) ----------

_SAMPLE_TEXT = ("source", "sample_id", "image_path")
_SAMPLE_ARRAYS = ("labels", "true_label", "is_mislabeled", "is_adversarial")


def _dump_adversarial(value: tuple[Samples, np.ndarray, dict]) -> StageOutput:
    adv, epochs, record = value
    arrays = {"images": np.asarray(adv.images), "epoch_logits": epochs,
              **{k: np.asarray(getattr(adv, k)) for k in _SAMPLE_ARRAYS},
              **{k: np.asarray(getattr(adv, k)).astype(str) for k in _SAMPLE_TEXT}}
    return StageOutput(arrays=arrays, meta={"record": record, "class_names": list(adv.class_names),
                                            "load_info": adv.load_info, "skipped": [list(x) for x in adv.skipped]})


def _restore_adversarial(o: StageOutput) -> tuple[Samples, np.ndarray, dict]:
    a = o.arrays
    adv = Samples(images=a["images"], class_names=list(o.meta["class_names"]),
                  **{k: a[k] for k in _SAMPLE_ARRAYS}, **{k: a[k].astype(object) for k in _SAMPLE_TEXT},
                  skipped=[tuple(x) for x in o.meta["skipped"]], load_info=dict(o.meta["load_info"]))
    return adv, a["epoch_logits"], o.meta["record"]


def _dump_train(r: TrainResult) -> StageOutput:
    """A TrainResult as files: the network's and the initial state dicts, epoch logits, features, figures."""
    from core.models.training import LinearHead

    kind = "none" if r.model is None else "linear" if isinstance(r.model, LinearHead) else "net"
    arrays = {"epoch_logits": r.epoch_logits}
    if r.features is not None:
        arrays["features"] = np.asarray(r.features)
    states = {} if r.model is None else {"model": r.model.state_dict(), "init": r.init_state}
    meta = {"kind": kind, "train_acc": r.train_acc, "test_acc": r.test_acc, "wall_time_s": r.wall_time_s,
            "n_params": r.n_params, "heldout_loss": list(r.heldout_loss), "best_epoch": r.best_epoch,
            "weights_info": getattr(r.model, "weights_info", None),
            "in_features": int(r.model.classifier.in_features) if kind == "linear" else None}
    return StageOutput(arrays=arrays, meta=meta, states=states)


def _rebuild_model(state: dict[str, Any], tcfg: TrainConfig, image_shape: tuple[int, int, int], n_classes: int,
                   dev: torch.device, kind: str = "net", in_features: int | None = None) -> Any:
    """The network of the run's recipe with a committed state dict loaded (strict), in eval mode on ``dev``.
    Built without its pretrained weights (the state dict holds every parameter) and without touching the
    global random state."""
    from core.models.training import LinearHead, build_initial_model

    with torch.random.fork_rng(devices=[]):
        if kind == "linear":
            model = LinearHead(int(in_features or 0), n_classes)
        else:
            model = build_initial_model(replace(tcfg, weights=None), tuple(image_shape), n_classes)
    model.load_state_dict(state)
    return model.to(dev).eval()


def _restore_train(o: StageOutput, tcfg: TrainConfig, image_shape: tuple[int, int, int], n_classes: int,
                   dev: torch.device) -> TrainResult:
    m = o.meta
    model = None
    if m["kind"] != "none":
        model = _rebuild_model(o.states["model"], tcfg, image_shape, n_classes, dev, m["kind"], m["in_features"])
        if m.get("weights_info") is not None:
            model.weights_info = m["weights_info"]
    return TrainResult(model=model, init_state=o.states.get("init", {}), epoch_logits=o.arrays["epoch_logits"],
                       train_acc=m["train_acc"], test_acc=m["test_acc"], wall_time_s=m["wall_time_s"],
                       n_params=m["n_params"], features=o.arrays.get("features"), heldout_loss=m["heldout_loss"],
                       best_epoch=m["best_epoch"])


def _dump_score(res: ScoreResult) -> StageOutput:
    arrays = {f"c{i}": v for i, v in enumerate(res.columns.values())}
    index = []
    for group, named in res.arrays.items():
        for key, v in named.items():
            index.append([group, key, f"a{len(index)}"])
            arrays[index[-1][2]] = np.asarray(v)
    return StageOutput(arrays=arrays, meta={"columns": list(res.columns), "params": res.params, "info": res.info,
                                            "arrays": index})


def _restore_score(o: StageOutput) -> ScoreResult:
    arrays: dict[str, dict[str, np.ndarray]] = {}
    for group, key, name in o.meta["arrays"]:
        arrays.setdefault(group, {})[key] = o.arrays[name]
    return ScoreResult({c: o.arrays[f"c{i}"] for i, c in enumerate(o.meta["columns"])}, o.meta["params"],
                       o.meta["info"], arrays)


def _input_files(cfg: RunConfig) -> dict[str, str | None]:
    """SHA-256 of the files a run reads besides its sources: a local ``--weights`` file, ``--features``,
    ``--pred-probs`` (None where not given)."""
    from core.store.run import sha256_file

    local_weights = cfg.weights if cfg.weights not in (None, "torchvision", "timm") else None
    return {k: sha256_file(Path(v).expanduser()) if v else None
            for k, v in (("weights", local_weights), ("features", cfg.features), ("pred_probs", cfg.pred_probs))}


def _check_load(ledger: StageLedger, cfg: RunConfig, data: Samples, corruptions: list[dict], steps: Steps) -> None:
    """The ``load`` stage is always run (the images are not copied into the run); its digest (the data, the
    injected corruptions, the weights / features / probabilities files) goes into the ledger, and a resumed
    run must read the same inputs as the run it continues."""
    inputs = ledger.inputs_fp("load", [])
    digest = samples_digest(data, {"corruptions": corruptions, "files": _input_files(cfg)})
    entry = ledger.state["stages"].get("load")
    if entry is not None and entry.get("inputs") == inputs:
        if entry.get("output") != digest:
            raise InfoscopeError("--resume: the sources (or the --weights / --features / --pred-probs files) give "
                                 "other data than when this run started; start a new run")
        return
    ledger.begin("load")
    ledger.commit("load", inputs, None, steps.times.get("load", 0.0), output_fp=digest)


def image_roots(image_path: np.ndarray, max_roots: int = 256) -> list[str]:
    """The folders holding the run's own image files (resolved, nested ones collapsed): the only places
    outside ``images/`` that a reader of the run may open (``Run.locate_image``)."""
    dirs = sorted({str(Path(p).resolve().parent) for p in image_path if p})
    roots: list[str] = []
    for d in dirs:
        if not roots or not (d == roots[-1] or d.startswith(roots[-1].rstrip("/") + "/")):
            roots.append(d)
    if len(roots) > max_roots:
        roots = [os.path.commonpath(roots)]
    return roots


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
