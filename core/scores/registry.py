"""The score plug-in contract: every score is reached by name through ``SCORE_SPECS``.

A score module exposes a pure function ``(arrays in) -> scores out`` plus a thin adapter
``adapter(ctx: ScoreContext) -> ScoreResult`` that the pipeline calls. Adapters are named as
``"module:function"`` strings and imported only when their score is asked for, so a missing optional
dependency of one score never breaks the others.

Several names may share one adapter (``si_weights`` and ``si_function`` come from one computation); the
pipeline runs each adapter once and keeps the columns that were asked for plus its companions.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass
class ScoreContext:
    """Everything a score adapter may read. Arrays cover *all* rows of the run (train and test).

    Attributes:
        data: the dataset (``core.data.Samples``), given labels in ``data.labels``.
        split: array (n,) of ``"train"`` / ``"test"``.
        model: the trained network, eval mode, on ``device`` (``core.models.nets`` interface:
            ``model.stages`` ModuleList, ``model.probes(x)``, ``model.embed(x)``).
        init_state: the network's state dict at initialisation (same seed), CPU tensors.
        logits: float32 (n, k) final logits for every row.
        epoch_logits: float32 (E, n, k) logits after each training epoch for every row.
        embeddings: float32 (n, d) penultimate features of the trained network.
        device: torch device every heavy computation should run on.
        params: this score's parameters (``[scores.<name>]`` in the config file), already merged with defaults
            by the adapter and echoed back in ``ScoreResult.params``.
        seed: the run's seed.
        train_model: ``train_model(seed) -> nn.Module`` trains another network of the same recipe on the train
            split (used for ensembles: prediction depth over M models, EL2N over seeds).
            ``extra["train_subset"](rows, seed, from_w0=False) -> nn.Module`` trains one on the given rows only
            (cross-fitting), from the run's w₀ when ``from_w0``.
        progress: ``progress(message, fraction)`` for the CLI progress bar; fraction in [0, 1] or None.
        extra: free-form values other steps computed (e.g. ``"attack"`` info), read-only by convention.
    """

    data: Any
    split: np.ndarray
    model: Any
    init_state: dict[str, Any]
    logits: np.ndarray
    epoch_logits: np.ndarray
    embeddings: np.ndarray
    device: Any
    params: dict[str, Any]
    seed: int
    train_model: Callable[[int], Any]
    progress: Callable[[str, float | None], None] = lambda msg, frac=None: None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def train_idx(self) -> np.ndarray:
        return np.flatnonzero(self.split == "train")

    @property
    def test_idx(self) -> np.ndarray:
        return np.flatnonzero(self.split == "test")


@dataclass
class ScoreResult:
    """What an adapter returns.

    columns: name -> float array of length n (all rows); NaN where the score is not defined for a row.
    params: the effective parameters (defaults filled in), recorded in the manifest.
    info: notes worth recording (jitter added, projection used, rows skipped...).
    arrays: named groups of arrays the run keeps (each written atomically as ``<name>.npz`` in the run),
        e.g. what ``infoscope verify-si`` needs to re-run the SI model.
    """

    columns: dict[str, np.ndarray]
    params: dict[str, Any] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    arrays: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)


@dataclass(frozen=True)
class ScoreSpec:
    """A score as the CLI, the manifest and the dashboard know it."""

    name: str
    adapter: str
    direction: str
    summary: str
    paper: str
    companions: tuple[str, ...] = ()

    def load(self) -> Callable[[ScoreContext], ScoreResult]:
        module, func = self.adapter.split(":")
        return getattr(importlib.import_module(module), func)


_BASE = "core.scores.baselines"
SCORE_SPECS: dict[str, ScoreSpec] = {
    s.name: s
    for s in [
        ScoreSpec("loss", f"{_BASE}:loss_adapter", "higher = harder / more suspicious",
                  "Cross-entropy of the trained network on the given label.", "standard"),
        ScoreSpec("margin", f"{_BASE}:margin_adapter", "lower = closer to the decision boundary or mislabeled",
                  "Logit of the given label minus the largest other logit (final model).",
                  "Pleiss et al., NeurIPS 2020 (AUM, single-epoch form)"),
        ScoreSpec("el2n", f"{_BASE}:el2n_adapter", "higher = harder / more important",
                  "L2 norm of softmax minus one-hot label early in training, averaged over seeds.",
                  "Paul, Ganguli, Dziugaite, NeurIPS 2021"),
        ScoreSpec("forgetting", f"{_BASE}:forgetting_adapter", "higher = more often forgotten",
                  "Number of learned-to-forgotten transitions across epochs.",
                  "Toneva et al., ICLR 2019"),
        ScoreSpec("confidence", f"{_BASE}:datamaps_adapter", "lower = hard-to-learn / possibly mislabeled",
                  "Mean over epochs of the probability given to the given label (Data Maps).",
                  "Swayamdipta et al., EMNLP 2020", companions=("variability",)),
        ScoreSpec("variability", f"{_BASE}:datamaps_adapter", "higher = ambiguous",
                  "Standard deviation over epochs of the probability of the given label (Data Maps).",
                  "Swayamdipta et al., EMNLP 2020", companions=("confidence",)),
        ScoreSpec("uniqueness", "core.embedding:uniqueness_adapter", "higher = more isolated / unique",
                  "Mean distance to the k nearest neighbours in the network's feature space (faiss).",
                  "kNN density baseline (e.g. Sorscher et al., NeurIPS 2022)"),
        ScoreSpec("si_weights", "core.scores.unique_info:adapter", "higher = more unique information",
                  "Smooth unique information in the weights: ½(w−w₋ᵢ)ᵀΣ⁻¹(w−w₋ᵢ) of the linearized network.",
                  "Harutyunyan et al., ICLR 2021", companions=("si_function",)),
        ScoreSpec("si_function", "core.scores.unique_info:adapter", "higher = more unique information",
                  "Functional SI: (1/2σ²)·mean over held-out x of ‖f_w(x)−f_{w₋ᵢ}(x)‖².",
                  "Harutyunyan et al., ICLR 2021", companions=("si_weights",)),
        ScoreSpec("cg_score", "core.scores.cg:adapter", "higher = more atypical / possibly mislabeled",
                  "Complexity gap yᵀH⁻¹y − y₋ᵢᵀH₋ᵢ⁻¹y₋ᵢ of the two-layer ReLU NTK Gram, one-vs-rest per class.",
                  "Ki, Choi, Chung, ICLR 2023"),
        ScoreSpec("prediction_depth", "core.scores.prediction_depth:adapter", "higher = harder example",
                  "Earliest layer from which every k-NN probe (k=30) agrees with the network's prediction.",
                  "Baldock, Maennel, Neyshabur, NeurIPS 2021"),
    ]
}

DEFAULT_SCORES: tuple[str, ...] = tuple(SCORE_SPECS)


def parse_score_names(text: str | list[str] | None) -> list[str]:
    """Parse ``"a,b,c"`` (or ``"all"``) into known score names, raising a clear error on an unknown one."""
    if text is None or text == "all" or text == ["all"]:
        return list(DEFAULT_SCORES)
    items = text.split(",") if isinstance(text, str) else [t for part in text for t in part.split(",")]
    names = [t.strip() for t in items if t.strip()]
    unknown = [n for n in names if n not in SCORE_SPECS]
    if unknown:
        raise ValueError(f"unknown score(s) {unknown}; known: {', '.join(SCORE_SPECS)}")
    return list(dict.fromkeys(names))
