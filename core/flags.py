"""Mislabeled and adversarial flags: a documented rule over the per-sample scores.

Inputs: the run's sample table (given ``label``, the model's ``pred``/``pred_prob``/``loss``/``margin``,
Data-Maps ``confidence``, ``split`` and any score columns) and optionally the embeddings (for neighbours).
Every signal is optional: a missing or all-NaN column is skipped, and each reason lists the signals used.

Evidence (each mapped to [0, 1], higher = more suspicious)
----------------------------------------------------------
- ``model``: percentile of ``loss`` = −log p(given label)  (or of −``margin`` when loss is missing);
- ``datamaps``: percentile of 1 − ``confidence`` (mean p(given label) over epochs; Swayamdipta et al., 2020);
- ``neighbours``: percentile of the share of the ``k`` nearest neighbours in embedding space (training rows,
  the row itself excluded, exact faiss search) whose given label differs from the row's;
- ``cg``: percentile of ``cg_score`` *within the row's given class* (Ki et al., 2023: a mislabeled image is an
  atypical member of its class and has a large complexity gap);
- ``depth``, ``uniqueness``, ``el2n``, ``forgetting``, ``si_function``, ``si_weights``, ``variability``:
  percentiles of the score (weight 0 in the default mislabeled rule; see ``DEFAULT_THRESHOLDS``).

Percentiles are average ranks divided by the number of non-NaN rows, so signals on different scales combine
as a rank average (robust to heavy tails).

Rule
----
``suspicion_mislabeled`` = weighted mean of the available evidence with ``weights_mislabeled``.
``flag_mislabeled`` when at least ``min_votes`` (default 2, or 1 when one signal exists) of these absolute
criteria hold, one of them naming another class (model or neighbours):

- model: ``pred ≠ label`` with ``pred_prob ≥ model_prob`` (0.5);
- neighbours: a share ≥ ``neighbour_share`` (0.5) of the neighbours carry another label;
- datamaps: ``confidence < confidence_max`` (0.5: the given label was not learned, "hard-to-learn");
- cg: ``cg_score`` in the top ``cg_top`` (10 %) of its class.

``suspicion_adversarial`` = weighted geometric mean (high only when every part is high) of the model
evidence (high loss), the Data-Maps evidence (the given label was hard to learn; train rows only), the
``uniqueness`` percentile (the features sit apart from every other row) and the ``prediction_depth``
percentile (Baldock et al.: the early k-NN probes still side with the label, only late layers with the
attacked prediction). An attacked copy keeps its correct label but is hard for the network.
``flag_adversarial`` when the model predicts another class (``pred ≠ label``) while the data side with the
label: ``prediction_depth`` in the top ``depth_top`` (10 %) of all rows (or, without depth, fewer than
``neighbour_share`` of the embedding neighbours carry another label) *and* ``cg_score`` not in the top ``cg_top``
of its class (the pixels are not atypical for the label, unlike a flipped label). With neither depth nor
neighbours a model disagreement is not enough. A row flagged adversarial is not also flagged mislabeled.
The weights and thresholds were chosen on ``bench/bench_detection.py``'s adversarial settings; there the
flag finds most copies that the network was *not* trained on (precision ≈ 0.5, recall ≈ 0.9) but few of
those it was trained on (the pipeline's order), where every score is weak: treat it as a lead for review.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "model_prob": 0.5,
    "neighbour_share": 0.5,
    "confidence_max": 0.5,
    "cg_top": 0.10,
    "depth_top": 0.10,
    "min_votes": 2,
    "weights_mislabeled": {"model": 1.0, "datamaps": 1.0, "neighbours": 1.0, "cg": 1.0, "depth": 0.0,
                           "uniqueness": 0.0, "el2n": 0.0, "forgetting": 0.0, "si_function": 0.0,
                           "si_weights": 0.0, "variability": 0.0},
    "weights_adversarial": {"model": 1.0, "datamaps": 1.0, "uniqueness": 1.0, "depth": 1.0, "cg_typical": 0.0},
}

_PLAIN_SCORES = ("el2n", "forgetting", "si_function", "si_weights", "variability", "uniqueness")


# ------------------------------------------------------------------------------------------ helpers


def _col(table: pd.DataFrame, name: str) -> np.ndarray | None:
    """Float column or None when missing / all NaN."""
    if name not in table.columns:
        return None
    v = pd.to_numeric(table[name], errors="coerce").to_numpy(dtype=np.float64)
    return None if np.isnan(v).all() else v


def percentile(v: np.ndarray, groups: np.ndarray | None = None) -> np.ndarray:
    """Average rank / count in [0, 1] among non-NaN values (within each group when given); NaN stays NaN."""
    out = np.full(len(v), np.nan)
    keys = [None] if groups is None else np.unique(groups)
    for g in keys:
        sel = ~np.isnan(v) if g is None else (~np.isnan(v) & (groups == g))
        if sel.sum():
            out[sel] = pd.Series(v[sel]).rank(method="average").to_numpy() / sel.sum()
    return out


def neighbour_labels(embeddings: np.ndarray, labels: np.ndarray, support: np.ndarray, k: int) -> np.ndarray:
    """Given labels (n, k) of each row's k nearest support rows in embedding space, the row itself excluded."""
    from core.knn import knn

    pos = np.full(len(labels), -1)
    pos[support] = np.arange(len(support))
    k = min(k, len(support) - 1)
    _, idx = knn(embeddings, embeddings[support], k, self_index=pos, device="cpu")
    return labels[support][idx]


def _weighted_mean(parts: dict[str, np.ndarray], weights: dict[str, float], geometric: bool = False) -> np.ndarray:
    """Row-wise weighted (arithmetic or geometric) mean of the available parts, ignoring NaN entries."""
    n = len(next(iter(parts.values())))
    num, den = np.zeros(n), np.zeros(n)
    for name, v in parts.items():
        w = float(weights.get(name, 0.0))
        if w <= 0:
            continue
        ok = ~np.isnan(v)
        val = np.log(np.clip(v, 1e-6, 1.0)) if geometric else v
        num[ok] += w * val[ok]
        den[ok] += w
    mean = np.divide(num, den, out=np.full(n, np.nan), where=den > 0)
    out = np.exp(mean) if geometric else mean
    return np.nan_to_num(out, nan=0.0)


# ------------------------------------------------------------------------------------------ signals


class _Signals:
    """All evidence for one table, computed once."""

    def __init__(self, table: pd.DataFrame, embeddings: np.ndarray | None, k: int, th: dict[str, Any]):
        self.n = len(table)
        self.th = th
        self.label = table["label"].to_numpy().astype(np.int64)
        self.pred = _col(table, "pred")
        self.pred_prob = _col(table, "pred_prob")
        self.loss = _col(table, "loss")
        self.margin = _col(table, "margin")
        self.confidence = _col(table, "confidence")
        self.cg = _col(table, "cg_score")
        self.depth = _col(table, "prediction_depth")
        self.extra = {name: v for name in _PLAIN_SCORES if (v := _col(table, name)) is not None}
        self.nbr = self._neighbours(table, embeddings, k)
        self.cg_pct = percentile(self.cg, self.label) if self.cg is not None else None
        self.cg_cut_top = self._class_quantile(1.0 - th["cg_top"])

    def _neighbours(self, table: pd.DataFrame, emb: np.ndarray | None, k: int) -> dict[str, np.ndarray] | None:
        if emb is None or len(emb) != self.n or self.n < 3:
            return None
        split = table["split"].to_numpy() if "split" in table.columns else None
        support = np.flatnonzero(split == "train") if split is not None else np.arange(self.n)
        if len(support) < 2:
            support = np.arange(self.n)
        labs = neighbour_labels(np.asarray(emb, dtype=np.float32), self.label, support, k)
        other = (labs != self.label[:, None]).mean(axis=1)
        counts = np.apply_along_axis(lambda r: np.bincount(r, minlength=self.label.max() + 1), 1, labs)
        return {"other": other, "top": counts.argmax(1), "top_n": counts.max(1), "k": np.full(self.n, labs.shape[1])}

    def _class_quantile(self, q: float) -> np.ndarray | None:
        if self.cg is None:
            return None
        cut = np.full(self.n, np.nan)
        for c in np.unique(self.label):
            sel = (self.label == c) & ~np.isnan(self.cg)
            if sel.any():
                cut[self.label == c] = np.quantile(self.cg[sel], q)
        return cut

    def model_evidence(self) -> np.ndarray | None:
        if self.loss is not None:
            return percentile(self.loss)
        if self.margin is not None:
            return percentile(-self.margin)
        return None

    def mislabeled_parts(self) -> dict[str, np.ndarray]:
        parts: dict[str, np.ndarray] = {}
        if (m := self.model_evidence()) is not None:
            parts["model"] = m
        if self.confidence is not None:
            parts["datamaps"] = percentile(1.0 - self.confidence)
        if self.nbr is not None:
            parts["neighbours"] = percentile(self.nbr["other"])
        if self.cg_pct is not None:
            parts["cg"] = self.cg_pct
        if self.depth is not None:
            parts["depth"] = percentile(self.depth)
        for name, v in self.extra.items():
            parts[name] = percentile(v)
        return parts

    def adversarial_parts(self) -> dict[str, np.ndarray]:
        parts: dict[str, np.ndarray] = {}
        if (m := self.model_evidence()) is not None:
            parts["model"] = m
        if self.confidence is not None:
            parts["datamaps"] = percentile(1.0 - self.confidence)
        if self.cg_pct is not None:
            parts["cg_typical"] = 1.0 - self.cg_pct
        if self.depth is not None:
            parts["depth"] = percentile(self.depth)
        if "uniqueness" in self.extra:
            parts["uniqueness"] = percentile(self.extra["uniqueness"])
        return parts


# ------------------------------------------------------------------------------------- rule + reasons


def _model_votes(s: _Signals) -> np.ndarray:
    if s.pred is None:
        return np.zeros(s.n, bool)
    prob = s.pred_prob if s.pred_prob is not None else np.ones(s.n)
    return (s.pred != s.label) & (prob >= s.th["model_prob"])


def _mislabeled_votes(s: _Signals) -> dict[str, np.ndarray]:
    votes: dict[str, np.ndarray] = {}
    if s.pred is not None:
        votes["model"] = _model_votes(s)
    if s.nbr is not None:
        votes["neighbours"] = s.nbr["other"] >= s.th["neighbour_share"]
    if s.confidence is not None:
        votes["datamaps"] = s.confidence < s.th["confidence_max"]
    if s.cg is not None:
        votes["cg"] = np.nan_to_num(s.cg >= s.cg_cut_top, nan=0).astype(bool) & ~np.isnan(s.cg)
    return votes


def _depth_high(s: _Signals) -> np.ndarray | None:
    if s.depth is None:
        return None
    return np.nan_to_num(percentile(s.depth), nan=0.0) >= 1.0 - s.th["depth_top"]


def _cg_not_top(s: _Signals) -> np.ndarray | None:
    if s.cg is None:
        return None
    return ~np.isnan(s.cg) & (s.cg < np.nan_to_num(s.cg_cut_top, nan=np.inf))


def _adversarial_votes(s: _Signals) -> dict[str, np.ndarray]:
    """The conditions of the adversarial flag that this table can evaluate."""
    votes: dict[str, np.ndarray] = {}
    if s.pred is not None:
        votes["model disagrees"] = s.pred != s.label
    if (deep := _depth_high(s)) is not None:
        votes["early layers keep the label"] = deep
    elif s.nbr is not None:
        votes["neighbours keep the label"] = s.nbr["other"] < s.th["neighbour_share"]
    if (typical := _cg_not_top(s)) is not None:
        votes["pixels typical of the label"] = typical
    return votes


def _adversarial_flag(s: _Signals, votes: dict[str, np.ndarray]) -> np.ndarray:
    """pred ≠ label while depth (or the neighbours) and the pixels (cg) side with the label."""
    if "model disagrees" not in votes or not ({"early layers keep the label", "neighbours keep the label"} & set(votes)):
        return np.zeros(s.n, bool)
    return np.logical_and.reduce(list(votes.values()))


def _reason(i: int, s: _Signals, votes: dict[str, np.ndarray], kind: str, used: list[str]) -> str:
    bits: list[str] = []
    if s.cg is not None and not np.isnan(s.cg[i]):
        top = 100.0 * (1.0 - s.cg_pct[i]) + 100.0 / max(1, (s.label == s.label[i]).sum())
        cut = s.cg_cut_top[i]
        op = "≥" if s.cg[i] >= cut else "<"
        bits.append(f"cg_score in top {max(top, 1.0):.0f}% of class {s.label[i]} ({s.cg[i]:.3g} {op} {cut:.3g})")
    if s.pred is not None:
        p = f" (p={s.pred_prob[i]:.2f})" if s.pred_prob is not None else ""
        bits.append(f"model predicts {int(s.pred[i])}{p}, label is {s.label[i]}")
    if s.nbr is not None:
        bits.append(f"{int(s.nbr['top_n'][i])}/{int(s.nbr['k'][i])} neighbours are {int(s.nbr['top'][i])}")
    if s.confidence is not None and not np.isnan(s.confidence[i]):
        bits.append(f"confidence {s.confidence[i]:.2f}")
    if s.depth is not None and not np.isnan(s.depth[i]):
        bits.append(f"prediction_depth {s.depth[i]:.3g}")
    agree = [name for name, v in votes.items() if v[i]]
    head = f"{kind}? ({', '.join(agree)} agree)" if agree else f"{kind}?"
    return f"{head}: " + "; ".join(bits) + f" [used: {', '.join(used) or 'nothing'}]"


def compute_flags(
    table: pd.DataFrame,
    embeddings: np.ndarray | None,
    *,
    thresholds: dict[str, Any] | None = None,
    k: int = 10,
) -> pd.DataFrame:
    """Flags, reasons and suspicion ranks for every row of ``table`` (see the module docstring for the rule).

    Returns a DataFrame (same index as ``table``) with ``flag_mislabeled``, ``flag_adversarial`` (bool),
    ``flag_reason`` (str; empty for unflagged rows), ``suspicion_mislabeled`` and ``suspicion_adversarial``
    (float in [0, 1], higher = more suspicious).
    """
    th = {**DEFAULT_THRESHOLDS, **(thresholds or {})}
    for key in ("weights_mislabeled", "weights_adversarial"):
        th[key] = {**DEFAULT_THRESHOLDS[key], **(thresholds or {}).get(key, {})}
    if "label" not in table.columns:
        raise ValueError("compute_flags needs a 'label' column")
    s = _Signals(table, embeddings, k, th)
    mis_parts, adv_parts = s.mislabeled_parts(), s.adversarial_parts()
    n = len(table)
    sus_mis = _weighted_mean(mis_parts, th["weights_mislabeled"]) if mis_parts else np.zeros(n)
    sus_adv = _weighted_mean(adv_parts, th["weights_adversarial"], geometric=True) if adv_parts else np.zeros(n)
    votes = _mislabeled_votes(s)
    n_votes = np.sum(list(votes.values()), axis=0) if votes else np.zeros(n, int)
    names_other = np.zeros(n, bool)
    for key in ("model", "neighbours"):
        if key in votes:
            names_other |= votes[key]
    need = min(int(th["min_votes"]), max(1, len(votes)))
    adv_votes = _adversarial_votes(s)
    flag_adv = _adversarial_flag(s, adv_votes)
    flag_mis = (n_votes >= need) & names_other & ~flag_adv
    used_mis = [k_ for k_ in mis_parts if th["weights_mislabeled"].get(k_, 0) > 0]
    used_adv = [k_ for k_ in adv_parts if th["weights_adversarial"].get(k_, 0) > 0]
    reasons = np.full(n, "", dtype=object)
    for i in np.flatnonzero(flag_mis):
        reasons[i] = _reason(i, s, votes, "mislabeled", used_mis)
    for i in np.flatnonzero(flag_adv):
        reasons[i] = _reason(i, s, adv_votes, "adversarial", used_adv)
    return pd.DataFrame(
        {"flag_mislabeled": flag_mis, "flag_adversarial": flag_adv, "flag_reason": reasons,
         "suspicion_mislabeled": np.clip(sus_mis, 0, 1), "suspicion_adversarial": np.clip(sus_adv, 0, 1)},
        index=table.index,
    )
