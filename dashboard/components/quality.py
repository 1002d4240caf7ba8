"""The model-quality guardrail as the pages show it (``manifest.model.quality``, written by the engine)."""

from __future__ import annotations

import streamlit as st


def quality(manifest: dict) -> dict:
    """The run's ``model.quality`` record ({} for runs written before the guardrail existed)."""
    return (manifest.get("model") or {}).get("quality") or {}


def trusted(manifest: dict) -> bool:
    """False only when the engine judged the network too weak for its flags (older runs: True)."""
    return bool(quality(manifest).get("trust_flags", True))


def banner(manifest: dict) -> bool:
    """A loud warning when the flags are not to be trusted; returns whether they are."""
    q = quality(manifest)
    if trusted(manifest):
        return True
    acc = q.get("heldout_acc")
    acc_text = f"{acc:.1%}" if isinstance(acc, (int, float)) else "unknown"
    st.error(f"**Model too weak to trust the flags** — held-out accuracy {acc_text} "
             f"(minimum {q.get('min_heldout_acc', 0):.0%}). {q.get('message', '')}", icon=":material/warning:")
    return False
