"""Near-duplicates: the pairs of images the run found almost identical (cosine similarity of the pixels at or
above the run's threshold), side by side, with one-click decisions."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from core.store import build_filter
from dashboard import state
from dashboard.components import decisions, detail, images, page

rv = page.start()
st.title("Near-duplicates")
threshold = (rv.run.manifest.get("config") or {}).get("duplicate_threshold")
st.caption("Pairs of images whose pixel vectors have a cosine similarity at or above the run's threshold"
           + (f" ({float(threshold):g})" if threshold is not None else "")
           + ". A pair with two different labels is a label conflict: at most one of them can be right. "
             "Removing one image of each pair leaves the information in the dataset almost unchanged.")


@st.cache_data(show_spinner=False, max_entries=8)
def pairs_table(key: str, _rv: state.RunView) -> pd.DataFrame:
    """Every stored pair with both sides' label, source, image and current decision."""
    d = _rv.run.duplicates()
    if d.empty:
        return pd.DataFrame(columns=["sample_id_a", "sample_id_b", "cosine"])
    ids = sorted(set(d["sample_id_a"].astype(str)) | set(d["sample_id_b"].astype(str)))
    info = _rv.select(*build_filter(ids=ids), columns=["sample_id", "label_name", "source", "image_path",
                                                       "decision"]).set_index("sample_id")
    out = d.copy()
    for side in ("a", "b"):
        sub = info.reindex(out[f"sample_id_{side}"].astype(str))
        for c in ("label_name", "source", "image_path", "decision"):
            out[f"{c}_{side}"] = sub[c].to_numpy()
    out["conflict"] = out["label_name_a"] != out["label_name_b"]
    out["cross_source"] = out["source_a"] != out["source_b"]
    return out.sort_values(["conflict", "cosine"], ascending=[False, False], ignore_index=True)


pairs = pairs_table(rv.key, rv)
if pairs.empty:
    st.info("This run stores no near-duplicate pairs (`duplicates.parquet` is absent or empty): no two images are "
            "that similar.", icon=":material/content_copy:")
    st.stop()
m = st.columns(4)
m[0].metric("Pairs", f"{len(pairs):,}")
m[1].metric("Images involved", f"{len(set(pairs['sample_id_a']) | set(pairs['sample_id_b'])):,}")
m[2].metric("Label conflicts", f"{int(pairs['conflict'].sum()):,}", help="Pairs whose two labels differ.")
m[3].metric("Across sources", f"{int(pairs['cross_source'].sum()):,}", help="Pairs from two different sources.")

f1, f2, f3 = st.columns([1.2, 1.2, 2])
only_conflicts = f1.toggle("Only label conflicts", value=False, key="dup_conflicts")
hide_decided = f2.toggle("Hide decided pairs", value=False, key="dup_hide")
lo = float(pairs["cosine"].min())
min_cos = f3.slider("Minimum cosine similarity", min_value=round(lo, 3), max_value=1.0, value=round(lo, 3),
                    step=0.001, key="dup_min", format="%.3f") if lo < 1.0 else 1.0
view = pairs[pairs["cosine"] >= min_cos - 1e-12]
if only_conflicts:
    view = view[view["conflict"]]
if hide_decided:
    view = view[view["decision_a"].isna() & view["decision_b"].isna()]
view = view.reset_index(drop=True)
st.caption(f"**{len(view):,}** pair(s) shown, label conflicts first, then the most similar.")
if view.empty:
    st.success("No pair matches these filters.", icon=":material/task_alt:")
    st.stop()

per_page = 10
n_pages = max(1, (len(view) + per_page - 1) // per_page)
pg = st.columns([1, 4])[0].number_input(f"Page (of {n_pages})", min_value=1, max_value=n_pages, value=1,
                                         key="dup_page")
shown = view.iloc[(pg - 1) * per_page: pg * per_page]
order = [s for a, b in zip(shown["sample_id_a"], shown["sample_id_b"], strict=True) for s in (str(a), str(b))]

for i, r in shown.iterrows():
    with st.container(border=True):
        ca, cb, cc = st.columns([0.7, 0.7, 3])
        for col, side in ((ca, "a"), (cb, "b")):
            sid = str(r[f"sample_id_{side}"])
            arr, found = images.thumbnail(rv, r[f"image_path_{side}"], 112)
            dec = r[f"decision_{side}"]
            cap = f"{r[f'label_name_{side}']} · {r[f'source_{side}']}" + (f" · {dec}" if isinstance(dec, str) else "")
            with col:
                st.image(arr, caption=cap if found else f"{cap} · image file missing", width="stretch")
                detail.open_button(sid, order, key=f"dup_open_{i}_{side}_{sid}")
        cc.markdown(f"**cosine {float(r['cosine']):.4f}**"
                    + (" · :red[label conflict]" if r["conflict"] else " · same label")
                    + (" · across sources" if r["cross_source"] else ""))
        cc.caption(f"`{r['sample_id_a']}` and `{r['sample_id_b']}`")
        k1, k2, k3 = cc.columns(3)
        if k1.button("Remove 2nd", key=f"dup_rm_b_{i}", icon=":material/delete:", width="stretch",
                     help="Remove the second image of the pair"):
            decisions.apply(rv, [str(r["sample_id_b"])], "remove")
        if k2.button("Remove 1st", key=f"dup_rm_a_{i}", icon=":material/delete:", width="stretch",
                     help="Remove the first image of the pair"):
            decisions.apply(rv, [str(r["sample_id_a"])], "remove")
        if k3.button("Keep both", key=f"dup_keep_{i}", icon=":material/check:", width="stretch"):
            decisions.apply(rv, [str(r["sample_id_a"]), str(r["sample_id_b"])], "keep")

st.divider()
second = sorted({str(s) for s in view["sample_id_b"]} - {str(s) for s in view["sample_id_a"]})
st.markdown(f"**Bulk:** remove the second image of every pair shown ({len(second):,} image(s); an image that is "
            "also the first of another pair is kept).")
if st.button(f"Remove {len(second):,} image(s)", key="dup_bulk", disabled=not second, icon=":material/delete_sweep:"):
    decisions.apply(rv, second, "remove", note="near-duplicate")
