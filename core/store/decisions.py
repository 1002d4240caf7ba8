"""The curation log: an append-only SQLite table of a person's decisions (``curation.sqlite``).

Every call to ``record`` appends one *batch* (one or many samples, one action). ``undo`` never deletes: it
appends the batch id to the ``undos`` table, and readers ignore undone batches. The latest surviving
``keep``/``remove``/``relabel`` decision of a sample is its status ("latest wins"); ``tag``/``untag`` maintain
a set of tags. WAL mode and a busy timeout let several dashboard tabs and the CLI write concurrently without
losing a decision. Re-scoring never touches this file.

A run on read-only media (its folder not writable) is opened read-only and immutable (no WAL, no lock
files): it can be browsed and exported, and ``record``/``undo`` raise ``RunStoreError`` saying so. A damaged
file (failed ``PRAGMA quick_check``, or not a database) and a full disk raise ``RunStoreError`` naming it.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Iterable, Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd

from core.errors import RunStoreError

ACTIONS = ("keep", "remove", "relabel", "tag", "untag")
STATUS_ACTIONS = ("keep", "remove", "relabel")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS batches (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    action TEXT NOT NULL,
    n INTEGER NOT NULL,
    author TEXT,
    time TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS decisions (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    batch INTEGER NOT NULL REFERENCES batches(id),
    sample_id TEXT NOT NULL,
    action TEXT NOT NULL CHECK (action IN ('keep', 'remove', 'relabel', 'tag', 'untag')),
    value TEXT,
    note TEXT,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS decisions_sample ON decisions(sample_id);
CREATE TABLE IF NOT EXISTS undos (
    batch INTEGER PRIMARY KEY REFERENCES batches(id),
    time TEXT NOT NULL
);
"""


def _writable(path: Path) -> bool:
    """Whether the decisions file (or, before it exists, its folder) can be written.

    ``os.access`` is not enough on read-only mounts for root, so the folder is also probed with a temporary
    file (SQLite's WAL needs to create files next to the database)."""
    folder = path.parent
    if not os.access(folder, os.W_OK) or (path.exists() and not os.access(path, os.W_OK)):
        return False
    try:
        fd = os.open(folder / f".{path.name}.probe-{os.getpid()}", os.O_CREAT | os.O_WRONLY | os.O_EXCL, 0o600)
    except FileExistsError:
        return True
    except OSError:
        return False
    os.close(fd)
    os.unlink(folder / f".{path.name}.probe-{os.getpid()}")
    return True


def _write_error(path: Path, e: sqlite3.Error) -> RunStoreError:
    text = str(e)
    if "full" in text or getattr(e, "sqlite_errorcode", None) == 13 or getattr(e, "errno", None) == errno.ENOSPC:
        return RunStoreError(f"could not record the decision: the disk holding {path} is full; nothing was "
                             "recorded, free some space and try again")
    return RunStoreError(f"could not record the decision in {path}: {text}")


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds")


class Decisions:
    """Append-only decisions for one run.

    Args:
        path: the ``curation.sqlite`` file (created on first use).
        valid_ids: if given, ``record`` rejects sample ids outside it.
        class_names: if given, ``relabel`` values must be one of them.
    """

    def __init__(self, path: str | Path, valid_ids: Iterable[str] | None = None,
                 class_names: Sequence[str] | None = None):
        self.path = Path(path)
        self._valid = set(valid_ids) if valid_ids is not None else None
        self._classes = list(class_names) if class_names is not None else None
        self.read_only = not _writable(self.path)
        try:
            with closing(self._connect()) as con:
                if not self.read_only:
                    con.executescript(_SCHEMA)
                check = con.execute("PRAGMA quick_check").fetchall()
        except sqlite3.DatabaseError as e:
            raise RunStoreError(f"{self.path} is damaged ({e}); move it aside to start a new decisions log") from e
        if [r[0] for r in check] != ["ok"]:
            raise RunStoreError(f"{self.path} is damaged (integrity check: {check[0][0]}); move it aside to start "
                                "a new decisions log")

    def _connect(self) -> sqlite3.Connection:
        if self.read_only and not self.path.exists():  # read-only run without a log: an empty one
            con = sqlite3.connect(":memory:", isolation_level=None)
            con.executescript(_SCHEMA)
            return con
        if self.read_only:  # nothing may be written next to the file: no WAL, no -shm, no journal
            uri = f"{self.path.resolve().as_uri()}?mode=ro&immutable=1"
            return sqlite3.connect(uri, uri=True, timeout=30, isolation_level=None)
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        con.execute("PRAGMA synchronous=NORMAL")
        return con

    def _refuse_read_only(self) -> None:
        if self.read_only:
            raise RunStoreError(f"{self.path} is on read-only media (its folder is not writable): decisions can "
                                "be read and exported, not recorded")

    # ---- writing -------------------------------------------------------------------------------
    def record(self, sample_ids: str | Sequence[str], action: str, value: str | None = None,
               note: str | None = None, author: str | None = None) -> int:
        """Append one decision for each sample id (one batch); return the batch id."""
        ids = [sample_ids] if isinstance(sample_ids, str) else list(sample_ids)
        if not ids:
            raise ValueError("no sample ids given")
        if action not in ACTIONS:
            raise ValueError(f"unknown action {action!r}; one of {', '.join(ACTIONS)}")
        if action == "relabel":
            if value is None or value == "":
                raise ValueError("relabel needs a target class")
            if self._classes is not None and str(value) not in self._classes:
                raise ValueError(f"unknown class {value!r} for relabel; classes: {', '.join(self._classes)}")
        if action in ("tag", "untag") and not value:
            raise ValueError(f"{action} needs a tag name")
        if self._valid is not None:
            unknown = [i for i in ids if i not in self._valid]
            if unknown:
                raise ValueError(f"unknown sample id(s): {unknown[:5]}{' ...' if len(unknown) > 5 else ''}")
        self._refuse_read_only()
        t = _now()
        for attempt in range(5):
            try:
                with closing(self._connect()) as con:
                    con.execute("BEGIN IMMEDIATE")
                    cur = con.execute("INSERT INTO batches(action, n, author, time) VALUES (?, ?, ?, ?)",
                                      (action, len(ids), author, t))
                    batch = int(cur.lastrowid)
                    con.executemany(
                        "INSERT INTO decisions(batch, sample_id, action, value, note, time) VALUES (?,?,?,?,?,?)",
                        [(batch, i, action, None if value is None else str(value), note, t) for i in ids],
                    )
                    con.execute("COMMIT")
                    return batch
            except sqlite3.OperationalError as e:
                if "locked" not in str(e) or attempt == 4:
                    raise _write_error(self.path, e) from e
                time.sleep(0.1 * (attempt + 1))  # pragma: no cover - only under heavy contention
            except sqlite3.DatabaseError as e:
                raise _write_error(self.path, e) from e
        raise RuntimeError("unreachable")

    def undo(self, batch: int | None = None) -> int | None:
        """Undo ``batch`` (default: the most recent batch not yet undone). Returns the undone batch id or None."""
        self._refuse_read_only()
        try:
            return self._undo(batch)
        except sqlite3.DatabaseError as e:
            raise _write_error(self.path, e) from e

    def _undo(self, batch: int | None) -> int | None:
        with closing(self._connect()) as con:
            con.execute("BEGIN IMMEDIATE")
            if batch is None:
                row = con.execute(
                    "SELECT id FROM batches WHERE id NOT IN (SELECT batch FROM undos) ORDER BY id DESC LIMIT 1"
                ).fetchone()
                if row is None:
                    con.execute("ROLLBACK")
                    return None
                batch = int(row[0])
            elif con.execute("SELECT 1 FROM batches WHERE id = ?", (batch,)).fetchone() is None:
                con.execute("ROLLBACK")
                raise ValueError(f"no decision batch {batch}")
            con.execute("INSERT OR IGNORE INTO undos(batch, time) VALUES (?, ?)", (batch, _now()))
            con.execute("COMMIT")
            return batch

    # ---- reading -------------------------------------------------------------------------------
    def history(self, sample_id: str | None = None, include_undone: bool = True) -> pd.DataFrame:
        """Every decision (oldest first) with its batch and whether it was undone."""
        sql = ("SELECT d.id, d.batch, d.sample_id, d.action, d.value, d.note, d.time, b.author, "
               "(u.batch IS NOT NULL) AS undone FROM decisions d JOIN batches b ON b.id = d.batch "
               "LEFT JOIN undos u ON u.batch = d.batch")
        args: tuple = ()
        if sample_id is not None:
            sql += " WHERE d.sample_id = ?"
            args = (sample_id,)
        sql += " ORDER BY d.id"
        with closing(self._connect()) as con:
            df = pd.read_sql_query(sql, con, params=args)
        df["undone"] = df["undone"].astype(bool)
        return df if include_undone else df[~df["undone"]].reset_index(drop=True)

    def batches(self) -> pd.DataFrame:
        """Batches newest first, with whether each was undone (for an undo menu)."""
        with closing(self._connect()) as con:
            df = pd.read_sql_query(
                "SELECT b.id, b.action, b.n, b.author, b.time, (u.batch IS NOT NULL) AS undone "
                "FROM batches b LEFT JOIN undos u ON u.batch = b.id ORDER BY b.id DESC", con)
        df["undone"] = df["undone"].astype(bool)
        return df

    def latest(self) -> pd.DataFrame:
        """One row per decided sample: ``sample_id, decision, relabel_to, tags, note, decided_at``.

        ``decision`` is the latest surviving keep/remove/relabel (None if only tags); ``tags`` a sorted
        comma-separated string of the tags currently set.
        """
        live = self.history(include_undone=False)
        cols = ["sample_id", "decision", "relabel_to", "tags", "note", "decided_at"]
        if live.empty:
            return pd.DataFrame(columns=cols)
        status = live[live["action"].isin(STATUS_ACTIONS)].groupby("sample_id").tail(1)
        out = pd.DataFrame({"sample_id": live["sample_id"].unique()})
        out = out.merge(
            status[["sample_id", "action", "value", "note", "time"]].rename(
                columns={"action": "decision", "value": "relabel_to", "time": "decided_at"}),
            on="sample_id", how="left")
        out["relabel_to"] = pd.Series([v if d == "relabel" else None for d, v in
                                       zip(out["decision"], out["relabel_to"], strict=True)], dtype=object)
        out["decision"] = pd.Series([d if isinstance(d, str) else None for d in out["decision"]], dtype=object)
        tags: dict[str, set[str]] = {}
        for sid, action, value in live.loc[live["action"].isin(("tag", "untag")),
                                           ["sample_id", "action", "value"]].itertuples(index=False):
            s = tags.setdefault(sid, set())
            (s.add if action == "tag" else s.discard)(value)
        out["tags"] = out["sample_id"].map(lambda s: ",".join(sorted(tags.get(s, set()))))
        return out[cols]
