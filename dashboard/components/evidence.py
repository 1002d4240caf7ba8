"""The "Evidence" view: what infoscope's own benchmark scripts measured on real data (issue: evidence).

It reads the committed ``bench/results/evidence_*.json`` files (schema: ``title, command, machine, date,
conclusion, tables: [{caption, columns, rows}]``, optional ``scale``/``protocol``) and the matching plots
``assets/evidence_*.png``. Nothing is computed here. ``$INFOSCOPE_EVIDENCE_DIR`` overrides the folder.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import streamlit as st

ROOT = Path(__file__).resolve().parents[2]


def evidence_dir() -> Path:
    return Path(os.environ.get("INFOSCOPE_EVIDENCE_DIR", ROOT / "bench" / "results"))


@st.cache_data(show_spinner=False, ttl=300)
def load_evidence(folder: str) -> list[dict]:
    """Every readable evidence file in ``folder`` (unreadable ones are reported, not raised)."""
    out = []
    for f in sorted(Path(folder).glob("evidence_*.json")):
        try:
            doc = json.loads(f.read_text())
            doc["_file"] = f.name
            out.append(doc)
        except (OSError, json.JSONDecodeError) as e:
            out.append({"title": f.name, "_error": str(e), "_file": f.name})
    return out


def _cell(v: object) -> str:
    if isinstance(v, float):
        return "—" if v != v else f"{v:,.4g}"
    if isinstance(v, int) and not isinstance(v, bool):
        return f"{v:,}"
    return "" if v is None else str(v)


def table_style(df: pd.DataFrame) -> pd.io.formats.style.Styler:
    """A results table as shown: numbers to 4 significant digits, no index."""
    return df.style.format(_cell).hide(axis="index")


def render() -> None:
    st.header("Evidence: what the scores tell you")
    st.caption("Numbers measured by infoscope's own scripts (`bench/evidence_*.py`) on real data: "
               "summarization by informativeness, under-sampled classes and sub-classes, source comparison, "
               "mislabeled/adversarial detection next to cleanlab, and cost. Each result names the command "
               "that reproduces it.")
    docs = load_evidence(str(evidence_dir()))
    if not docs:
        st.info(f"No evidence results found in `{evidence_dir()}`. Run `python bench/evidence_<name>.py` "
                "to produce them.")
        return
    tabs = st.tabs([d.get("title", d["_file"]) for d in docs])
    for tab, doc in zip(tabs, docs, strict=True):
        with tab:
            if "_error" in doc:
                st.warning(f"`{doc['_file']}` could not be read: {doc['_error']}")
                continue
            scale = doc.get("scale")
            if scale and scale != "full":
                st.warning(f"Measured at reduced scale ({scale}); see the command to run it in full.")
            if doc.get("conclusion"):
                st.markdown(f"**Reading.** {doc['conclusion']}")
            for t in doc.get("tables", []):
                st.markdown(f"*{t.get('caption', '')}*")
                # an HTML table, not a canvas grid: long step names and headers wrap instead of being cut off
                st.table(table_style(pd.DataFrame(t.get("rows", []), columns=t.get("columns"))))
            plot = ROOT / "assets" / doc["_file"].replace(".json", ".png")
            if plot.exists():
                st.image(str(plot))
            st.caption(f"`{doc.get('command', '')}` · {doc.get('machine', '')} · {doc.get('date', '')}")
            if doc.get("protocol"):
                with st.expander("Protocol"):
                    st.markdown(doc["protocol"])
