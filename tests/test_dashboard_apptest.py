"""AppTest for every dashboard page on a tiny real run, plus the broken-run cases (no traceback, a clear message).

The run is written by ``tests/dashboard_fixtures.py`` from real MNIST digits; tests that record decisions work on
a private copy so the shared run stays undecided.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dashboard_fixtures import TinyRun, write_bare_run, write_broken_runs, write_tiny_run
from streamlit.testing.v1 import AppTest

from core.store import open_run

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"
PAGES = ["overview", "classes", "sources", "flagged", "explore"]
TITLES = {"overview": "Overview", "classes": "Classes", "sources": "Sources", "flagged": "Flagged images",
          "explore": "Explore & export"}


# ---- fixtures -------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def dash_runs(tmp_path_factory, mnist_arrays) -> dict:
    """A runs dir with a tiny complete run, a bare run (no scores), a half-written and a failed run."""
    x, y = mnist_arrays
    root = tmp_path_factory.mktemp("dash_runs")
    tiny = write_tiny_run(root, x, y, per_class=24)
    bare = write_bare_run(root, x, y)
    broken = write_broken_runs(root, x, y)
    empty = tmp_path_factory.mktemp("no_runs")
    return {"root": root, "tiny": tiny, "bare": bare, "empty": empty, **broken}


@pytest.fixture()
def run_copy(dash_runs, tmp_path) -> TinyRun:
    """A private copy of the tiny run (for tests that write decisions)."""
    src: TinyRun = dash_runs["tiny"]
    dst = tmp_path / "runs" / src.path.name
    shutil.copytree(src.path, dst)
    return TinyRun(path=dst, missing_image_id=src.missing_image_id, n=src.n, n_mislabeled=src.n_mislabeled)


@pytest.fixture()
def make_app(monkeypatch) -> Iterator[Callable[..., AppTest]]:
    def make(run: Path | None, runs_dir: Path, page: str = "overview") -> AppTest:
        if run is None:
            monkeypatch.delenv("INFOSCOPE_RUN", raising=False)
        else:
            monkeypatch.setenv("INFOSCOPE_RUN", str(run))
        monkeypatch.setenv("INFOSCOPE_RUNS", str(runs_dir))
        at = AppTest.from_file(str(APP), default_timeout=60).run()
        if page != "overview":
            at.switch_page(f"pages/{page}.py").run()
        return at

    yield make


# ---- helpers --------------------------------------------------------------------------------------
def _find(node, kind: str, out: list) -> list:
    if getattr(node, "type", None) == kind:
        out.append(node)
    for child in getattr(node, "children", {}).values():
        _find(child, kind, out)
    return out


def cap_value(caption: str) -> float:
    """The score part of a grid caption: ``label · score pNN`` (percentile within the run) -> NN."""
    part = caption.split(" · ")[1]
    return float(part.rsplit("p", 1)[1]) if part.startswith("p") or " p" in part else float(part)


def run_percentile(values: pd.Series, v: float) -> float:
    """Mid-rank percentile of ``v`` in the run (as the grid captions give it)."""
    col = np.sort(values.dropna().to_numpy(dtype=float))
    lo, hi = np.searchsorted(col, v, side="left"), np.searchsorted(col, v, side="right")
    return 100.0 * (lo + 0.5 * (hi - lo)) / len(col)


def captions_of_images(at: AppTest) -> list[str]:
    """Captions of the image-grid thumbnails (each has one); uncaptioned images (the Evidence view's plots on
    the Overview page) are not grid cells."""
    return [c for im in _find(at.main, "image", []) for c in im.captions if c]


def texts(at: AppTest) -> str:
    parts = []
    for kind in ("markdown", "caption", "info", "warning", "error", "success", "title"):
        parts += [str(e.value) for e in getattr(at, kind)]
    return "\n".join(parts)


def assert_clean(at: AppTest) -> None:
    assert not at.exception, [e.value for e in at.exception]


def metric(at: AppTest, label: str) -> str:
    return next(m.value for m in at.metric if m.label == label)


# ---- every page on the tiny run -------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_page_renders_and_names_missing_scores(make_app, dash_runs, page) -> None:
    at = make_app(dash_runs["tiny"].path, dash_runs["root"], page)
    assert_clean(at)
    assert at.title[0].value == TITLES[page]
    if page != "flagged":
        text = texts(at)
        assert "si_weights" in text and "prediction_depth" in text  # says which scores are missing


def test_overview_glance_and_summary(make_app, dash_runs) -> None:
    tiny: TinyRun = dash_runs["tiny"]
    at = make_app(tiny.path, dash_runs["root"])
    assert metric(at, "Samples") == f"{tiny.n:,}"
    assert metric(at, "Classes") == "10" and metric(at, "Sources") == "2"
    corr = at.dataframe[1].value
    assert set(corr["kind"]) == {"label_noise", "adversarial"}
    assert corr.set_index("kind").loc["label_noise", "affected"] == tiny.n_mislabeled
    # a score explanation with its paper is shown next to the scores
    assert "Harutyunyan et al., ICLR 2021" in texts(at)
    df = open_run(tiny.path).df
    flagged = int((df["flag_mislabeled"] | df["flag_adversarial"]).sum())
    held = int((df["split"] == "test").sum())
    # default: diversity-aware, 100 images weighted by SI (function), flagged rows left out, held-out rows ranked
    # by a stated fallback
    assert at.selectbox(key="sum_method").value == "Diversity-aware (embeddings)"
    assert at.selectbox(key="sum_score").value == "si_function"
    assert any(m.value.startswith("**100** images") and f"{flagged:,} flagged" in m.value for m in at.markdown)
    assert at.toggle(key="sum_exclude").value is True
    assert at.selectbox(key="sum_fallback_si_function").value == "uniqueness"
    assert any("ranked by their percentile of **uniqueness**" in c.value for c in at.caption)
    assert len(captions_of_images(at)) == 32
    at.number_input(key="sum_count").set_value(tiny.n).run()
    text = next(m.value for m in at.markdown if "images (" in m.value)
    assert text.startswith(f"**{tiny.n - flagged:,}** images") and f"{held - int(df.loc[df.split == 'test', ['flag_mislabeled', 'flag_adversarial']].any(axis=1).sum()):,} of them held-out" in text
    at.toggle(key="sum_exclude").set_value(False).run()
    assert any(m.value.startswith(f"**{tiny.n:,}** images") and f"{held:,} of them held-out" in m.value
               for m in at.markdown)
    at.toggle(key="sum_exclude").set_value(True).run()
    at.selectbox(key="sum_method").set_value("Class-balanced").run()
    at.number_input(key="sum_count").set_value(20).run()
    assert_clean(at)
    assert any(m.value.startswith("**20** images") for m in at.markdown)
    caps = captions_of_images(at)
    assert len(caps) == 20
    assert len({c.split(" · ")[0] for c in caps}) == 10  # every class represented
    per = next(d.value for d in at.dataframe if "equal share" in d.value.columns)
    assert per["chosen"].tolist() == [2] * 10 and per["equal share"].iloc[0] == 2.0
    at.selectbox(key="sum_method").set_value("Diversity-aware (embeddings)").run()
    assert_clean(at)
    assert any(m.value.startswith("**20** images") for m in at.markdown)
    at.selectbox(key="sum_method").set_value("Iterative SI pruning (ridge head, rescored)").run()
    assert_clean(at)
    assert any(m.value.startswith("**20** images") for m in at.markdown)
    # the non-additive information left out, against random subsets; the map is drawn
    labels = [mm.label for mm in at.metric]
    assert "Left out, function (nats)" in labels and "Random subsets, same size" in labels
    assert float(metric(at, "Left out, function (nats)")) > 0
    titles = [str(p.proto.spec) for p in _find(at.main, "plotly_chart", [])]
    assert any("The summary on the UMAP map" in t for t in titles)


def test_overview_summary_retrained_accuracy_runs_in_the_engine(make_app, dash_runs) -> None:
    at = make_app(dash_runs["tiny"].path, dash_runs["root"])
    at.number_input(key="sum_count").set_value(30).run()
    at.selectbox(key="sum_acc_model").set_value("ridge").run()
    at.number_input(key="sum_acc_k").set_value(3).run()
    at.button(key="sum_acc_go").click().run()
    assert_clean(at)
    res = next(d.value for d in at.dataframe if "held-out accuracy" in d.value.columns)
    assert res["subset"].tolist() == ["summary", "random 1", "random 2", "random 3"]
    assert res["held-out accuracy"].between(0, 1).all()
    assert any(m.value.startswith("Summary: **") and "random subsets of 30" in m.value for m in at.markdown)


def test_overview_summary_default_without_embeddings_is_top_by_si(make_app, run_copy) -> None:
    # diversity-aware (the default) needs the run's embeddings; without them the default is top by SI and the
    # diversity method, still listed, says why it cannot run
    (run_copy.path / "embeddings.npy").unlink()
    manifest = json.loads((run_copy.path / "manifest.json").read_text())
    del manifest["files"]["embeddings.npy"]  # a run written without embeddings (not a half-written one)
    (run_copy.path / "manifest.json").write_text(json.dumps(manifest))
    at = make_app(run_copy.path, run_copy.path.parent)
    assert_clean(at)
    assert at.selectbox(key="sum_method").value == "Top by SI (function)"
    assert "Iterative SI pruning (ridge head, rescored)" not in at.selectbox(key="sum_method").options
    assert any(m.value.startswith("**100** images") for m in at.markdown)
    at.selectbox(key="sum_method").set_value("Diversity-aware (embeddings)").run()
    assert any("no embeddings.npy" in w.value for w in at.warning)


def test_overview_summary_leaves_out_removed_and_applies_relabels(make_app, run_copy) -> None:
    r = open_run(run_copy.path)
    df = r.df
    clean = df[~(df["flag_mislabeled"] | df["flag_adversarial"])]
    top = clean.sort_values("cg_score", ascending=False)["sample_id"].iloc[:3].tolist()
    r.decisions.record(top, "remove")
    at = make_app(run_copy.path, run_copy.path.parent)
    at.selectbox(key="sum_method").set_value("Top by CG score").run()
    at.number_input(key="sum_count").set_value(10).run()
    assert any("3 removed" in m.value for m in at.markdown)
    at.selectbox(key="sum_fallback_cg_score").set_value("leave them out").run()  # only rows with a CG score
    assert any("without CG score or a fallback" in m.value for m in at.markdown)
    shown = [cap_value(c) for c in captions_of_images(at)]
    assert len(shown) == 10
    # the three highest CG scores were removed: the summary starts below them (captions are run percentiles)
    removed_cg = df.set_index("sample_id").loc[top, "cg_score"]
    assert max(shown) < round(run_percentile(df["cg_score"], removed_cg.min()))
    fourth = clean.sort_values("cg_score", ascending=False)["cg_score"].iloc[3]
    assert max(shown) == round(run_percentile(df["cg_score"], fourth))
    at.selectbox(key="sum_method").set_value("Class-balanced").run()
    per = next(d.value for d in at.dataframe if "equal share" in d.value.columns)
    before = int(per.set_index("class").loc["7", "eligible"])
    movers = clean[clean["label_name"] == "0"]["sample_id"].iloc[:2].tolist()
    r.decisions.record(movers, "relabel", "7")
    at.run()
    per = next(d.value for d in at.dataframe if "equal share" in d.value.columns)
    assert int(per.set_index("class").loc["7", "eligible"]) == before + 2


def test_classes_ranks_undersampled_first(make_app, dash_runs) -> None:
    at = make_app(dash_runs["tiny"].path, dash_runs["root"], "classes")
    ranking = next(d.value for d in at.dataframe if "index" in d.value.columns)
    assert len(ranking) == 10
    # classes 7 (a third of the samples) and 9 (half) are the under-sampled ones
    assert ranking["class"].iloc[0] in {"7", "9"}
    assert ranking["index"].is_monotonic_decreasing
    readings = next(str(m.value) for m in at.markdown if str(m.value).startswith("**Reading, class by class**"))
    lines = [ln for ln in readings.splitlines() if ln.startswith("- **")]
    assert [ln.split("**")[1] for ln in lines] == ranking["class"].tolist()  # one sentence per class, same order
    assert all("vs. the average class" in ln for ln in lines)
    at.selectbox(key="cls_pick").set_value("4").run()
    caps = captions_of_images(at)
    assert len(caps) == 16 and all(c.startswith("4") for c in caps)
    most = [int(c.split(" · ")[1].removeprefix("p")) for c in caps[:8]]  # percentiles in the run
    least = [int(c.split(" · ")[1].removeprefix("p")) for c in caps[8:]]
    assert most == sorted(most, reverse=True) and least == sorted(least) and min(most) >= max(least)


@pytest.mark.parametrize("score", ["margin", "confidence"])
def test_classes_follows_the_score_direction(make_app, dash_runs, score) -> None:
    """Low margin / confidence = hard: the under-sampled class (7, then 9) must rank first, not the easiest one."""
    at = make_app(dash_runs["tiny"].path, dash_runs["root"], "classes")
    at.selectbox(key="cls_score").set_value(score).run()
    assert_clean(at)
    ranking = next(d.value for d in at.dataframe if "index" in d.value.columns)
    df = open_run(dash_runs["tiny"].path).df
    g = df.groupby("label_name").agg(n=("sample_id", "size"), mean=(score, "mean"))

    def z(v: pd.Series) -> pd.Series:
        return (v - v.mean()) / v.std(ddof=0)

    expected = (-z(g["mean"]) - z(np.log(g["n"].astype(float)))).sort_values(ascending=False)
    assert ranking["class"].tolist() == expected.index.tolist()
    assert ranking["class"].iloc[0] == "7"
    # the naive (direction-blind) order would put another class first: the test can tell them apart
    naive = (z(g["mean"]) - z(np.log(g["n"].astype(float)))).sort_values(ascending=False)
    assert naive.index[0] != "7"
    verdict = at.info[0].value
    assert verdict.startswith("**7** ranks first") and "likely under-sampled" in verdict and "lower = harder" in verdict
    # "most informative" images of a class are its lowest-margin ones
    at.selectbox(key="cls_pick").set_value("4").run()
    caps = captions_of_images(at)
    most = [cap_value(c) for c in caps[:8]]
    least = [cap_value(c) for c in caps[8:16]]
    assert most == sorted(most) and least == sorted(least, reverse=True) and max(most) <= min(least)


def test_cg_data_complexity_on_overview_classes_sources(make_app, dash_runs) -> None:
    info = open_run(dash_runs["tiny"].path).manifest["scores"]["cg_score"]["info"]
    d = info["dataset_complexity"]
    at = make_app(dash_runs["tiny"].path, dash_runs["root"])
    assert metric(at, "yᵀH⁻¹y (class mean)") == f"{d['complexity']:.4g}"
    assert metric(at, "bound sqrt(2yᵀH⁻¹y/n)") == f"{d['bound']:.3g}"
    assert any("Arora et al., ICML 2019" in c.value for c in at.caption)
    at.switch_page("pages/classes.py").run()
    cx = next(t.value for t in at.dataframe if "yᵀH⁻¹y (vs all rows)" in t.value.columns).set_index("class")
    assert len(cx) == 10
    for c, v in d["classes"].items():
        assert cx.loc[c, "yᵀH⁻¹y (vs all rows)"] == pytest.approx(v["complexity"])
        assert cx.loc[c, "bound (vs all rows)"] == pytest.approx(np.sqrt(2 * v["complexity"] / d["n"]))
        assert cx.loc[c, "yᵀH⁻¹y (score problems)"] == pytest.approx(info["class_complexity"][c]["complexity"])
    at.switch_page("pages/sources.py").run()
    sx = next(t.value for t in at.dataframe if "yᵀH⁻¹y (mean over classes)" in t.value.columns).set_index("source")
    assert set(sx.index) == {"mnist", "mnist-noisy"}
    for src, v in d["groups"].items():
        assert sx.loc[src, "yᵀH⁻¹y (mean over classes)"] == pytest.approx(v["complexity"])
        assert sx.loc[src, "bound"] == pytest.approx(np.sqrt(2 * v["complexity"] / v["n"]))


def test_sources_ks_matches_scipy(make_app, dash_runs) -> None:
    from scipy.stats import ks_2samp

    at = make_app(dash_runs["tiny"].path, dash_runs["root"], "sources")
    kt = next(d.value for d in at.dataframe if "KS D" in d.value.columns)
    assert set(kt["score"]) == {"si_function", "cg_score", "loss", "margin", "confidence", "uniqueness"}
    df = open_run(dash_runs["tiny"].path).df
    for _, r in kt.iterrows():
        a = df.loc[df.source == "mnist", r["score"]].dropna()
        b = df.loc[df.source == "mnist-noisy", r["score"]].dropna()
        ref = ks_2samp(a, b)
        assert r["KS D"] == pytest.approx(ref.statistic, abs=1e-9)
        assert r["p-value"] == pytest.approx(ref.pvalue, abs=0.05)
    heat = [p for p in _find(at.main, "plotly_chart", []) if "Samples per source and class" in str(p.proto.spec)]
    assert heat


def test_flagged_precision_recall_and_decisions(make_app, run_copy) -> None:
    at = make_app(run_copy.path, run_copy.path.parent, "flagged")
    assert_clean(at)
    df = open_run(run_copy.path).df
    # by default exactly the engine's flag set (the rows Explore filters on), no threshold
    assert at.toggle(key="flag_widen_mislabeled").value is False
    assert not [s for s in at.slider if s.key == "flag_thr_mislabeled"]
    flagged = df["flag_mislabeled"].astype(bool)
    assert metric(at, "Flagged by the engine") == f"{int(flagged.sum()):,}"
    hit = (flagged & df["is_mislabeled"]).sum()
    assert metric(at, "Precision") == f"{hit / flagged.sum():.0%}"
    assert metric(at, "Recall") == f"{hit / df['is_mislabeled'].sum():.0%}"
    assert "exactly the engine's flags" in texts(at)
    first = df[flagged].sort_values("suspicion_mislabeled", ascending=False)["sample_id"].iloc[0]
    at.button(key=f"rm_{first}").click().run()
    assert_clean(at)
    assert "Recorded **remove**" in texts(at)
    assert "Decision: **remove**" in texts(at)
    assert not at.title  # the click reran the decided card only (a keyed fragment), not the page
    at.run()  # a full run: AppTest's tree then holds the whole page again
    latest = open_run(run_copy.path).decisions.latest()
    assert latest.set_index("sample_id").loc[first, "decision"] == "remove"
    # relabel to the suggested class (here: the prediction; the fixture has no suggestion column) with one click
    second = df[flagged].sort_values("suspicion_mislabeled", ascending=False)["sample_id"].iloc[1]
    at.button(key=f"rl_{second}").click().run()
    pred = df.set_index("sample_id").loc[second, "pred_name"]
    assert open_run(run_copy.path).decisions.latest().set_index("sample_id").loc[second, "relabel_to"] == pred
    at.run()
    # widening is explicit and labelled: the engine's flags plus every row above the threshold
    at.toggle(key="flag_widen_mislabeled").set_value(True).run()
    assert_clean(at)
    at.slider(key="flag_thr_mislabeled").set_value(0.5).run()
    shown = flagged | (df["suspicion_mislabeled"] >= 0.5)
    assert metric(at, "Shown") == f"{int(shown.sum()):,}"
    assert "widens the flag set" in at.slider(key="flag_thr_mislabeled").label
    # undo survives a reload: a brand-new session undoes the last batch
    at2 = make_app(run_copy.path, run_copy.path.parent, "flagged")
    assert "2 batch(es) in effect" in "\n".join(c.value for c in at2.sidebar.caption)
    at2.sidebar.button(key="undo_last").click().run()
    latest = open_run(run_copy.path).decisions.latest().set_index("sample_id")
    assert second not in latest.index or pd.isna(latest.loc[second, "decision"])
    assert latest.loc[first, "decision"] == "remove"


def test_flagged_shows_suggestion_and_weak_model_state(make_app, run_copy) -> None:
    import json

    samples = run_copy.path / "samples.parquet"
    df = pd.read_parquet(samples)
    top = df[df["flag_mislabeled"]].sort_values("suspicion_mislabeled", ascending=False).index[0]
    other = next(c for c in sorted(set(df["label_name"])) if c not in (df.loc[top, "pred_name"], df.loc[top, "label_name"]))
    df["suggested_label_name"] = df["pred_name"]
    df["suggestion_agrees"] = True
    df["suggestion"] = ""
    df.loc[top, ["suggested_label_name", "suggestion_agrees"]] = [other, False]
    df.loc[top, "suggestion"] = f"suggest '{other}' (model and neighbours disagree: model says 'x' 52%, 10/10 neighbours '{other}')"
    df.to_parquet(samples)
    mpath = run_copy.path / "manifest.json"
    m = json.loads(mpath.read_text())
    m["files"]["samples.parquet"]["bytes"] = samples.stat().st_size  # the store checks file sizes and checksums
    if "sha256" in m["files"]["samples.parquet"]:
        import hashlib

        m["files"]["samples.parquet"]["sha256"] = hashlib.sha256(samples.read_bytes()).hexdigest()
    m["model"]["quality"] = {"heldout_acc": 0.39, "min_heldout_acc": 0.75, "trust_flags": False,
                             "message": "WARNING: held-out accuracy 39.0% is below 75%"}
    mpath.write_text(json.dumps(m))
    at = make_app(run_copy.path, run_copy.path.parent, "flagged")
    assert_clean(at)
    assert any("Model too weak to trust the flags" in e.value for e in at.error)
    sid = df.loc[top, "sample_id"]
    t = texts(at)
    assert f"**Suggested label:** `{other}`" in t and "**disagree**" in t and "10/10 neighbours" in t
    at.button(key=f"rl_{sid}").click().run()
    assert open_run(run_copy.path).decisions.latest().set_index("sample_id").loc[sid, "relabel_to"] == other
    at.run()  # the click reran its card only; a full run brings back the rest of the page for AppTest
    at.radio(key="flag_kind").set_value("adversarial").run()  # an attacked copy keeps its label: no suggestion
    assert_clean(at)
    assert "Suggested label" not in texts(at)
    adv = df[df["flag_adversarial"]].sort_values("suspicion_adversarial", ascending=False)["sample_id"].iloc[0]
    assert at.selectbox(key=f"to_{adv}").value == df.set_index("sample_id").loc[adv, "label_name"]
    ov = make_app(run_copy.path, run_copy.path.parent, "overview")
    assert any("Model too weak to trust the flags" in e.value for e in ov.error)


def test_explore_filters_placeholder_map_selection_and_empty(make_app, dash_runs) -> None:
    tiny: TinyRun = dash_runs["tiny"]
    df = open_run(tiny.path).df
    at = make_app(tiny.path, dash_runs["root"], "explore")
    assert f"**{tiny.n:,}** image(s) match" in texts(at)
    at.multiselect(key="ex_classes").set_value(["3"]).run()
    n3 = int((df.label_name == "3").sum())
    assert f"**{n3:,}** image(s) match" in texts(at)
    caps = captions_of_images(at)
    assert len(caps) == min(n3, 24) and all(c.startswith("3") for c in caps)
    assert any("image file missing" in c for c in caps)  # placeholder for the deleted file
    # sorted by the chosen score, highest first
    at.selectbox(key="ex_sort").set_value("cg_score").run()
    # captions give the score as its percentile in the run (p0–p100)
    vals = [int(c.split(" · ")[1][1:]) for c in captions_of_images(at) if c.count(" · ") >= 1
            and c.split(" · ")[1][:1] == "p"]
    assert len(vals) >= 10 and vals == sorted(vals, reverse=True) and all(0 <= v <= 100 for v in vals)
    # a map selection restricts the grid
    ids = df.loc[df.label_name == "3", "sample_id"].tolist()[:5]
    at.session_state["explore_map_ids"] = ids
    at.run()
    assert "**5** image(s) match" in texts(at)
    assert len(captions_of_images(at)) == 5
    # an empty result gives a message, not a traceback
    at.multiselect(key="ex_classes").set_value(["4"]).run()
    assert_clean(at)
    assert "No image matches these filters" in texts(at)
    at.button(key="ex_clear").click().run()
    assert f"**{int((df.label_name == '4').sum()):,}** image(s) match" in texts(at)


def test_explore_bulk_decision_and_export_load_back(make_app, run_copy, tmp_path) -> None:
    at = make_app(run_copy.path, run_copy.path.parent, "explore")
    df = open_run(run_copy.path).df
    at.multiselect(key="ex_classes").set_value(["5"]).run()
    n5 = int((df.label_name == "5").sum())
    at.selectbox(key="ex_action").set_value("tag")
    at.text_input(key="ex_tagname").set_value("fives")
    at.button(key="ex_apply").click().run()
    assert_clean(at)
    latest = open_run(run_copy.path).decisions.latest()
    assert (latest["tags"] == "fives").sum() == n5
    # the tag filter now finds them
    at.multiselect(key="ex_classes").set_value([]).run()
    at.selectbox(key="ex_tag").set_value("fives").run()
    assert f"**{n5:,}** image(s) match" in texts(at)
    # export the selection as CSV and load it back
    out = tmp_path / "exp"
    at.text_input(key="ex_export_dir").set_value(str(out))
    at.radio(key="ex_export_fmt").set_value("csv").run()
    assert at.button(key="ex_export_go").disabled  # outside the runs folder: not written until confirmed
    at.checkbox(key="ex_export_outside").check().run()
    at.button(key="ex_export_go").click().run()
    assert_clean(at)
    assert not at.error, [e.value for e in at.error]
    back = pd.read_csv(out / "selection.csv")
    assert len(back) == n5 and set(back["label"].astype(str)) == {"5"}
    assert all(Path(p).is_file() for p in back["path"])
    assert at.get("download_button")
    # remove two, then the curated count excludes them; curated export refuses the missing image clearly
    at.selectbox(key="ex_tag").set_value("(any)").run()
    at.multiselect(key="ex_classes").set_value(["6"]).run()
    at.session_state["explore_map_ids"] = df.loc[df.label_name == "6", "sample_id"].tolist()[:2]
    at.run()
    at.selectbox(key="ex_action").set_value("remove")
    at.button(key="ex_apply").click().run()
    assert len(open_run(run_copy.path).curated()) == len(df) - 2
    at.radio(key="ex_scope").set_value("curated").run()
    at.button(key="ex_curated_go").click().run()
    assert_clean(at)
    assert any("missing" in e.value for e in at.error)  # one image file is missing: a message, no traceback


def test_two_sessions_see_each_others_decisions_and_concurrent_writes_kept(make_app, run_copy) -> None:
    a = make_app(run_copy.path, run_copy.path.parent)
    b = make_app(run_copy.path, run_copy.path.parent)
    assert metric(a, "Decided") == metric(b, "Decided") == "0"
    run = open_run(run_copy.path)
    ids = run.df["sample_id"].tolist()

    def writer(k: int) -> None:
        r = open_run(run_copy.path)
        for j in range(10):
            r.decisions.record(ids[(k * 10 + j) % len(ids)], "keep")

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(run.decisions.batches()) == 40
    a.run()
    b.run()
    assert metric(a, "Decided") == metric(b, "Decided") == "40"


# ---- broken and degenerate runs -------------------------------------------------------------------
@pytest.mark.parametrize("page", PAGES)
def test_no_runs_yet(make_app, dash_runs, page) -> None:
    at = make_app(None, dash_runs["empty"], page)
    assert_clean(at)
    assert any("No run is open" in i.value for i in at.info)
    assert "No runs under" in "\n".join(c.value for c in at.sidebar.caption)


@pytest.mark.parametrize("which,words", [("half", ["incomplete", "stopped before it finished"]),
                                         ("failed", ["failed", "singular"])])
def test_broken_run_explains_why(make_app, dash_runs, which, words) -> None:
    for page in PAGES:
        at = make_app(dash_runs[which], dash_runs["root"], page)
        assert_clean(at)
        assert at.error, page
        assert all(w in at.error[0].value for w in words), at.error[0].value


def test_picker_lists_runs_with_status(make_app, dash_runs) -> None:
    at = make_app(None, dash_runs["root"])
    box = at.sidebar.selectbox(key="run_picker")
    labels = [box.format_func(o) for o in box.options] if callable(getattr(box, "format_func", None)) \
        else list(box.options)
    text = "\n".join(labels)
    assert "tiny-mnist" in text and "incomplete" in text and "failed" in text
    # the newest complete run is opened by default, not a broken one
    assert at.title[0].value == "Overview"
    at.sidebar.selectbox(key="run_picker").set_value(str(dash_runs["failed"].resolve())).run()
    assert at.error and "failed" in at.error[0].value
    # the choice survives a page switch
    at.sidebar.selectbox(key="run_picker").set_value(str(dash_runs["bare"].resolve())).run()
    at.switch_page("pages/flagged.py").run()
    assert_clean(at)
    assert "no flags" in texts(at)


@pytest.mark.parametrize("page,message", [("overview", "cannot be summarized"),
                                          ("classes", "none of the scores"),
                                          ("sources", "no score columns"),
                                          ("flagged", "no flags"),
                                          ("explore", "no UMAP coordinates")])
def test_bare_run_without_scores(make_app, dash_runs, page, message) -> None:
    at = make_app(dash_runs["bare"], dash_runs["root"], page)
    assert_clean(at)
    assert message in texts(at)


def test_launch_command_binds_localhost(tmp_path) -> None:
    from dashboard.launch import build_command

    cmd = build_command("runs/x", str(tmp_path), 8123, open_browser=False)
    assert cmd[cmd.index("--server.address") + 1] == "127.0.0.1"
    assert cmd[cmd.index("--server.port") + 1] == "8123"
    assert "--theme.primaryColor=#3B5BDB" in cmd
    after = cmd[cmd.index("--") + 1:]
    assert after[after.index("--run") + 1] == str(Path("runs/x").resolve())
    assert after[after.index("--runs-dir") + 1] == str(tmp_path.resolve())
    assert os.path.isabs(cmd[cmd.index("run") + 1])
    assert np.all([isinstance(c, str) for c in cmd])
