"""Resumable runs: every stage of a scoring run commits its outputs into the run folder's ``stages/`` and a
ledger records what is finished, so ``infoscope score --resume RUN`` continues a killed run.

A stage is a function of named inputs (the run's config and the outputs of the stages it consumes) whose
outputs are files: ``stages/<stage>/arrays.npz`` (numpy arrays, read back with ``allow_pickle=False``),
``meta.json``, ``<table>.parquet`` and ``<state>.pt`` (state dicts of trained networks, read back with
``torch.load(weights_only=True)`` only). Each file is written atomically (``core.store.atomic``); only then does
``stages/ledger.json`` (also atomic) record the stage as finished, with

- ``inputs``: SHA-256 of (stage name, config hash, the output fingerprints of the stages it consumes, a key);
- ``output``: SHA-256 over its files' SHA-256s (or, for a stage without files, a digest of what it produced);
- ``files``: each file's size and SHA-256, checked before a resumed run reads it.

A stage is reused only when the ledger holds it with the same input fingerprint and every file matches;
otherwise it is computed again (and so is every stage that consumed a changed output, since their input
fingerprints change with it). A stage killed before its commit left no ledger entry: it is redone, and
nothing it half-wrote is read. ``counts`` records how often each stage was started and committed over all
attempts of the run (a finished stage is never started again).

Test hooks (for tests only; they kill the process with SIGKILL, as ``kill -9`` would; ``<stage>`` is a stage
name or an ``fnmatch`` pattern such as ``subset.*``):
``INFOSCOPE_KILL_AFTER_STAGE=<stage>`` right after the first matching stage's ledger commit;
``INFOSCOPE_KILL_BEFORE_COMMIT=<stage>`` after its files are written but before its commit;
``INFOSCOPE_KILL_AFTER_SHARD=<stage>:<k>`` right after shard k (0-based) of a sharded stage is written;
``INFOSCOPE_SHARD_ROWS=<rows>`` sets the rows per shard (default 4,096), so small test runs have several.

Sharded stages (``StageRunner.sharded``: the frozen backbone's features of every row) also keep each finished
shard of rows (``stages/<stage>.shards/<inputs fingerprint>/<start>-<end>.npy``, written atomically) until the
stage commits, so a run killed in the middle of a long pass resumes from its last finished shard; shards of
other inputs (another config or data) sit under another fingerprint and are never read.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shutil
import signal
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import RunStoreError
from core.store import layout
from core.store.atomic import atomic_path, atomic_write_json
from core.store.run import sha256_file

STAGES = layout.STAGES
LEDGER = layout.STAGE_LEDGER
LOCK = "lock"
LEDGER_VERSION = 1
KILL_AFTER = "INFOSCOPE_KILL_AFTER_STAGE"
KILL_BEFORE_COMMIT = "INFOSCOPE_KILL_BEFORE_COMMIT"
KILL_AFTER_SHARD = "INFOSCOPE_KILL_AFTER_SHARD"
SHARD_ROWS = 4096

NOT_FINGERPRINTED = ("runs_dir", "name", "executor", "ray_address")
_NAME = re.compile(r"^[A-Za-z0-9_.+-]{1,120}$")


@dataclass
class StageOutput:
    """What a stage hands to the stages after it: arrays, JSON-able metadata, tables and network states."""

    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)
    states: dict[str, dict[str, Any]] = field(default_factory=dict)


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()


def config_hash(config: dict[str, Any]) -> str:
    """SHA-256 of a run config (``dataclasses.asdict(RunConfig)``) without the keys that name where the run
    lives or runs (``runs_dir``, ``name``, ``executor``, ``ray_address``): they do not change any output."""
    return _digest({k: v for k, v in config.items() if k not in NOT_FINGERPRINTED})


def samples_digest(data: Any, extra: Any = None, batch: int = 4096) -> str:
    """SHA-256 of a loaded dataset (``core.data.Samples``): ids, sources, paths, labels, ground truth, class
    names and every image's float32 values (read ``batch`` rows at a time), plus ``extra`` (JSON-able)."""
    h = hashlib.sha256()
    h.update(json.dumps([list(data.class_names), extra], default=str).encode())
    for name in ("sample_id", "source", "image_path"):
        h.update("\x1f".join(np.asarray(getattr(data, name)).astype(str).tolist()).encode())
        h.update(b"\x1e")
    for name in ("labels", "true_label", "is_mislabeled", "is_adversarial"):
        h.update(np.ascontiguousarray(getattr(data, name)).tobytes())
    n = len(data)
    h.update(str(tuple(data.image_shape)).encode())
    for i in range(0, n, batch):
        h.update(np.ascontiguousarray(np.asarray(data.images[i:i + batch], dtype=np.float32)).tobytes())
    return h.hexdigest()


def _kill_hook(var: str, stage: str) -> None:
    pattern = os.environ.get(var)
    if pattern and fnmatch.fnmatchcase(stage, pattern):  # test hook: die exactly as kill -9 would, no clean-up
        os.kill(os.getpid(), signal.SIGKILL)


class StageLedger:
    """The ``stages/`` folder of a run being written: committed stage outputs and ``ledger.json``.

    ``create`` starts it for a new run (storing the config), ``open`` reads it back for ``--resume`` (raising
    ``RunStoreError`` with one line when it is missing or damaged). The process holding a ledger also holds an
    exclusive lock on ``stages/lock`` (released when the process ends, even by SIGKILL), so two processes never
    write one run.
    """

    def __init__(self, run_path: Path, state: dict[str, Any]):
        self.run_path = Path(run_path)
        self.dir = self.run_path / STAGES
        self.state = state
        self._lock = threading.Lock()
        self._lock_fh: Any = None
        self.reused: list[str] = []
        self.computed: list[str] = []

    # ---- opening -------------------------------------------------------------------------------
    @classmethod
    def create(cls, run_path: Path, config: dict[str, Any], context: dict[str, Any]) -> StageLedger:
        """Start the ledger of a new run: ``config`` (the full run config) and ``context`` (what else the
        fingerprints depend on: device, version) are stored; no stage is finished yet."""
        now = datetime.now(UTC).isoformat(timespec="seconds")
        ledger = cls(run_path, {"version": LEDGER_VERSION, "config": config, "context": context,
                                "config_hash": config_hash({**config, "__context__": context}),
                                "attempts": [{"pid": os.getpid(), "started_at": now}],
                                "stages": {}, "counts": {}})
        ledger.dir.mkdir(parents=True, exist_ok=True)
        ledger.acquire()
        ledger._save()
        return ledger

    @classmethod
    def open(cls, run_path: Path) -> StageLedger:
        """Read the ledger of a partial run (for ``--resume``); a missing or damaged one is a one-line error."""
        p = Path(run_path) / STAGES / LEDGER
        try:
            state = json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError as e:
            raise RunStoreError(f"{run_path} cannot be resumed: it has no {STAGES}/{LEDGER} (not a partial run "
                                "written by this version of infoscope)") from e
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RunStoreError(f"{run_path} cannot be resumed: {STAGES}/{LEDGER} is damaged ({e})") from e
        problem = _ledger_problem(state)
        if problem:
            raise RunStoreError(f"{run_path} cannot be resumed: {STAGES}/{LEDGER} is damaged ({problem})")
        return cls(run_path, state)

    def acquire(self) -> None:
        """Take the run's exclusive lock for this process (non-blocking); raise if another process holds it."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock (the status file's pid and lease still guard the run)
            return
        fh = open(self.dir / LOCK, "a+")  # noqa: SIM115 - held open for the life of the run
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            fh.close()
            raise RunStoreError(f"{self.run_path} is being written by another process (its lock is held); "
                                "wait for it or stop it first") from e
        self._lock_fh = fh

    def release(self) -> None:
        if self._lock_fh is not None:
            self._lock_fh.close()
            self._lock_fh = None

    def set_context(self, context: dict[str, Any]) -> None:
        """The context of a resumed attempt (device, version); a changed one changes every input fingerprint,
        so nothing computed under the old one is reused."""
        self.state["context"] = context
        self.state["config_hash"] = config_hash({**self.state["config"], "__context__": context})

    def begin_attempt(self) -> None:
        """Record a resumed attempt."""
        self.state["attempts"].append({"pid": os.getpid(),
                                       "started_at": datetime.now(UTC).isoformat(timespec="seconds")})
        self._save()

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.state["config"])

    @property
    def attempts(self) -> int:
        return len(self.state["attempts"])

    def counts(self, name: str) -> dict[str, int]:
        return dict(self.state["counts"].get(name, {"started": 0, "committed": 0}))

    # ---- fingerprints --------------------------------------------------------------------------
    def output_fp(self, name: str) -> str:
        entry = self.state["stages"].get(name)
        if entry is None:
            raise RunStoreError(f"stage {name!r} is consumed before it was finished (a bug in the stage order)")
        return entry["output"]

    def inputs_fp(self, name: str, deps: list[str], key: Any = None) -> str:
        """Fingerprint of a stage's inputs: its name, the config hash, the outputs it consumes, a key."""
        return _digest({"stage": name, "config": self.state["config_hash"], "key": key,
                        "deps": {d: self.output_fp(d) for d in deps}})

    # ---- reading -------------------------------------------------------------------------------
    def finished(self, name: str, inputs: str) -> dict[str, Any] | None:
        """The ledger entry of ``name`` when it finished with these inputs and its files are intact, else None."""
        entry = self.state["stages"].get(name)
        if entry is None or entry.get("inputs") != inputs:
            return None
        for fname, meta in entry.get("files", {}).items():
            p = self.dir / name / fname
            try:
                if p.stat().st_size != meta["bytes"] or sha256_file(p) != meta["sha256"]:
                    return None
            except OSError:
                return None
        return entry

    def load(self, name: str) -> StageOutput:
        """The committed outputs of ``name`` (arrays without pickles, states with ``weights_only=True``)."""
        import torch

        files = self.state["stages"][name].get("files", {})
        d = self.dir / name
        out = StageOutput()
        if "arrays.npz" in files:
            with np.load(d / "arrays.npz", allow_pickle=False) as z:
                out.arrays = {k: z[k] for k in z.files}
        if "meta.json" in files:
            out.meta = json.loads((d / "meta.json").read_text(encoding="utf-8"))
        for fname in files:
            if fname.endswith(".parquet"):
                out.tables[fname[:-8]] = pd.read_parquet(d / fname)
            elif fname.endswith(".pt"):
                out.states[fname[:-3]] = torch.load(d / fname, map_location="cpu", weights_only=True)
        return out

    # ---- writing -------------------------------------------------------------------------------
    def begin(self, name: str) -> None:
        """A stage starts (again): drop any entry and files it left, count the start."""
        if not _NAME.match(name):
            raise RunStoreError(f"bad stage name {name!r}")
        with self._lock:
            self.state["stages"].pop(name, None)
            c = self.state["counts"].setdefault(name, {"started": 0, "committed": 0})
            c["started"] += 1
            self._save()
        shutil.rmtree(self.dir / name, ignore_errors=True)

    def commit(self, name: str, inputs: str, out: StageOutput | None, wall_time_s: float,
               output_fp: str | None = None) -> str:
        """Write ``out``'s files atomically, then record the stage as finished; return its output fingerprint
        (``output_fp`` when given: a stage without files, e.g. the data digest of ``load``)."""
        import torch

        d = self.dir / name
        files: dict[str, dict[str, Any]] = {}
        if out is not None:
            d.mkdir(parents=True, exist_ok=True)
            if out.arrays:
                with atomic_path(d / "arrays.npz", ".npz") as tmp, open(tmp, "wb") as fh:
                    np.savez(fh, **{k: np.asarray(v) for k, v in out.arrays.items()})
            if out.meta:
                atomic_write_json(d / "meta.json", out.meta)
            for tname, table in out.tables.items():
                with atomic_path(d / f"{tname}.parquet", ".parquet") as tmp:
                    table.to_parquet(tmp, index=False)
            for sname, state in out.states.items():
                with atomic_path(d / f"{sname}.pt", ".pt") as tmp:
                    torch.save({k: v.detach().cpu() if hasattr(v, "detach") else v for k, v in state.items()}, tmp)
            for p in sorted(d.iterdir()):
                if p.is_file() and not p.name.startswith("."):
                    files[p.name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        _kill_hook(KILL_BEFORE_COMMIT, name)
        fp = output_fp or _digest({"stage": name, "files": {k: v["sha256"] for k, v in files.items()}})
        with self._lock:
            self.state["stages"][name] = {
                "inputs": inputs, "output": fp, "files": files, "wall_time_s": round(float(wall_time_s), 3),
                "finished_at": datetime.now(UTC).isoformat(timespec="seconds"), "attempt": self.attempts}
            self.state["counts"].setdefault(name, {"started": 1, "committed": 0})["committed"] += 1
            self._save()
        self.computed.append(name)
        _kill_hook(KILL_AFTER, name)
        return fp

    def record_reuse(self, name: str) -> None:
        self.reused.append(name)

    def wall_time(self, name: str) -> float:
        return float(self.state["stages"].get(name, {}).get("wall_time_s", 0.0))

    def discard(self) -> None:
        """Remove ``stages/`` once the run is complete (its outputs are in the run's own files)."""
        self.release()
        trash = self.run_path / f".{STAGES}.done"
        with contextlib.suppress(OSError):
            os.replace(self.dir, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def _save(self) -> None:
        atomic_write_json(self.dir / LEDGER, self.state)


def _ledger_problem(state: Any) -> str:
    if not isinstance(state, dict):
        return f"holds a {type(state).__name__}, not an object"
    if state.get("version") != LEDGER_VERSION:
        return f"unknown ledger version {state.get('version')!r}"
    for key, typ in [("config", dict), ("stages", dict), ("counts", dict), ("attempts", list),
                     ("config_hash", str), ("context", dict)]:
        if not isinstance(state.get(key), typ):
            return f"{key!r} is missing or not a {typ.__name__}"
    for name, entry in state["stages"].items():
        if not (isinstance(entry, dict) and isinstance(entry.get("inputs"), str)
                and isinstance(entry.get("output"), str) and isinstance(entry.get("files", {}), dict)):
            return f"stage {name!r} has a malformed entry"
        if not _NAME.match(str(name)) or any("/" in f or f.startswith(".") for f in entry.get("files", {})):
            return f"stage {name!r} names a file outside its folder"
    return ""


class StageRunner:
    """Runs named stages against a ledger: reuse a finished stage's outputs, else compute and commit them.

    ``run(name, deps, compute, dump, restore)``: ``compute()`` gives the stage's value, ``dump(value)`` its
    files (a :class:`StageOutput`), ``restore(StageOutput)`` the value back from them. ``step`` names the timed
    step it belongs to (``core.pipeline.Steps``); a reused stage reports its recorded wall time.
    """

    def __init__(self, ledger: StageLedger, steps: Any):
        self.ledger = ledger
        self.steps = steps

    def sharded(self, name: str, deps: list[str], n: int, compute_shards: Any, *, key: Any = None,
                shard_rows: int = SHARD_ROWS, wave: int = 1) -> np.ndarray:
        """``compute_shards(bounds) -> [array per (lo, hi)]`` over ``range(n)`` in shards of ``shard_rows`` rows,
        up to ``wave`` missing shards per call (an executor maps them in parallel); each shard is written as soon
        as its wave returns and kept on disk for a resumed attempt (see the module docstring); the shards
        concatenated. Call inside the ``compute`` of ``run(name, deps, ...)`` with the same ``deps`` and ``key``."""
        shard_rows = int(os.environ.get("INFOSCOPE_SHARD_ROWS", shard_rows))
        if shard_rows < 1:
            raise RunStoreError(f"rows per shard must be ≥ 1, got {shard_rows}")
        folder = self.ledger.dir / f"{name}.shards" / self.ledger.inputs_fp(name, deps, key)[:24]
        folder.mkdir(parents=True, exist_ok=True)
        counts = self.ledger.state["counts"].setdefault(name, {"started": 0, "committed": 0})
        bounds = [(start, min(n, start + shard_rows)) for start in range(0, n, shard_rows)]
        paths = [folder / f"{lo:010d}-{hi:010d}.npy" for lo, hi in bounds]
        parts: list[np.ndarray | None] = []
        for (lo, hi), path in zip(bounds, paths, strict=True):
            part = None
            if path.exists():
                try:
                    part = np.load(path, allow_pickle=False)
                    if len(part) != hi - lo or (part.dtype.kind == "f" and not np.isfinite(part).all()):
                        part = None
                except (OSError, ValueError):
                    part = None
            if part is not None:
                counts["shards_reused"] = counts.get("shards_reused", 0) + 1
            parts.append(part)
        missing = [k for k, p in enumerate(parts) if p is None]
        for w in range(0, len(missing), max(1, int(wave))):
            todo = missing[w:w + max(1, int(wave))]
            outs = compute_shards([bounds[k] for k in todo])
            for k, part in zip(todo, outs, strict=True):
                part = np.asarray(part)
                with atomic_path(paths[k], ".npy") as tmp, open(tmp, "wb") as fh:
                    np.save(fh, part)
                parts[k] = part
                with self.ledger._lock:  # counted at once: a kill after this shard keeps the count
                    counts["shards_computed"] = counts.get("shards_computed", 0) + 1
                    self.ledger._save()
                _kill_hook(KILL_AFTER_SHARD, f"{name}:{k}")
        with self.ledger._lock:
            self.ledger._save()
        return np.concatenate(parts) if parts else np.zeros((0,), np.float32)

    def run(self, name: str, deps: list[str], compute: Any, dump: Any, restore: Any, *,
            step: str | None = None, key: Any = None) -> Any:
        inputs = self.ledger.inputs_fp(name, deps, key)
        if self.ledger.finished(name, inputs) is not None:
            self.ledger.record_reuse(name)
            if step is not None:
                self.steps.reused(step, self.ledger.wall_time(name))
            return restore(self.ledger.load(name))
        self.ledger.begin(name)
        t0 = time.perf_counter()
        if step is not None:
            with self.steps.step(step):
                value = compute()
        else:
            value = compute()
        wall = time.perf_counter() - t0
        self.ledger.commit(name, inputs, dump(value), wall)
        shutil.rmtree(self.ledger.dir / f"{name}.shards", ignore_errors=True)  # the stage's own files hold it
        return value
