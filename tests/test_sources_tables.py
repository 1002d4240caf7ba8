"""parquet:PATH and hf:PATH sources: encoded bytes or paths, labels and sources, clear errors."""

from __future__ import annotations

import io
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from core.data import load_sources
from core.errors import DataError


def _png(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def _pixels(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=(6, 5), dtype=np.uint8) for _ in range(n)]


def test_parquet_bytes_labels_and_sources(tmp_path):
    pix = _pixels(4)
    pq.write_table(pa.table({"image": [_png(p) for p in pix], "label": ["cat", "dog", "cat", "dog"],
                             "source": ["a", "a", "b", ""]}), tmp_path / "t.parquet")
    s = load_sources([f"tbl=parquet:{tmp_path / 't.parquet'}"])
    assert s.images.shape == (4, 1, 6, 5) and s.class_names == ["cat", "dog"]
    assert list(s.source) == ["a", "a", "b", "tbl"] and list(s.sample_id) == ["a:0", "a:1", "b:2", "tbl:3"]
    for i, p in enumerate(pix):
        np.testing.assert_allclose(s.images[i, 0], p / 255.0, atol=1e-6)
    assert all(path == "" for path in s.image_path)  # the run store writes PNGs for these rows


def test_parquet_hf_style_struct_and_int_labels(tmp_path):
    pix = _pixels(3, 1)
    cells = [{"bytes": _png(p), "path": f"x{i}.png"} for i, p in enumerate(pix)]
    pq.write_table(pa.table({"img": cells, "label": [0, 1, 1]}), tmp_path / "s.parquet")
    s = load_sources([f"parquet:{tmp_path / 's.parquet'}"])
    assert s.class_names == ["0", "1"] and list(s.labels) == [0, 1, 1]
    np.testing.assert_allclose(s.images[2, 0], pix[2] / 255.0, atol=1e-6)


def test_parquet_paths_relative_to_the_file(tmp_path):
    pix = _pixels(2, 2)
    for i, p in enumerate(pix):
        Image.fromarray(p).save(tmp_path / f"{i}.png")
    pq.write_table(pa.table({"path": ["0.png", "1.png"], "label": ["a", "b"]}), tmp_path / "p.parquet")
    s = load_sources([f"p=parquet:{tmp_path / 'p.parquet'}"], image_size=(4, 4))
    assert s.images.shape == (2, 1, 4, 4) and s.sample_id[1] == "p:1.png"
    assert s.image_path[0] == str(tmp_path / "0.png")


def test_parquet_errors_and_skip_bad(tmp_path):
    pq.write_table(pa.table({"image": [b"x"], "y": ["a"]}), tmp_path / "nolabel.parquet")
    with pytest.raises(DataError, match="no 'label' column"):
        load_sources([f"parquet:{tmp_path / 'nolabel.parquet'}"])
    pq.write_table(pa.table({"pixels": [b"x"], "label": ["a"]}), tmp_path / "noimg.parquet")
    with pytest.raises(DataError, match="no image column"):
        load_sources([f"parquet:{tmp_path / 'noimg.parquet'}"])
    pix = _pixels(3, 3)
    pq.write_table(pa.table({"image": [_png(pix[0]), b"not a png", _png(pix[2])], "label": ["a", "b", "b"]}),
                   tmp_path / "bad.parquet")
    with pytest.raises(DataError, match="row 1: not a readable image"):
        load_sources([f"parquet:{tmp_path / 'bad.parquet'}"])
    s = load_sources([f"parquet:{tmp_path / 'bad.parquet'}"], skip_bad=True)
    assert len(s) == 2 and len(s.skipped) == 1 and s.skipped[0][0].endswith("row 1")
    (tmp_path / "junk.parquet").write_text("nope")
    with pytest.raises(DataError, match="not a readable parquet"):
        load_sources([f"parquet:{tmp_path / 'junk.parquet'}"])


def test_hf_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    pix = [np.random.default_rng(i).integers(0, 256, size=(7, 7, 3), dtype=np.uint8) for i in range(4)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pix], "label": [1, 0, 1, 0]},
                                    features=feats)
    ds.save_to_disk(str(tmp_path / "ds"))
    s = load_sources([f"h=hf:{tmp_path / 'ds'}"])
    assert s.images.shape == (4, 3, 7, 7) and s.class_names == ["cat", "dog"] and list(s.labels) == [1, 0, 1, 0]
    np.testing.assert_allclose(s.images[3], pix[3].transpose(2, 0, 1) / 255.0, atol=1e-6)
    datasets.DatasetDict({"train": ds, "test": ds}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match="several splits.*train"):
        load_sources([f"hf:{tmp_path / 'dd'}"])
    assert len(load_sources([f"hf:{tmp_path / 'dd' / 'test'}"])) == 4


def test_hf_without_datasets_installed_is_a_clear_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)  # import datasets -> ImportError
    (tmp_path / "ds").mkdir()
    with pytest.raises(DataError, match="pip install datasets"):
        load_sources([f"hf:{tmp_path / 'ds'}"])
