"""Hardening (issue 11): nothing written outside --out, no run can break another, bad input is one line.

Each section reproduces one numbered finding of the reliability audit.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.errors import ExportError, QueryError, RunStoreError
from core.export import export_table, export_where
from core.store import RunWriter, list_runs, open_run

runner = CliRunner()


def _flat(text: str) -> str:
    return " ".join(text.split())


def _make_run(root: Path, ids: list[str] | None = None, labels: list[str] | None = None,
              classes: list[str] | None = None) -> Path:
    """A complete run of tiny real PNGs written by ``RunWriter`` (ids and class names as given)."""
    ids = ids or [f"s:{i}" for i in range(6)]
    n = len(ids)
    labels = labels or [("x", "y")[i % 2] for i in range(n)]
    classes = classes or sorted(set(labels))
    images = np.random.default_rng(0).random((n, 1, 5, 5)).astype(np.float32)
    with RunWriter(root, "t") as w:
        paths = w.write_images(images, np.array([""] * n, dtype=object))
        table = pd.DataFrame({"sample_id": ids, "source": "a", "split": "train",
                              "label": [classes.index(c) for c in labels], "label_name": labels,
                              "image_path": paths, "score": np.arange(n, dtype=float)})
        w.write_samples(table)
        w.write_embeddings(np.eye(n, 3))
        return w.finish({"class_names": classes, "n_samples": n, "scores": {"score": {}}})


# ---- 1. --where cannot read or write any file ----------------------------------------------------------
ORACLE = "EXISTS (SELECT 1 FROM read_text('/etc/passwd') WHERE content LIKE 'root%')"


def test_where_cannot_read_files(tmp_path):
    run = open_run(_make_run(tmp_path / "runs"))
    with pytest.raises(QueryError):
        run.query.select(ORACLE)
    with pytest.raises(QueryError):
        run.query.count("score > (SELECT count(*) FROM read_csv('/etc/hostname'))")
    # even the dashboard's free SQL path cannot reach a file: the connection itself refuses
    with pytest.raises(Exception, match="disabled by configuration"):
        run.query.sql("SELECT * FROM read_text('/etc/passwd')")
    with pytest.raises(Exception, match="locked"):
        run.query.sql("SET enable_external_access = true")
    res = runner.invoke(app, ["export", "--run", str(run.path), "--where", ORACLE, "--out", str(tmp_path / "o")])
    assert res.exit_code == 2 and "Traceback" not in res.output and "sub-quer" in _flat(res.output)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("where", [
    "1=1) ; COPY (SELECT * FROM samples) TO '{target}' ; SELECT 1 FROM samples WHERE (1=1",
    "1=1); COPY (SELECT 1) TO '{target}'; --",
    "1=1) UNION ALL (SELECT 1 FROM samples WHERE (1=1",
    "score > 0; ATTACH '{target}' AS x",
])
def test_where_statement_stacking_refused_and_writes_nothing(tmp_path, where):
    run = open_run(_make_run(tmp_path / "runs"))
    target = tmp_path / "stolen.csv"
    where = where.format(target=target)
    with pytest.raises(QueryError):
        run.query.select(where)
    out = tmp_path / "out"
    with pytest.raises(ExportError):
        export_where(run, where, "csv", out)
    assert not target.exists() and not out.exists()


def test_where_plain_expressions_still_work(tmp_path):
    run = open_run(_make_run(tmp_path / "runs"))
    assert len(run.query.select("score > 2 AND label_name = 'x'")) == 1
    assert len(run.query.select("samples.score >= ?", [3])) == 3
    assert run.query.count("decision IS NULL AND lower(source) LIKE 'a%'") == 6
    with pytest.raises(QueryError, match="unknown column 'nope'"):
        run.query.select("nope > 1")


# ---- 2. folder export keeps every image when names sanitise to the same file ---------------------------
def test_folder_export_colliding_names_keeps_every_image(tmp_path):
    ids = ["x y", "x_y", "x:y", "x,y", "X_Y", "img.png", "img", "q:1", "q:2", "q:3"]
    labels = ["c d", "c_d", "x/y", "x_y", "c d", "c_d", "x/y", "x_y", "index.csv", "index.csv"]
    run = open_run(_make_run(tmp_path / "runs", ids=ids, labels=labels))
    out = export_table(run, run.df, "folder", tmp_path / "out")
    files = [p for p in out.rglob("*") if p.is_file() and p != out / "index.csv"]
    assert len(files) == len(ids), [str(f.relative_to(out)) for f in files]
    assert not [f for f in files if f.name.lower().endswith(".png.png")]
    index = pd.read_csv(out / "index.csv", keep_default_na=False)
    assert sorted(index["sample_id"]) == sorted(ids) and index["file"].is_unique
    for sid, file, label in index[["sample_id", "file", "label"]].itertuples(index=False):
        assert (out / file).read_bytes() == run.image_file(sid).read_bytes(), sid  # each id -> its own image
        assert label == labels[ids.index(sid)]
    # images in one exported folder carry one class each
    by_folder = index.groupby(index["file"].map(lambda f: Path(f).parent.as_posix()))["label"].nunique()
    assert (by_folder == 1).all() and len(by_folder) == len(set(labels))


# ---- 3. one malformed run shows as broken; every other run still lists and opens ------------------------
MALFORMED = {
    "status-list": ("status.json", []),
    "status-pid-text": ("status.json", {"status": "running", "pid": "abc", "host": "h"}),
    "manifest-string": ("manifest.json", "hello"),
    "manifest-files-list": ("manifest.json", {"schema_version": 1, "run_id": "x", "class_names": ["a", "b"],
                                              "files": [1, 2], "n_samples": "many", "scores": ["a"]}),
    "manifest-classes-int": ("manifest.json", {"schema_version": 1, "run_id": "x", "class_names": 5, "files": {}}),
    "manifest-outside": ("manifest.json", {"schema_version": 1, "run_id": "x", "class_names": ["a"],
                                           "files": {"../../etc/hostname": {"bytes": 3}}}),
}


def _malformed_runs(root: Path, good: Path) -> dict[str, Path]:
    import shutil

    out = {}
    for name, (file, value) in MALFORMED.items():
        d = root / f"0-{name}"
        shutil.copytree(good, d)
        (d / file).write_text(json.dumps(value))
        out[name] = d
    return out


def test_malformed_run_is_broken_and_others_still_list_and_open(tmp_path):
    root = tmp_path / "runs"
    good = _make_run(root)
    bad = _malformed_runs(root, good)
    infos = {i.path.name: i for i in list_runs(root)}
    assert infos[good.name].status == "complete" and infos[good.name].n_samples == 6
    for name, d in bad.items():
        assert infos[d.name].status != "complete", name
        assert "broken" in infos[d.name].reason, (name, infos[d.name].reason)
        with pytest.raises(RunStoreError):
            open_run(d)
    assert infos[bad["manifest-files-list"].name].n_samples is None  # a bad value never reaches the listing
    res = runner.invoke(app, ["runs", "--runs-dir", str(root)], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and res.exception is None, res.output
    assert "broken" in res.output and good.name in res.output
    assert len(open_run(good).query.select()) == 6


def test_malformed_run_does_not_break_any_dashboard_page(tmp_path, mnist_arrays, monkeypatch):
    from dashboard_fixtures import write_tiny_run
    from streamlit.testing.v1 import AppTest

    root = tmp_path / "runs"
    tiny = write_tiny_run(root, *mnist_arrays, per_class=8, missing_image=False)
    _malformed_runs(root, tiny.path)
    monkeypatch.setenv("INFOSCOPE_RUN", str(tiny.path))
    monkeypatch.setenv("INFOSCOPE_RUNS", str(root))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"),
                           default_timeout=90).run()
    for page in ["overview", "classes", "sources", "flagged", "explore"]:
        if page != "overview":
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, (page, [e.value for e in at.exception])
        assert not at.error, (page, [e.value for e in at.error])
        picker = at.sidebar.selectbox[0]
        assert len(picker.options) == 1 + len(MALFORMED)
