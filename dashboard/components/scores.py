"""Which score columns a run has, and the one-sentence explanation (with its paper) shown next to each."""

from __future__ import annotations

import streamlit as st

from core.scores.registry import SCORE_SPECS
from dashboard.state import RunView

#: Paper scores first, then the baselines.
SCORE_ORDER: tuple[str, ...] = ("si_function", "si_weights", "cg_score", "prediction_depth", "loss", "margin",
                                "el2n", "forgetting", "confidence", "variability", "uniqueness")
#: Scores where a high value means "informative" (used by summaries and class ranking).
INFORMATIVE: tuple[str, ...] = ("si_function", "si_weights", "cg_score", "prediction_depth", "el2n", "loss",
                                "forgetting", "uniqueness", "variability")
EXTRA_NUMERIC: tuple[str, ...] = ("pred_prob", "suspicion_mislabeled", "suspicion_adversarial")


def _present(rv: RunView) -> dict[str, int]:
    """Non-null count of every known score column the parquet has."""
    cols = [c for c in SCORE_ORDER if c in rv.columns]
    if not cols:
        return {}
    sel = ", ".join(f'count("{c}") AS "{c}"' for c in cols)
    row = rv.sql(f"SELECT {sel} FROM samples").iloc[0]
    return {c: int(row[c]) for c in cols}


@st.cache_data(show_spinner=False, max_entries=16)
def _availability(key: str, _rv: RunView) -> tuple[list[str], list[str]]:
    counts = _present(_rv)
    avail = [c for c in SCORE_ORDER if counts.get(c, 0) > 0]
    missing = [c for c in SCORE_ORDER if c not in avail]
    return avail, missing


def available(rv: RunView) -> list[str]:
    """Score columns with at least one value, in display order."""
    return _availability(rv.static_key, rv)[0]


def missing(rv: RunView) -> list[str]:
    """Known score columns absent from the run or entirely NaN."""
    return _availability(rv.static_key, rv)[1]


def informative(rv: RunView) -> list[str]:
    return [c for c in available(rv) if c in INFORMATIVE]


def direction(name: str, rv: RunView | None = None) -> str:
    """The score's direction text, from the run's manifest first, the registry second ("" if unknown)."""
    meta = (rv.run.manifest.get("scores", {}).get(name, {}) if rv is not None else {}) or {}
    spec = SCORE_SPECS.get(name)
    return str(meta.get("direction") or (spec.direction if spec else "") or "")


def higher_is_informative(name: str, rv: RunView | None = None) -> bool:
    """False when the score's direction says low values are the hard / informative ones (margin, confidence)."""
    return not direction(name, rv).strip().lower().startswith("lower")


def spec_text(name: str, rv: RunView | None = None) -> str:
    """One sentence: what the score is, which direction, which paper (manifest first, registry second)."""
    meta = (rv.run.manifest.get("scores", {}).get(name, {}) if rv is not None else {}) or {}
    spec = SCORE_SPECS.get(name)
    summary = meta.get("summary") or (spec.summary if spec else "")
    direction = meta.get("direction") or (spec.direction if spec else "")
    paper = meta.get("paper") or (spec.paper if spec else "")
    if not summary:
        return ""
    text = summary.rstrip(".") + "."
    if direction:
        text += f" ({direction})"
    if paper:
        text += f" — *{paper}*"
    return text


def label(name: str) -> str:
    """Human label for a column name."""
    return {"si_function": "SI (function)", "si_weights": "SI (weights)", "cg_score": "CG score",
            "prediction_depth": "prediction depth", "el2n": "EL2N", "pred_prob": "predicted prob.",
            "suspicion_mislabeled": "suspicion (mislabeled)",
            "suspicion_adversarial": "suspicion (adversarial)"}.get(name, name.replace("_", " "))


def explain(name: str, rv: RunView | None = None) -> None:
    """Show the explanation of a score as a caption."""
    text = spec_text(name, rv)
    if text:
        st.caption(f"ℹ️ **{label(name)}** — {text}")


def missing_note(rv: RunView, wanted: tuple[str, ...] | list[str] | None = None) -> None:
    """Say which score columns this run lacks (absent or all-NaN)."""
    gone = [c for c in missing(rv) if wanted is None or c in wanted]
    if gone:
        st.caption("Not in this run (absent or all NaN): " + ", ".join(f"`{c}`" for c in gone))


def pick(rv: RunView, label_text: str, options: list[str], key: str, default: str | None = None) -> str | None:
    """A score selectbox with the chosen score's explanation under it; None (with a note) when none exist."""
    if not options:
        st.warning("This run has none of the scores this view needs: "
                   + ", ".join(f"`{c}`" for c in SCORE_ORDER), icon="⚠️")
        return None
    index = options.index(default) if default in options else 0
    choice = st.selectbox(label_text, options, index=index, key=key, format_func=label)
    explain(choice, rv)
    return choice
