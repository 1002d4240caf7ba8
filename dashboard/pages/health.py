"""Dataset health: one count per kind of problem (label issues, adversarial suspects, outliers, near-duplicates,
under-sampled classes, disagreement with the model), each opening its images in a grid."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import pandas as pd
import streamlit as st

from core.store import build_filter
from dashboard import state
from dashboard.components import decisions, images, page

OPEN = "health_open"
QP = "health"
UNDER_FRACTION = 0.5  # a class is under-sampled below this fraction of the median class size


@dataclass
class Check:
    """One line of the health overview: a WHERE clause (with parameters) and what it means."""

    key: str
    title: str
    where: str
    params: list[Any] = field(default_factory=list)
    help: str = ""
    order: str | None = None
    count: int = 0


@st.cache_data(show_spinner=False, max_entries=8)
def _checks(key: str, _rv: state.RunView) -> list[dict[str, Any]]:
    """The checks as plain dicts (``st.cache_data`` pickles its results; a page's classes do not pickle)."""
    cols = set(_rv.columns)
    out: list[Check] = []
    if "flag_mislabeled" in cols:
        out.append(Check("labels", "Label issues", 'coalesce("flag_mislabeled", FALSE)',
                         help="Flagged as probably mislabeled by the engine (see Flagged for the reasons).",
                         order="suspicion_mislabeled" if "suspicion_mislabeled" in cols else None))
    if "flag_adversarial" in cols:
        out.append(Check("adversarial", "Adversarial suspects", 'coalesce("flag_adversarial", FALSE)',
                         help="Flagged as probably adversarially perturbed.",
                         order="suspicion_adversarial" if "suspicion_adversarial" in cols else None))
    if "uniqueness" in cols:
        q = _rv.sql('SELECT quantile_cont("uniqueness", 0.25) AS q1, quantile_cont("uniqueness", 0.75) AS q3 '
                    'FROM samples WHERE isfinite("uniqueness")').iloc[0]
        if pd.notna(q["q1"]):
            fence = float(q["q3"] + 1.5 * (q["q3"] - q["q1"]))
            out.append(Check("outliers", "Outliers", '"uniqueness" > ?', [fence], order="uniqueness",
                             help=f"kNN uniqueness above Tukey's upper fence Q3 + 1.5·IQR = {fence:.3g}: far from "
                                  "every other image in feature space."))
    dups = _rv.run.duplicates()
    if not dups.empty:
        ids = sorted(set(dups["sample_id_a"].astype(str)) | set(dups["sample_id_b"].astype(str)))
        w, p = build_filter(ids=ids)
        out.append(Check("duplicates", "Near-duplicates", w, p,
                         help=f"Images in one of the {len(dups):,} near-duplicate pairs (see Near-duplicates)."))
    sizes = _rv.sql("SELECT label_name, count(*) AS n FROM samples GROUP BY label_name")
    if len(sizes) > 1:
        med = float(sizes["n"].median())
        small = sorted(sizes.loc[sizes["n"] < UNDER_FRACTION * med, "label_name"].astype(str))
        w, p = build_filter(classes=small) if small else ("FALSE", [])
        out.append(Check("undersampled", "Under-sampled classes", w or "FALSE", p,
                         help=f"Classes with fewer than {UNDER_FRACTION:.0%} of the median class size ({med:g})"
                              + (f": {', '.join(small)}." if small else ": none.")))
    if "pred_name" in cols:
        out.append(Check("disagree", "Model disagrees with the label", '"pred_name" <> "label_name"',
                         help="The trained model predicts another class than the given label.",
                         order="loss" if "loss" in cols else None))
    for c in out:
        c.count = _rv.count(c.where, c.params)
    return [asdict(c) for c in out]


def checks(rv: state.RunView) -> list[Check]:
    return [Check(**d) for d in _checks(rv.static_key, rv)]


def open_check(key: str) -> None:
    st.session_state[OPEN] = key
    st.query_params[QP] = key


def close_check() -> None:
    st.session_state.pop(OPEN, None)
    if QP in st.query_params:
        del st.query_params[QP]


rv = page.start()
st.title("Dataset health")
st.caption("What needs a look, as counts. Each count opens its images below; decide on them there or in the "
           "detail view.")
items = checks(rv)
if not items:
    st.info("This run has no flags, scores or duplicates to check.", icon=":material/info:")
    st.stop()
if OPEN not in st.session_state and st.query_params.get(QP) in {c.key for c in items}:
    st.session_state[OPEN] = str(st.query_params.get(QP))
n_total = rv.count()
cols = st.columns(min(len(items), 3))
for i, c in enumerate(items):
    with cols[i % len(cols)], st.container(border=True):
        st.metric(c.title, f"{c.count:,}", help=c.help)
        st.caption(f"{c.count / max(n_total, 1):.1%} of {n_total:,} images. {c.help}")
        st.button(f"Open {c.title.lower()}", key=f"health_btn_{c.key}", on_click=open_check, args=(c.key,),
                  disabled=c.count == 0, icon=":material/grid_view:")

chosen = next((c for c in items if c.key == st.session_state.get(OPEN)), None)
if chosen is not None:
    st.divider()
    h1, h2 = st.columns([4, 1])
    h1.subheader(f"{chosen.title}: {chosen.count:,} image(s)")
    h2.button("Close", key="health_close", on_click=close_check, icon=":material/close:")
    hide = st.toggle("Hide decided", value=False, key="health_hide")
    where = f"({chosen.where})" + (" AND decision IS NULL" if hide else "")
    n = rv.count(where, chosen.params)
    per_page = 24
    n_pages = max(1, (n + per_page - 1) // per_page)
    pg = st.number_input(f"Page (of {n_pages})", 1, n_pages, 1, key=f"health_page_{chosen.key}")
    rows = rv.select(where, chosen.params, order_by=chosen.order, descending=True, limit=per_page,
                     offset=(pg - 1) * per_page)
    images.image_grid(rv, rows, ncols=8, score=chosen.order, key=f"health_grid_{chosen.key}")
    decisions.bulk_form(rv, lambda: rv.select(where, chosen.params, columns=["sample_id"])["sample_id"].tolist(),
                        n, key="health", what=chosen.title.lower())
