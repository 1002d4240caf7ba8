"""Filter / sort / page queries over ``samples.parquet`` with DuckDB (the dashboard never loads every row).

The current curation decisions are joined in as columns ``decision``, ``relabel_to`` and ``tags`` so that
filters can use them. Column names used for sorting are checked against the table's schema; filter values
are passed as bound parameters.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SampleQuery:
    """DuckDB view ``samples`` over one run's parquet, joined with the latest decisions."""

    def __init__(self, parquet: str | Path, decisions: pd.DataFrame | None = None):
        self.parquet = str(parquet)
        self.con = duckdb.connect()
        self._lock = threading.Lock()
        self.con.execute(f"CREATE TABLE raw AS SELECT *, (row_number() OVER () - 1) AS _row "
                         f"FROM read_parquet({_sql_str(self.parquet)})")
        self.columns: list[str] = [r[0] for r in self.con.execute("DESCRIBE raw").fetchall() if r[0] != "_row"]
        self.set_decisions(decisions)

    def _fetch(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run ``sql`` on a fresh cursor (thread-safe: Streamlit serves sessions from several threads)."""
        cur = self.con.cursor()
        try:
            return cur.execute(sql, list(params or [])).fetchdf()
        finally:
            cur.close()

    def set_decisions(self, decisions: pd.DataFrame | None) -> None:
        """(Re)join the latest decisions (``Decisions.latest()``) as columns."""
        if decisions is None or decisions.empty:
            decisions = pd.DataFrame({"sample_id": pd.Series([], dtype=str),
                                      "decision": pd.Series([], dtype=str),
                                      "relabel_to": pd.Series([], dtype=str),
                                      "tags": pd.Series([], dtype=str)})
        dec = decisions[["sample_id", "decision", "relabel_to", "tags"]].astype(object)
        with self._lock:
            cur = self.con.cursor()
            try:
                cur.register("decisions_df", dec)
                cur.execute("CREATE OR REPLACE TABLE decisions_t (sample_id VARCHAR, decision VARCHAR, "
                            "relabel_to VARCHAR, tags VARCHAR)")
                cur.execute("INSERT INTO decisions_t SELECT * FROM decisions_df")
                cur.unregister("decisions_df")
                cur.execute(
                    "CREATE OR REPLACE VIEW samples AS SELECT r.*, d.decision, d.relabel_to, "
                    "coalesce(d.tags, '') AS tags FROM raw r LEFT JOIN decisions_t d USING (sample_id)")
            finally:
                cur.close()
        self.all_columns = self.columns + ["decision", "relabel_to", "tags"]

    def _order(self, order_by: str | None, descending: bool) -> str:
        if order_by is None:
            return " ORDER BY _row "
        if order_by not in self.all_columns:
            raise ValueError(f"unknown column {order_by!r} to sort by")
        return f" ORDER BY {_quote(order_by)} {'DESC' if descending else 'ASC'} NULLS LAST, _row "

    def select(self, where: str | None = None, params: Sequence[Any] | None = None, *,
               columns: Sequence[str] | None = None, order_by: str | None = None, descending: bool = True,
               limit: int | None = None, offset: int = 0) -> pd.DataFrame:
        """Rows matching the SQL predicate ``where`` (with ``?`` parameters), sorted and paged."""
        cols = "* EXCLUDE (_row)" if not columns else ", ".join(_quote(c) for c in columns)
        sql = f"SELECT {cols} FROM samples"
        if where:
            sql += f" WHERE ({where})"
        sql += self._order(order_by, descending)
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return self._fetch(sql, params)

    def count(self, where: str | None = None, params: Sequence[Any] | None = None) -> int:
        sql = "SELECT count(*) FROM samples" + (f" WHERE ({where})" if where else "")
        return int(self._fetch(sql, params).iloc[0, 0])

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run any read query against the ``samples`` view (aggregations for charts)."""
        return self._fetch(query, params)

    def close(self) -> None:
        self.con.close()


def _sql_str(s: str) -> str:
    return "'" + s.replace("'", "''") + "'"


def build_filter(*, classes: Sequence[str] | None = None, sources: Sequence[str] | None = None,
                 splits: Sequence[str] | None = None, ranges: dict[str, tuple[float, float]] | None = None,
                 flags: Sequence[str] | None = None, decisions: Sequence[str] | None = None,
                 tag: str | None = None, ids: Sequence[str] | None = None,
                 available: Sequence[str] | None = None) -> tuple[str | None, list[Any]]:
    """Compose a parameterised WHERE clause from the usual dashboard filters.

    ``decisions`` may contain ``"undecided"``; ``flags`` names boolean columns (e.g. ``flag_mislabeled``) of
    which any must be true; ``ranges`` maps a numeric column to an inclusive (low, high).
    """
    parts: list[str] = []
    params: list[Any] = []

    def check(col: str) -> str:
        if available is not None and col not in available:
            raise ValueError(f"unknown column {col!r}")
        return _quote(col)

    def in_list(col: str, values: Sequence[Any]) -> None:
        parts.append(f"{check(col)} IN ({', '.join('?' for _ in values)})")
        params.extend(values)

    if classes:
        in_list("label_name", list(classes))
    if sources:
        in_list("source", list(sources))
    if splits:
        in_list("split", list(splits))
    if ids is not None:
        if len(ids) == 0:
            parts.append("FALSE")
        else:
            in_list("sample_id", list(ids))
    for col, (lo, hi) in (ranges or {}).items():
        parts.append(f"{check(col)} BETWEEN ? AND ?")
        params.extend([float(lo), float(hi)])
    if flags:
        parts.append("(" + " OR ".join(f"coalesce({check(f)}, FALSE)" for f in flags) + ")")
    if decisions:
        sub = []
        real = [d for d in decisions if d != "undecided"]
        if real:
            sub.append(f"decision IN ({', '.join('?' for _ in real)})")
            params.extend(real)
        if "undecided" in decisions:
            sub.append("decision IS NULL")
        parts.append("(" + " OR ".join(sub) + ")")
    if tag:
        parts.append("list_contains(string_split(tags, ','), ?)")
        params.append(tag)
    return (" AND ".join(parts) if parts else None), params
