"""Writing and reading run directories (``runs/<run_id>/``), as DESIGN.md's run store contract says.

Life of a run: ``RunWriter`` creates the folder and ``status.json`` = running (with its pid, host and a
heartbeat that a background thread refreshes every ``lease_s / 3`` seconds); artifacts are
written atomically one by one; ``finish`` writes ``manifest.json`` (with the size and SHA-256 of every artifact)
and only then flips the status to complete. A run whose process died mid-way (status running, pid gone, or its lease
not refreshed in time: pid reused, another host), whose
writer raised (status failed), or whose files do not match its manifest is reported as such and never
opened as complete. Listing checks sizes (cheap); opening verifies ``samples.parquet`` against its SHA-256 and the
other files when first read, so a same-size corruption is caught before any of it is shown.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.errors import RunStoreError
from core.scratch import pid_alive
from core.store import layout
from core.store.atomic import atomic_path, atomic_write_json
from core.store.decisions import Decisions
from core.store.query import SampleQuery

COMPLETE, RUNNING, INCOMPLETE, FAILED = "complete", "running", "incomplete", "failed"


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", name).strip("-.")[:60] or "run"


class RunWriter:
    """Create a run directory and write its artifacts atomically. Use as a context manager: an exception
    inside marks the run failed (with the error) and re-raises."""

    #: seconds a ``running`` status stays valid without a heartbeat (the writer refreshes it every third)
    LEASE_S = 120.0

    def __init__(self, runs_dir: str | Path, name: str | None = None, lease_s: float | None = None):
        runs_dir = Path(runs_dir)
        if runs_dir.exists() and not runs_dir.is_dir():
            raise RunStoreError(f"runs folder {runs_dir} is a file, not a folder")
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        base = f"{stamp}-{_slug(name or 'run')}"
        run_id, i = base, 1
        try:
            runs_dir.mkdir(parents=True, exist_ok=True)
            while True:
                try:
                    (runs_dir / run_id).mkdir()
                    break
                except FileExistsError:
                    i += 1
                    run_id = f"{base}-{i}"
        except OSError as e:
            raise RunStoreError(f"cannot create a run in {runs_dir}: {e.strerror or e}") from e
        self.run_id = run_id
        self.path = runs_dir / run_id
        self.started_at = _now()
        self._start(lease_s)

    @classmethod
    def reopen(cls, path: str | Path, lease_s: float | None = None) -> RunWriter:
        """Take over an unfinished run folder to finish it (``infoscope score --resume``): status running again
        with this process's pid; ``created_at`` stays the run's first start."""
        self = cls.__new__(cls)
        self.path = Path(path)
        self.run_id = self.path.name
        try:
            st = json.loads((self.path / layout.STATUS).read_text())
        except (OSError, ValueError):
            st = None
        started = st.get("started_at") if isinstance(st, dict) else None
        self.started_at = started if isinstance(started, str) else _now()
        self._start(lease_s)
        return self

    def _start(self, lease_s: float | None) -> None:
        self.lease_s = float(lease_s if lease_s is not None else self.LEASE_S)
        self._status_lock = threading.Lock()
        self._stop = threading.Event()
        self._status(RUNNING)
        self._heartbeat = threading.Thread(target=_beat, args=(weakref.ref(self), self._stop, self.lease_s / 3),
                                           name=f"heartbeat {self.run_id}", daemon=True)
        self._heartbeat.start()

    def _status(self, status: str, **extra: Any) -> None:
        with self._status_lock:
            if status != RUNNING:
                self._stop.set()
            elif self._stop.is_set():
                return  # never flip a finished or failed run back to running
            atomic_write_json(self.path / layout.STATUS, {
                "status": status, "pid": os.getpid(), "host": socket.gethostname(),
                "started_at": self.started_at, "updated_at": _now(),
                "heartbeat_at": time.time(), "lease_s": self.lease_s, **extra})


    def __enter__(self) -> RunWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc is not None and self.status() != COMPLETE:
            self.fail(f"{exc_type.__name__}: {exc}")

    def status(self) -> str:
        return read_status(self.path)[0]

    # ---- artifacts -----------------------------------------------------------------------------
    def write_images(self, images: np.ndarray, image_path: np.ndarray) -> np.ndarray:
        """Write a PNG for every row without a file of its own; return the ``image_path`` column
        (relative ``images/NNNNNN.png`` for written ones, the original path otherwise). The PNGs go into a
        hidden temporary folder that is renamed to ``images/`` once all are written."""
        from PIL import Image

        from core.device import rows_per_batch

        out = np.asarray(image_path, dtype=object).copy()
        todo = np.flatnonzero([not p for p in out])
        final = self.path / layout.IMAGES
        tmp_dir = self.path / f".{layout.IMAGES}.tmp"
        shutil.rmtree(tmp_dir, ignore_errors=True)
        tmp_dir.mkdir()
        try:
            step = rows_per_batch(tuple(images.shape[1:]), cap=1024, budget_values=1 << 24)
            for s in range(0, len(todo), step):  # read a batch of rows at a time (images may be an ImageStore)
                rows = todo[s:s + step]
                batch = np.asarray(images[rows])
                for i, img in zip(rows, batch, strict=True):
                    arr = np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)
                    arr = arr[0] if arr.shape[0] == 1 else np.transpose(arr, (1, 2, 0))
                    Image.fromarray(arr).save(tmp_dir / f"{i:06d}.png", format="PNG")
                    out[i] = f"{layout.IMAGES}/{i:06d}.png"
            if final.exists():
                shutil.rmtree(final)
            os.replace(tmp_dir, final)  # the folder appears whole or not at all
        except OSError as e:
            shutil.rmtree(tmp_dir, ignore_errors=True)
            raise RunStoreError(f"could not write images into {final}: {e}") from e
        return out

    def write_samples(self, table: pd.DataFrame) -> None:
        missing = [c for c in layout.BASE_COLUMNS if c not in table.columns]
        if missing:
            raise RunStoreError(f"samples table lacks required columns {missing}")
        if table["sample_id"].duplicated().any():
            dup = table.loc[table["sample_id"].duplicated(), "sample_id"].iloc[0]
            raise RunStoreError(f"duplicate sample_id {dup!r}")
        with atomic_path(self.path / layout.SAMPLES, ".parquet") as tmp:
            table.to_parquet(tmp, index=False)

    def write_embeddings(self, emb: np.ndarray) -> None:
        with atomic_path(self.path / layout.EMBEDDINGS, ".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(emb, dtype=np.float32))

    def write_neighbors(self, idx: np.ndarray) -> None:
        """(n, k) int32 row indices (``samples.parquet`` order) of each row's nearest neighbours, self excluded."""
        with atomic_path(self.path / layout.NEIGHBORS, ".npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, np.ascontiguousarray(idx, dtype=np.int32))

    def write_arrays(self, name: str, arrays: dict[str, np.ndarray]) -> None:
        """``<name>.npz``: named arrays a score keeps for later checks (e.g. ``si_model.npz`` for verify-si)."""
        if not name.replace("_", "").isalnum():
            raise RunStoreError(f"bad array file name {name!r}")
        with atomic_path(self.path / f"{name}.npz", ".npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)

    def write_table(self, filename: str, table: pd.DataFrame) -> None:
        with atomic_path(self.path / filename, ".parquet") as tmp:
            table.to_parquet(tmp, index=False)

    def finish(self, manifest: dict[str, Any]) -> Path:
        """Write ``manifest.json`` (adding file sizes, schema version, timestamps) and mark the run complete."""
        files = {}
        for name in (layout.SAMPLES, layout.EMBEDDINGS, layout.DUPLICATES, layout.NEIGHBORS, layout.SI_MODEL):
            p = self.path / name
            if p.exists():
                files[name] = {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
        if layout.SAMPLES not in files:
            raise RunStoreError("cannot finish a run without samples.parquet")
        full = {"schema_version": layout.SCHEMA_VERSION, "run_id": self.run_id, "status": COMPLETE,
                "created_at": self.started_at, "finished_at": _now(), **manifest, "files": files}
        atomic_write_json(self.path / layout.MANIFEST, full)
        Decisions(self.path / layout.CURATION)  # create the (empty) curation log
        self._status(COMPLETE)
        return self.path

    def fail(self, error: str) -> None:
        self._status(FAILED, error=error)


def sha256_file(path: Path) -> str:
    """Hex SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


_VERIFIED: dict[tuple[str, int, int, str], bool] = {}
_VERIFIED_LOCK = threading.Lock()


def verify_file(run_path: Path, name: str, manifest: dict[str, Any]) -> None:
    """Raise ``RunStoreError`` when ``name`` does not match the SHA-256 its manifest recorded.

    Hashing is done once per file version and process (keyed by path, size and mtime), so reopening a run in
    the dashboard costs nothing; runs written before checksums were recorded are checked by size only."""
    meta = manifest.get("files", {}).get(name)
    if not isinstance(meta, dict) or not isinstance(meta.get("sha256"), str):
        return
    p = run_path / name
    try:
        st = p.stat()
    except OSError as e:
        raise RunStoreError(f"run {run_path}: {name} cannot be read ({e.strerror or e})") from e
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns, meta["sha256"])
    with _VERIFIED_LOCK:
        if _VERIFIED.get(key):
            return
    try:
        digest = sha256_file(p)
    except OSError as e:
        raise RunStoreError(f"run {run_path}: {name} cannot be read ({e.strerror or e})") from e
    if digest != meta["sha256"]:
        raise RunStoreError(f"run {run_path}: {name} is corrupted (its SHA-256 does not match the one recorded "
                            "in manifest.json); re-score the run or restore the file")
    with _VERIFIED_LOCK:
        _VERIFIED[key] = True


def _beat(ref: weakref.ref, stop: threading.Event, every: float) -> None:
    """Refresh a writer's lease until it finishes, fails, or is dropped (a dead writer's lease runs out)."""
    while not stop.wait(every):
        writer = ref()
        if writer is None:
            return
        try:
            writer._status(RUNNING)
        except Exception:  # noqa: BLE001 - a failed refresh only shortens the lease
            pass
        del writer


def _manifest_problem(manifest: Any) -> str:
    """Why a parsed ``manifest.json`` cannot be a run's manifest ("" when its shape is right)."""
    if not isinstance(manifest, dict):
        return f"manifest.json holds a {type(manifest).__name__}, not an object"
    if manifest.get("schema_version") != layout.SCHEMA_VERSION:
        return f"unknown schema_version {manifest.get('schema_version')!r}"
    files = manifest.get("files", {})
    if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, dict) and isinstance(v.get("bytes"), int) for k, v in files.items()):
        return "manifest.json: 'files' is not a map of file name -> {bytes}"
    bad_names = [k for k in files if Path(k).is_absolute() or ".." in Path(k).parts]
    if bad_names:
        return f"manifest.json: file name {bad_names[0]!r} points outside the run"
    checks = [("run_id", str, True), ("class_names", list, True), ("scores", dict, False),
              ("sources", list, False), ("name", str, False), ("created_at", str, False),
              ("n_samples", int, False), ("config", dict, False), ("corruptions", list, False)]
    for key, typ, required in checks:
        if key not in manifest:
            if required:
                return f"manifest.json lacks {key!r}"
            continue
        value = manifest[key]
        if not isinstance(value, typ) or isinstance(value, bool):
            return f"manifest.json: {key!r} should be a {typ.__name__}, got {type(value).__name__}"
    if not all(isinstance(c, str) for c in manifest["class_names"]):
        return "manifest.json: 'class_names' should be a list of strings"
    return ""


def _status_problem(st: Any) -> str:
    if not isinstance(st, dict):
        return f"status.json holds a {type(st).__name__}, not an object"
    if not isinstance(st.get("status"), str):
        return "status.json has no 'status' string"
    pid = st.get("pid", -1)
    if not isinstance(pid, int) or isinstance(pid, bool):
        return "status.json: 'pid' is not an integer"
    return ""


def read_status(path: str | Path) -> tuple[str, str]:
    """``(status, reason)`` of a run directory: complete | running | incomplete | failed.

    Never raises for a bad run: a status or manifest of the wrong shape gives ``incomplete`` with a reason
    starting "broken:".
    """
    path = Path(path)
    try:
        st = json.loads((path / layout.STATUS).read_text())
    except FileNotFoundError:
        st = None
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return INCOMPLETE, f"broken: status.json unreadable ({e})"
    if st is not None:
        problem = _status_problem(st)
        if problem:
            return INCOMPLETE, f"broken: {problem}"
    if st is not None and st.get("status") == FAILED:
        return FAILED, str(st.get("error", "the scoring step failed"))
    if st is not None and st.get("status") == RUNNING:
        same_host = st.get("host") == socket.gethostname()
        hint = (f"; `infoscope score --resume {path.name}` continues it"
                if (path / layout.STAGES / layout.STAGE_LEDGER).exists() else "")
        if same_host and not pid_alive(int(st.get("pid", -1))):
            return INCOMPLETE, f"the process writing this run stopped before it finished (killed or crashed){hint}"
        beat, lease = st.get("heartbeat_at"), st.get("lease_s")
        if isinstance(beat, (int, float)) and isinstance(lease, (int, float)):
            if time.time() - beat > lease:  # pid reused, other host, or a hung writer: the lease ran out
                return INCOMPLETE, (f"the writer (pid {st.get('pid')} on {st.get('host')}) sent no heartbeat for "
                                    f"{time.time() - beat:.0f} s (lease {lease:.0f} s): it stopped before "
                                    f"finishing{hint}")
        elif not same_host:
            return INCOMPLETE, (f"written by a process on another host ({st.get('host')}) that records no "
                                "heartbeat; its state cannot be known")
        return RUNNING, f"being written by pid {st.get('pid')} since {st.get('started_at')}"
    mpath = path / layout.MANIFEST
    if not mpath.exists():
        return INCOMPLETE, "manifest.json is missing: the run was not finished"
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError, OSError) as e:
        return INCOMPLETE, f"broken: manifest.json unreadable ({e})"
    problem = _manifest_problem(manifest)
    if problem:
        return INCOMPLETE, problem if problem.startswith("unknown schema") else f"broken: {problem}"
    for name, meta in manifest.get("files", {}).items():
        p = path / name
        if not p.exists():
            return INCOMPLETE, f"{name} is missing"
        if p.stat().st_size != meta.get("bytes"):
            return INCOMPLETE, f"{name} has {p.stat().st_size} bytes, the manifest says {meta.get('bytes')}"
    return COMPLETE, ""


@dataclass
class RunInfo:
    """One line of ``infoscope runs``."""

    path: Path
    run_id: str
    status: str
    reason: str = ""
    created_at: str = ""
    n_samples: int | None = None
    scores: list[str] = field(default_factory=list)
    size_bytes: int = 0
    name: str = ""


def _dir_size(path: Path) -> int:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file())


def list_runs(runs_dir: str | Path | None = None) -> list[RunInfo]:
    """Every run directory under ``runs_dir`` (newest first) with its status; never raises for a bad run."""
    root = Path(runs_dir) if runs_dir is not None else layout.default_runs_dir()
    if not root.is_dir():
        return []
    out = []
    for d in sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True):
        if not ((d / layout.STATUS).exists() or (d / layout.MANIFEST).exists()):
            continue
        status, reason = read_status(d)
        try:
            size = _dir_size(d)
        except OSError:
            size = 0
        info = RunInfo(path=d, run_id=d.name, status=status, reason=reason, size_bytes=size)
        try:
            m = json.loads((d / layout.MANIFEST).read_text())
        except (OSError, ValueError):
            m = None
        if isinstance(m, dict):  # only well-typed values reach the listing (a bad run must not break it)
            info.created_at = m["created_at"] if isinstance(m.get("created_at"), str) else ""
            n = m.get("n_samples")
            info.n_samples = n if isinstance(n, int) and not isinstance(n, bool) else None
            info.scores = [str(k) for k in m["scores"]] if isinstance(m.get("scores"), dict) else []
            info.name = m["name"] if isinstance(m.get("name"), str) else ""
        out.append(info)
    return out


class Run:
    """A complete run opened for reading (``open_run``): manifest, table, queries, images, decisions."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        status, reason = read_status(self.path)
        if status != COMPLETE:
            raise RunStoreError(f"run {self.path} is {status}: {reason}")
        self.manifest: dict[str, Any] = json.loads((self.path / layout.MANIFEST).read_text())
        self.run_id: str = self.manifest["run_id"]
        self.class_names: list[str] = list(self.manifest["class_names"])
        self._verify(layout.SAMPLES)  # the table is read at once; the other files when first used
        self.decisions  # noqa: B018 - opens (and integrity-checks) the decisions log now

    def _verify(self, name: str) -> None:
        verify_file(self.path, name, self.manifest)

    def __repr__(self) -> str:
        return f"Run({str(self.path)!r})"

    # ---- table ---------------------------------------------------------------------------------
    @cached_property
    def df(self) -> pd.DataFrame:
        """The whole ``samples.parquet`` as a DataFrame (fine up to ~1e5 rows; pages should use ``query``)."""
        return pd.read_parquet(self.path / layout.SAMPLES)

    @cached_property
    def query(self) -> SampleQuery:
        """DuckDB view over samples joined with the latest decisions (call ``refresh_decisions`` after writes)."""
        return SampleQuery(self.path / layout.SAMPLES, self.decisions.latest())

    def refresh_decisions(self) -> None:
        self.query.set_decisions(self.decisions.latest())

    @property
    def columns(self) -> list[str]:
        return self.query.columns

    @property
    def score_names(self) -> list[str]:
        """Scores recorded in the manifest (in the order they were computed)."""
        return list(self.manifest.get("scores", {}))

    def si_verification(self) -> dict[str, Any] | None:
        """What ``infoscope verify-si`` measured on this run (``si_verification.json``), or None."""
        try:
            obj = json.loads((self.path / layout.SI_VERIFICATION).read_text())
        except (OSError, ValueError):
            return None
        keys = ("pearson_weights", "pearson_function", "spearman_weights", "spearman_function", "n")
        if not isinstance(obj, dict) or not all(isinstance(obj.get(k), (int, float)) for k in keys):
            return None
        return obj

    # ---- decisions -----------------------------------------------------------------------------
    @cached_property
    def decisions(self) -> Decisions:
        return Decisions(self.path / layout.CURATION, valid_ids=self._paths.keys(), class_names=self.class_names)

    def curated(self) -> pd.DataFrame:
        """All samples minus those whose latest decision is ``remove``, with ``relabel`` decisions applied
        (``label``/``label_name`` changed, the given label kept in ``original_label_name``)."""
        df = self.df.merge(self.decisions.latest()[["sample_id", "decision", "relabel_to", "tags"]],
                           on="sample_id", how="left")
        df = df[df["decision"] != "remove"].copy()
        df["original_label_name"] = df["label_name"]
        rel = df["decision"] == "relabel"
        df.loc[rel, "label_name"] = df.loc[rel, "relabel_to"]
        df.loc[rel, "label"] = df.loc[rel, "relabel_to"].map({c: i for i, c in enumerate(self.class_names)})
        df["tags"] = df["tags"].fillna("")
        return df.reset_index(drop=True)

    # ---- images and arrays ---------------------------------------------------------------------
    def resolve_image_path(self, image_path: str) -> Path:
        p = Path(image_path)
        return p if p.is_absolute() else self.path / p

    @cached_property
    def image_roots(self) -> list[Path]:
        """Folders an ``image_path`` may point into: the run's ``images/`` and the source folders recorded in
        the manifest (``image_roots``; for older runs, the absolute ``folder:``/``csv:`` paths of its sources).
        A crafted ``samples.parquet`` can therefore never make the dashboard or an export read another file."""
        roots = [self.path / layout.IMAGES]
        recorded = self.manifest.get("image_roots")
        if isinstance(recorded, list):
            roots += [Path(r) for r in recorded if isinstance(r, str) and Path(r).is_absolute()]
        else:
            for src in self.manifest.get("sources", []):
                kind, _, arg = str(src.get("spec", "") if isinstance(src, dict) else "").partition(":")
                if arg and Path(arg).is_absolute() and kind in ("folder", "csv"):
                    roots.append(Path(arg) if kind == "folder" else Path(arg).parent)
        out = []
        for r in roots:
            try:
                out.append(r.resolve())
            except OSError:
                continue
        return out

    def locate_image(self, sample_id: str) -> tuple[Path | None, str]:
        """``(file, "")`` for a sample whose image file exists inside :attr:`image_roots`, else
        ``(None, why)``: no such sample, no file, or a path outside the run's image folders."""
        rel = self._paths.get(sample_id)
        if not rel or not isinstance(rel, str):
            return None, "no image path"
        p = self.resolve_image_path(rel)
        try:
            real = p.resolve()
        except (OSError, RuntimeError):
            return None, "unresolvable image path"
        if not any(real == r or r in real.parents for r in self.image_roots):
            return None, "image_path points outside the run's images folder and its source folders"
        return (real, "") if real.is_file() else (None, "image file is missing")

    @cached_property
    def _paths(self) -> dict[str, str]:
        t = pd.read_parquet(self.path / layout.SAMPLES, columns=["sample_id", "image_path"])
        return dict(zip(t["sample_id"], t["image_path"], strict=True))

    def image_file(self, sample_id: str) -> Path | None:
        """The image file of a sample, or None if the sample or its file is missing (or lies outside the run's
        image folders, see :meth:`locate_image`)."""
        return self.locate_image(sample_id)[0]

    def image(self, sample_id: str) -> np.ndarray | None:
        """The sample's image as a uint8 array (H, W) or (H, W, 3); None if missing or unreadable."""
        from PIL import Image, UnidentifiedImageError

        p = self.image_file(sample_id)
        if p is None:
            return None
        try:
            with Image.open(p) as im:
                if im.mode not in ("L", "RGB"):
                    im = im.convert("L" if im.mode in ("1", "I", "I;16") else "RGB")
                return np.asarray(im)
        except (OSError, UnidentifiedImageError):
            return None

    def embeddings(self) -> np.ndarray | None:
        p = self.path / layout.EMBEDDINGS
        if not p.exists():
            return None
        self._verify(layout.EMBEDDINGS)
        return np.load(p, mmap_mode="r", allow_pickle=False)

    def neighbors(self, sample_id: str, k: int | None = None) -> list[str]:
        """Sample ids of the stored nearest neighbours of ``sample_id`` (feature space, self excluded)."""
        p = self.path / layout.NEIGHBORS
        if not p.exists():
            return []
        row = self._row_of.get(sample_id)
        if row is None:
            return []
        self._verify(layout.NEIGHBORS)
        idx = np.load(p, mmap_mode="r", allow_pickle=False)[row]
        ids = list(self._paths)
        return [ids[int(j)] for j in idx[:k] if 0 <= int(j) < len(ids)]

    @cached_property
    def _row_of(self) -> dict[str, int]:
        return {sid: i for i, sid in enumerate(self._paths)}

    def duplicates(self) -> pd.DataFrame:
        p = self.path / layout.DUPLICATES
        if p.exists():
            self._verify(layout.DUPLICATES)
        return pd.read_parquet(p) if p.exists() else pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])

    def size_bytes(self) -> int:
        return _dir_size(self.path)


def open_run(path: str | Path) -> Run:
    """Open a complete run directory; raises ``RunStoreError`` (with the reason) for anything else."""
    path = Path(path)
    if not path.is_dir():
        raise RunStoreError(f"no run directory at {path}")
    return Run(path)


def delete_run(path: str | Path) -> None:
    """Remove a run directory (used by tests and the CLI's clean-up of failed runs)."""
    shutil.rmtree(path)
