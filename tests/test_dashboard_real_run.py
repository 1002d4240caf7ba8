"""Every dashboard page on a run produced by the real pipeline (every score, two sources, label noise, an
under-sampled class, adversarial copies) — the session's ``tiny_run`` fixture."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from core.scores.registry import SCORE_SPECS
from core.store import open_run

APP = Path(__file__).resolve().parents[1] / "dashboard" / "app.py"


@pytest.fixture(scope="module")
def real_run(tiny_run, tmp_path_factory) -> Path:
    dst = tmp_path_factory.mktemp("real_runs") / Path(tiny_run).name
    shutil.copytree(tiny_run, dst)
    return dst


def _app(run: Path, monkeypatch, page: str | None = None) -> AppTest:
    monkeypatch.setenv("INFOSCOPE_RUN", str(run))
    monkeypatch.setenv("INFOSCOPE_RUNS", str(run.parent))
    at = AppTest.from_file(str(APP), default_timeout=90).run()
    if page:
        at.switch_page(f"pages/{page}.py").run()
    return at


def _all_text(at: AppTest) -> str:
    parts = [m.value for m in at.markdown] + [c.value for c in at.caption] + [str(m.value) for m in at.metric]
    parts += [w.value for w in at.warning] + [i.value for i in at.info] + [h.value for h in at.title]
    return "\n".join(str(p) for p in parts)


@pytest.mark.parametrize("page", [None, "classes", "sources", "flagged", "explore"])
def test_page_renders_real_run_without_exception(real_run, monkeypatch, page):
    at = _app(real_run, monkeypatch, page)
    assert not at.exception, [e.value for e in at.exception]
    text = _all_text(at)
    assert "Missing from this run" not in text  # the real pipeline computed every score
    if page is None:
        assert str(open_run(real_run).manifest["n_samples"]) in text.replace(",", "")
        for name in ("si_function", "cg_score", "prediction_depth"):
            assert SCORE_SPECS[name].paper.split(",")[0] in text


def test_flagged_page_counts_match_run(real_run, monkeypatch):
    at = _app(real_run, monkeypatch, "flagged")
    df = open_run(real_run).df
    metrics = {m.label: m.value for m in at.metric}
    assert str(int(df["is_mislabeled"].sum())) in metrics.values()


def test_evidence_view_shows_committed_results(real_run, monkeypatch, tmp_path):
    import json

    doc = {"title": "Under-sampled classes", "command": "python bench/evidence_undersampled.py",
           "machine": "test", "date": "today", "scale": "quick", "conclusion": "class 3 ranks first at 5%",
           "tables": [{"caption": "mean score ratio", "columns": ["fraction", "si_function ratio"],
                       "rows": [[0.05, 2.5], [0.5, 1.1]]}]}
    (tmp_path / "evidence_undersampled.json").write_text(json.dumps(doc))
    (tmp_path / "evidence_broken.json").write_text("{ nope")
    monkeypatch.setenv("INFOSCOPE_EVIDENCE_DIR", str(tmp_path))
    at = _app(real_run, monkeypatch)
    assert not at.exception
    assert "class 3 ranks first at 5%" in _all_text(at)
    assert any("reduced scale" in w.value for w in at.warning)
    assert any("evidence_broken.json" in w.value for w in at.warning)
    frames = [t.value for t in at.table]  # HTML tables (they wrap; a canvas grid would cut long cells off)
    assert any(list(f.columns) == ["fraction", "si_function ratio"] and str(f.iloc[0, 1]) == "2.5" for f in frames), \
        [f.head(2) for f in frames]
    monkeypatch.setenv("INFOSCOPE_EVIDENCE_DIR", str(tmp_path / "none"))
    at = _app(real_run, monkeypatch)
    assert any("No evidence results" in i.value for i in at.info)


def test_overview_shows_si_unit_and_verification_state(real_run, monkeypatch, tmp_path):
    from core.verify_si import verify_si

    run = tmp_path / real_run.name
    shutil.copytree(real_run, run)
    (run / "si_verification.json").unlink(missing_ok=True)
    at = _app(run, monkeypatch)
    text = _all_text(at)
    assert "nats" in text and "crossfit" in text
    rep = json.loads((run / "manifest.json").read_text())["scores"]["si_function"]["info"]["reproducibility"]
    assert f"Reproducibility of the ranking ≈ {rep['si_function']:.2f}" in text  # the run's own estimate
    assert f"from {rep['repeats']} cross-fittings" in text
    top = rep["top_overlap"]  # the run's estimate of how much of its top 10% another run would share
    assert (f"top 10% of rows would be shared with such a run at ≈ **{top['si_function']:.2f}** (predictions) / "
            f"{top['si_weights']:.2f} (weights)") in text
    assert any("Not verified on this data" in i.value and "infoscope verify-si --run" in i.value for i in at.info)
    res = verify_si(run, samples=4, seed=3)
    at = _app(run, monkeypatch)
    ok = [s.value for s in at.success if "Verified on this data" in s.value]
    assert ok and f"r = {res['pearson_weights']:.3f}" in ok[0] and "4 rows retrained" in ok[0]


def test_label_noise_information_on_overview_classes_sources(real_run, monkeypatch):
    from dashboard.components.si import LABEL_F, LABEL_W

    li = open_run(real_run).manifest["scores"]["si_function"]["info"]["label_information"]
    assert li["unit"] == "nats" and li["sigma"] > 0 and li["all"]["weights"] > 0
    at = _app(real_run, monkeypatch)
    assert not at.exception
    text = _all_text(at)
    assert f"**{li['all']['weights']:.4g} nats** in the head's weights" in text
    assert f"{li['all']['function']:.4g} nats in its predictions" in text and f"(σ = {li['sigma']})" in text
    for page, kind, one in (("classes", "classes", "class"), ("sources", "sources", "source")):
        at = _app(real_run, monkeypatch, page)
        assert not at.exception
        t = next(d.value for d in at.dataframe if LABEL_W in d.value.columns).set_index(one)
        assert set(t.index) == set(li[kind]) and len(t) >= 2
        for name, v in li[kind].items():
            assert t.loc[name, LABEL_W] == pytest.approx(v["weights"])
            assert t.loc[name, LABEL_F] == pytest.approx(v["function"])
        assert any("Label-noise information" in c.value for c in at.caption)


def test_overview_says_why_label_information_is_missing(real_run, monkeypatch, tmp_path):
    run = tmp_path / real_run.name
    shutil.copytree(real_run, run)
    man = json.loads((run / "manifest.json").read_text())
    man["scores"]["si_function"]["info"]["label_information"] = {"skipped": "7 training rows > label_information_max_rows = 5"}
    (run / "manifest.json").write_text(json.dumps(man))
    at = _app(run, monkeypatch)
    assert not at.exception
    text = _all_text(at)
    assert "Label-noise information I(W; Y | X) not computed: 7 training rows > label_information_max_rows = 5" in text
    assert "in the head's weights" not in text


@pytest.mark.parametrize("page,kind", [("classes", "class"), ("sources", "source")])
def test_set_information_tables(real_run, monkeypatch, page, kind):
    at = _app(real_run, monkeypatch, page)
    assert not at.exception
    sets = open_run(real_run).manifest["scores"]["si_function"]["info"]["set_information"][f"{kind}es" if kind == "class" else f"{kind}s"]
    tables = [d.value for d in at.dataframe if kind in d.value.columns and "SI predictions (nats)" in d.value.columns]
    assert tables and set(tables[0][kind]) == set(sets)
