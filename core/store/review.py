"""Read-side helpers for reviewing one sample or a set of samples (the dashboard's detail view, similarity
search, confusion matrices) and the saved views kept beside the decisions in ``curation.sqlite``.

Nothing here writes to the immutable run files: saved views go into their own table of the curation log.

- Percentile of a value ``x`` among the finite values ``v₁..vₙ`` of a column (mid-rank definition, the one
  ``scipy.stats.percentileofscore(kind="mean")`` uses): ``100 · (#{vᵢ < x} + ½ #{vᵢ = x}) / n``.
- Neighbour majority: the label most common among a row's stored nearest neighbours (``neighbors.npy``), ties
  broken towards the nearer neighbour (``core.knn.knn_vote``).
- Similarity ("more like this"): exact nearest neighbours by cosine similarity of the run's embeddings
  (``core.knn.knn`` with ``metric="cosine"``, a flat faiss index); a set query uses the mean of the set's
  L2-normalised embeddings, and the set's own members are left out of the result.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from core.store.query import SampleQuery, _quote

VIEW_NAME_MAX = 80


# ---- percentiles -----------------------------------------------------------------------------------
def percentile_of(values: np.ndarray, x: float) -> float:
    """Mid-rank percentile of ``x`` among the finite ``values`` (NaN when there are none or ``x`` is NaN)."""
    v = np.asarray(values, dtype=np.float64)
    v = v[np.isfinite(v)]
    if v.size == 0 or not np.isfinite(x):
        return float("nan")
    return float(100.0 * ((v < x).sum() + 0.5 * (v == x).sum()) / v.size)


def percentile_ranks(q: SampleQuery, sample_id: str, columns: Sequence[str],
                     within: str = "label_name") -> pd.DataFrame:
    """For one sample: every column's value and its mid-rank percentile in the whole run and among the rows
    sharing its ``within`` value (its class). Columns: ``column, value, pct_run, pct_within, n_run, n_within``."""
    cols = [c for c in columns if c in q.columns]
    out = pd.DataFrame(columns=["column", "value", "pct_run", "pct_within", "n_run", "n_within"])
    if not cols:
        return out
    row = q.select('"sample_id" = ?', [sample_id], columns=[*cols, within] if within in q.all_columns else cols)
    if row.empty:
        return out
    parts, params = [], []
    grp = row[within].iloc[0] if within in row.columns else None
    for i, c in enumerate(cols):
        x = row[c].iloc[0]
        x = float(x) if pd.notna(x) else float("nan")
        s = _quote(c)
        fin = f"isfinite({s})"
        same = f"{_quote(within)} IS NOT DISTINCT FROM ?" if grp is not None else "TRUE"
        parts += [f"count(*) FILTER (WHERE {fin} AND {s} < ?) AS lt{i}",
                  f"count(*) FILTER (WHERE {fin} AND {s} = ?) AS eq{i}",
                  f"count(*) FILTER (WHERE {fin}) AS n{i}",
                  f"count(*) FILTER (WHERE {fin} AND {same} AND {s} < ?) AS glt{i}",
                  f"count(*) FILTER (WHERE {fin} AND {same} AND {s} = ?) AS geq{i}",
                  f"count(*) FILTER (WHERE {fin} AND {same}) AS gn{i}"]
        g = [grp] if grp is not None else []
        params += [x, x, *g, x, *g, x, *g]
    r = q.sql("SELECT " + ", ".join(parts) + " FROM samples", params).iloc[0]
    rows = []
    for i, c in enumerate(cols):
        x = row[c].iloc[0]
        x = float(x) if pd.notna(x) else float("nan")
        n, gn = int(r[f"n{i}"]), int(r[f"gn{i}"])
        ok = np.isfinite(x)
        rows.append({"column": c, "value": x,
                     "pct_run": 100.0 * (r[f"lt{i}"] + 0.5 * r[f"eq{i}"]) / n if ok and n else float("nan"),
                     "pct_within": 100.0 * (r[f"glt{i}"] + 0.5 * r[f"geq{i}"]) / gn if ok and gn else float("nan"),
                     "n_run": n, "n_within": gn})
    return pd.DataFrame(rows)


# ---- neighbour majority and confusion ------------------------------------------------------------
def neighbour_majority(labels: np.ndarray, neighbours: np.ndarray, n_classes: int, k: int | None = None) -> np.ndarray:
    """Majority label (int) of each row's first ``k`` stored neighbours (row indices, nearest first)."""
    from core.knn import knn_vote

    nb = np.asarray(neighbours, dtype=np.int64)
    if k is not None:
        nb = nb[:, :k]
    return knn_vote(np.asarray(labels, dtype=np.int64)[nb], n_classes)[0]


def confusion_table(run: Any, k: int = 10) -> pd.DataFrame:
    """One row per sample: ``sample_id, given, predicted, neighbours`` (class names; ``predicted`` None without
    a model prediction, ``neighbours`` None without stored neighbours) — the inputs of the two confusion
    matrices (given label vs. the model, given label vs. the neighbour majority)."""
    t = pd.read_parquet(run.path / "samples.parquet")
    names = list(run.class_names)
    out = pd.DataFrame({"sample_id": t["sample_id"].astype(str), "given": t["label_name"].astype(str)})
    if "pred_name" in t:
        out["predicted"] = t["pred_name"].astype(object).where(t["pred_name"].notna(), None)
    elif "pred" in t:
        out["predicted"] = [names[int(p)] if pd.notna(p) and 0 <= int(p) < len(names) else None for p in t["pred"]]
    else:
        out["predicted"] = None
    nb_file = run.path / "neighbors.npy"
    if nb_file.exists() and "label" in t and len(t):
        nb = np.load(nb_file, mmap_mode="r", allow_pickle=False)
        lab = t["label"].to_numpy(dtype=np.int64)
        maj = neighbour_majority(lab, np.asarray(nb), max(len(names), int(lab.max()) + 1), k)
        out["neighbours"] = [names[int(m)] if int(m) < len(names) else str(m) for m in maj]
    else:
        out["neighbours"] = None
    return out


def confusion_matrix(table: pd.DataFrame, other: str, classes: Sequence[str]) -> pd.DataFrame:
    """Counts of (given label = row, ``other`` = column) over ``classes`` (rows with ``other`` missing skipped)."""
    t = table.dropna(subset=[other])
    m = pd.crosstab(pd.Categorical(t["given"], categories=list(classes)),
                    pd.Categorical(t[other], categories=list(classes)), dropna=False)
    m.index.name, m.columns.name = "given", other
    return m.reindex(index=list(classes), columns=list(classes), fill_value=0)


# ---- similarity ----------------------------------------------------------------------------------
def normalize_rows(embeddings: np.ndarray) -> np.ndarray:
    """float32 rows scaled to unit L2 norm (zero rows stay zero)."""
    e = np.asarray(embeddings, dtype=np.float32)
    return e / np.maximum(np.linalg.norm(e, axis=1, keepdims=True), 1e-12)


def similar(embeddings: np.ndarray, sample_ids: Sequence[str], query_ids: Sequence[str], k: int = 48,
            device: str = "cpu", normalized: bool = False) -> pd.DataFrame:
    """The ``k`` samples most similar (cosine) to one sample or to the mean of a set, the set itself excluded.

    ``normalized=True`` says the rows already have unit norm (``normalize_rows``; saves a pass over n×d).
    Returns ``sample_id, similarity, rank`` (most similar first); empty when no query id is known."""
    from core.knn import knn

    ids = [str(s) for s in sample_ids]
    pos = {s: i for i, s in enumerate(ids)}
    rows = sorted({pos[s] for s in query_ids if s in pos})
    if not rows or embeddings is None:
        return pd.DataFrame(columns=["sample_id", "similarity", "rank"])
    e = np.asarray(embeddings, dtype=np.float32) if normalized else normalize_rows(embeddings)
    centre = e[rows].mean(0, keepdims=True)
    kk = min(len(ids), k + len(rows))
    _, idx = knn(centre, e, kk, metric="cosine", device=device)
    c = centre / max(float(np.linalg.norm(centre)), 1e-12)
    chosen = [int(j) for j in idx[0] if int(j) not in set(rows)][:k]
    sims = (e[chosen] @ c[0]).astype(np.float64)
    return pd.DataFrame({"sample_id": [ids[j] for j in chosen], "similarity": sims,
                         "rank": np.arange(1, len(chosen) + 1)})


# ---- saved views ---------------------------------------------------------------------------------
_VIEWS_SCHEMA = """
CREATE TABLE IF NOT EXISTS views (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL,
    page TEXT NOT NULL,
    state TEXT NOT NULL,
    deleted INTEGER NOT NULL DEFAULT 0,
    time TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS views_name ON views(name);
"""


class SavedViews:
    """Named views (a page and its filter / sort / page / selection state as JSON) in ``curation.sqlite``.

    Append-only like the decisions: saving a name again adds a row and the latest row of a name wins; deleting
    appends a tombstone. The run's immutable files are never touched."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        with closing(self._connect()) as con:
            con.executescript(_VIEWS_SCHEMA)

    def _connect(self) -> sqlite3.Connection:
        con = sqlite3.connect(self.path, timeout=30, isolation_level=None)
        con.execute("PRAGMA journal_mode=WAL")
        con.execute("PRAGMA busy_timeout=30000")
        return con

    @staticmethod
    def _check_name(name: str) -> str:
        name = (name or "").strip()
        if not name:
            raise ValueError("a saved view needs a name")
        if len(name) > VIEW_NAME_MAX:
            raise ValueError(f"a view name has at most {VIEW_NAME_MAX} characters")
        return name

    def save(self, name: str, page: str, state: dict[str, Any]) -> None:
        name = self._check_name(name)
        text = json.dumps(state, sort_keys=True)
        with closing(self._connect()) as con:
            con.execute("INSERT INTO views(name, page, state, deleted, time) VALUES (?, ?, ?, 0, ?)",
                        (name, page, text, datetime.now(UTC).isoformat(timespec="microseconds")))

    def delete(self, name: str) -> None:
        name = self._check_name(name)
        if name not in self.names():
            raise ValueError(f"no saved view named {name!r}")
        with closing(self._connect()) as con:
            con.execute("INSERT INTO views(name, page, state, deleted, time) VALUES (?, '', '{}', 1, ?)",
                        (name, datetime.now(UTC).isoformat(timespec="microseconds")))

    def _latest(self) -> list[tuple[str, str, str, int, str]]:
        with closing(self._connect()) as con:
            return con.execute(
                "SELECT v.name, v.page, v.state, v.deleted, v.time FROM views v JOIN "
                "(SELECT name, max(id) AS id FROM views GROUP BY name) l ON l.id = v.id ORDER BY v.name").fetchall()

    def names(self) -> list[str]:
        return [r[0] for r in self._latest() if not r[3]]

    def get(self, name: str) -> tuple[str, dict[str, Any]] | None:
        """``(page, state)`` of a saved view, or None."""
        for n, page, state, deleted, _ in self._latest():
            if n == name and not deleted:
                return page, json.loads(state)
        return None

    def list(self) -> pd.DataFrame:
        rows = [(n, p, t) for n, p, _, d, t in self._latest() if not d]
        return pd.DataFrame(rows, columns=["name", "page", "saved_at"])
