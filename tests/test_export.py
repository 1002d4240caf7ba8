"""Export a selection or the curated dataset, and load it back as a source (round trip)."""

from __future__ import annotations

import io
import zipfile

import numpy as np
import pytest

from core.data import load_sources
from core.errors import ExportError
from core.export import export_curated, export_table, export_where, zip_folder
from core.store import open_run


@pytest.fixture
def run(tiny_run, tmp_path):
    """A private copy of the session's tiny run, so decisions here don't leak into other tests."""
    import shutil

    dst = tmp_path / "run"
    shutil.copytree(tiny_run, dst)
    (dst / "curation.sqlite").unlink()
    return open_run(dst)


def _pixels(run, ids):
    return np.stack([run.image(s) for s in ids]).astype(np.float32) / 255.0


@pytest.mark.parametrize("fmt", ["csv", "folder"])
def test_export_roundtrip_loads_back(run, tmp_path, fmt):
    out = export_where(run, "source = 'mnist' AND label_name IN ('1', '7')", fmt, tmp_path / "out")
    sel = run.query.select("source = 'mnist' AND label_name IN ('1', '7')")
    spec = f"back=csv:{out}" if fmt == "csv" else f"back=folder:{out}"
    back = load_sources([spec])
    assert len(back) == len(sel) > 0
    assert back.class_names == ["1", "7"]
    assert sorted(np.asarray(back.class_names)[back.labels].tolist()) == sorted(sel["label_name"].tolist())
    # the pixels survive the trip (PNG, 8 bits)
    ref = np.sort(_pixels(run, sel["sample_id"]).reshape(len(sel), -1).sum(1))
    got = np.sort(np.asarray(back.images).reshape(len(back), -1).sum(1))  # an ImageStore: read all rows
    np.testing.assert_allclose(got, ref, atol=1e-3)


def test_curated_applies_removes_and_relabels(run, tmp_path):
    ids = run.df["sample_id"].tolist()
    run.decisions.record(ids[:3], "remove")
    run.decisions.record(ids[3], "relabel", "8")
    out = export_curated(run, "parquet", tmp_path / "cur")
    import pandas as pd

    t = pd.read_parquet(out)
    assert len(t) == len(ids) - 3 and not set(ids[:3]) & set(t["sample_id"])
    row = t.set_index("sample_id").loc[ids[3]]
    assert row["label"] == "8" and row["original_label_name"] == run.df.set_index("sample_id").loc[ids[3], "label_name"]


def test_refuses_non_empty_or_escaping_paths(run, tmp_path):
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "x").write_text("keep me")
    with pytest.raises(ExportError, match="not empty"):
        export_curated(run, "csv", tmp_path / "full")
    assert (tmp_path / "full" / "x").read_text() == "keep me"
    table = run.df.head(2).copy()
    table["label_name"] = "../../escape"  # a hostile class name must not climb out of the folder
    out = export_table(run, table, "folder", tmp_path / "safe")
    written = [p for p in tmp_path.rglob("*.png") if (tmp_path / "run") not in p.parents]
    assert written and all((tmp_path / "safe") in p.parents for p in written)
    assert out == tmp_path / "safe"
    with pytest.raises(ExportError, match="empty"):
        export_where(run, "label = -99", "csv", tmp_path / "none")
    with pytest.raises(ExportError, match="bad --where"):
        export_where(run, "no_such_column > 1", "csv", tmp_path / "bad")


def test_zip_contains_every_file(run, tmp_path):
    out = export_where(run, "label_name = '0'", "folder", tmp_path / "z")
    names = zipfile.ZipFile(io.BytesIO(zip_folder(out))).namelist()
    assert "index.csv" in names and len(names) == len(list(out.rglob("*.*")))
