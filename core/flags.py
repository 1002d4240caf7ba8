"""Mislabeled and adversarial flags: two independent, documented rules over the per-sample evidence.

Inputs: the run's sample table (given ``label``, the model's ``pred``/``pred_prob``/``loss``/``margin``,
Data-Maps ``confidence``, ``split``, score columns, and the measurements of ``core.adversarial_evidence``:
``reverse_eps``, ``noise_flip``, ``px_label_share``, ``px_pred_share``, ``noise_level``, ``noise_z``) and optionally
the embeddings (for feature-space neighbours). Every signal is optional: a missing or all-NaN column is skipped, and
each reason lists the evidence that held.

Mislabeled: the label is wrong, the image is a normal image of another class
----------------------------------------------------------------------------
Votes (each a yes/no per row):

- model: ``pred ≠ label`` with ``pred_prob ≥ model_prob``;
- neighbours: a share ≥ ``neighbour_share`` of the ``k`` nearest *training* rows in the network's feature space
  (the row itself excluded, exact faiss search) carry another label;
- pixels: fewer than ``pixel_keep_share`` of the nearest rows in pixel space carry the given label
  (``px_label_share < pixel_keep_share``: exactly the complement of the adversarial rule's pixel condition, so a
  held-out row's pixels cannot support both flags), on a natural image: not where ``noise_z ≥ noise_z_min``
  (the image carries a perturbation, adversarial route 2; its pixel neighbours do not show which class it is a
  normal image of, and attacked copies fooled into another class otherwise get this vote);
- datamaps: ``confidence < confidence_max`` (the given label was not learned; Swayamdipta et al., 2020);
- cg: ``cg_score`` in the top ``cg_top`` of its class (Ki et al., 2023: a mislabeled image has a large
  complexity gap).

``flag_mislabeled`` = at least max(``min_votes``, ⌈``min_vote_share`` × the votes whose evidence exists for the
row⌉) votes (a held-out row has no Data-Maps vote), one of them naming another class (those in ``name_other_by``),
*and* one of them saying the image itself does not look like its label (pixels or datamaps; where neither is
available, cg). An attacked copy fails the last condition: its pixels are those of an image of its label.

*Second route, the confident joint* (``confident_joint``; confident learning, Northcutt, Jiang, Chuang,
"Confident Learning: Estimating Uncertainty in Dataset Labels", JAIR 2021, the method cleanlab implements).
It needs out-of-sample predicted probabilities p̂ᵢ: for a training row those of the SI's cross-fitted networks
(``crossfit_label_prob`` = p̂ᵢ(yᵢ), ``crossfit_pred`` = argmax p̂ᵢ, ``crossfit_pred_prob`` = max p̂ᵢ, from the
network that did not train on the row; ``core.scores.si_crossfit``), for a held-out row the run's own network
(``pred``, ``pred_prob``, p̂ᵢ(yᵢ) = exp(−``loss``)). Per-class threshold tⱼ = mean of p̂ᵢ(j) over the rows
labelled j that have p̂; a row labelled i *confidently belongs* to j ≠ i when p̂ᵢ(j) ≥ tⱼ (the confident
joint's off-diagonal). Only the predicted class j = argmax p̂ᵢ is tested (when it qualifies it is the paper's
argmax over the qualifying classes; a row where only a lower-ranked class qualifies is not counted). Where a
class-conditional noise pair makes the model half-learn the wrong labels, tⱼ drops with it, which a fixed
``model_prob`` cannot do. The route: confident joint *and* a vote naming another class (``name_other_by``)
*and* a vote that the image does not look like its label (as above); it adds rows to the vote rule, never
removes any. Without cross-fitted columns (SI not computed, or SI on fixed features) only held-out rows have
p̂, and the training rows are judged by the vote rule alone.

Adversarial: the image was pushed across a decision boundary
------------------------------------------------------------
``flag_adversarial`` only where there is adversarial evidence, on every row the rule may judge (held-out rows;
training rows only when ``flag_train_adversarial`` is set, because injected or incoming attacked inputs are
never trained on, and a training row the network got wrong is a mislabel or a hard case). Two routes, either
suffices:

*Route 1, the attack worked* (all must hold):

- the network disagrees with the label (``pred ≠ label``);
- the pixels do not explain it: a share ≥ ``pixel_keep_share`` of the pixel-space neighbours carry the *given*
  label (``px_label_share``) and at most ``pixel_pred_max`` carry the predicted class (``px_pred_share``), so the
  network's prediction is not what the image looks like (a natural error of the network usually sits between
  the two classes in pixel space too);
- the disagreement is fragile: a few signed-gradient steps towards the label restore it within an L∞ budget
  ``reverse_eps ≤ reverse_max`` (an image of another class often needs more than the measured budget);
- the image carries some trace of a perturbation: ``noise_z ≥ route1_noise_z_min`` (the same noise measure as
  route 2, at a lower level; not required of a table without ``noise_z``). The network's own errors on clean
  held-out images pass the three conditions above as often as attacked copies do (on MNIST with class-pair
  noise they were nearly every route-1 flag that route 2 did not also raise, the rest flipped labels), but
  their noise level is that of their class; a small-ε attack that route 2 misses still leaves a level well
  above it. An attack that leaves no high-frequency trace at all (a smooth or spatial perturbation) is
  therefore not flagged by either route.

*Route 2, the image carries an attack's perturbation* (model-free; also the copies the attack failed on, where
the network still agrees with the label): the image's high-frequency noise level (Immerkær's estimator,
``noise_level``) sits far above that of the training images of its given label: ``noise_z ≥ noise_z_min``
(robust z of log σ̂ within the class, ``core.adversarial_evidence.noise_z``). An L∞ sign perturbation of size
ε turns smooth regions into a 0/ε pattern, which natural images of the class do not have; the reason states the
ratio to the class's median level ("pixel noise 3.7× the typical level of class '7'").

No CG condition: attacked copies can have a *high* CG score (PGD ε = 0.3, bench/results/evidence_detection.md).
Without the adversarial measurements (route 1) and ``noise_z`` (route 2) no row is flagged adversarial. The two
rules are evaluated independently; a row carries both flags only when both kinds of evidence hold, and
``flag_reason`` then lists both.

Cleaned neighbours (a second pass)
----------------------------------
Both rules read neighbour votes: the share of a row's pixel neighbours that carry its label (``px_label_share``)
or the predicted class (``px_pred_share``), and the share of its feature neighbours (training rows) that carry
another label. Under class-conditional noise (a share of the 2s labelled 7 and back) a flipped image's nearest
neighbours are images of its true class of which many carry the same wrong label, so the raw shares say "the
image looks like its label": the mislabeled rule loses its pixel and neighbour votes, and the adversarial rule's
route 1 sees "the pixels keep the label". With ``relabel_neighbours`` on (the default), the rules run twice:
after the first pass every row flagged mislabeled counts, as a neighbour, with its suggested label (below)
instead of its given one (one step of iterative label cleaning: the neighbour votes are taken over labels with
the detected errors corrected); the pixel shares (when ``compute_flags`` is given the rows' pixel neighbours,
``pixel_neighbours``; the pipeline passes them), the feature-neighbour votes and the suggestion's neighbour
majority are recomputed from the cleaned labels, and both rules and the suspicion ranks are decided again on
them. The stored ``px_label_share`` / ``px_pred_share`` stay the raw measurements; a reason says how many of the
row's pixel neighbours count as their suggested class. One pass only: a row the second pass adds or drops does
not change anyone's neighbours again.

Suspicion (for ranking; in [0, 1], higher = more suspicious)
------------------------------------------------------------
``suspicion_mislabeled`` = weighted mean of percentiles (average rank / count) of the graded evidence
(``weights_mislabeled``: model loss, 1 − Data-Maps confidence, feature-neighbour disagreement, pixel-neighbour
disagreement, within-class CG percentile, …). ``suspicion_adversarial`` = weighted geometric mean of
``px_label_share``, 1 − ``px_pred_share`` and 1 − ``reverse_eps``/``reverse_scale`` on rows where the network
disagrees with the label (0 elsewhere), then raised to ``clip(noise_z / noise_z_scale, 0, 1)`` where that is
larger (the perturbation's trace, also on rows where the attack failed). Without the measurements it falls back
to the geometric mean of model loss, Data-Maps, uniqueness and prediction-depth percentiles (ranking only,
never a flag).

Relabel suggestion
------------------
``suggested_label`` combines the model's prediction and the feature-neighbour majority: the class both name
when they agree; otherwise the one with the stronger support (model: ``pred_prob``; neighbours: their share),
with ``suggestion_agrees = False`` and the disagreement spelled out in ``suggestion``.

Calibration: the thresholds in ``DEFAULT_THRESHOLDS`` marked "fitted" were chosen by
``bench/bench_flags_calibration.py`` on MNIST-5k seeds 0–3 (10% symmetric noise, or 30% class-pair noise on
pairs no evaluation uses; FGSM ε = 0.15 copies) and evaluated on other seeds, pairs, attacks, ε and clean data
(``bench/results/flags_calibration.md``).
"""

from __future__ import annotations

from functools import cached_property
from typing import Any

import numpy as np
import pandas as pd

DEFAULT_THRESHOLDS: dict[str, Any] = {
    "model_prob": 0.6,  # fitted
    "neighbour_share": 0.5,
    "confidence_max": 0.5,
    "cg_top": 0.10,
    "min_votes": 2,  # fitted: floor on the number of votes
    "min_vote_share": 0.6,  # fitted: share of the row's available votes that must hold
    "name_other_by": ("model", "neighbours"),  # fitted: which votes may name the other class
    "confident_joint": True,  # fitted (on/off): the confident-joint route of the mislabeled flag
    "pixel_keep_share": 0.4,  # fitted (jointly for both rules: the adversarial condition and its complement)
    "pixel_pred_max": 1.0,  # fitted (the fit runs gave no reason to use it: 1.0 = off)
    "reverse_max": 0.2,  # fitted
    "reverse_scale": 0.2,
    "noise_z_min": 3.0,  # fitted: route 2, noise level this many robust SDs above the class (inf = off)
    "noise_z_scale": 8.0,  # noise_z at which the noise part of suspicion_adversarial reaches 1
    "route1_noise_z_min": 1.645,  # fitted: route 1 needs the noise level this many robust SDs above its class
    "relabel_neighbours": True,  # rule form (module docstring, "Cleaned neighbours"); False = one pass
    "weights_mislabeled": {"model": 1.0, "datamaps": 1.0, "neighbours": 1.0, "pixels": 1.0, "cg": 1.0,
                           "depth": 0.0, "uniqueness": 0.0, "el2n": 0.0, "forgetting": 0.0, "si_function": 0.0,
                           "si_weights": 0.0, "variability": 0.0},
    "weights_adversarial": {"pixels_keep_label": 1.0, "pixels_not_pred": 1.0, "reverse": 1.0},
    "weights_adversarial_fallback": {"model": 1.0, "datamaps": 1.0, "uniqueness": 1.0, "depth": 1.0},
}

_PLAIN_SCORES = ("el2n", "forgetting", "si_function", "si_weights", "variability", "uniqueness")
OUTPUT_COLUMNS = ("flag_mislabeled", "flag_adversarial", "flag_reason", "suspicion_mislabeled",
                  "suspicion_adversarial", "suggested_label", "suggested_label_name", "suggestion_agrees",
                  "suggestion")


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


def neighbour_labels(embeddings: np.ndarray, labels: np.ndarray, support: np.ndarray, k: int,
                     return_index: bool = False) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
    """Given labels (n, k) of each row's k nearest support rows in embedding space, the row itself excluded
    (and, with ``return_index``, their positions in ``support``)."""
    from core.knn import knn

    pos = np.full(len(labels), -1)
    pos[support] = np.arange(len(support))
    k = min(k, len(support) - 1)
    _, idx = knn(embeddings, embeddings[support], k, self_index=pos, device="cpu")
    return (labels[support][idx], np.asarray(idx)) if return_index else labels[support][idx]


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


def suggest_label(pred: np.ndarray | None, pred_prob: np.ndarray | None, nbr_top: np.ndarray | None,
                  nbr_share: np.ndarray | None, n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(suggested class, agrees) per row from the model's prediction and the neighbour majority.

    Both present: the common class where ``pred == nbr_top`` (agrees = True); otherwise the model's class when
    ``pred_prob > nbr_share``, else the neighbours' (agrees = False). One present: that one (agrees = False
    is reported as True only when both exist and agree). Neither: −1 (``n`` rows).
    """
    if n is None:
        n = len(pred) if pred is not None else (len(nbr_top) if nbr_top is not None else 0)
    if pred is None and nbr_top is None:
        return np.full(n, -1, np.int64), np.zeros(n, bool)
    if nbr_top is None:
        return np.asarray(pred, np.int64), np.zeros(n, bool)
    if pred is None:
        return np.asarray(nbr_top, np.int64), np.zeros(n, bool)
    pred = np.asarray(pred, np.int64)
    nbr_top = np.asarray(nbr_top, np.int64)
    prob = np.ones(n) if pred_prob is None else np.nan_to_num(pred_prob, nan=0.0)
    share = np.nan_to_num(nbr_share, nan=0.0) if nbr_share is not None else np.zeros(n)
    agree = pred == nbr_top
    return np.where(agree | (prob > share), pred, nbr_top), agree


def class_thresholds(label: np.ndarray, label_prob: np.ndarray) -> np.ndarray:
    """Confident learning's per-class thresholds tⱼ = mean of p̂ᵢ(j) over the rows i labelled j with a finite
    p̂ᵢ(j) (NaN for a class without such a row); indexed by class up to ``label.max()``."""
    label = np.asarray(label, np.int64)
    t = np.full(int(label.max()) + 1 if len(label) else 0, np.nan)
    for j in np.unique(label):
        v = label_prob[(label == j) & np.isfinite(label_prob)]
        if len(v):
            t[j] = float(v.mean())
    return t


def confident_joint_vote(label: np.ndarray, label_prob: np.ndarray, pred: np.ndarray,
                         pred_prob: np.ndarray) -> np.ndarray:
    """True where a row's out-of-sample prediction j = ``pred`` ≠ its label and ``pred_prob`` = p̂ᵢ(j) ≥ tⱼ
    (``class_thresholds``): the row is counted off the diagonal of the confident joint (Northcutt, Jiang,
    Chuang, JAIR 2021). ``pred`` < 0 or NaN probabilities: False; a class j with no threshold: False."""
    label = np.asarray(label, np.int64)
    pred = np.asarray(pred, np.int64)
    t = class_thresholds(label, np.asarray(label_prob, np.float64))
    ok = (pred >= 0) & (pred < len(t)) & np.isfinite(pred_prob) & (pred != label)
    tj = np.full(len(label), np.nan)
    tj[ok] = t[pred[ok]]
    return ok & np.isfinite(tj) & (np.nan_to_num(pred_prob, nan=-np.inf) >= np.nan_to_num(tj, nan=np.inf))


# ------------------------------------------------------------------------------------------ signals


class _Signals:
    """All evidence for one table, computed once."""

    def __init__(self, table: pd.DataFrame, embeddings: np.ndarray | None, k: int, th: dict[str, Any]):
        self.n = len(table)
        self.th = th
        self.label = table["label"].to_numpy().astype(np.int64)
        p = _col(table, "pred")
        self.pred = None if p is None else np.nan_to_num(p, nan=-1).astype(np.int64)
        self.pred_prob = _col(table, "pred_prob")
        self.loss = _col(table, "loss")
        self.margin = _col(table, "margin")
        self.confidence = _col(table, "confidence")
        self.cg = _col(table, "cg_score")
        self.depth = _col(table, "prediction_depth")
        self.reverse = _col(table, "reverse_eps")
        self.noise_flip = _col(table, "noise_flip")
        self.px_label = _col(table, "px_label_share")
        self.px_pred = _col(table, "px_pred_share")
        self.noise_level = _col(table, "noise_level")
        self.noise_z = _col(table, "noise_z")
        self.px_relabelled: np.ndarray | None = None  # set by relabel_neighbours
        self.nbr_relabelled: np.ndarray | None = None
        self.nbr_index: np.ndarray | None = None  # set by _neighbours
        self.cf_label_prob = _col(table, "crossfit_label_prob")
        self.cf_pred = _col(table, "crossfit_pred")
        self.cf_pred_prob = _col(table, "crossfit_pred_prob")
        self.split = table["split"].to_numpy().astype(str) if "split" in table.columns else None
        self.extra = {name: v for name, v in ((s, _col(table, s)) for s in _PLAIN_SCORES) if v is not None}
        self.nbr = self._neighbours(embeddings, k)
        self.cg_pct = percentile(self.cg, self.label) if self.cg is not None else None
        self.cg_cut_top = self._class_quantile(1.0 - th["cg_top"])

    def _neighbours(self, emb: np.ndarray | None, k: int) -> dict[str, np.ndarray] | None:
        if emb is None or len(emb) != self.n or self.n < 3:
            return None
        support = np.flatnonzero(self.split == "train") if self.split is not None else np.arange(self.n)
        if len(support) < 2:
            support = np.arange(self.n)
        labs, idx = neighbour_labels(np.asarray(emb, dtype=np.float32), self.label, support, k, return_index=True)
        self.nbr_index = support[idx]  # (n, k) rows of the table
        return self._neighbour_votes(labs)

    def _neighbour_votes(self, labs: np.ndarray) -> dict[str, np.ndarray]:
        other = (labs != self.label[:, None]).mean(axis=1)
        counts = np.zeros((self.n, int(max(self.label.max(), labs.max())) + 1), np.int64)
        np.add.at(counts, (np.repeat(np.arange(self.n), labs.shape[1]), labs.ravel()), 1)
        return {"other": other, "top": counts.argmax(1), "top_n": counts.max(1),
                "k": np.full(self.n, labs.shape[1])}

    def _class_quantile(self, q: float) -> np.ndarray | None:
        if self.cg is None:
            return None
        cut = np.full(self.n, np.nan)
        for c in np.unique(self.label):
            sel = (self.label == c) & ~np.isnan(self.cg)
            if sel.any():
                cut[self.label == c] = np.quantile(self.cg[sel], q)
        return cut

    @cached_property
    def out_of_sample(self) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
        """(p̂ᵢ(yᵢ), argmax p̂ᵢ, max p̂ᵢ) out of sample (module docstring, second route), NaN / −1 where a
        row has none; None when no row has any."""
        lp, pred, pp = np.full(self.n, np.nan), np.full(self.n, -1, np.int64), np.full(self.n, np.nan)
        if self.cf_label_prob is not None and self.cf_pred is not None and self.cf_pred_prob is not None:
            ok = np.isfinite(self.cf_label_prob) & np.isfinite(self.cf_pred) & np.isfinite(self.cf_pred_prob)
            lp[ok], pred[ok], pp[ok] = self.cf_label_prob[ok], self.cf_pred[ok].astype(np.int64), self.cf_pred_prob[ok]
        if self.split is not None and self.pred is not None and self.pred_prob is not None and self.loss is not None:
            ok = (self.split != "train") & np.isnan(lp) & np.isfinite(self.loss) & np.isfinite(self.pred_prob) \
                & (self.pred >= 0)
            lp[ok], pred[ok], pp[ok] = np.exp(-self.loss[ok]), self.pred[ok], self.pred_prob[ok]
        return None if np.isnan(lp).all() else (lp, pred, pp)

    @cached_property
    def confident_joint(self) -> np.ndarray | None:
        """Rows that confidently belong to another class than their label: argmax p̂ᵢ = j ≠ yᵢ and p̂ᵢ(j) ≥ tⱼ
        with tⱼ = mean p̂ₖ(j) over the rows k labelled j that have p̂ (Northcutt et al., JAIR 2021). None without
        out-of-sample probabilities."""
        if self.out_of_sample is None:
            return None
        return confident_joint_vote(self.label, *self.out_of_sample)

    @cached_property
    def noise_ratio(self) -> np.ndarray | None:
        """``noise_level`` / the median ``noise_level`` of the training rows (every row without a split) of the
        row's given label: the 'N× the typical level' of the reasons."""
        if self.noise_level is None:
            return None
        ref = (self.split == "train") if self.split is not None else np.ones(self.n, bool)
        ok = ref & np.isfinite(self.noise_level)
        if not ok.any():
            ok = np.isfinite(self.noise_level)
        overall = float(np.median(self.noise_level[ok]))
        med = np.full(self.n, overall)
        for c in np.unique(self.label):
            sel = ok & (self.label == c)
            if sel.sum() >= 5:
                med[self.label == c] = float(np.median(self.noise_level[sel]))
        return self.noise_level / np.maximum(med, 1e-12)

    def noise_part(self) -> np.ndarray | None:
        """clip(noise_z / noise_z_scale, 0, 1), 0 where unmeasured."""
        if self.noise_z is None:
            return None
        return np.clip(np.nan_to_num(self.noise_z, nan=0.0) / float(self.th["noise_z_scale"]), 0.0, 1.0)

    @property
    def disagrees(self) -> np.ndarray:
        return np.zeros(self.n, bool) if self.pred is None else self.pred != self.label

    @cached_property
    def adv_measured(self) -> np.ndarray:
        """Rows whose model-based adversarial measurements were taken: a finite ``noise_flip`` or
        ``reverse_eps`` (``core.adversarial_evidence`` measures only the rows the flag may judge); without a
        ``noise_flip`` column, every disagreeing row (tables written before the measurements were limited)."""
        if self.reverse is None:
            return np.zeros(self.n, bool)
        if self.noise_flip is None:
            return self.disagrees.copy()
        return np.isfinite(self.noise_flip) | np.isfinite(self.reverse)

    @property
    def has_adversarial_evidence(self) -> bool:
        return self.pred is not None and self.px_label is not None and self.reverse is not None

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
        if self.px_label is not None:
            parts["pixels"] = percentile(1.0 - self.px_label)
        if self.cg_pct is not None:
            parts["cg"] = self.cg_pct
        if self.depth is not None:
            parts["depth"] = percentile(self.depth)
        for name, v in self.extra.items():
            parts[name] = percentile(v)
        return parts

    def adversarial_parts(self) -> dict[str, np.ndarray]:
        """Graded adversarial evidence in [0, 1] on disagreeing rows (NaN where a measurement is missing)."""
        parts: dict[str, np.ndarray] = {}
        if self.px_label is not None:
            parts["pixels_keep_label"] = self.px_label
        if self.px_pred is not None:
            parts["pixels_not_pred"] = 1.0 - self.px_pred
        if self.reverse is not None:
            scale = float(self.th["reverse_scale"])
            r = np.where(np.isnan(self.reverse), 0.0, np.clip(1.0 - self.reverse / scale, 0.0, 1.0))
            parts["reverse"] = np.where(self.disagrees & self.adv_measured, r, np.nan)
        return parts

    def fallback_adversarial_parts(self) -> dict[str, np.ndarray]:
        parts: dict[str, np.ndarray] = {}
        if (m := self.model_evidence()) is not None:
            parts["model"] = m
        if self.confidence is not None:
            parts["datamaps"] = percentile(1.0 - self.confidence)
        if self.depth is not None:
            parts["depth"] = percentile(self.depth)
        if "uniqueness" in self.extra:
            parts["uniqueness"] = percentile(self.extra["uniqueness"])
        return parts


# ------------------------------------------------------------------------------------- the two rules


def _vote_available(s: _Signals) -> dict[str, np.ndarray]:
    """Per vote, the rows where its evidence exists (a NaN measurement is not a 'no' vote, it is no vote)."""
    ok: dict[str, np.ndarray] = {}
    if s.pred is not None:
        ok["model"] = s.pred >= 0
    if s.nbr is not None:
        ok["neighbours"] = np.ones(s.n, bool)
    for key, v in (("pixels", s.px_label), ("datamaps", s.confidence), ("cg", s.cg)):
        if v is not None:
            ok[key] = ~np.isnan(v)
    return ok


def _mislabeled_votes(s: _Signals) -> dict[str, np.ndarray]:
    th = s.th
    votes: dict[str, np.ndarray] = {}
    if s.pred is not None:
        prob = s.pred_prob if s.pred_prob is not None else np.ones(s.n)
        votes["model"] = s.disagrees & (np.nan_to_num(prob, nan=0.0) >= th["model_prob"])
    if s.nbr is not None:
        votes["neighbours"] = s.nbr["other"] >= th["neighbour_share"]
    if s.px_label is not None:  # the complement of the adversarial rule's "pixel neighbours keep the label"
        votes["pixels"] = ~np.isnan(s.px_label) & (np.nan_to_num(s.px_label, nan=1.0) < th["pixel_keep_share"])
        if s.noise_z is not None:  # a perturbed image's pixels do not show which class it is a normal image of
            votes["pixels"] &= ~(np.nan_to_num(s.noise_z, nan=-np.inf) >= float(th["noise_z_min"]))
    if s.confidence is not None:
        votes["datamaps"] = np.nan_to_num(s.confidence, nan=np.inf) < th["confidence_max"]
    if s.cg is not None:
        votes["cg"] = ~np.isnan(s.cg) & (s.cg >= np.nan_to_num(s.cg_cut_top, nan=np.inf))
    return votes


def mislabeled_flag(votes: dict[str, np.ndarray], min_votes: int, n: int,
                    name_other_by: tuple[str, ...] = ("model", "neighbours"),
                    available: dict[str, np.ndarray] | None = None, min_vote_share: float = 0.0,
                    confident: np.ndarray | None = None) -> np.ndarray:
    """At least max(``min_votes``, ⌈``min_vote_share`` · votes available for the row⌉) votes (capped at the
    number available), one naming another class (one of ``name_other_by``, among model / neighbours) and one
    saying the image does not look like its label (pixels / datamaps; cg where neither exists).

    ``confident`` (the confident-joint vote, ``confident_joint_vote``), when given, is a second route:
    ``confident`` and one vote naming another class and one data-side vote, whatever the count."""
    if not votes:
        return np.zeros(n, bool)
    n_votes = np.sum(list(votes.values()), axis=0)
    n_avail = np.sum([available.get(k, np.ones(n, bool)) for k in votes], axis=0) if available is not None \
        else np.full(n, len(votes))
    need = np.maximum(int(min_votes), np.ceil(float(min_vote_share) * n_avail - 1e-9))
    need = np.maximum(1, np.minimum(need, n_avail))
    names_other = np.zeros(n, bool)
    keys = [key for key in name_other_by if key in votes] or [key for key in ("model", "neighbours") if key in votes]
    for key in keys:
        names_other |= votes[key]
    data_keys = [k for k in ("pixels", "datamaps") if k in votes] or [k for k in ("cg",) if k in votes]
    if not data_keys:
        data_side = np.ones(n, bool)
    else:
        data_side = np.logical_or.reduce([votes[k] for k in data_keys])
    if not ({"model", "neighbours"} & set(votes)):
        names_other = np.ones(n, bool)  # only data-side evidence exists: it alone decides
    route1 = (n_votes >= need) & names_other & data_side
    if confident is None:
        return route1
    return route1 | (np.asarray(confident, bool) & names_other & data_side)


def _eligible(s: _Signals, flag_train: bool) -> np.ndarray:
    return np.ones(s.n, bool) if (flag_train or s.split is None) else s.split != "train"


def _noise_route(s: _Signals, flag_train: bool) -> np.ndarray:
    """Route 2 of the adversarial flag: a judged row whose noise level is ``noise_z_min`` robust SDs or more
    above its class's training rows. All False without ``noise_z``."""
    if s.noise_z is None:
        return np.zeros(s.n, bool)
    return _eligible(s, flag_train) & (np.nan_to_num(s.noise_z, nan=-np.inf) >= float(s.th["noise_z_min"]))


def adversarial_flag(s: _Signals, flag_train: bool) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray]:
    """(flag, route-1 conditions, route-2 rows): the flag is route 1 (every condition) or route 2."""
    votes = _adversarial_votes(s, flag_train)
    route1 = np.logical_and.reduce(list(votes.values())) if votes else np.zeros(s.n, bool)
    route2 = _noise_route(s, flag_train)
    return route1 | route2, votes, route2


def _adversarial_votes(s: _Signals, flag_train: bool) -> dict[str, np.ndarray]:
    """The conditions of route 1 of the adversarial flag (all must hold); empty without its measurements."""
    if not s.has_adversarial_evidence:
        return {}
    th = s.th
    eligible = _eligible(s, flag_train)
    return {
        "held-out row": eligible,
        "model disagrees": s.disagrees,
        "pixel neighbours keep the label": (np.nan_to_num(s.px_label, nan=0.0) >= th["pixel_keep_share"])
        & (np.nan_to_num(s.px_pred, nan=1.0) <= th["pixel_pred_max"] if s.px_pred is not None else True),
        "a small step restores the label": s.adv_measured & (np.nan_to_num(s.reverse, nan=np.inf) <= th["reverse_max"]),
        **({"pixel noise above its class's usual": np.nan_to_num(s.noise_z, nan=np.inf)
            >= float(th["route1_noise_z_min"])}
           if s.noise_z is not None and np.isfinite(float(th["route1_noise_z_min"])) else {}),
    }


def decide(s: _Signals, flag_train: bool) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray,
                                                  dict[str, np.ndarray], np.ndarray]:
    """Both rules on the current signals: (flag_mislabeled, its votes, flag_adversarial, route-1 conditions,
    route-2 rows)."""
    th = s.th
    votes = _mislabeled_votes(s)
    flag_mis = mislabeled_flag(votes, th["min_votes"], s.n, tuple(th["name_other_by"]), _vote_available(s),
                               th["min_vote_share"], s.confident_joint if th["confident_joint"] else None)
    flag_adv, adv_votes, noise_route = adversarial_flag(s, flag_train)
    return flag_mis, votes, flag_adv, adv_votes, noise_route


def decide_twice(s: _Signals, flag_train: bool, pixel_neighbours: np.ndarray | None
                 ) -> tuple[np.ndarray, dict[str, np.ndarray], np.ndarray, dict[str, np.ndarray], np.ndarray,
                            np.ndarray, np.ndarray]:
    """``decide``, then (with ``relabel_neighbours``) ``relabel_neighbours`` and ``decide`` again on the cleaned
    evidence: (flag_mislabeled, its votes, flag_adversarial, route-1 conditions, route-2 rows, suggested class,
    suggestion agrees). Updates ``s`` in place."""
    flag_mis, votes, flag_adv, adv_votes, noise_route = decide(s, flag_train)
    sug, agree = _suggestion(s)
    if s.th["relabel_neighbours"] and relabel_neighbours(s, pixel_neighbours, flag_mis, sug):
        flag_mis, votes, flag_adv, adv_votes, noise_route = decide(s, flag_train)
        sug, agree = _suggestion(s)  # the neighbour majority over cleaned labels
    return flag_mis, votes, flag_adv, adv_votes, noise_route, sug, agree


def _suggestion(s: _Signals) -> tuple[np.ndarray, np.ndarray]:
    return suggest_label(s.pred, s.pred_prob, None if s.nbr is None else s.nbr["top"],
                         None if s.nbr is None else s.nbr["top_n"] / np.maximum(s.nbr["k"], 1), s.n)


def relabel_neighbours(s: _Signals, pixel_idx: np.ndarray | None, flagged: np.ndarray,
                       suggested: np.ndarray) -> bool:
    """The second pass's evidence (module docstring, "Cleaned neighbours"): a ``flagged`` row with a suggestion
    (``suggested`` ≥ 0, ≠ its label) counts, as a neighbour, as ``suggested``; every other row as its given label.
    Recomputes ``s.px_label`` / ``s.px_pred`` over the pixel neighbours ``pixel_idx`` (rows whose raw share is NaN
    stay NaN) and the feature-neighbour votes ``s.nbr`` over the stored feature neighbours, and sets
    ``s.px_relabelled`` / ``s.nbr_relabelled`` (relabelled neighbours per row). Returns False (and changes nothing)
    when no row moves; raises ValueError when ``pixel_idx`` does not index this table."""
    from core.adversarial_evidence import neighbour_label_shares

    if pixel_idx is not None:
        pixel_idx = np.asarray(pixel_idx)
        if pixel_idx.ndim != 2 or len(pixel_idx) != s.n:
            raise ValueError(f"pixel_neighbours must be (rows, k) with {s.n} rows, got shape {pixel_idx.shape}")
        if pixel_idx.size and (pixel_idx.min() < 0 or pixel_idx.max() >= s.n):
            raise ValueError(f"pixel_neighbours has indices outside 0…{s.n - 1}")
    moved = np.asarray(flagged, bool) & (np.asarray(suggested) >= 0) & (np.asarray(suggested) != s.label)
    if not moved.any():
        return False
    cleaned = np.where(moved, suggested, s.label)
    if pixel_idx is not None and s.px_label is not None and pixel_idx.shape[1]:
        pred = s.pred if s.pred is not None else np.full(s.n, -1)
        lab_share, pred_share = neighbour_label_shares(pixel_idx, cleaned, s.label, pred)
        s.px_label = np.where(np.isnan(s.px_label), np.nan, lab_share)
        if s.px_pred is not None:
            s.px_pred = np.where(np.isnan(s.px_pred), np.nan, pred_share)
        s.px_relabelled = moved[pixel_idx].sum(axis=1)
    if s.nbr is not None and s.nbr_index is not None:
        s.nbr = s._neighbour_votes(cleaned[s.nbr_index])
        s.nbr_relabelled = moved[s.nbr_index].sum(axis=1)
    return True


# ------------------------------------------------------------------------------------------ reasons


class _Names:
    def __init__(self, class_names: list[str] | None, table: pd.DataFrame):
        self.names = list(class_names) if class_names else None
        if self.names is None and "label_name" in table.columns:
            m = dict(zip(table["label"].astype(int), table["label_name"].astype(str), strict=True))
            if "pred_name" in table.columns and "pred" in table.columns:
                m.update(zip(pd.to_numeric(table["pred"], errors="coerce").fillna(-1).astype(int),
                             table["pred_name"].astype(str), strict=True))
            self.map = m
        else:
            self.map = {}

    def __call__(self, i: int) -> str:
        i = int(i)
        if self.names is not None and 0 <= i < len(self.names):
            return str(self.names[i])
        return self.map.get(i, str(i))


def _suggestion_text(i: int, s: _Signals, sug: np.ndarray, agree: np.ndarray, name: _Names) -> str:
    if sug[i] < 0:
        return ""
    if s.pred is None or s.nbr is None:
        return f"suggest '{name(sug[i])}'"
    nb = f"{int(s.nbr['top_n'][i])}/{int(s.nbr['k'][i])} neighbours '{name(s.nbr['top'][i])}'"
    p = f" {s.pred_prob[i]:.0%}" if s.pred_prob is not None else ""
    if agree[i]:
        return f"suggest '{name(sug[i])}' (model{p} and {nb} agree)"
    return f"suggest '{name(sug[i])}' (model and neighbours disagree: model says '{name(s.pred[i])}'{p}, {nb})"


def _evidence_bits(i: int, s: _Signals, name: _Names) -> list[str]:
    lab = name(s.label[i])
    bits: list[str] = []
    if s.pred is not None:
        p = f" (p={s.pred_prob[i]:.2f})" if s.pred_prob is not None else ""
        bits.append(f"model predicts '{name(s.pred[i])}'{p}, label is '{lab}'")
    if s.out_of_sample is not None and s.confident_joint is not None and s.confident_joint[i]:
        lp, pr, pp = s.out_of_sample
        t = class_thresholds(s.label, lp)
        who = "cross-fitted network" if s.cf_label_prob is not None and np.isfinite(s.cf_label_prob[i]) \
            else "model (held out)"
        bits.append(f"{who} gives '{name(pr[i])}' p={pp[i]:.2f} ≥ that class's mean {t[pr[i]]:.2f}")
    if s.nbr is not None:
        bits.append(f"{int(s.nbr['top_n'][i])}/{int(s.nbr['k'][i])} feature neighbours are '{name(s.nbr['top'][i])}'")
    if s.px_label is not None and not np.isnan(s.px_label[i]):
        moved = int(s.px_relabelled[i]) if s.px_relabelled is not None else 0
        note = f", counting {moved} flagged neighbour(s) as their suggested class" if moved else ""
        bits.append(f"{s.px_label[i]:.0%} of pixel neighbours are '{lab}'{note}")
    if s.reverse is not None and s.disagrees[i] and s.adv_measured[i]:
        r = s.reverse[i]
        bits.append("no small step restores the label" if np.isnan(r) else f"a step of ε={r:.2g} restores '{lab}'")
    if s.noise_z is not None and np.isfinite(s.noise_z[i]) and s.noise_z[i] >= s.th["noise_z_min"]:
        bits.append(_noise_text(i, s, name))
    if s.cg is not None and not np.isnan(s.cg[i]):
        top = 100.0 * (1.0 - s.cg_pct[i]) + 100.0 / max(1, (s.label == s.label[i]).sum())
        bits.append(f"cg_score in top {max(top, 1.0):.0f}% of class '{lab}' ({s.cg[i]:.3g})")
    if s.confidence is not None and not np.isnan(s.confidence[i]):
        bits.append(f"confidence {s.confidence[i]:.2f}")
    if s.depth is not None and not np.isnan(s.depth[i]):
        bits.append(f"prediction_depth {s.depth[i]:.3g}")
    return bits


def _noise_text(i: int, s: _Signals, name: _Names) -> str:
    ratio = s.noise_ratio[i] if s.noise_ratio is not None else np.nan
    times = f"{ratio:.1f}× the typical level" if np.isfinite(ratio) else "far above the level"
    return f"pixel noise {times} of class '{name(s.label[i])}' (robust z {s.noise_z[i]:.1f})"


def _head(i: int, votes: dict[str, np.ndarray], kind: str, extra: list[str] | None = None) -> str:
    agree = [k for k, v in votes.items() if v[i] and k != "held-out row"] + list(extra or [])
    return f"{kind}? ({', '.join(agree)})" if agree else f"{kind}?"


def _adversarial_head(i: int, votes: dict[str, np.ndarray], route2: np.ndarray) -> str:
    route1 = bool(votes) and all(bool(v[i]) for v in votes.values())
    shown = votes if route1 else {}
    return _head(i, shown, "adversarial", ["pixel noise far above its class"] if route2[i] else [])


# ------------------------------------------------------------------------------------------ entry point


def effective_thresholds(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """``DEFAULT_THRESHOLDS`` with the caller's ``overrides`` (the weight dicts merged key by key)."""
    th = {**DEFAULT_THRESHOLDS, **(overrides or {})}
    for key in ("weights_mislabeled", "weights_adversarial", "weights_adversarial_fallback"):
        th[key] = {**DEFAULT_THRESHOLDS[key], **(overrides or {}).get(key, {})}
    return th


def thresholds_record(overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    """The thresholds a run's flags used, JSON-safe (tuples as lists, ±inf as the strings "inf" / "-inf"), for the
    manifest: a later change of the defaults does not change what an old run says it used."""
    def safe(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: safe(x) for k, x in v.items()}
        if isinstance(v, (tuple, list)):
            return [safe(x) for x in v]
        if isinstance(v, float) and not np.isfinite(v):
            return str(v)
        return v
    return safe(effective_thresholds(overrides))


def compute_flags(
    table: pd.DataFrame,
    embeddings: np.ndarray | None,
    *,
    thresholds: dict[str, Any] | None = None,
    k: int = 10,
    flag_train_adversarial: bool = False,
    class_names: list[str] | None = None,
    trust_model: bool = True,
    pixel_neighbours: np.ndarray | None = None,
) -> pd.DataFrame:
    """Flags, reasons, suspicion ranks and a relabel suggestion for every row (rules: module docstring).

    ``flag_train_adversarial``: also judge training rows for the adversarial flag (off by default).
    ``class_names``: names used in reasons (default: the table's ``label_name``/``pred_name``, else indices).
    ``trust_model=False`` (the network failed the quality guardrail): every flag is withheld (False, empty
    reason); suspicion ranks and suggestions are still returned.
    ``pixel_neighbours``: int (n, k) indices of each row's nearest other rows in pixel space
    (``core.adversarial_evidence.pixel_neighbours``, the neighbours behind ``px_label_share``); with them and
    ``relabel_neighbours`` the second pass also cleans them (module docstring).

    Returns a DataFrame (same index as ``table``) with the columns of ``OUTPUT_COLUMNS``.
    """
    th = effective_thresholds(thresholds)
    if "label" not in table.columns:
        raise ValueError("compute_flags needs a 'label' column")
    s = _Signals(table, embeddings, k, th)
    name = _Names(class_names, table)
    n = len(table)
    flag_mis, votes, flag_adv, adv_votes, noise_route, sug, agree = decide_twice(s, flag_train_adversarial,
                                                                                  pixel_neighbours)
    mis_parts = s.mislabeled_parts()
    sus_mis = _weighted_mean(mis_parts, th["weights_mislabeled"]) if mis_parts else np.zeros(n)
    if s.has_adversarial_evidence:
        sus_adv = _weighted_mean(s.adversarial_parts(), th["weights_adversarial"], geometric=True)
        sus_adv = np.where(s.disagrees, sus_adv, 0.0)
    else:
        fb = s.fallback_adversarial_parts()
        sus_adv = _weighted_mean(fb, th["weights_adversarial_fallback"], geometric=True) if fb else np.zeros(n)
    if (noise := s.noise_part()) is not None:
        sus_adv = np.maximum(sus_adv, noise)
    if not trust_model:
        flag_mis, flag_adv = np.zeros(n, bool), np.zeros(n, bool)
    suggestion = np.array([_suggestion_text(i, s, sug, agree, name) for i in range(n)], dtype=object)
    reasons = np.full(n, "", dtype=object)
    for i in np.flatnonzero(flag_mis | flag_adv):
        cj = ["confident joint"] if s.confident_joint is not None and s.confident_joint[i] else []
        heads = ([_head(i, votes, "mislabeled", cj)] if flag_mis[i] else []) + \
                ([_adversarial_head(i, adv_votes, noise_route)] if flag_adv[i] else [])
        tail = [suggestion[i]] if flag_mis[i] and suggestion[i] else []
        reasons[i] = " + ".join(heads) + ": " + "; ".join(_evidence_bits(i, s, name) + tail)
    return pd.DataFrame(
        {"flag_mislabeled": flag_mis, "flag_adversarial": flag_adv, "flag_reason": reasons,
         "suspicion_mislabeled": np.clip(sus_mis, 0, 1), "suspicion_adversarial": np.clip(sus_adv, 0, 1),
         "suggested_label": sug, "suggested_label_name": [name(v) if v >= 0 else "" for v in sug],
         "suggestion_agrees": agree, "suggestion": suggestion},
        index=table.index,
    )
