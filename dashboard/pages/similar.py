"""More like this: the images most similar to one image (from its detail view) or to a set (a lasso selection on
the Explore map), by cosine similarity of the run's embeddings (exact faiss search); filter, decide in bulk, save."""

from __future__ import annotations

import numpy as np
import pandas as pd
import streamlit as st

from core.store import build_filter
from core.store.review import normalize_rows, similar
from dashboard import state
from dashboard.components import decisions, images, page, views
from dashboard.components.filters import class_options, distinct

QUERY = "sim_query"
MAX_QUERY = 2000

rv = page.start()
st.title("More like this")


def _query_ids(_k: str, v: object) -> list[str] | None:
    if not isinstance(v, list) or not v or len(v) > MAX_QUERY:
        return None
    return [str(x) for x in v]


spec = {"sim_k": views.one_of([24, 48, 96, 192]), "sim_classes": views.subset_of(class_options(rv)),
        "sim_sources": views.subset_of(distinct(rv.static_key, rv, "source")), "sim_hide": views.boolean}
views.sync("similar", spec, extra={QUERY: _query_ids})
views.saved_views_panel(rv, "similar", {**spec, QUERY: _query_ids})
query = st.session_state.get(QUERY) or []
emb_raw = rv.run.embeddings()
if emb_raw is None:
    st.info("This run has no embeddings (`embeddings.npy`), so similar images cannot be searched.",
            icon=":material/info:")
    st.stop()
if not query:
    st.info("Open an image (any thumbnail's **Details**) and press **More like this**, or select points on the "
            "Explore map and press **More like this selection**.", icon=":material/image_search:")
    st.stop()


@st.cache_resource(max_entries=2, show_spinner="Loading the embeddings…")
def unit_embeddings(key: str, _rv: state.RunView) -> tuple[np.ndarray, list[str]]:
    """The run's embeddings scaled to unit norm, and the sample ids in the same (parquet) order."""
    ids = _rv.select(columns=["sample_id"], order_by=None)["sample_id"].astype(str).tolist()
    return normalize_rows(np.asarray(_rv.run.embeddings())), ids


@st.cache_data(show_spinner="Searching…", max_entries=32)
def search(key: str, _rv: state.RunView, query: tuple[str, ...], k: int) -> pd.DataFrame:
    emb, ids = unit_embeddings(key, _rv)
    return similar(emb, ids, list(query), k=k, normalized=True)


c1, c2, c3, c4 = st.columns([1, 1.6, 1.6, 1])
k = c1.selectbox("How many", [24, 48, 96, 192], index=1, key="sim_k")
classes = c2.multiselect("Classes", class_options(rv), key="sim_classes", placeholder="all classes")
sources = c3.multiselect("Sources", distinct(rv.static_key, rv, "source"), key="sim_sources",
                         placeholder="all sources")
hide = c4.toggle("Hide decided", value=False, key="sim_hide")

qrows = rv.select(*build_filter(ids=query[:8]), columns=["sample_id", "label_name", "image_path"])
st.markdown(f"**Query:** {'one image' if len(query) == 1 else f'{len(query):,} images (their mean embedding)'}"
            + ("" if len(query) <= 8 else " — the first 8 shown"))
images.image_grid(rv, qrows, ncols=8, key="sim_query_grid")

hits = search(rv.static_key, rv, tuple(query), int(k))
if hits.empty:
    st.warning("None of the query images is in this run.")
    st.stop()
w, p = build_filter(ids=hits["sample_id"].tolist(), classes=classes, sources=sources)
if hide:
    w += " AND decision IS NULL"
rows = rv.select(w, p)
rows = rows.merge(hits, on="sample_id").sort_values("rank").reset_index(drop=True)
st.markdown(f"**{len(rows):,}** of the {len(hits):,} most similar images match the filters, most similar first "
            "(cosine similarity of the embeddings).")
images.image_grid(rv, rows, ncols=8, key="sim_grid",
                  caption=lambda r: f"{r['label_name']} · sim {float(r['similarity']):.3f}"
                  + (f" · {r['decision']}" if isinstance(r.get("decision"), str) else ""))
st.divider()
decisions.bulk_form(rv, lambda: rows["sample_id"].tolist(), len(rows), key="sim", what="similar images shown")
