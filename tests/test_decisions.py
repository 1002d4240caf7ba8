"""The append-only curation log: record, latest wins, tags, undo across reloads, concurrent writers."""

from __future__ import annotations

import multiprocessing as mp

import pytest

from core.store.decisions import Decisions


def test_latest_wins_and_relabel(tmp_path):
    d = Decisions(tmp_path / "c.sqlite", valid_ids=["a", "b", "c"], class_names=["0", "1"])
    d.record(["a", "b"], "remove", note="blurry")
    d.record("a", "relabel", "1")
    d.record("b", "keep")
    latest = d.latest().set_index("sample_id")
    assert latest.loc["a", "decision"] == "relabel" and latest.loc["a", "relabel_to"] == "1"
    assert latest.loc["b", "decision"] == "keep" and latest.loc["b", "relabel_to"] is None
    assert "c" not in latest.index
    assert len(d.history()) == 4  # nothing is ever overwritten


def test_tags_accumulate_and_untag(tmp_path):
    d = Decisions(tmp_path / "c.sqlite")
    d.record("a", "tag", "blurry")
    d.record("a", "tag", "rotated")
    d.record("a", "untag", "blurry")
    row = d.latest().set_index("sample_id").loc["a"]
    assert row["tags"] == "rotated" and (row["decision"] is None or row["decision"] != row["decision"])


def test_undo_survives_reload(tmp_path):
    path = tmp_path / "c.sqlite"
    d = Decisions(path)
    d.record("a", "keep")
    b2 = d.record(["a", "b"], "remove")
    assert Decisions(path).undo() == b2  # a new object: as after a page reload
    latest = Decisions(path).latest().set_index("sample_id")
    assert latest.loc["a", "decision"] == "keep"
    assert "b" not in latest.index or latest.loc["b", "decision"] != "remove"
    hist = Decisions(path).history()
    assert hist["undone"].tolist() == [False, True, True]
    assert Decisions(path).undo() == 1 and Decisions(path).undo() is None


@pytest.mark.parametrize("bad", [dict(sample_ids="zz", action="keep"), dict(sample_ids="a", action="delete"),
                                 dict(sample_ids="a", action="relabel", value="7"),
                                 dict(sample_ids="a", action="relabel"), dict(sample_ids=[], action="keep"),
                                 dict(sample_ids="a", action="tag")])
def test_invalid_decisions_rejected(tmp_path, bad):
    d = Decisions(tmp_path / "c.sqlite", valid_ids=["a"], class_names=["0", "1"])
    with pytest.raises(ValueError):
        d.record(**bad)
    assert d.history().empty


def _writer(args):
    path, who, n = args
    d = Decisions(path)
    for i in range(n):
        d.record(f"{who}-{i}", "tag", who)
    return n


def test_concurrent_writers_keep_everything(tmp_path):
    path = tmp_path / "c.sqlite"
    Decisions(path)
    with mp.get_context("spawn").Pool(4) as pool:
        done = pool.map(_writer, [(path, f"w{j}", 40) for j in range(4)])
    hist = Decisions(path).history()
    assert sum(done) == 160 and len(hist) == 160
    assert hist["sample_id"].nunique() == 160
