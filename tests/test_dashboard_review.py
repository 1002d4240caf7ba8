"""AppTests for the review workflow (issue 13): the sample detail view, near-duplicates, confusion matrices,
dataset health, similarity search and saved views, on a tiny real run (``tests/dashboard_fixtures.py``).

Every expected number is recomputed here from ``samples.parquet`` / ``neighbors.npy`` by brute force."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_fixtures import TinyRun, write_tiny_run
from streamlit.testing.v1 import AppTest

from core.store import open_run
from core.store.review import percentile_of

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def review_runs(tmp_path_factory, mnist_arrays) -> TinyRun:
    x, y = mnist_arrays
    return write_tiny_run(tmp_path_factory.mktemp("review_runs"), x, y, per_class=24)


@pytest.fixture()
def run(review_runs, tmp_path) -> TinyRun:
    """A private copy (tests record decisions and save views)."""
    dst = tmp_path / "runs" / review_runs.path.name
    shutil.copytree(review_runs.path, dst)
    return TinyRun(path=dst, missing_image_id=review_runs.missing_image_id, n=review_runs.n,
                   n_mislabeled=review_runs.n_mislabeled)


@pytest.fixture()
def make_app(monkeypatch) -> Iterator[Callable[..., AppTest]]:
    def make(run: TinyRun, page: str = "overview", query: dict | None = None) -> AppTest:
        monkeypatch.setenv("INFOSCOPE_RUN", str(run.path))
        monkeypatch.setenv("INFOSCOPE_RUNS", str(run.path.parent))
        at = AppTest.from_file(str(APP), default_timeout=60)
        at.run()
        if page != "overview":
            at.switch_page(f"pages/{page}.py")
        for k, v in (query or {}).items():
            at.query_params[k] = v
        return at.run()

    yield make


def clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def md(at: AppTest) -> str:
    return "\n".join(str(m.value) for m in at.markdown)


def open_buttons(at: AppTest, prefix: str = "") -> list:
    return [b for b in at.button if b.key and "_open_" in b.key and b.key.startswith(prefix)]


def header_id(at: AppTest) -> str:
    line = next(str(m.value) for m in at.markdown if str(m.value).startswith("**`") and "in this list" in str(m.value))
    return line.split("`")[1]


# ---- the detail view ---------------------------------------------------------------------------------
def test_detail_shows_scores_with_brute_force_percentiles(make_app, run) -> None:
    at = make_app(run, "explore")
    clean(at)
    buttons = open_buttons(at)
    assert len(buttons) == 24  # one per thumbnail of the first page
    buttons[3].click().run()
    clean(at)
    sid = header_id(at)
    df = open_run(run.path).df
    r = df.set_index("sample_id").loc[sid]
    assert "4 of 24 in this list" in md(at)
    assert f"**Given label** `{r['label_name']}`" in md(at)
    assert at.query_params["detail"] == sid
    table = next(d.value for d in at.dataframe if "percentile in class" in d.value.columns).set_index("score")
    same_class = df[df["label_name"] == r["label_name"]]
    for col, name in (("si_function", "SI (function)"), ("cg_score", "CG score"), ("loss", "loss"),
                      ("uniqueness", "uniqueness")):
        x = float(r[col])
        if np.isnan(x):
            assert np.isnan(table.loc[name, "percentile in run"])
            continue
        assert table.loc[name, "value"] == pytest.approx(x)
        assert table.loc[name, "percentile in run"] == pytest.approx(percentile_of(df[col].to_numpy(), x))
        assert table.loc[name, "percentile in class"] == pytest.approx(percentile_of(same_class[col].to_numpy(), x))
    assert "SI (weights)" not in table.index  # all-NaN in this run: not a score of it


def test_percentile_of_matches_definition() -> None:
    v = np.array([1.0, 2.0, 2.0, 3.0, np.nan, np.inf])
    assert percentile_of(v, 2.0) == pytest.approx(100 * (1 + 0.5 * 2) / 4)
    assert percentile_of(v, 0.0) == 0.0 and percentile_of(v, 10.0) == 100.0
    assert np.isnan(percentile_of(v, np.nan)) and np.isnan(percentile_of(np.array([np.nan]), 1.0))


def test_detail_previous_next_decide_undo(make_app, run) -> None:
    at = make_app(run, "explore")
    ids = [b.key.split("_open_", 1)[1] for b in open_buttons(at)]
    open_buttons(at)[0].click().run()
    assert header_id(at) == ids[0]
    assert at.button(key="dt_prev").disabled
    at.button(key="dt_next").click().run()
    assert header_id(at) == ids[1] and at.query_params["detail"] == ids[1]
    at.button(key="dt_prev").click().run()
    assert header_id(at) == ids[0]
    # a decision is written to the log and (by default) moves on to the next image
    at.button(key="dt_remove").click().run()
    clean(at)
    latest = open_run(run.path).decisions.latest().set_index("sample_id")
    assert latest.loc[ids[0], "decision"] == "remove"
    assert header_id(at) == ids[1]
    at.button(key="dt_undo").click().run()
    assert open_run(run.path).decisions.latest().empty
    # keyboard shortcuts are declared on the buttons
    assert at.button(key="dt_keep").proto.shortcut.lower() == "k"
    assert at.button(key="dt_next").proto.shortcut.lower() == "right"


def test_detail_neighbours_open_in_turn(make_app, run) -> None:
    r = open_run(run.path)
    at = make_app(run, "explore")
    open_buttons(at)[0].click().run()
    sid = header_id(at)
    expected = r.neighbors(sid, 8)
    nb_keys = [b.key for b in at.button if b.key and b.key.startswith("dt_nb_")]
    assert nb_keys == [f"dt_nb_{i}" for i in expected]
    # brute force: neighbours are the nearest rows in the stored embeddings
    emb = np.asarray(r.embeddings())
    row = r.df.index[r.df["sample_id"] == sid][0]
    d = np.linalg.norm(emb - emb[row], axis=1)
    d[row] = np.inf
    assert set(r.df["sample_id"].iloc[np.argsort(d)[:3]]) <= set(expected)
    at.button(key=nb_keys[2]).click().run()
    assert header_id(at) == expected[2]


@pytest.mark.parametrize("page,prefix", [("flagged", "fl_open_"), ("classes", "grid"), ("sources", "src_top_"),
                                         ("overview", "grid")])
def test_detail_opens_from_every_page(make_app, run, page, prefix) -> None:
    at = make_app(run, page)
    clean(at)
    buttons = open_buttons(at, prefix)
    assert buttons, page
    sid = buttons[0].key.split("_open_", 1)[1]
    buttons[0].click().run()
    clean(at)
    assert header_id(at) == sid


def test_detail_reopens_from_the_url(make_app, run) -> None:
    sid = open_run(run.path).df["sample_id"].iloc[5]
    at = make_app(run, "explore", query={"detail": sid})
    clean(at)
    assert header_id(at) == sid
    at = make_app(run, "explore", query={"detail": "no-such-id"})
    clean(at)
    assert "in this list" not in md(at) and "detail" not in at.query_params


# ---- near-duplicates ----------------------------------------------------------------------------------
def test_duplicates_view_lists_stored_pairs_and_decides(make_app, run) -> None:
    r = open_run(run.path)
    dups = r.duplicates()
    assert len(dups) >= 5  # the fixture stores real near-duplicate pairs
    at = make_app(run, "duplicates")
    clean(at)
    metrics = {m.label: m.value for m in at.metric}
    labels = r.df.set_index("sample_id")["label_name"]
    conflicts = int((labels.loc[dups["sample_id_a"]].to_numpy() != labels.loc[dups["sample_id_b"]].to_numpy()).sum())
    assert metrics["Pairs"] == f"{len(dups):,}"
    assert metrics["Images involved"] == f"{len(set(dups['sample_id_a']) | set(dups['sample_id_b'])):,}"
    assert metrics["Label conflicts"] == f"{conflicts:,}"
    # the first pair shown is the most similar one (no conflicts here), and its cosine is the pixels' cosine
    first = dups.sort_values("cosine", ascending=False).iloc[0]
    a, b = (r.image(first["sample_id_a"]).astype(float).ravel(), r.image(first["sample_id_b"]).astype(float).ravel())
    cos = a @ b / np.linalg.norm(a) / np.linalg.norm(b)
    assert f"**cosine {first['cosine']:.4f}**" in md(at)
    assert cos == pytest.approx(first["cosine"], abs=5e-3)  # PNGs are 8-bit: quantisation only
    at.button(key="dup_rm_b_0").click().run()
    clean(at)
    assert r.decisions.latest().set_index("sample_id").loc[first["sample_id_b"], "decision"] == "remove"
    # an image of a pair opens in the detail view
    [b for b in at.button if b.key and b.key.startswith("dup_open_0_a_")][0].click().run()
    assert header_id(at) == first["sample_id_a"]


# ---- confusion ----------------------------------------------------------------------------------------
def _majority(nb_labels: np.ndarray) -> int:
    """Brute-force vote: most frequent label, ties to the label seen first (nearest)."""
    vals, counts = np.unique(nb_labels, return_counts=True)
    best = vals[counts == counts.max()]
    return int(next(v for v in nb_labels if v in best))


def test_confusion_matrices_and_cells(make_app, run) -> None:
    r = open_run(run.path)
    df = r.df
    at = make_app(run, "confusion")
    clean(at)
    shown = next(d.value for d in at.dataframe if "0" in d.value.columns)
    expected = pd.crosstab(df["label_name"], df["pred_name"]).reindex(index=r.class_names, columns=r.class_names,
                                                                        fill_value=0)
    assert np.array_equal(shown.to_numpy(), expected.to_numpy())
    # the largest off-diagonal cell is the first button; clicking it opens exactly its images
    off = expected.to_numpy().copy()
    np.fill_diagonal(off, 0)
    i, j = np.unravel_index(np.argmax(off), off.shape)
    first = [b for b in at.button if b.key and b.key.startswith("cm_btn_predicted_")][0]
    assert first.label.endswith(f": {off.max()}")
    first.click().run()
    clean(at)
    g, o = first.key.split("_")[-2:]
    ids = set(df.loc[(df["label_name"] == g) & (df["pred_name"] == o), "sample_id"])
    assert len(ids) == off.max() == expected.loc[r.class_names[i], r.class_names[j]]
    assert {b.key.split("_open_", 1)[1] for b in open_buttons(at, "cm_grid")} == ids
    assert at.query_params["cell"] == f"predicted|{g}|{o}"
    # a click on a table cell (the dataframe selection) opens that cell
    at.session_state["cm_table_predicted"] = {"selection": {"rows": [], "columns": [], "cells": [[4, "9"]]}}
    at.run()
    ids = set(df.loc[(df["label_name"] == "4") & (df["pred_name"] == "9"), "sample_id"])
    assert {b.key.split("_open_", 1)[1] for b in open_buttons(at, "cm_grid")} == ids
    # against the neighbour majority: recomputed from neighbors.npy by a brute-force vote
    at.radio(key="cm_kind").set_value("neighbours").run()
    clean(at)
    nb = np.load(run.path / "neighbors.npy")
    lab = df["label"].to_numpy()
    maj = np.array([_majority(lab[row]) for row in nb])
    exp_nb = pd.crosstab(df["label"], maj).reindex(index=range(10), columns=range(10), fill_value=0)
    shown = next(d.value for d in at.dataframe if "0" in d.value.columns)
    assert np.array_equal(shown.to_numpy(), exp_nb.to_numpy())


# ---- dataset health -----------------------------------------------------------------------------------
def test_health_counts_open_filtered_grids(make_app, run) -> None:
    r = open_run(run.path)
    df = r.df
    at = make_app(run, "health")
    clean(at)
    metrics = {m.label: int(m.value.replace(",", "")) for m in at.metric}
    q1, q3 = np.percentile(df["uniqueness"], [25, 75])
    sizes = df["label_name"].value_counts()
    small = sizes[sizes < 0.5 * sizes.median()].index
    dups = r.duplicates()
    assert metrics["Label issues"] == int(df["flag_mislabeled"].sum())
    assert metrics["Adversarial suspects"] == int(df["flag_adversarial"].sum())
    assert metrics["Outliers"] == int((df["uniqueness"] > q3 + 1.5 * (q3 - q1)).sum())
    assert metrics["Near-duplicates"] == len(set(dups["sample_id_a"]) | set(dups["sample_id_b"]))
    assert metrics["Under-sampled classes"] == int(df["label_name"].isin(small).sum()) > 0
    assert metrics["Model disagrees with the label"] == int((df["pred_name"] != df["label_name"]).sum())
    at.button(key="health_btn_labels").click().run()
    clean(at)
    flagged = df[df["flag_mislabeled"]].sort_values("suspicion_mislabeled", ascending=False)
    shown = [b.key.split("_open_", 1)[1] for b in open_buttons(at, "health_grid_labels")]
    assert shown == flagged["sample_id"].tolist()[:24]
    assert at.query_params["health"] == "labels"


# ---- sources headline and score histograms -------------------------------------------------------------
def test_sources_headline_sentence(make_app, run) -> None:
    from scipy.stats import ks_2samp

    df = open_run(run.path).df
    at = make_app(run, "sources")
    clean(at)
    score = "si_function"
    at.selectbox(key="src_score").set_value(score).run()
    line = at.info[0].value
    means = df.groupby("source")[score].mean()
    hi, lo = means.idxmax(), means.idxmin()
    d = ks_2samp(df.loc[df["source"] == "mnist", score].dropna(), df.loc[df["source"] == "mnist-noisy", score].dropna())
    assert line.startswith(f"Per image, **{hi}** carries **{means[hi] / means[lo]:.1f}×** the SI (function) of "
                           f"**{lo}**")
    assert f"KS D = **{d.statistic:.2f}**" in line


def test_score_filter_histogram_matches_numpy(run) -> None:
    from dashboard.components.filters import histogram
    from dashboard.state import RunView

    rv = RunView(open_run(run.path))
    col = open_run(run.path).df["loss"].to_numpy()
    lo, hi = float(col.min()), float(col.max())
    h = histogram("k", rv, "loss", lo, hi, 30)
    expected, _ = np.histogram(col, bins=30, range=(lo, hi))
    assert h["n"].tolist() == expected.tolist()


# ---- views that persist ---------------------------------------------------------------------------------
def grid_ids(at: AppTest, prefix: str = "grid") -> list[str]:
    return [b.key.split("_open_", 1)[1] for b in open_buttons(at, prefix)]


def match_caption(at: AppTest) -> str:
    return next(c.value for c in at.caption if "image(s) match" in c.value)


def test_saved_views_store_is_append_only_beside_decisions(run) -> None:
    import hashlib

    from core.store.review import SavedViews

    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.path.iterdir() if p.is_file()
              and not p.name.startswith("curation")}
    v = SavedViews(run.path / "curation.sqlite")
    v.save("noisy 4s", "explore", {"ex_classes": ["4"], "ex_sort": "loss"})
    v.save("b", "flagged", {"flag_hide": True})
    v.save("noisy 4s", "explore", {"ex_classes": ["4", "9"]})  # saving a name again: the latest wins
    assert v.names() == ["b", "noisy 4s"]
    assert v.get("noisy 4s") == ("explore", {"ex_classes": ["4", "9"]})
    v.delete("b")
    assert v.names() == ["noisy 4s"] and v.get("b") is None
    with pytest.raises(ValueError, match="name"):
        v.save("  ", "explore", {})
    with pytest.raises(ValueError, match="no saved view"):
        v.delete("b")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in run.path.iterdir() if p.is_file()
             and not p.name.startswith("curation")}
    assert before == after  # the immutable run files are untouched
    assert open_run(run.path).decisions.latest().empty  # and the decision log still reads


def test_view_lives_in_url_survives_page_change_and_reload(make_app, run) -> None:
    at = make_app(run, "explore")
    at.sidebar.multiselect(key="ex_classes").set_value(["3", "7"]).run()
    at.selectbox(key="ex_sort").set_value("loss").run()
    at.toggle(key="ex_desc").set_value(False).run()
    clean(at)
    ids, caption = grid_ids(at), match_caption(at)
    df = open_run(run.path).df
    expected = df[df["label_name"].isin(["3", "7"])].sort_values("loss", kind="stable")["sample_id"].tolist()
    assert ids == expected[:24] and f"**{len(expected)}** image(s) match" in caption
    assert at.query_params["ex_classes"] == '["3","7"]' and at.query_params["ex_sort"] == '"loss"'
    url = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    # another page and back: the same grid
    at.switch_page("pages/classes.py").run()
    at.switch_page("pages/explore.py").run()
    assert grid_ids(at) == ids
    # a reload (a new session with only the URL): the same grid
    again = make_app(run, "explore", query=url)
    clean(again)
    assert grid_ids(again) == ids and match_caption(again) == caption


def test_bad_url_values_are_ignored(make_app, run) -> None:
    at = make_app(run, "explore", query={"ex_classes": '["3","nope"]', "ex_sort": '"no_such_column"',
                                         "ex_page": "999", "ex_range_cols": '["loss"]',
                                         "ex_range_loss": "[-1e9,1e9]", "ex_desc": "maybe",
                                         "explore_map_sel": '{"box":[1,"x"]}'})
    clean(at)
    df = open_run(run.path).df
    assert f"**{int((df['label_name'] == '3').sum())}** image(s) match" in match_caption(at)


def test_saved_view_reloads_the_same_grid(make_app, run) -> None:
    at = make_app(run, "explore")
    at.sidebar.multiselect(key="ex_flags").set_value(["flag_mislabeled"]).run()
    at.selectbox(key="ex_sort").set_value("margin").run()
    ids = grid_ids(at)
    at.sidebar.text_input(key="view_name_explore").input("suspects").run()
    at.sidebar.button(key="view_save_explore").click().run()
    clean(at)
    assert "Saved the view" in "\n".join(s.value for s in at.sidebar.success)
    # change everything, then load the view back
    at.sidebar.multiselect(key="ex_flags").set_value([]).run()
    at.selectbox(key="ex_sort").set_value("sample_id").run()
    assert grid_ids(at) != ids
    at.sidebar.selectbox(key="view_pick_explore").set_value("suspects").run()
    at.sidebar.button(key="view_load_explore").click().run()
    clean(at)
    assert grid_ids(at) == ids
    # a fresh session on another page loads it too (and is taken to Explore)
    fresh = make_app(run, "explore")
    fresh.sidebar.selectbox(key="view_pick_explore").set_value("suspects").run()
    fresh.sidebar.button(key="view_load_explore").click().run()
    assert grid_ids(fresh) == ids


def test_map_selection_in_the_url(make_app, run) -> None:
    df = open_run(run.path).df
    x0, x1 = np.percentile(df["umap_x"], [10, 60])
    y0, y1 = np.percentile(df["umap_y"], [20, 90])
    inside = df[df["umap_x"].between(x0, x1) & df["umap_y"].between(y0, y1)]
    at = make_app(run, "explore", query={"explore_map_sel": f'{{"box":[{x0},{x1},{y0},{y1}]}}'})
    clean(at)
    assert f"**{len(inside)}** image(s) match" in match_caption(at)
    # a lasso (a triangle) is restored by point-in-polygon over the map's points
    tri = [[float(x0), float(x1), float(x0)], [float(y0), float(y0), float(y1)]]
    at = make_app(run, "explore", query={"explore_map_sel": json.dumps({"lasso": tri})})
    u = (df["umap_x"] - x0) / (x1 - x0)
    v = (df["umap_y"] - y0) / (y1 - y0)
    n_tri = int(((u > 0) & (v > 0) & (u + v < 1)).sum())
    assert f"**{n_tri}** image(s) match" in match_caption(at)


def test_points_in_polygon_brute_force() -> None:
    from dashboard.components.stats import points_in_polygon

    rng = np.random.default_rng(0)
    x, y = rng.uniform(-1, 3, 2000), rng.uniform(-1, 3, 2000)
    # an L-shaped (concave) polygon: [0,2]×[0,1] ∪ [0,1]×[1,2]
    px, py = [0, 2, 2, 1, 1, 0], [0, 0, 1, 1, 2, 2]
    truth = ((x > 0) & (x < 2) & (y > 0) & (y < 1)) | ((x > 0) & (x < 1) & (y >= 1) & (y < 2))
    assert np.array_equal(points_in_polygon(x, y, px, py), truth)
    assert not points_in_polygon(x, y, [0, 1], [0, 1]).any()


# ---- similarity search ----------------------------------------------------------------------------------
def brute_similar(run: TinyRun, query: list[str], k: int) -> list[str]:
    r = open_run(run.path)
    ids = r.df["sample_id"].tolist()
    e = np.asarray(r.embeddings(), dtype=np.float64)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    c = e[[ids.index(q) for q in query]].mean(0)
    sims = e @ (c / np.linalg.norm(c))
    order = [ids[i] for i in np.argsort(-sims, kind="stable") if ids[i] not in set(query)]
    return order[:k]


def test_more_like_this_from_the_detail_view(make_app, run) -> None:
    at = make_app(run, "explore")
    open_buttons(at)[2].click().run()
    sid = header_id(at)
    at.button(key="dt_similar").click().run()
    clean(at)
    assert at.title[0].value == "More like this"
    shown = grid_ids(at, "sim_grid")
    expected = brute_similar(run, [sid], 48)
    assert len(shown) == 48 and shown[:10] == expected[:10] and set(shown) == set(expected)
    assert grid_ids(at, "sim_query_grid") == [sid]
    at.switch_page("pages/similar.py")  # AppTest re-runs the page it last opened, not the one st.switch_page chose
    # filter the result, then decide on it in bulk
    df = open_run(run.path).df.set_index("sample_id")
    label = df.loc[sid, "label_name"]
    at.multiselect(key="sim_classes").set_value([label]).run()
    same = [i for i in expected if df.loc[i, "label_name"] == label]
    assert grid_ids(at, "sim_grid") == same
    at.selectbox(key="sim_action").set_value("tag")
    at.button(key="sim_apply").click().run()
    clean(at)
    latest = open_run(run.path).decisions.latest()
    assert sorted(latest.loc[latest["tags"] == "review", "sample_id"]) == sorted(same)
    # saved by name, and a fresh session gets the same grid back
    at.sidebar.text_input(key="view_name_similar").input("like it").run()
    at.sidebar.button(key="view_save_similar").click().run()
    fresh = make_app(run, "similar")
    assert not grid_ids(fresh, "sim_grid")  # a new session has no query until the view is loaded
    fresh.sidebar.selectbox(key="view_pick_similar").set_value("like it").run()
    fresh.sidebar.button(key="view_load_similar").click().run()
    clean(fresh)
    assert grid_ids(fresh, "sim_grid") == same


def test_more_like_this_selection_uses_the_set_mean(make_app, run) -> None:
    df = open_run(run.path).df
    x0, x1 = np.percentile(df["umap_x"], [40, 60])
    y0, y1 = np.percentile(df["umap_y"], [40, 60])
    at = make_app(run, "explore", query={"explore_map_sel": json.dumps({"box": [x0, x1, y0, y1]})})
    chosen = df.loc[df["umap_x"].between(x0, x1) & df["umap_y"].between(y0, y1), "sample_id"].tolist()
    assert len(chosen) >= 2
    at.button(key="ex_similar").click().run()
    clean(at)
    assert at.title[0].value == "More like this"
    assert set(grid_ids(at, "sim_grid")) == set(brute_similar(run, chosen, 48))
    assert not set(grid_ids(at, "sim_grid")) & set(chosen)


# ---- keyboard review and bulk relabels on Flagged ----------------------------------------------------------
def flagged_order(df: pd.DataFrame) -> pd.DataFrame:
    """The Flagged page's default list, by its definition: suspicion at or above the suspicion of the n-th most
    suspicious row, n = the number of rows the engine flagged; most suspicious first."""
    n = int(df["flag_mislabeled"].sum())
    thr = round(float(df["suspicion_mislabeled"].sort_values(ascending=False).iloc[n - 1]), 3)
    return df[df["suspicion_mislabeled"] >= thr].sort_values("suspicion_mislabeled", ascending=False, kind="stable")


def test_flagged_page_size_and_keyboard_review(make_app, run) -> None:
    df = open_run(run.path).df
    flagged = flagged_order(df)
    at = make_app(run, "flagged")
    assert len(open_buttons(at, "fl_open_")) == min(8, len(flagged))
    at.selectbox(key="flag_per_page").set_value(48).run()
    clean(at)
    assert len(open_buttons(at, "fl_open_")) == min(48, len(flagged))
    at.button(key="flag_keyboard").click().run()
    clean(at)
    assert header_id(at) == flagged["sample_id"].iloc[0]
    assert f"1 of {len(flagged)} in this list" in md(at)  # previous / next walk every flagged image
    for _ in range(3):
        at.button(key="dt_keep").click().run()  # K: keep and move on
    latest = open_run(run.path).decisions.latest()
    assert sorted(latest["sample_id"]) == sorted(flagged["sample_id"].iloc[:3])
    assert header_id(at) == flagged["sample_id"].iloc[3]
    # closing and re-opening the keyboard review starts at the first undecided image
    at.button(key="flag_keyboard").click().run()
    assert header_id(at) == flagged["sample_id"].iloc[3]


def card_ids(at: AppTest) -> list[str]:
    """Sample ids of the Flagged cards in AppTest's tree (one Keep button per card)."""
    return [b.key[len("keep_"):] for b in at.button if b.key and b.key.startswith("keep_")]


def focus_badges(at: AppTest) -> int:
    return sum("**Focused**" in str(c.value) for c in at.caption)


def press(at: AppTest, name: str) -> AppTest:
    """Click a key button, then run the page once more: after a keyed fragment rerun AppTest's tree holds only
    the cards that ran, and the key buttons are drawn by the page."""
    at.button(key=f"fl_key_{name}").click().run()
    return at.run()


def test_keyboard_review_on_the_flagged_cards(make_app, run) -> None:
    df = open_run(run.path).df
    flagged = flagged_order(df)
    order = flagged["sample_id"].tolist()
    assert len(order) > 8  # two pages of 8
    at = make_app(run, "flagged")
    clean(at)
    assert card_ids(at) == order[:8]
    # the detail view's keys, on buttons that act on the focused card, and a legend on the page
    for name, key in (("keep", "k"), ("remove", "x"), ("relabel", "l"), ("tag", "t"), ("undo", "u"),
                      ("prev", "left"), ("next", "right")):
        assert at.button(key=f"fl_key_{name}").proto.shortcut.lower() == key
    assert "**K** keep" in md(at) and "**U** undo" in md(at)
    assert at.session_state["flag_focus"] == order[0] and focus_badges(at) == 1
    # K: keep the focused card, move on; only the two cards that changed ran (no title, no other card)
    at.button(key="fl_key_keep").click().run()
    clean(at)
    assert not at.title and sorted(card_ids(at)) == sorted(order[:2])
    assert focus_badges(at) == 1 and at.session_state["flag_focus"] == order[1]
    assert "Recorded **keep**" in "\n".join(str(s.value) for s in at.success)
    latest = open_run(run.path).decisions.latest().set_index("sample_id")
    assert list(latest.index) == [order[0]] and latest.loc[order[0], "decision"] == "keep"
    at.run()
    # L: relabel to the suggestion (here the prediction), X: remove, T: tag (stays), → / ←: move
    press(at, "relabel")
    press(at, "remove")
    press(at, "tag")
    assert at.session_state["flag_focus"] == order[3]
    press(at, "prev")
    assert at.session_state["flag_focus"] == order[2]
    press(at, "next")
    latest = open_run(run.path).decisions.latest().set_index("sample_id")
    assert latest.loc[order[1], "relabel_to"] == flagged.set_index("sample_id").loc[order[1], "pred_name"]
    assert latest.loc[order[2], "decision"] == "remove" and latest.loc[order[3], "tags"] == "review"
    # U: undo the tag, the focus stays on its card; again: the remove is undone and its card takes the focus
    press(at, "undo")
    press(at, "undo")
    latest = open_run(run.path).decisions.latest().set_index("sample_id")
    assert order[2] not in latest.index and order[3] not in latest.index
    assert at.session_state["flag_focus"] == order[2]
    # → past the last card turns the page (a full run) and focuses its first card; the URL holds both
    for _ in range(8 - 3):
        press(at, "next")
    at.button(key="fl_key_next").click().run()
    assert at.title and card_ids(at) == order[8:16]
    assert at.session_state["flag_focus"] == order[8]
    assert at.query_params["flag_page_mislabeled"] == "2" and at.query_params["flag_focus"] == json.dumps(order[8])
    press(at, "next")
    url = {k: (v[0] if isinstance(v, list) else v) for k, v in at.query_params.items()}
    assert url["flag_focus"] == json.dumps(order[9])
    # a reload / shared link: the same page, the same focused card
    again = make_app(run, "flagged", query=url)
    clean(again)
    assert card_ids(again) == order[8:16] and again.session_state["flag_focus"] == order[9]
    assert focus_badges(again) == 1
    # ← before the first card goes back a page, to its last card
    press(again, "prev")
    press(again, "prev")
    assert card_ids(again) == order[:8] and again.session_state["flag_focus"] == order[7]
    # a stale link (a card no longer on the page, a page beyond the end) falls back to the page's first card
    stale = make_app(run, "flagged", query={"flag_page_mislabeled": "99", "flag_focus": '"nope"'})
    clean(stale)
    assert stale.session_state["flag_focus"] == card_ids(stale)[0]
    # "hide decided": deciding the page's last card moves on to the very next undecided card, although the rows
    # shifted up by one (the next card is now on the same page, not the first of page 2)
    hide = make_app(run, "flagged")
    hide.toggle(key="flag_hide").set_value(True).run()
    decided = set(open_run(run.path).decisions.latest().dropna(subset=["decision"])["sample_id"])
    todo = [s for s in order if s not in decided]
    assert card_ids(hide) == todo[:8]
    for _ in range(7):
        press(hide, "next")
    assert hide.session_state["flag_focus"] == todo[7]
    press(hide, "keep")
    assert hide.session_state["flag_focus"] == todo[8]
    assert card_ids(hide) == todo[:7] + [todo[8]] and hide.query_params["flag_page_mislabeled"] == "1"


def test_bulk_accept_suggested_relabels_with_preview_and_undo(make_app, run) -> None:
    df = open_run(run.path).df
    flagged = flagged_order(df)
    at = make_app(run, "flagged")
    at.slider(key="flag_bulk_mislabeled_thr").set_value(0.6).run()
    clean(at)
    expected = flagged[(flagged["pred_name"] != flagged["label_name"]) & (flagged["pred_prob"] >= 0.6)]
    assert len(expected) > 0
    assert f"**{len(expected):,}** undecided image(s)" in md(at)
    preview = next(d.value for d in at.dataframe if "suggested" in d.value.columns)
    assert sorted(preview["sample_id"]) == sorted(expected["sample_id"])
    at.button(key="flag_bulk_mislabeled_go").click().run()
    clean(at)
    latest = open_run(run.path).decisions.latest().set_index("sample_id")
    assert sorted(latest.index) == sorted(expected["sample_id"])
    assert (latest.loc[expected["sample_id"], "relabel_to"].to_numpy() == expected["pred_name"].to_numpy()).all()
    assert (latest["decision"] == "relabel").all()
    at.button(key="flag_bulk_mislabeled_undo").click().run()
    clean(at)
    assert open_run(run.path).decisions.latest().empty


# ---- readable by default -----------------------------------------------------------------------------------
def _lab(hex_colour: str) -> np.ndarray:
    """sRGB (D65) -> CIELAB, straight from the CIE formulas."""
    rgb = np.array([int(hex_colour[i:i + 2], 16) for i in (1, 3, 5)]) / 255.0
    lin = np.where(rgb > 0.04045, ((rgb + 0.055) / 1.055) ** 2.4, rgb / 12.92)
    xyz = np.array([[0.4124, 0.3576, 0.1805], [0.2126, 0.7152, 0.0722], [0.0193, 0.1192, 0.9505]]) @ lin
    t = xyz / np.array([0.95047, 1.0, 1.08883])
    f = np.where(t > (6 / 29) ** 3, np.cbrt(t), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return np.array([116 * f[1] - 16, 500 * (f[0] - f[1]), 200 * (f[1] - f[2])])


def test_palette_twenty_classes_never_look_alike() -> None:
    from dashboard.components.charts import PALETTE

    assert len(PALETTE) >= 20 and len(set(PALETTE)) == len(PALETTE)
    labs = [_lab(c) for c in PALETTE[:20]]
    d = min(np.linalg.norm(a - b) for i, a in enumerate(labs) for b in labs[i + 1:])
    assert d >= 25  # ΔE*76 ≥ 25: clearly different colours (≈ 2.3 is a just-noticeable difference)
    assert max(lab[0] for lab in labs) <= 85  # none too pale to see on white


def test_numeric_map_uses_quantiles_and_grey_for_missing() -> None:
    from dashboard.components.charts import NAN_GREY, quantile_ranks, scatter_map

    v = np.array([1e-6, 3e-6, np.nan, 2e-6, 5.0, 2e-6, np.nan])
    df = pd.DataFrame({"sample_id": [f"s{i}" for i in range(7)], "umap_x": np.arange(7.0), "umap_y": np.zeros(7),
                       "si": v})
    fig = scatter_map(df, "si", "t", numeric=True)
    grey = next(t for t in fig.data if t.name == "no value")
    assert list(grey.customdata) == ["s2", "s6"] and grey.marker.color == NAN_GREY
    coloured = next(t for t in fig.data if t.name == "si")
    finite = v[np.isfinite(v)]
    # brute force mid-rank quantile: (#{<x} + (#{=x} − 1)/2) / (n − 1)
    expected = [((finite < x).sum() + ((finite == x).sum() - 1) / 2) / (len(finite) - 1) for x in finite]
    assert np.allclose(coloured.marker.color, expected)
    assert np.allclose(quantile_ranks(finite), expected)
    assert coloured.marker.cmin == 0 and coloured.marker.cmax == 1  # the outlier 5.0 does not squash the rest


def test_caption_percentile_matches_definition() -> None:
    from dashboard.components.images import percentile_in

    v = np.array([3.0, 1.0, 2.0, 2.0, np.inf, 7.0])
    s = np.sort(v[np.isfinite(v)])
    for x in (0.5, 1.0, 2.0, 2.5, 7.0, 9.0):
        assert percentile_in(s, x) == pytest.approx(percentile_of(v, x))


# ---- continuity: the export folder -----------------------------------------------------------------------
def test_export_folder_keeps_its_value_and_never_writes_elsewhere(make_app, run, tmp_path) -> None:
    out = tmp_path / "my-export"
    at = make_app(run, "explore")
    at.sidebar.multiselect(key="ex_classes").set_value(["4"]).run()  # (one class-3 image file is missing)
    at.text_input(key="ex_export_dir").input(str(out)).run()
    if any(c.key == "ex_export_outside" for c in at.checkbox):  # outside the runs folder: confirm first
        at.checkbox(key="ex_export_outside").check().run()
    at.button(key="ex_export_go").click().run()
    clean(at)
    assert (out / "selection.csv").exists(), [e.value for e in at.error] + [s.value for s in at.success]
    assert at.text_input(key="ex_export_dir").value == str(out)  # not reset to a fresh default
    at.button(key="ex_export_go").click().run()  # the same, now non-empty, folder: refused, said, nothing else
    assert any("is not empty" in e.value for e in at.error)
    assert sorted(p.name for p in out.iterdir()) == ["selection.csv"]
    assert not (run.path / "exports").exists()  # no silent write into a default folder
    at.switch_page("pages/classes.py").run()
    at.switch_page("pages/explore.py").run()
    assert at.text_input(key="ex_export_dir").value == str(out)  # and it survives a change of page


def test_run_picker_label_is_short_and_dated() -> None:
    from dashboard.components.page import short_label

    assert short_label("20261201-121448-demo", "demo", 6340) == "demo · 6,340 · 12-01 12:14"
    assert short_label("my-run", "", None) == "my-run"  # an id without a date: as it is
