"""Filter / sort / page queries over ``samples.parquet`` with DuckDB (the dashboard never loads every row).

The current curation decisions are joined in as columns ``decision``, ``relabel_to`` and ``tags`` so that
filters can use them. Column names used for sorting are checked against the table's schema; filter values
are passed as bound parameters.

A ``where`` predicate (``--where`` of ``infoscope export``, ``Run.query.select(where)``) is user text, so:

* the connection reads ``samples.parquet`` through pyarrow and is then opened with
  ``enable_external_access = false`` and ``lock_configuration = true``: no SQL on it can read or write a file
  (``read_text``, ``read_csv``, ``COPY``, ``ATTACH``, ``INSTALL`` ... are refused by DuckDB itself);
* the predicate must parse as ONE expression, checked by parsing ``SELECT 1 FROM samples WHERE (<expr>)``:
  exactly one SELECT statement (no ``;`` stacking), of that exact shape (no ``UNION``, ``ORDER BY``... smuggled
  past the closing parenthesis), with no sub-query and no table function, whose column references are all
  columns of ``samples`` (plus ``decision``, ``relabel_to``, ``tags``).
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from core.errors import QueryError


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


class SampleQuery:
    """DuckDB view ``samples`` over one run's parquet, joined with the latest decisions."""

    def __init__(self, parquet: str | Path, decisions: pd.DataFrame | None = None):
        self.parquet = str(parquet)
        table = pq.read_table(self.parquet)  # read here: the DuckDB connection itself may not touch files
        self.con = _sealed_connection()
        self._lock = threading.Lock()
        self._valid: dict[str, None] = {}
        self.con.register("raw_arrow", table)
        self.con.execute("CREATE TABLE raw AS SELECT *, (row_number() OVER () - 1) AS _row FROM raw_arrow")
        self.con.unregister("raw_arrow")
        del table
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
        self._valid.clear()

    def check_where(self, where: str) -> None:
        """Raise ``QueryError`` unless ``where`` is one SQL expression over the ``samples`` columns."""
        if where in self._valid:
            return
        _check_expression(self.con, where, {*self.all_columns, "_row"})
        self._valid[where] = None

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
            self.check_where(where)
            sql += f" WHERE ({where})"
        sql += self._order(order_by, descending)
        if limit is not None:
            sql += f" LIMIT {int(limit)} OFFSET {int(offset)}"
        return self._fetch(sql, params)

    def count(self, where: str | None = None, params: Sequence[Any] | None = None) -> int:
        if where:
            self.check_where(where)
        sql = "SELECT count(*) FROM samples" + (f" WHERE ({where})" if where else "")
        return int(self._fetch(sql, params).iloc[0, 0])

    def sql(self, query: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """Run a query against the ``samples`` view (aggregations for charts; the dashboard's own SQL). The
        connection cannot touch files, whatever the query says."""
        return self._fetch(query, params)

    def close(self) -> None:
        self.con.close()


def _sealed_connection() -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that cannot read or write files, with its configuration locked."""
    con = duckdb.connect(config={"enable_external_access": False})
    con.execute("SET enable_external_access = false")
    try:
        con.execute("SET lock_configuration = true")
    except duckdb.Error:  # pragma: no cover - older DuckDB without the option
        pass
    return con


_FORBIDDEN_CLASSES = {"SUBQUERY"}
_FORBIDDEN_KEYS = {"from_table", "subquery", "cte_map", "node"}


def _walk(node: Any, columns: set[str], where: str) -> None:
    if isinstance(node, list):
        for v in node:
            _walk(v, columns, where)
        return
    if not isinstance(node, dict):
        return
    if node.get("class") in _FORBIDDEN_CLASSES or any(k in node for k in _FORBIDDEN_KEYS):
        raise QueryError(f"--where {where!r}: sub-queries and table functions are not allowed; "
                         "write one expression over the samples columns")
    if node.get("class") == "COLUMN_REF":
        names = node.get("column_names") or []
        if len(names) > 2 or (len(names) == 2 and names[0] != "samples") or not names:
            raise QueryError(f"--where {where!r}: unknown column {'.'.join(map(str, names))!r}")
        if names[-1] not in columns:
            raise QueryError(f"--where {where!r}: unknown column {names[-1]!r}; the columns are "
                             f"{', '.join(sorted(c for c in columns if c != '_row'))}")
    for v in node.values():
        _walk(v, columns, where)


def _check_expression(con: duckdb.DuckDBPyConnection, where: str, columns: set[str]) -> None:
    """Parse ``SELECT 1 FROM samples WHERE (<where>)`` and refuse anything but one plain expression."""
    if not isinstance(where, str) or not where.strip():
        raise QueryError("--where is empty; give an expression such as \"cg_score > 0.5\"")
    if "\x00" in where:
        raise QueryError("--where holds a NUL character")
    sql = f"SELECT 1 FROM samples WHERE ({where})"
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as e:
        raise QueryError(f"--where {where!r} is not a valid SQL expression: {str(e).splitlines()[0]}") from e
    if len(statements) != 1:
        raise QueryError(f"--where {where!r}: only one expression is allowed (no ';' and no extra statements)")
    cur = con.cursor()
    try:
        tree = json.loads(cur.execute("SELECT json_serialize_sql(?)", [sql]).fetchone()[0])
    finally:
        cur.close()
    if tree.get("error") or len(tree.get("statements", [])) != 1:
        raise QueryError(f"--where {where!r} is not a single expression: {tree.get('error_message', '')}".strip())
    node = tree["statements"][0]["node"]
    frm = node.get("from_table") or {}
    plain = (node.get("type") == "SELECT_NODE" and frm.get("type") == "BASE_TABLE"
             and frm.get("table_name") == "samples" and not frm.get("schema_name") and not frm.get("sample")
             and not node.get("modifiers") and not node.get("group_expressions") and not node.get("having")
             and not node.get("qualify") and not node.get("sample") and not (node.get("cte_map") or {}).get("map")
             and len(node.get("select_list", [])) == 1 and node.get("where_clause") is not None)
    if not plain:
        raise QueryError(f"--where {where!r}: only one expression over the samples columns is allowed")
    _walk(node["where_clause"], columns, where)


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
