"""Continuity (issue 13, item 7): decisions carried over to a re-scored run by sample id, undoable; the zip of a
CSV export holds its images with relative paths; the log poller says what changed."""

from __future__ import annotations

import io
import zipfile

import pandas as pd
import pytest
from dashboard_fixtures import write_tiny_run

from core.store import open_run
from core.store.carry import AUTHOR_PREFIX, carried_batches, carry_over, previous_run


@pytest.fixture(scope="module")
def three_runs(tmp_path_factory, mnist_arrays):
    """An old run, a re-score of the same dataset (fewer samples, so some ids are gone), another dataset."""
    x, y = mnist_arrays
    root = tmp_path_factory.mktemp("carry")
    old = write_tiny_run(root, x, y, per_class=24, name="digits", missing_image=False)
    other = write_tiny_run(root, x, y, per_class=12, name="other-data", seed=5, missing_image=False)
    new = write_tiny_run(root, x, y, per_class=20, name="digits", missing_image=False)
    return old, new, other


def test_decisions_follow_the_sample_ids(three_runs, tmp_path) -> None:
    import shutil

    old, new, _ = three_runs
    root = tmp_path / "runs"
    old_p, new_p = root / old.path.name, root / new.path.name
    shutil.copytree(old.path, old_p)
    shutil.copytree(new.path, new_p)
    assert previous_run(new_p) == old_p and previous_run(old_p) is None
    o = open_run(old_p)
    new_ids = set(open_run(new_p).df["sample_id"])
    old_ids = o.df["sample_id"].tolist()
    shared = [i for i in old_ids if i in new_ids]
    gone = [i for i in old_ids if i not in new_ids]
    assert len(shared) >= 6 and gone
    o.decisions.record(shared[:2], "remove")
    o.decisions.record([shared[2]], "relabel", "3")
    o.decisions.record([shared[3]], "keep")
    o.decisions.record([shared[4], shared[0]], "tag", "review")
    b = o.decisions.record([shared[5]], "remove")
    o.decisions.undo(b)  # an undone decision is not carried
    o.decisions.record([gone[0]], "remove")
    rep = carry_over(new_p)
    assert rep.source_run == old_p.name and rep.skipped_unknown_id == 1
    assert rep.carried == 5  # shared[0..4]
    got = open_run(new_p).decisions.latest().set_index("sample_id").sort_index()
    want = o.decisions.latest().set_index("sample_id").loc[shared[:5]].sort_index()
    assert got["decision"].tolist() == want["decision"].tolist()
    assert got["relabel_to"].fillna("").tolist() == want["relabel_to"].fillna("").tolist()
    assert got["tags"].tolist() == want["tags"].tolist()
    batches = carried_batches(open_run(new_p).decisions)
    assert len(batches) == len(rep.batches) and batches["author"].eq(AUTHOR_PREFIX + old_p.name).all()
    # a second call does nothing (the log is no longer empty); undoing every carried batch empties it
    assert carry_over(new_p).carried == 0
    d = open_run(new_p).decisions
    for bid in rep.batches:
        d.undo(bid)
    assert d.latest()["decision"].isna().all() and (d.latest()["tags"] == "").all()


def test_pipeline_step_reports_the_carry_over(three_runs, tmp_path) -> None:
    import shutil

    from core.pipeline import Steps, _carry_decisions

    old, new, other = three_runs
    root = tmp_path / "runs"
    for r in (old, new, other):
        shutil.copytree(r.path, root / r.path.name)
    new_ids = set(open_run(root / new.path.name).df["sample_id"])
    first = next(i for i in open_run(root / old.path.name).df["sample_id"] if i in new_ids)
    open_run(root / old.path.name).decisions.record([first], "remove")
    lines: list[tuple] = []
    _carry_decisions(root / other.path.name, Steps(lambda *a: lines.append(a)))  # another dataset: nothing
    assert lines == [] and open_run(root / other.path.name).decisions.latest().empty
    _carry_decisions(root / new.path.name, Steps(lambda *a: lines.append(a)))
    assert len(lines) == 1 and lines[0][0] == "carry over decisions"
    assert f"1 decided sample(s) from run {old.path.name}" in lines[0][1]
    assert open_run(root / new.path.name).decisions.latest().set_index("sample_id").loc[first, "decision"] == "remove"


def test_dashboard_shows_and_undoes_the_carry_over(three_runs, tmp_path, monkeypatch) -> None:
    import shutil

    from streamlit.testing.v1 import AppTest

    old, new, _ = three_runs
    root = tmp_path / "runs"
    shutil.copytree(old.path, root / old.path.name)
    shutil.copytree(new.path, root / new.path.name)
    shared = sorted(set(open_run(root / old.path.name).df["sample_id"]) & set(open_run(root / new.path.name).df[
        "sample_id"]))
    open_run(root / old.path.name).decisions.record(shared[:3], "remove")
    carry_over(root / new.path.name)
    monkeypatch.setenv("INFOSCOPE_RUN", str(root / new.path.name))
    monkeypatch.setenv("INFOSCOPE_RUNS", str(root))
    at = AppTest.from_file(str(__import__("pathlib").Path(__file__).resolve().parents[1] / "dashboard" / "app.py"),
                           default_timeout=60).run()
    assert not at.exception
    note = "\n".join(i.value for i in at.sidebar.info)
    assert "**3** decision(s) carried over" in note and old.path.name in note
    at.sidebar.button(key="undo_carry").click().run()
    assert open_run(root / new.path.name).decisions.latest()["decision"].isna().all()
    assert "carried over" not in "\n".join(i.value for i in at.sidebar.info)


def test_zip_of_a_csv_export_is_self_contained(three_runs, tmp_path) -> None:
    from core.data.sources import load_one, parse_spec
    from core.export import export_table, zip_export

    old, _, _ = three_runs
    r = open_run(old.path)
    table = r.df.head(30)
    csv = export_table(r, table, "csv", tmp_path / "out", name="selection")
    data = zip_export(csv)
    names = zipfile.ZipFile(io.BytesIO(data)).namelist()
    assert names[-1] == "selection.csv" and sum(n.startswith("images/") for n in names) == 30
    zipfile.ZipFile(io.BytesIO(data)).extractall(tmp_path / "unzipped")
    inside = pd.read_csv(tmp_path / "unzipped" / "selection.csv")
    assert inside["path"].str.startswith("images/").all()
    assert inside["sample_id"].tolist() == table["sample_id"].tolist()
    back = load_one(parse_spec(f"z=csv:{tmp_path / 'unzipped' / 'selection.csv'}"), tmp_path, skip_bad=False)
    assert len(back) == 30
    # the pixels travelled: the first unzipped image is the run's image
    import numpy as np
    from PIL import Image

    a = np.asarray(Image.open(tmp_path / "unzipped" / inside["path"].iloc[0]))
    assert np.array_equal(a, r.image(table["sample_id"].iloc[0]))


def test_changes_since_says_what_changed(three_runs, tmp_path) -> None:
    import shutil

    from dashboard.components.decisions import changes_since, log_signature

    old, _, _ = three_runs
    p = tmp_path / old.path.name
    shutil.copytree(old.path, p)
    d = open_run(p).decisions
    seen = log_signature(d.batches())
    assert changes_since(d.batches(), seen) is None
    ids = open_run(p).df["sample_id"].tolist()
    d.record(ids[:2], "remove", author="cli")
    msg = changes_since(d.batches(), seen)
    assert msg == "1 new decision batch(es), the last remove × 2 by cli."
    seen = log_signature(d.batches())
    d.undo()
    assert changes_since(d.batches(), seen) == "1 batch(es) undone."
