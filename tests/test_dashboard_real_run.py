"""Every dashboard page on a run produced by the real pipeline (every score, two sources, label noise, an
under-sampled class, adversarial copies) — the session's ``tiny_run`` fixture."""

from __future__ import annotations

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
