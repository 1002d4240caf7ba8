"""Names of the files in a run directory and the columns of ``samples.parquet`` (the DESIGN.md contract)."""

from __future__ import annotations

import os
from pathlib import Path

SCHEMA_VERSION = 1

MANIFEST = "manifest.json"
STATUS = "status.json"
SAMPLES = "samples.parquet"
EMBEDDINGS = "embeddings.npy"
IMAGES = "images"
CURATION = "curation.sqlite"
DUPLICATES = "duplicates.parquet"
NEIGHBORS = "neighbors.npy"
SI_VERIFICATION = "si_verification.json"  # written by ``infoscope verify-si`` beside the immutable files
SI_MODEL = "si_model.npz"
STAGES = "stages"  # while a run is written: finished stages' outputs and their ledger (core.stages), for --resume
STAGE_LEDGER = "ledger.json"  # the SI head problems (rows, features, ηt), for ``infoscope verify-si``

#: Columns every run has, in order (score columns and flags follow).
BASE_COLUMNS = ("sample_id", "source", "split", "label", "label_name", "image_path")
TRUTH_COLUMNS = ("true_label", "is_mislabeled", "is_adversarial")
MODEL_COLUMNS = ("pred", "pred_prob", "loss", "margin")
MAP_COLUMNS = ("umap_x", "umap_y")
FLAG_COLUMNS = ("flag_mislabeled", "flag_adversarial", "flag_reason", "suspicion_mislabeled",
                "suspicion_adversarial", "suggested_label", "suggested_label_name", "suggestion_agrees", "suggestion")
#: Per-row adversarial evidence (core.adversarial_evidence) the flags are decided from.
EVIDENCE_COLUMNS = ("reverse_eps", "noise_flip", "noise_to_label", "px_label_share", "px_pred_share", "noise_level",
                    "noise_z")

#: Out-of-sample predictions of the training rows from the SI's cross-fitted networks (``core.scores.si_crossfit``;
#: NaN on held-out rows and when SI does not cross-fit), read by the mislabeled flag's confident-joint vote.
CROSSFIT_COLUMNS = ("crossfit_label_prob", "crossfit_pred", "crossfit_pred_prob")


def default_runs_dir() -> Path:
    """``$INFOSCOPE_RUNS`` or ``./runs``."""
    return Path(os.environ.get("INFOSCOPE_RUNS", "runs")).expanduser()
