"""Dataset summarisation: pick a budget of rows that keeps as much information as possible.

Pure numpy (no torch, no streamlit). ``plan_summary`` is what the dashboard and the CLI call; it decides which
rows may be chosen, how every row is ranked, and then applies one of four methods. ``summarize`` is its
low-level core (row positions only).

Eligibility (``eligibility``). By default rows the engine flagged (``flag_mislabeled`` / ``flag_adversarial``)
and rows whose latest curation decision is ``remove`` are left out; a person's explicit ``keep`` overrides a
flag. ``relabel`` decisions are applied to the class column (``effective_labels``).

Ranking (``ranking_key``). Scores such as SI are NaN on held-out rows. Every row is ranked by its percentile
(in (0, 1], within its class or over the whole table) of the chosen score among the rows that have it; a row
without the score is ranked by its percentile of a stated ``fallback`` score among the rows that have *that*
one. Rows with neither are left out and counted, never silently dropped.

``top``
    The ``budget`` rows with the highest key (ties broken by row order).
``class_balanced``
    Equal numbers per class up to availability: the budget is split equally; a class with fewer eligible rows
    gives all it has and the leftover is redistributed equally over the classes that still have rows
    (water-filling, ``allocate_equal``). Inside each class the rows with the highest key are kept.
``diversity``
    Informativeness-weighted greedy k-center over L2-normalised embeddings. With weights
    ``w_i = 0.1 + 0.9 * key_i`` the greedy step adds the row maximising ``w_i * d(e_i, S)``, where
    ``d(e_i, S)`` is the distance from row ``i`` to the nearest row already selected (the first pick is the
    highest-ranked row). This greedily minimises the weighted covering radius
    ``max_i w_i * min_{j in S} ||e_i - e_j||``. Cost O(budget * n * d).
``iterative``
    Repeated pruning with rescoring (``core.subset_info.iterative_selection``): drop the 5% of the remaining
    rows with the lowest leave-one-out functional SI of a ridge head on the embeddings, rescore in closed
    form, repeat until the budget is reached. Needs no score column, so held-out rows take part as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import pandas as pd

Method = Literal["top", "class_balanced", "diversity", "iterative"]
METHODS: tuple[str, ...] = ("top", "class_balanced", "diversity", "iterative")
FLAG_COLUMNS: tuple[str, ...] = ("flag_mislabeled", "flag_adversarial")
#: Fallback scores for rows without the chosen one, most preferred first (defined on held-out rows too).
FALLBACKS: tuple[str, ...] = ("cg_score", "uniqueness", "prediction_depth", "loss")


def resolve_budget(n: int, budget: int | float) -> int:
    """Number of rows for ``budget``: an int is a count; a float in (0, 1) is a fraction of ``n``.

    The result is clipped to ``[0, n]``.
    """
    if isinstance(budget, (float, np.floating)) and 0 < float(budget) < 1:
        k = int(round(float(budget) * n))
    else:
        k = int(budget)
    if k < 0:
        raise ValueError(f"budget must be non-negative, got {budget}")
    return min(k, n)


def _score_values(table: pd.DataFrame, score: str) -> np.ndarray:
    if score not in table.columns:
        raise ValueError(f"score column {score!r} is not in the table")
    return pd.to_numeric(table[score], errors="coerce").to_numpy(dtype=np.float64)


def _descending(values: np.ndarray) -> np.ndarray:
    """Row positions sorted by value, highest first, NaN last, stable for ties."""
    key = np.where(np.isnan(values), -np.inf, values)
    order = np.argsort(-key, kind="stable")
    nan_last = np.isnan(values[order])
    return np.concatenate([order[~nan_last], order[nan_last]])


def _rank_pct(values: np.ndarray) -> np.ndarray:
    """Percentile rank in (0, 1] (NaN -> 0)."""
    out = np.zeros(len(values))
    ok = ~np.isnan(values)
    if ok.any():
        out[ok] = pd.Series(values[ok]).rank(pct=True, method="average").to_numpy()
    return out


# ---- eligibility and labels ---------------------------------------------------------------------------
def _bool(table: pd.DataFrame, col: str) -> np.ndarray:
    if col not in table.columns:
        return np.zeros(len(table), dtype=bool)
    return table[col].fillna(False).astype(bool).to_numpy()


def eligibility(table: pd.DataFrame, *, exclude_flagged: bool = True,
                exclude_removed: bool = True) -> tuple[np.ndarray, dict[str, int]]:
    """Rows a summary may choose, and how many each rule left out.

    Flagged rows (``flag_mislabeled`` or ``flag_adversarial``) are left out when ``exclude_flagged``, unless
    the latest decision is ``keep``; rows whose latest decision is ``remove`` when ``exclude_removed``.
    Returns ``(mask, {"flagged": ..., "removed": ...})`` (counts of rows each rule removed).
    """
    n = len(table)
    decision = (table["decision"].astype(object).where(table["decision"].notna(), "").to_numpy()
                if "decision" in table.columns else np.full(n, "", dtype=object))
    flagged = np.zeros(n, dtype=bool)
    for c in FLAG_COLUMNS:
        flagged |= _bool(table, c)
    flagged &= decision != "keep"
    removed = decision == "remove"
    mask = np.ones(n, dtype=bool)
    counts = {"flagged": 0, "removed": 0}
    if exclude_removed:
        counts["removed"] = int(removed.sum())
        mask &= ~removed
    if exclude_flagged:
        counts["flagged"] = int((flagged & mask).sum())
        mask &= ~flagged
    return mask, counts


def effective_labels(table: pd.DataFrame, label_column: str = "label_name") -> np.ndarray:
    """The class of every row as strings, with ``relabel`` decisions (``relabel_to``) applied."""
    labels = table[label_column].astype(str).to_numpy(dtype=object)
    if {"decision", "relabel_to"} <= set(table.columns):
        rel = (table["decision"] == "relabel").to_numpy() & table["relabel_to"].notna().to_numpy()
        labels[rel] = table["relabel_to"].astype(str).to_numpy()[rel]
    return labels.astype(str)


def pick_fallback(table: pd.DataFrame, score: str, candidates: tuple[str, ...] = FALLBACKS) -> str | None:
    """The first candidate that has a value on some row where ``score`` is NaN (None: no row needs one)."""
    missing = np.isnan(_score_values(table, score))
    if not missing.any():
        return None
    for c in candidates:
        if c != score and c in table.columns and np.isfinite(_score_values(table, c)[missing]).any():
            return c
    return None


def ranking_key(table: pd.DataFrame, score: str, fallback: str | None = None,
                groups: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Percentile key of every row and what ranked it (``"score"``, ``"fallback"`` or ``"none"``).

    A row with ``score`` gets its percentile rank (in (0, 1]) among the rows of its group that have ``score``;
    a row without it gets its percentile of ``fallback`` among the rows of its group that have the fallback;
    a row with neither gets NaN. ``groups`` (e.g. classes) default to one group.
    """
    primary = _score_values(table, score)
    second = _score_values(table, fallback) if fallback else np.full(len(table), np.nan)
    groups = np.zeros(len(table), dtype=np.int64) if groups is None else np.asarray(groups)
    key = np.full(len(table), np.nan)
    by = np.full(len(table), "none", dtype=object)
    for g in pd.unique(groups):
        m = groups == g
        for values, name in ((primary, "score"), (second, "fallback")):
            has = m & np.isfinite(values)
            todo = has & (by == "none")
            if todo.any():
                pct = pd.Series(values[has]).rank(pct=True, method="average").to_numpy()
                full = np.full(len(table), np.nan)
                full[has] = pct
                key[todo] = full[todo]
                by[todo] = name
    return key, by.astype(str)


# ---- methods --------------------------------------------------------------------------------------------
def allocate_equal(available: np.ndarray, k: int) -> np.ndarray:
    """Split ``k`` equally over groups, capped by ``available``; leftovers go equally to groups with room.

    Water-filling: each round gives every group with room ``q = remaining // open`` (or what it has left);
    when ``q`` is 0 the last ``remaining`` units go one each to the groups with the most room (then the first).
    The result sums to ``min(k, sum(available))``.
    """
    available = np.asarray(available, dtype=np.int64)
    alloc = np.zeros(len(available), dtype=np.int64)
    remaining = min(max(int(k), 0), int(available.sum()))
    while remaining > 0:
        room = available - alloc
        open_ = np.flatnonzero(room > 0)
        q = remaining // len(open_)
        if q == 0:
            order = open_[np.argsort(-room[open_], kind="stable")][:remaining]
            alloc[order] += 1
            break
        add = np.minimum(room[open_], q)
        alloc[open_] += add
        remaining -= int(add.sum())
    return alloc


def _class_balanced(values: np.ndarray, labels: np.ndarray, k: int) -> tuple[np.ndarray, pd.DataFrame]:
    ok = np.isfinite(values)
    classes = np.unique(labels)
    members = [np.flatnonzero((labels == c) & ok) for c in classes]
    avail = np.array([len(m) for m in members])
    alloc = allocate_equal(avail, k)
    picked = [m[_descending(values[m])[:a]] for m, a in zip(members, alloc, strict=True)]
    chosen = np.concatenate(picked) if picked else np.zeros(0, dtype=np.int64)
    share = k / max(len(classes), 1)
    counts = pd.DataFrame({"class": classes, "available": avail, "equal share": np.round(share, 1),
                           "chosen": alloc})
    counts["note"] = np.where(alloc < share - 1e-9, "all it has (short of the equal share)",
                              np.where(alloc > share + 1e-9, "takes up the leftover", ""))
    return chosen[_descending(values[chosen])].astype(np.int64), counts


def _diversity(values: np.ndarray, embeddings: np.ndarray, k: int) -> np.ndarray:
    n = len(values)
    if k == 0:
        return np.zeros(0, dtype=np.int64)
    emb = np.asarray(embeddings, dtype=np.float32)
    if emb.ndim != 2 or emb.shape[0] != n:
        raise ValueError(f"embeddings must have shape ({n}, d), got {emb.shape}")
    emb = np.nan_to_num(emb)
    norms = np.linalg.norm(emb, axis=1, keepdims=True)
    emb = emb / np.where(norms > 0, norms, 1.0)
    sq = np.einsum("ij,ij->i", emb, emb)
    weights = 0.1 + 0.9 * _rank_pct(values)
    first = int(_descending(values)[0])
    chosen = [first]
    dist = np.full(n, np.inf, dtype=np.float64)
    taken = np.zeros(n, dtype=bool)
    taken[first] = True
    last = first
    for _ in range(k - 1):
        d2 = sq + sq[last] - 2.0 * (emb @ emb[last])
        dist = np.minimum(dist, np.sqrt(np.maximum(d2, 0.0)))
        gain = np.where(taken, -1.0, weights * dist)
        last = int(np.argmax(gain))
        if taken[last]:
            break
        taken[last] = True
        chosen.append(last)
    return np.asarray(chosen, dtype=np.int64)


def summarize(table: pd.DataFrame, embeddings: np.ndarray | None, budget: int | float, method: str,
              score: str = "si_function", seed: int = 0, label_column: str = "label",
              eval_mask: np.ndarray | None = None) -> np.ndarray:
    """Row positions of a summary of ``table`` under ``budget`` (count, or fraction in (0, 1)).

    Rows whose ``score`` is NaN are never chosen by ``top``/``class_balanced`` before every scored row
    (``plan_summary`` first turns scores into a key that covers held-out rows).

    Args:
        table: one row per sample with the ``score`` column (and ``label_column`` for ``class_balanced``
            and ``iterative``).
        embeddings: float (n, d) features aligned with ``table`` rows (``diversity`` and ``iterative``).
        budget: number of rows, or a fraction of the rows when a float strictly between 0 and 1.
        method: one of ``METHODS`` (see the module docstring for the objectives).
        score: the informativeness column (higher = more informative; unused by ``iterative``).
        seed: breaks exact ties in ``diversity`` reproducibly (rows are visited in a seeded permutation).
        label_column: the class column.
        eval_mask: rows whose inputs are the held-out x of the functional SI (``iterative``; all rows if None).

    Returns:
        int64 array of distinct row positions, in selection order.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    n = len(table)
    k = resolve_budget(n, budget)
    values = _score_values(table, score) if method != "iterative" else np.zeros(n)
    if n == 0 or k == 0:
        return np.zeros(0, dtype=np.int64)
    if method == "top":
        return _descending(values)[:k].astype(np.int64)
    if method in ("class_balanced", "iterative") and label_column not in table.columns:
        raise ValueError(f"{method} needs the {label_column!r} column")
    if method == "class_balanced":
        return _class_balanced(values, table[label_column].astype(str).to_numpy(), k)[0]
    if embeddings is None:
        raise ValueError(f"{method} selection needs the run's embeddings")
    if method == "iterative":
        from core.subset_info import iterative_selection

        emb = np.asarray(embeddings, dtype=np.float64)
        ev = emb[np.asarray(eval_mask, dtype=bool)] if eval_mask is not None else None
        return iterative_selection(emb, table[label_column].astype(str).to_numpy(), k, eval_features=ev)
    perm = np.random.default_rng(seed).permutation(n)
    picked = _diversity(values[perm], np.asarray(embeddings)[perm], k)
    return perm[picked].astype(np.int64)


# ---- the whole plan ---------------------------------------------------------------------------------------
@dataclass
class SummaryPlan:
    """A summary and how it was made.

    idx: row positions in the input table, in selection order.
    eligible: rows that could be chosen (after exclusions and with a ranking key).
    ranked_by: per row ``"score"``, ``"fallback"`` or ``"none"``.
    labels: the class of every row with relabel decisions applied.
    excluded: rows left out by each rule (``flagged``, ``removed``, ``no score``).
    per_class: for ``class_balanced``: class, available, equal share, chosen, note.
    fallback: the fallback score used for rows without ``score`` (None when none was needed or given).
    """

    idx: np.ndarray
    eligible: np.ndarray
    ranked_by: np.ndarray
    labels: np.ndarray
    excluded: dict[str, int]
    per_class: pd.DataFrame | None = None
    fallback: str | None = None
    notes: list[str] = field(default_factory=list)


def plan_summary(table: pd.DataFrame, embeddings: np.ndarray | None, budget: int | float, method: str, *,
                 score: str = "si_function", fallback: str | None = "auto", exclude_flagged: bool = True,
                 exclude_removed: bool = True, label_column: str = "label_name", split_column: str = "split",
                 seed: int = 0) -> SummaryPlan:
    """Choose a summary of ``table`` (see the module docstring): eligibility, ranking key, method.

    ``fallback="auto"`` picks the first of ``FALLBACKS`` defined where ``score`` is NaN; ``None`` leaves such
    rows out (they are counted in ``excluded["no score"]``). ``budget`` counts rows of the whole table (a
    fraction is of ``len(table)``) and is capped by the number of eligible rows.
    """
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; one of {', '.join(METHODS)}")
    n = len(table)
    k = resolve_budget(n, budget)
    mask, excluded = eligibility(table, exclude_flagged=exclude_flagged, exclude_removed=exclude_removed)
    labels = effective_labels(table, label_column) if label_column in table.columns else np.full(n, "")
    if method == "iterative":
        ranked_by = np.full(n, "score", dtype=object).astype(str)
        fb = None
    else:
        fb = pick_fallback(table, score) if fallback == "auto" else fallback
        key, ranked_by = ranking_key(table, score, fb, groups=labels if method == "class_balanced" else None)
        no_key = mask & ~np.isfinite(key)
        excluded["no score"] = int(no_key.sum())
        mask &= np.isfinite(key)
    rows = np.flatnonzero(mask)
    sub = pd.DataFrame({"label": labels[rows]})
    per_class = None
    if method == "iterative":
        if embeddings is None:
            raise ValueError("iterative selection needs the run's embeddings")
        emb = np.asarray(embeddings)
        ev = (table[split_column].astype(str).to_numpy() == "test") if split_column in table.columns else None
        ev_rows = np.flatnonzero(ev) if ev is not None and ev.any() else rows
        from core.subset_info import iterative_selection

        picked = iterative_selection(np.asarray(emb[rows], dtype=np.float64), labels[rows], min(k, len(rows)),
                                     eval_features=np.asarray(emb[ev_rows], dtype=np.float64))
    elif method == "class_balanced":
        picked, per_class = _class_balanced(key[rows], labels[rows], min(k, len(rows)))
        every = pd.DataFrame({"class": np.unique(labels)})
        per_class = every.merge(per_class, on="class", how="left").fillna(
            {"available": 0, "chosen": 0, "note": "no eligible rows"})
        per_class["equal share"] = per_class["equal share"].fillna(per_class["equal share"].max())
        per_class[["available", "chosen"]] = per_class[["available", "chosen"]].astype(int)
    else:
        sub["key"] = key[rows]
        emb = None if embeddings is None else np.asarray(embeddings)[rows]
        picked = summarize(sub, emb, min(k, len(rows)), method, score="key", seed=seed, label_column="label")
    return SummaryPlan(idx=rows[picked].astype(np.int64), eligible=mask, ranked_by=ranked_by, labels=labels,
                       excluded=excluded, per_class=per_class, fallback=fb)


def summary_information(embeddings: np.ndarray, plan: SummaryPlan, *, eval_mask: np.ndarray | None = None,
                        sigma: float = 1.0, lam: float = 1.0, k_random: int = 5,
                        seed: int = 0) -> dict[str, float | int]:
    """Non-additive information the summary leaves out, vs random subsets of the same size from the same pool.

    The pool is ``plan.eligible``; the information of the left-out rows R = pool \\ summary about the ridge head
    on the embeddings is ``core.subset_info.subset_information`` (½‖w(pool) − w(summary)‖²/σ² and its
    functional version over the ``eval_mask`` rows, in nats). The same is computed for ``k_random`` seeded
    random subsets of |summary| pool rows.

    Returns ``weights_nats``, ``function_nats`` (summary), ``random_weights_nats``, ``random_function_nats``
    (means), ``random_function_sd``, ``function_nats_all`` (what the whole pool carries: w(∅) = 0), ``lam``,
    ``sigma``, ``n_pool``, ``n_kept``.
    """
    from core.subset_info import subset_information

    pool = np.flatnonzero(plan.eligible)
    emb = np.asarray(embeddings, dtype=np.float64)
    if len(pool) == 0 or len(plan.idx) == 0:
        raise ValueError("the summary or its pool is empty")
    keep = np.isin(pool, plan.idx)
    ev = emb[np.asarray(eval_mask, dtype=bool)] if eval_mask is not None and np.any(eval_mask) else None
    feats, labels = emb[pool], plan.labels[pool]
    own = subset_information(feats, labels, keep, lam=lam, sigma=sigma, eval_features=ev)
    rng = np.random.default_rng(seed)
    rnd = []
    for _ in range(k_random):
        m = np.zeros(len(pool), dtype=bool)
        m[rng.choice(len(pool), int(keep.sum()), replace=False)] = True
        rnd.append(subset_information(feats, labels, m, lam=lam, sigma=sigma, eval_features=ev))
    rf = np.array([r["function_nats"] for r in rnd])
    return {"weights_nats": own["weights_nats"], "function_nats": own["function_nats"],
            "random_weights_nats": float(np.mean([r["weights_nats"] for r in rnd])) if rnd else float("nan"),
            "random_function_nats": float(rf.mean()) if rnd else float("nan"),
            "random_function_sd": float(rf.std(ddof=1)) if len(rf) > 1 else 0.0,
            "function_nats_all": own["function_nats_all"], "weights_nats_all": own["weights_nats_all"],
            "lam": own["lam"], "sigma": own["sigma"], "n_pool": int(len(pool)), "n_kept": int(keep.sum())}
