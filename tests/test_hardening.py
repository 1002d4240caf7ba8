"""Hardening (issue 11): nothing written outside --out, no run can break another, bad input is one line.

Each section reproduces one numbered finding of the reliability audit.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from core.cli import app
from core.errors import ExportError, QueryError, RunStoreError
from core.export import export_table, export_where
from core.store import RunWriter, list_runs, open_run, read_status

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
    markup = root / "0-markup"  # a failed run whose error text looks like rich markup
    markup.mkdir()
    (markup / "status.json").write_text(json.dumps({"status": "failed", "pid": 1, "error": "[/] [bold]x"}))
    res = runner.invoke(app, ["runs", "--runs-dir", str(root)], env={"COLUMNS": "400"})
    assert res.exit_code == 0 and res.exception is None, res.output
    assert "broken" in res.output and good.name in res.output and "[/] [bold]x" in res.output
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


# ---- 5/6. the bad-input catalogue: one line naming the file/row/option, exit 2, no run folder left --------
def _png(path: Path, size: tuple[int, int] = (6, 6), seed: int = 0, mode: str = "L") -> Path:
    from PIL import Image

    arr = np.random.default_rng(seed).integers(0, 256, (*size[::-1], 3) if mode == "RGB" else size[::-1])
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr.astype(np.uint8), mode=mode).save(path)
    return path


@pytest.fixture
def bad_inputs(tmp_path) -> dict[str, Path]:
    """Files for the catalogue: a good npz source and one bad thing of each kind."""
    import torch

    d = tmp_path / "in"
    d.mkdir()
    rng = np.random.default_rng(0)
    np.savez(d / "good.npz", x=rng.integers(0, 256, (20, 8, 8)).astype(np.uint8), y=np.arange(20) % 2)
    np.save(d / "array.npy", np.zeros((3, 8, 8)))
    (d / "array.npz").write_bytes((d / "array.npy").read_bytes())  # a .npy named .npz
    (d / "text.npz").write_text("x,y\n1,2\n")
    (d / "conf_dir").mkdir()
    (d / "a_file").write_text("not a folder")
    (d / "notutf8.toml").write_bytes(b"name = '\xff\xfe'\n")
    for key, text in {"batch0": "batch_size = 0", "sources_str": 'sources = "mnist5k"',
                      "epochs_str": 'epochs = "ten"', "noise_bool": "label_noise = true",
                      "scores_int": "[scores]\nnames = 3"}.items():
        (d / f"{key}.toml").write_text(text + "\n")
    torch.save({"fc.weight": torch.zeros(3, 3)}, d / "wrong_arch.pt")
    # a folder source with a file name that is not UTF-8
    folder = d / "folder"
    for c in ("a", "b"):
        _png(folder / c / "ok.png", seed=ord(c))
    _png(folder / "a" / "placeholder.png")
    os.rename(folder / "a" / "placeholder.png", os.fsencode(folder / "a") + b"/bad-\xff.png")
    (d / "dangling").symlink_to(d / "nowhere")
    return {"dir": d, "runs": tmp_path / "runs"}


def _score(*args: str) -> list[str]:
    return ["score", "--source", "good=npz:{dir}/good.npz", "--runs-dir", "{runs}", "--epochs", "1", *args]


CATALOGUE = {
    # option validation, before anything is loaded
    "map-tsne": (_score("--map", "tsne"), ["--map", "tsne"]),
    "model-x": (_score("--model", "x"), ["--model", "'x'"]),
    "eps-negative": (_score("--adversarial", "0.1", "--eps", "-1"), ["--eps", "-1"]),
    "seed-negative": (_score("--seed", "-1"), ["--seed", "-1"]),
    "label-noise-2": (_score("--label-noise", "2"), ["label_noise", "2"]),
    "undersample-syntax": (_score("--undersample", "3"), ["undersample", "'3'"]),
    "scores-comma": (_score("--scores", ","), ["--scores"]),
    "scores-unknown": (_score("--scores", "loss,nope"), ["nope"]),
    "no-source": (["score", "--runs-dir", "{runs}"], ["--source", "infoscope demo"]),
    "weights-missing": (_score("--weights", "{dir}/none.pt"), ["--weights", "none.pt"]),
    "weights-folder": (_score("--weights", "{dir}/conf_dir"), ["--weights", "conf_dir", "folder"]),
    # config files
    "config-dir": (_score("--config", "{dir}/conf_dir"), ["--config", "conf_dir", "folder"]),
    "config-missing": (_score("--config", "{dir}/none.toml"), ["none.toml"]),
    "config-not-utf8": (_score("--config", "{dir}/notutf8.toml"), ["notutf8.toml", "UTF-8"]),
    "toml-batch-0": (_score("--config", "{dir}/batch0.toml"), ["batch_size", "0"]),
    "toml-sources-string": (["score", "--runs-dir", "{runs}", "--config", "{dir}/sources_str.toml"],
                            ["sources_str.toml", "sources", "list"]),
    "toml-epochs-string": (_score("--config", "{dir}/epochs_str.toml"), ["epochs_str.toml", "epochs", "'ten'"]),
    "toml-noise-bool": (_score("--config", "{dir}/noise_bool.toml"), ["noise_bool.toml", "label_noise"]),
    "toml-scores-int": (_score("--config", "{dir}/scores_int.toml"), ["scores_int.toml", "scores"]),
    # folders and files
    "runs-dir-file": (["score", "--source", "good=npz:{dir}/good.npz", "--runs-dir", "{dir}/a_file"],
                      ["--runs-dir", "a_file", "file"]),
    "runs-dir-under-file": (["score", "--source", "good=npz:{dir}/good.npz", "--runs-dir", "{dir}/a_file/sub"],
                            ["--runs-dir", "a_file/sub", "not writable"]),
    "runs-list-file": (["runs", "--runs-dir", "{dir}/a_file"], ["--runs-dir", "a_file"]),
    "npy-named-npz": (["score", "--source", "x=npz:{dir}/array.npz", "--runs-dir", "{runs}"],
                      ["array.npz", ".npy", "np.savez"]),
    "text-named-npz": (["score", "--source", "x=npz:{dir}/text.npz", "--runs-dir", "{runs}"],
                       ["text.npz", "not a readable .npz", "np.savez"]),
    "non-utf8-file-name": (["score", "--source", "f=folder:{dir}/folder", "--runs-dir", "{runs}"],
                           ["bad-\\xff.png", "UTF-8"]),
    # export
    "export-dangling-out": (["export", "--run", "{run}", "--curated", "--out", "{dir}/dangling"],
                            ["--out", "dangling", "symlink"]),
    "export-out-file": (["export", "--run", "{run}", "--curated", "--out", "{dir}/a_file"],
                        ["--out", "a_file", "not a folder"]),
    "export-stacked-where": (["export", "--run", "{run}", "--where", "1=1); COPY (SELECT 1) TO '{dir}/x.csv'; --",
                              "--out", "{dir}/o"], ["--where", "one expression"]),
    "export-bad-format": (["export", "--run", "{run}", "--curated", "--format", "zip", "--out", "{dir}/o"],
                          ["export format", "'zip'"]),
}


@pytest.mark.parametrize("case", list(CATALOGUE))
def test_bad_input_is_one_line_exit_2(case, bad_inputs, tmp_path):
    args, expected = CATALOGUE[case]
    run = _make_run(tmp_path / "export-runs") if any("{run}" in a for a in args) else ""
    values = {"dir": bad_inputs["dir"], "runs": bad_inputs["runs"], "run": run}
    res = runner.invoke(app, [a.format(**values) for a in args])
    assert res.exit_code == 2, (res.exit_code, res.output, res.exception)
    assert isinstance(res.exception, SystemExit) and "Traceback" not in res.output
    errors = [line for line in res.output.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, res.output  # one line (a progress line of the load step may come before it)
    text = errors[0]
    for word in expected:
        assert word in text, (word, text)
    assert "np.str_" not in text and "allow_pickle" not in text
    runs = bad_inputs["runs"]
    assert not runs.exists() or not any(runs.iterdir()), "a failed run folder was left behind"
    assert not (bad_inputs["dir"] / "x.csv").exists()


# ---- 5. read-only media, same-size corruption, full disk, wrong weights --------------------------------
def test_complete_run_on_read_only_media_opens_and_exports(tmp_path, monkeypatch):
    import core.store.decisions as decisions_mod

    path = _make_run(tmp_path / "runs")
    before = sorted(p.name for p in path.iterdir())
    monkeypatch.setattr(decisions_mod, "_writable", lambda p: False)  # as on a read-only mount
    run = open_run(path)
    assert run.decisions.read_only and run.decisions.latest().empty
    out = export_where(run, "score >= 3", "folder", tmp_path / "out")
    assert len(pd.read_csv(out / "index.csv")) == 3
    with pytest.raises(RunStoreError, match="read-only"):
        run.decisions.record("s:1", "remove")
    assert sorted(p.name for p in path.iterdir()) == before  # no -wal / -shm / journal written next to it


def test_read_only_runs_dir_is_one_line(tmp_path, monkeypatch):
    import errno

    ro = tmp_path / "ro"
    ro.mkdir()

    def refuse(*a, **k):
        raise OSError(errno.EROFS, "Read-only file system", str(ro))

    monkeypatch.setattr("tempfile.TemporaryFile", refuse)
    res = runner.invoke(app, ["score", "--source", "mnist5k", "--runs-dir", str(ro)])
    assert res.exit_code == 2 and "Read-only file system" in res.output and "--runs-dir" in res.output
    monkeypatch.undo()
    monkeypatch.setattr(Path, "mkdir", lambda self, *a, **k: refuse())
    with pytest.raises(RunStoreError, match="cannot create a run"):
        RunWriter(ro / "sub", "x")


@pytest.mark.parametrize("name", ["samples.parquet", "embeddings.npy"])
def test_same_size_corruption_is_detected(tmp_path, name):
    path = _make_run(tmp_path / "runs")
    f = path / name
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size, same schema
    f.write_bytes(bytes(data))
    assert read_status(path)[0] == "complete"  # listing stays cheap (sizes only) ...
    with pytest.raises(RunStoreError, match=f"{name} is corrupted"):  # ... opening/reading verifies SHA-256
        run = open_run(path)
        run.embeddings()


def test_damaged_curation_log_is_detected(tmp_path):
    path = _make_run(tmp_path / "runs")
    open_run(path).decisions.record(["s:1", "s:2"], "remove")
    f = path / "curation.sqlite"
    data = bytearray(f.read_bytes())
    data[:16] = b"X" * 16  # the header: same size, not a database any more
    f.write_bytes(bytes(data))
    with pytest.raises(RunStoreError, match="curation.sqlite is damaged"):
        open_run(path)


def test_disk_full_while_recording_is_one_line(tmp_path, monkeypatch):
    from core.store.decisions import Decisions

    run = open_run(_make_run(tmp_path / "runs"))
    real = Decisions._connect

    def tiny_disk(self):
        con = real(self)
        con.execute(f"PRAGMA max_page_count = {con.execute('PRAGMA page_count').fetchone()[0]}")
        return con

    monkeypatch.setattr(Decisions, "_connect", tiny_disk)
    with pytest.raises(RunStoreError, match="disk .* is full"):
        run.decisions.record([f"s:{i % 6}" for i in range(3000)], "tag", value="x" * 50, note="n" * 200)
    monkeypatch.undo()
    assert run.decisions.history().empty  # nothing half-recorded


def test_wrong_architecture_weights_is_one_line(tmp_path):
    import torch

    from core.models.nets import build_model, load_weights

    mlp = build_model("mlp", (1, 8, 8), 2)
    torch.save(mlp.state_dict(), tmp_path / "mlp.pt")
    with pytest.raises(ValueError, match="do not fit") as e:
        load_weights(build_model("cnn", (1, 8, 8), 2), str(tmp_path / "mlp.pt"))
    assert "\n" not in str(e.value)


# ---- 8. trust boundaries -------------------------------------------------------------------------------
@pytest.mark.parametrize("evil", ["/etc/passwd", "../../../../../../etc/hostname", "images/../../../t.txt"])
def test_crafted_image_path_is_never_exported_or_zipped(tmp_path, evil):
    from core.export import zip_folder

    path = _make_run(tmp_path / "runs")
    (tmp_path / "t.txt").write_text("secret")
    df = pd.read_parquet(path / "samples.parquet")
    df.loc[2, "image_path"] = evil
    df.to_parquet(path / "samples.parquet", index=False)
    manifest = json.loads((path / "manifest.json").read_text())  # a consistent forgery: sizes and hashes fixed
    from core.store.run import sha256_file

    manifest["files"]["samples.parquet"] = {"bytes": (path / "samples.parquet").stat().st_size,
                                            "sha256": sha256_file(path / "samples.parquet")}
    (path / "manifest.json").write_text(json.dumps(manifest))
    run = open_run(path)
    assert run.image_file("s:2") is None and run.image("s:2") is None
    assert "outside" in run.locate_image("s:2")[1]
    for fmt in ("folder", "csv"):
        with pytest.raises(ExportError, match="outside the run's image folders"):
            export_table(run, run.df, fmt, tmp_path / f"out-{fmt}")
    out = export_table(run, run.df[run.df.sample_id != "s:2"], "folder", tmp_path / "ok")
    os.symlink("/etc/passwd", out / "link.txt")  # a symlink planted in the export folder is not zipped
    import io
    import zipfile

    names = zipfile.ZipFile(io.BytesIO(zip_folder(out))).namelist()
    assert "link.txt" not in names and len(names) == 6  # 5 images + index.csv


def test_scored_file_sources_record_their_roots_and_open(tmp_path):
    from core.pipeline import image_roots

    a = _png(tmp_path / "data" / "a" / "1.png")
    b = _png(tmp_path / "data" / "b" / "sub" / "2.png")
    c = _png(tmp_path / "other" / "3.png")
    roots = image_roots(np.array([str(a), str(b), "", str(c)], dtype=object))
    assert roots == sorted({str(a.parent.resolve()), str(b.parent.resolve()), str(c.parent.resolve())})


def test_dead_writer_lease_runs_out(tmp_path):
    import time

    w = RunWriter(tmp_path, "alive", lease_s=0.6)
    st = json.loads((w.path / "status.json").read_text())
    assert st["lease_s"] == 0.6 and st["status"] == "running"
    time.sleep(1.0)
    assert read_status(w.path)[0] == "running"  # the live writer keeps refreshing its lease
    # the writer's process "dies" but its pid is reused by a live process (here: this one)
    w._stop.set()
    time.sleep(1.0)
    status, reason = read_status(w.path)
    assert status == "incomplete" and "heartbeat" in reason
    # a status from another host with no heartbeat at all is not "running" forever either
    st = json.loads((w.path / "status.json").read_text())
    st.update(host="elsewhere.example", heartbeat_at=None)
    (w.path / "status.json").write_text(json.dumps(st))
    assert read_status(w.path)[0] == "incomplete"


def test_dashboard_export_outside_runs_folder_needs_confirmation(tmp_path):
    from dashboard.components.export import is_inside

    runs = tmp_path / "runs"
    runs.mkdir()
    assert is_inside(runs / "r" / "exports" / "x", [runs])
    assert not is_inside(tmp_path / "elsewhere", [runs])
    assert not is_inside(runs / ".." / "escape", [runs])
    assert not is_inside("/etc/cron.d", [runs])


# ---- 9. small ones --------------------------------------------------------------------------------------
def test_16_bit_png_brightness_follows_bit_depth(tmp_path):
    from PIL import Image

    from core.data.images import read_image

    dark = np.full((4, 4), 1000, np.uint16)  # 1000 / 65535: nearly black
    light = np.full((4, 4), 60000, np.uint16)
    Image.fromarray(dark).save(tmp_path / "dark.png")
    Image.fromarray(light).save(tmp_path / "light.png")
    assert np.allclose(read_image(tmp_path / "dark.png"), 1000 / 65535, atol=1e-6)
    assert np.allclose(read_image(tmp_path / "light.png"), 60000 / 65535, atol=1e-6)
    small = np.full((4, 4), 200, np.uint16)  # all values < 256 in a 16-bit file are still 16-bit values
    Image.fromarray(small).save(tmp_path / "small.png")
    assert np.allclose(read_image(tmp_path / "small.png"), 200 / 65535, atol=1e-6)


@pytest.mark.parametrize("label", ["NaN", "nan", "a\x00b", " nan "])
def test_nan_and_nul_labels_refused(tmp_path, label):
    from core.data import load_sources
    from core.errors import DataError

    _png(tmp_path / "1.png")
    _png(tmp_path / "2.png", seed=1)
    (tmp_path / "l.csv").write_text(f"path,label\n1.png,cat\n2.png,{label}\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 3"):
        load_sources([f"c=csv:{tmp_path / 'l.csv'}"])
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "l.npz", x=rng.integers(0, 256, (3, 4, 4)).astype(np.uint8),
             y=np.array(["cat", "dog", label]))
    with pytest.raises(DataError, match="row 2"):
        load_sources([f"n=npz:{tmp_path / 'l.npz'}"])


def test_csv_source_column_cannot_merge_into_another_source(tmp_path):
    from core.data import load_sources
    from core.errors import DataError

    for c in ("a", "b"):
        _png(tmp_path / "f" / c / "1.png", seed=ord(c))
    _png(tmp_path / "x.png")
    _png(tmp_path / "y.png", seed=3)
    (tmp_path / "l.csv").write_text("path,label,source\nx.png,a,lab\ny.png,b,\n")
    with pytest.raises(DataError, match=r"line 2.*'lab'.*another --source"):
        load_sources([f"lab=folder:{tmp_path / 'f'}", f"web=csv:{tmp_path / 'l.csv'}"])
    ok = load_sources([f"lab2=folder:{tmp_path / 'f'}", f"web=csv:{tmp_path / 'l.csv'}"])
    assert sorted(set(ok.source)) == ["lab", "lab2", "web"]  # a new name from the column is still fine


def test_symlinks_out_of_the_dataset_are_counted_and_skipped(tmp_path):
    from core.data import load_sources

    for c in ("a", "b"):
        _png(tmp_path / "f" / c / "1.png", seed=ord(c))
    secret = _png(tmp_path / "private" / "s.png", seed=9)
    os.symlink(secret, tmp_path / "f" / "a" / "link.png")
    os.symlink(tmp_path / "f" / "b" / "1.png", tmp_path / "f" / "a" / "inside.png")  # inside: kept
    data = load_sources([f"f=folder:{tmp_path / 'f'}"])
    assert len(data) == 3 and not any("link.png" in p for p in data.image_path)
    assert len(data.skipped) == 1 and "outside the dataset" in data.skipped[0][1]


def test_run_files_follow_the_umask(tmp_path):
    mask = os.umask(0o022)
    os.umask(mask)
    path = _make_run(tmp_path / "runs")
    for name in ("manifest.json", "status.json", "samples.parquet", "embeddings.npy", "images/000000.png"):
        assert (path / name).stat().st_mode & 0o777 == 0o666 & ~mask, name  # not mkstemp's 0600


def test_duplicate_ids_name_their_lines_without_numpy_reprs(tmp_path):
    from core.data import load_sources
    from core.errors import DataError

    _png(tmp_path / "1.png")
    _png(tmp_path / "2.png", seed=1)
    (tmp_path / "l.csv").write_text("path,label\n1.png,a\n2.png,b\n1.png,b\n")
    with pytest.raises(DataError) as e:
        load_sources([f"c=csv:{tmp_path / 'l.csv'}"])
    assert "line 2" in str(e.value) and "line 4" in str(e.value) and "np.str_" not in str(e.value)


# ---- 7. process hygiene -----------------------------------------------------------------------------------
def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    import socket

    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_sigterm_to_infoscope_app_leaves_nothing_listening(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    port = _free_port()
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    proc = subprocess.Popen([sys.executable, "-m", "core.cli", "app", "--port", str(port), "--no-browser",
                             "--runs-dir", str(tmp_path)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    children: list[str] = []
    try:
        deadline = time.monotonic() + 90
        while not _listening(port) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.3)
        assert _listening(port), "the dashboard did not start"
        children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
        proc.send_signal(signal.SIGTERM)  # to `infoscope app` only, as a service manager would
        proc.wait(timeout=30)
        deadline = time.monotonic() + 5
        while _listening(port) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not _listening(port), "the Streamlit server was orphaned and still listens"
    finally:
        for pid in [proc.pid, *map(int, children)]:  # the server runs in a session of its own
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_launch_is_headless_so_no_email_prompt(tmp_path):
    from dashboard.launch import build_command

    for open_browser in (True, False):
        cmd = build_command(None, str(tmp_path), 8123, open_browser)
        assert cmd[cmd.index("--server.headless") + 1] == "true"


@pytest.mark.parametrize("address, allow, refused", [(None, "", True), ("0.0.0.0", "", True), ("", "", True),
                                                     ("127.0.0.1", "", False), ("localhost", "", False),
                                                     ("0.0.0.0", "1", False)])
def test_app_refuses_to_serve_on_all_interfaces(tmp_path, monkeypatch, address, allow, refused):
    from streamlit import config
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("INFOSCOPE_RUNS", str(tmp_path))
    monkeypatch.delenv("INFOSCOPE_RUN", raising=False)
    monkeypatch.setenv("INFOSCOPE_ALLOW_REMOTE", allow)
    config.set_option("server.address", address)
    try:
        at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"),
                               default_timeout=60).run()
    finally:
        config.set_option("server.address", "127.0.0.1")
    assert not at.exception
    errors = " ".join(e.value for e in at.error)
    assert ("refuses to serve" in errors) == refused, errors


# ---- 4. image size: a pixel limit below Pillow's bomb limit, from the header ------------------------------
def _huge_png_header(path: Path, w: int, h: int) -> Path:
    """A tiny PNG file whose header claims ``w`` × ``h`` pixels (decoding it would allocate them)."""
    import struct
    import zlib

    _png(path, (1, 1))
    data = bytearray(path.read_bytes())
    ihdr = bytearray(data[12:29])  # b"IHDR" + 13 bytes of header data
    ihdr[4:12] = struct.pack(">II", w, h)
    data[12:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(ihdr)) & 0xFFFFFFFF)
    path.write_bytes(bytes(data))
    return path


def test_huge_image_refused_from_its_header(tmp_path, monkeypatch):
    from PIL import Image

    from core.data import load_sources
    from core.data.images import DEFAULT_MAX_PIXELS, read_image
    from core.errors import DataError

    assert DEFAULT_MAX_PIXELS < Image.MAX_IMAGE_PIXELS
    big = _huge_png_header(tmp_path / "f" / "a" / "big.png", 12000, 12000)
    _png(tmp_path / "f" / "a" / "ok.png")
    _png(tmp_path / "f" / "b" / "ok.png", seed=2)
    with pytest.warns(Image.DecompressionBombWarning), Image.open(big) as im:
        assert im.size == (12000, 12000)  # Pillow itself only warns at this size
    with pytest.raises(DataError, match=r"big.png: image is 12000×12000 = 144.0 Mpx, above the limit of 50.0 Mpx"):
        read_image(big)
    with pytest.raises(DataError, match="limit of 0.0 Mpx"):  # configurable (here: lower)
        read_image(tmp_path / "f" / "b" / "ok.png", max_pixels=10)
    monkeypatch.setenv("INFOSCOPE_MAX_PIXELS", "20")
    with pytest.raises(DataError, match="above the limit"):
        read_image(tmp_path / "f" / "b" / "ok.png")
    monkeypatch.delenv("INFOSCOPE_MAX_PIXELS")
    data = load_sources([f"f=folder:{tmp_path / 'f'}"], skip_bad=True)  # with --skip-bad: counted, skipped
    assert len(data) == 2 and "Mpx" in data.skipped[0][1]
    res = runner.invoke(app, ["score", "--source", f"f=folder:{tmp_path / 'f'}", "--runs-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "big.png" in res.output and "Traceback" not in res.output


def test_wrong_architecture_weights_through_the_cli_is_one_line(tmp_path):
    import torch

    from core.models.nets import build_model

    torch.save(build_model("mlp", (1, 8, 8), 2).state_dict(), tmp_path / "mlp.pt")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "d.npz", x=rng.integers(0, 256, (20, 8, 8)).astype(np.uint8), y=np.arange(20) % 2)
    res = runner.invoke(app, ["score", "--source", f"d=npz:{tmp_path / 'd.npz'}", "--weights", str(tmp_path / "mlp.pt"),
                              "--epochs", "1", "--scores", "loss", "--map", "pca", "--runs-dir", str(tmp_path / "r")])
    assert res.exit_code == 2 and "Traceback" not in res.output, res.output
    (line,) = [ln for ln in res.output.splitlines() if ln.startswith("error:")]
    assert "mlp.pt" in line and "do not fit" in line
    (info,) = list_runs(tmp_path / "r")  # the run that started is marked failed, with the same reason
    assert info.status == "failed" and "do not fit" in info.reason


def test_read_only_run_in_the_dashboard_says_why_a_decision_is_not_recorded(tmp_path, mnist_arrays, monkeypatch):
    from dashboard_fixtures import write_tiny_run
    from streamlit.testing.v1 import AppTest

    import core.store.decisions as decisions_mod

    tiny = write_tiny_run(tmp_path / "runs", *mnist_arrays, per_class=6, missing_image=False)
    monkeypatch.setattr(decisions_mod, "_writable", lambda p: False)
    monkeypatch.setenv("INFOSCOPE_RUN", str(tiny.path))
    monkeypatch.setenv("INFOSCOPE_RUNS", str(tmp_path / "runs"))
    at = AppTest.from_file(str(Path(__file__).resolve().parents[1] / "dashboard" / "app.py"),
                           default_timeout=90).run()
    at.switch_page("pages/explore.py").run()
    at.multiselect(key="ex_classes").set_value(["5"]).run()
    at.selectbox(key="ex_action").set_value("remove")
    at.button(key="ex_apply").click().run()
    assert not at.exception, [e.value for e in at.exception]
    assert any("read-only" in e.value for e in at.error), [e.value for e in at.error]
