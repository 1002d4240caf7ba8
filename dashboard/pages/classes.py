"""Classes: under-sampled class analysis (count vs informativeness, distributions, ranking, examples)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from dashboard import state
from dashboard.components import charts, complexity, images, page, scores, si, views

rv = page.start()
views.sync("classes", {"cls_score": views.one_of(scores.available(rv)),
                       "cls_pick": views.one_of(list(rv.run.class_names))})  # survives reloads and page changes
st.title("Classes")
st.caption("Which classes are under-sampled? A class with few samples whose samples are highly informative "
           "is a class the model has not seen enough of: collect more of it.")
options = scores.available(rv)
score = scores.pick(rv, "Score", options, key="cls_score",
                    default=next((s for s in scores.informative(rv)), None))
scores.missing_note(rv)
if score is None:
    st.stop()


@st.cache_data(show_spinner=False, max_entries=32)
def class_stats(key: str, _rv: state.RunView, score: str) -> pd.DataFrame:
    s = f'"{score}"'
    f = f"FILTER (WHERE isfinite({s}))"
    return _rv.sql(
        f"SELECT label_name, count(*) AS n, avg({s}) {f} AS mean, stddev_samp({s}) {f} AS sd, "
        f"quantile_cont({s}, 0.25) {f} AS q1, median({s}) {f} AS med, quantile_cont({s}, 0.75) {f} AS q3, "
        f"quantile_cont({s}, 0.05) {f} AS lo, quantile_cont({s}, 0.95) {f} AS hi "
        f"FROM samples GROUP BY label_name ORDER BY label_name")


def ranking(stats: pd.DataFrame, higher: bool = True) -> pd.DataFrame:
    """Classes by under-sampling index = z_info − z(log count): few samples, high informativeness.

    ``z_info`` is z(mean score) when high values are the informative ones, −z(mean score) when the score's
    direction says low values are (``higher=False``: margin, confidence)."""
    t = stats.dropna(subset=["mean"]).copy()
    if t.empty:
        return t

    def z(v: pd.Series) -> pd.Series:
        sd = v.std(ddof=0)
        return (v - v.mean()) / sd if sd > 0 else v * 0.0

    t["z_info"] = z(t["mean"]) if higher else -z(t["mean"])
    t["z_count"] = z(np.log(t["n"].astype(float)))
    t["index"] = t["z_info"] - t["z_count"]
    return t.sort_values("index", ascending=False).reset_index(drop=True)


def reading(r: pd.Series, mean_n: float, label: str, higher: bool = True) -> str:
    """One sentence: size vs the average class, mean score (and which way is informative), verdict."""
    dn = (r["n"] - mean_n) / mean_n if mean_n else 0.0
    verdict = ("likely under-sampled: collect more" if r["z_info"] > 0 and dn < 0 else
               "informative but well represented" if r["z_info"] > 0 else
               "few samples but easy: probably enough" if dn < 0 else "well covered")
    side = "higher" if (r["mean"] >= r.get("overall", r["mean"])) else "lower"
    way = "" if higher else f"; for {label} lower = harder, so {'less' if side == 'higher' else 'more'} informative than average"
    z_raw = r["z_info"] if higher else -r["z_info"]
    return (f"{int(r['n'])} samples ({dn:+.0%} vs. the average class), mean {label} "
            f"{r['mean']:.3g} ({z_raw:+.1f}σ{way}): {verdict}.")


stats = class_stats(rv.static_key, rv, score)
if stats["mean"].notna().sum() == 0:
    st.warning(f"`{score}` has no values in this run.")
    st.stop()
higher = scores.higher_is_informative(score, rv)
rank = ranking(stats, higher)
rank["overall"] = float(stats["mean"].mean())
top = rank.iloc[0]
st.info(f"**{top['label_name']}** ranks first — " + reading(top, float(stats["n"].mean()), scores.label(score), higher),
        icon=":material/search:")
if not higher:
    st.caption(f"{scores.label(score)}: {scores.direction(score, rv)} — the ranking counts a *low* class mean as "
               "informative.")

left, right = st.columns(2)
with left:
    fig = go.Figure(go.Scatter(
        x=stats["n"], y=stats["mean"], mode="markers+text", text=stats["label_name"], textposition="top center",
        marker={"size": 14 + 40 * (stats["sd"].fillna(0) / max(stats["sd"].max(), 1e-12)), "color": charts.PRIMARY,
                "opacity": 0.7, "line": {"width": 1, "color": "white"}},
        customdata=stats["sd"], name="class",
        hovertemplate="%{text}<br>n = %{x}<br>mean = %{y:.3g}<br>sd = %{customdata:.3g}<extra></extra>"))
    st.plotly_chart(charts.style(fig, f"Class size vs. mean {scores.label(score)} (bubble size = spread)",
                                 "samples in class", f"mean {scores.label(score)}"), width="stretch")
with right:
    st.plotly_chart(charts.box_from_stats(stats.dropna(subset=["med"]), "label_name",
                                          f"{scores.label(score)} per class (box: quartiles, whiskers: 5–95%)",
                                          scores.label(score)), width="stretch")

st.subheader("Classes ranked by “few samples and high informativeness”")
mean_n = float(stats["n"].mean())
table = pd.DataFrame({"class": rank["label_name"], "samples": rank["n"], f"mean {score}": rank["mean"],
                      f"sd {score}": rank["sd"], "index": rank["index"]})
t_left, t_right = st.columns([1.25, 1])
t_left.dataframe(table, hide_index=True, width="stretch", key="cls_ranking",
                 column_config={"index": st.column_config.ProgressColumn(
                     "under-sampling index", help="z(mean score) − z(log class size); the score's sign is flipped "
                     "when low values are the informative ones", format="%.2f",
                     min_value=float(min(rank["index"].min(), 0)), max_value=float(max(rank["index"].max(), 1e-9)))})
# the readings are sentences: as wrapped text beside the table (a grid column would cut them off)
t_right.markdown("**Reading, class by class** (same order)\n\n" + "\n".join(
    f"- **{r['label_name']}** — {reading(r, mean_n, scores.label(score), higher)}" for _, r in rank.iterrows()))

cx = complexity.class_table(rv)
if not cx.empty:
    st.subheader("Data complexity per class (CG)")
    st.caption(complexity.EXPLAIN + " *vs all rows*: the class against every other row of the dataset (same n for "
               "every class, comparable); *score problems*: the class against the negatives the CG score drew "
               "(n = problem size, averaged over draws).")
    st.dataframe(cx.sort_values("yᵀH⁻¹y (vs all rows)", ascending=False, na_position="last"), hide_index=True,
                 width="stretch", key="cls_complexity")

si.set_information_table(rv, "classes")

st.subheader("Most and least informative images of a class")
cls = st.selectbox("Class", rank["label_name"].tolist(), key="cls_pick")
where, params = '"label_name" = ?', [cls]
ncols = 8
most = rv.select(where, params, order_by=score, descending=higher, limit=ncols)
least = rv.select(where, params, order_by=score, descending=not higher, limit=ncols)
st.markdown(f"**Most informative** `{cls}` images by {scores.label(score)} "
            f"({'highest' if higher else 'lowest'} first)")
images.image_grid(rv, most, ncols=ncols, score=score)
st.markdown(f"**Least informative** `{cls}` images ({'lowest' if higher else 'highest'} first)")
images.image_grid(rv, least, ncols=ncols, score=score)
