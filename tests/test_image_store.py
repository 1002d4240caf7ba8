"""The image store: same pixels as the in-memory path, lazy subsets, streamed callers, bounded memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core.data import load_sources
from core.data.dataset import Samples
from core.data.image_store import ImageStore, ShardWriter, lossless_uint8
from core.data.images import convert_channels, read_image, resize_crop, stack_images
from core.errors import DataError

ROOT = Path(__file__).resolve().parents[1]


def _write(path: Path, arr: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(arr).save(path)


def _mixed_folder(top: Path) -> list[Path]:
    """Gray and RGB PNGs of three sizes in two classes (some need resizing, some not)."""
    rng = np.random.default_rng(3)
    files = []
    for i in range(9):
        cls = "ab"[i % 2]
        h, w = [(10, 12), (10, 12), (14, 9)][i % 3]
        arr = rng.integers(0, 256, (h, w, 3) if i % 4 else (h, w), dtype=np.uint8)
        p = top / cls / f"im{i}.png"
        _write(p, arr)
        files.append(p)
    return files


def _old_path(files: list[Path], size: tuple[int, int] | None, channels: int) -> dict[str, np.ndarray]:
    """The in-memory path as it was: decode all, resize at decode when the size is given, convert, stack."""
    imgs = [read_image(p) for p in files]
    if size is not None:
        imgs = [resize_crop(im[None], size)[0] for im in imgs]
    target = size or (10, 12)  # the most common size of _mixed_folder
    stacked = stack_images([convert_channels(im, channels) for im in imgs], target)
    return {f"folder:{p.parent.name}/{p.name}": stacked[i] for i, p in enumerate(files)}


@pytest.mark.parametrize("size", [None, (8, 8), (16, 20)])
def test_folder_store_returns_the_in_memory_pixels(tmp_path, size):
    files = _mixed_folder(tmp_path / "d")
    s = load_sources([f"folder:{tmp_path / 'd'}"], image_size=size)
    assert isinstance(s.images, ImageStore)
    want = _old_path(files, size, channels=3)  # majority mode of _mixed_folder is RGB
    got = np.asarray(s.images)
    assert got.dtype == np.float32 and got.shape == (9, 3, *(size or (10, 12)))
    for i, sid in enumerate(s.sample_id):
        np.testing.assert_array_equal(got[i], want[sid])  # bit-identical, not merely close
        np.testing.assert_array_equal(s.images[i], want[sid])


def test_native_size_rows_are_cached_as_uint8(tmp_path):
    _mixed_folder(tmp_path / "d")
    s = load_sources([f"folder:{tmp_path / 'd'}"])
    kinds = {p.dtype for p in s.images.parts}
    assert kinds == {np.dtype(np.uint8), np.dtype(np.float32)}  # 8-bit rows at size, resized rows in float32
    assert sum(len(p) for p in s.images.parts if p.dtype == np.uint8) == 6


def test_npz_source_keeps_one_array(tmp_path):
    x = np.random.default_rng(0).integers(0, 256, (6, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "a.npz", x=x, y=np.array([0, 1] * 3))
    s = load_sources([f"npz:{tmp_path / 'a.npz'}"])
    assert isinstance(s.images, np.ndarray)
    np.testing.assert_array_equal(s.images[:, 0], x.astype(np.float32) / 255.0)


def test_indexing_take_concat_match_numpy():
    rng = np.random.default_rng(1)
    a = rng.random((37, 2, 3, 4)).astype(np.float32)
    b = (rng.integers(0, 256, (11, 2, 3, 4)).astype(np.float32) / 255.0).astype(np.float32)
    w = ShardWriter((2, 3, 4), shard_bytes=5 * 2 * 3 * 4 * 4)  # 5 rows per shard: many shards
    for row in np.concatenate([b, a[:4]]):
        w.append(row)
    disk = w.finish()
    assert len(disk.parts) > 3 and {p.dtype for p in disk.parts} == {np.dtype(np.uint8), np.dtype(np.float32)}
    ref = np.concatenate([a, b, a[:4]])
    store = ImageStore.concat([a, disk])
    assert store.shape == ref.shape and len(store) == len(ref)
    idx = rng.integers(-len(ref), len(ref), 50)
    np.testing.assert_array_equal(store[idx], ref[idx])
    np.testing.assert_array_equal(store[5:40:3], ref[5:40:3])
    np.testing.assert_array_equal(store[7], ref[7])
    np.testing.assert_array_equal(store[3, 1], ref[3, 1])
    np.testing.assert_array_equal(store[[2, 9], 0, 1], ref[[2, 9], 0, 1])
    mask = rng.random(len(ref)) < 0.4
    np.testing.assert_array_equal(store[mask], ref[mask])
    view = store.take(idx).take(np.arange(10)[::-1])
    np.testing.assert_array_equal(np.asarray(view), ref[idx][np.arange(10)[::-1]])
    assert store.materialized == 0 and view.materialized == 1
    with pytest.raises(IndexError):
        store[len(ref)]


def test_lossless_uint8_only_for_exact_eighths_of_255():
    x = np.arange(256, dtype=np.float32) / 255.0
    np.testing.assert_array_equal(lossless_uint8(x), np.arange(256))
    assert lossless_uint8(x + np.float32(1e-4)) is None


def test_samples_subset_and_concat_stay_lazy(tmp_path):
    _mixed_folder(tmp_path / "d")
    s = load_sources([f"folder:{tmp_path / 'd'}"])
    full = np.asarray(s.images)
    sub = s.subset(np.array([8, 1, 3]))
    assert isinstance(sub.images, ImageStore)
    np.testing.assert_array_equal(np.asarray(sub.images), full[[8, 1, 3]])
    extra = Samples(images=np.zeros((2, 3, 10, 12), np.float32), labels=np.array([0, 1]), class_names=s.class_names,
                    source=np.array(["x", "x"]), sample_id=np.array(["x:0", "x:1"]), image_path=np.array(["", ""]))
    both = Samples.concat([s, extra])
    assert isinstance(both.images, ImageStore) and len(both) == 11
    np.testing.assert_array_equal(np.asarray(both.images)[:9], full)
    assert not np.asarray(both.images)[9:].any()


def test_decode_failure_after_the_header_is_one_line_or_skipped(tmp_path):
    files = _mixed_folder(tmp_path / "d")
    bad = tmp_path / "d" / "a" / "zz_truncated.png"
    _write(bad, np.random.default_rng(5).integers(0, 256, (32, 32), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:200])  # the header reads, the pixels do not
    with pytest.raises(DataError) as e:
        load_sources([f"folder:{tmp_path / 'd'}"])
    assert str(bad) in str(e.value) and "\n" not in str(e.value)
    s = load_sources([f"folder:{tmp_path / 'd'}"], skip_bad=True)
    assert len(s) == 9 and [w for w, _ in s.skipped] == [str(bad)]
    want = _old_path(files, None, 3)
    for i, sid in enumerate(s.sample_id):  # the rows left keep their own pixels, labels and paths
        np.testing.assert_array_equal(s.images[i], want[sid])
        assert s.class_names[s.labels[i]] == Path(s.image_path[i]).parent.name


def test_training_and_embedding_read_the_store_like_the_array(tmp_path):
    from core.models.training import TrainConfig, embed, train_model

    _mixed_folder(tmp_path / "d")
    s = load_sources([f"folder:{tmp_path / 'd'}"], image_size=(12, 12))
    arr = np.asarray(s.images)
    cfg = TrainConfig(model="mlp", epochs=2, batch_size=4)
    r1 = train_model(s.images, s.labels, np.arange(7), 2, cfg, seed=0, device="cpu")
    r2 = train_model(arr, s.labels, np.arange(7), 2, cfg, seed=0, device="cpu")
    np.testing.assert_array_equal(r1.epoch_logits, r2.epoch_logits)
    np.testing.assert_array_equal(embed(r1.model, s.images, batch_size=4), embed(r2.model, arr, batch_size=4))
    assert s.images.materialized == 1  # only the np.asarray above


def test_near_duplicates_and_cg_on_a_store_match_the_array(monkeypatch):
    from core.duplicates import near_duplicates
    from core.scores import cg

    rng = np.random.default_rng(2)
    x = rng.random((60, 1, 5, 5)).astype(np.float32)
    x[40:45] = x[:5] * np.float32(1.001)  # near-duplicates
    labels = np.arange(60) % 3
    store = ImageStore.concat([x[:30], x[30:]])
    ids = np.array([f"s:{i}" for i in range(60)], dtype=object)
    a = near_duplicates(x, ids, threshold=0.99, device="cpu")
    b = near_duplicates(store, ids, threshold=0.99, device="cpu", batch=7)
    assert len(a) >= 5
    pd_equal = a.reset_index(drop=True).equals(b.reset_index(drop=True))
    assert pd_equal
    monkeypatch.setattr(cg, "GRAM_BUDGET_BYTES", 8)  # per-problem kernels: the store is read per problem
    ref = cg.cg_score_details(x, labels, repeats=2, seed=0, device="cpu", max_class_size=15)
    got = cg.cg_score_details(store, labels, repeats=2, seed=0, device="cpu", max_class_size=15)
    np.testing.assert_array_equal(got.scores, ref.scores)
    assert store.materialized == 0 and store.max_rows_read <= 4096


def test_large_source_never_holds_the_decoded_array(tmp_path):
    """20,000 RGB 32×32 images from a parquet of PNG bytes: decoded into the store and embedded in batches; the
    float32 array would be 246 MB, the process grows by far less (measured in a fresh interpreter)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    n = 20_000
    yy, xx = np.mgrid[0:32, 0:32]
    blobs = []
    for i in range(n):  # smooth images: small PNGs, so the encoded table stays small
        img = np.stack([(xx * (i % 7) + yy * (i % 5) + c * 40) % 256 for c in range(3)], -1).astype(np.uint8)
        import io

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        blobs.append(buf.getvalue())
    pq.write_table(pa.table({"image": blobs, "label": [str(i % 4) for i in range(n)]}), tmp_path / "big.parquet")
    code = textwrap.dedent(f"""
        import json, resource, numpy as np, torch
        from core.data import load_sources
        def peak():
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        import core.data.sources, core.models.training  # imports counted in the baseline
        torch.zeros(1)
        base = peak()
        s = load_sources(["parquet:{tmp_path / 'big.parquet'}"])
        after_load = peak()
        from core.models.training import embed
        net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * 32 * 32, 8))
        net.embed = net.forward
        e = embed(net, s.images, "cpu", batch_size=512)
        print(json.dumps(dict(base=base, load=after_load, end=peak(), rows=len(s), shape=list(s.images.shape),
                              materialized=s.images.materialized, max_rows=s.images.max_rows_read,
                              emb=list(e.shape))))
    """)
    env = {"PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "INFOSCOPE_DECODE_WORKERS": "0", "PATH": "/usr/bin"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads(out.stdout.strip().splitlines()[-1])
    assert m["rows"] == n and m["shape"] == [n, 3, 32, 32] and m["emb"] == [n, 8]
    assert m["materialized"] == 0 and m["max_rows"] <= 512
    full_mb = n * 3 * 32 * 32 * 4 / 2**20  # 234 MiB as one float32 array
    assert m["end"] - m["base"] < 0.4 * full_mb, m


def test_store_shards_are_removed_with_the_store(tmp_path):
    import gc

    w = ShardWriter((1, 2, 2), cache_dir=tmp_path)
    w.append(np.zeros((1, 2, 2), np.float32))
    store = w.finish()
    folder = store.parts[0].path.parent
    assert folder.parent == tmp_path and any(folder.iterdir())
    np.testing.assert_array_equal(store[0], np.zeros((1, 2, 2)))
    del store, w
    gc.collect()
    assert not folder.exists()


def test_backbone_features_take_a_store():
    from core.models.backbones import backbone_features

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.classifier = torch.nn.Linear(4, 2)

        def embed(self, x):
            return x.reshape(len(x), -1)[:, :4] * 2

    x = np.random.default_rng(0).random((9, 1, 2, 2)).astype(np.float32)
    np.testing.assert_array_equal(backbone_features(Net(), ImageStore.from_array(x), batch_size=4),
                                  backbone_features(Net(), x, batch_size=4))


def test_decoding_with_worker_processes_gives_the_same_rows_and_errors(tmp_path, monkeypatch):
    files = _mixed_folder(tmp_path / "d")
    bad = tmp_path / "d" / "b" / "zz_cut.png"
    _write(bad, np.random.default_rng(6).integers(0, 256, (32, 32), dtype=np.uint8))
    bad.write_bytes(bad.read_bytes()[:200])
    monkeypatch.setenv("INFOSCOPE_DECODE_WORKERS", "2")
    s = load_sources([f"folder:{tmp_path / 'd'}"], skip_bad=True)
    assert [w for w, _ in s.skipped] == [str(bad)]
    want = _old_path(files, None, 3)
    assert sorted(s.sample_id) == sorted(want)
    for i, sid in enumerate(s.sample_id):
        np.testing.assert_array_equal(s.images[i], want[sid])
    with pytest.raises(DataError, match="zz_cut.png"):
        load_sources([f"folder:{tmp_path / 'd'}"])
    monkeypatch.setenv("INFOSCOPE_DECODE_WORKERS", "many")
    with pytest.raises(DataError, match="INFOSCOPE_DECODE_WORKERS"):
        load_sources([f"folder:{tmp_path / 'd'}"])


def test_a_run_on_a_folder_source_never_converts_the_store_to_one_array(tmp_path, monkeypatch):
    """The pipeline end to end on an image store (label noise, adversarial copies appended to the store, every
    score but prediction depth, CG on per-problem kernels): no step turns the store into one array
    (``np.asarray``/``np.concatenate`` raise here). Row reads are not bounded by this test (at 80 rows every
    batch covers all of them); the 20k-row test above bounds memory."""
    from core.pipeline import RunConfig, score_run
    from core.scores import cg

    rng = np.random.default_rng(0)
    for i in range(80):
        cls = str(i % 2)
        img = np.full((8, 8), 40 if cls == "0" else 200, np.uint8)
        img = np.clip(img.astype(int) + rng.integers(-30, 30, (8, 8)), 0, 255).astype(np.uint8)
        _write(tmp_path / "d" / cls / f"{i}.png", img)

    def refuse(self, *a, **k):
        raise AssertionError("the store was converted to one array")

    monkeypatch.setattr(ImageStore, "__array__", refuse)
    monkeypatch.setattr(cg, "GRAM_BUDGET_BYTES", 8)
    scores = ["loss", "margin", "el2n", "forgetting", "confidence", "variability", "uniqueness", "si_weights",
              "si_function", "cg_score"]
    run = score_run(RunConfig(sources=[f"folder:{tmp_path / 'd'}"], runs_dir=str(tmp_path / "runs"), epochs=1,
                              label_noise=0.1, adversarial=0.05, scores=scores, map_method="pca", device="cpu",
                              score_params={"cg_score": {"repeats": 1}, "si_function": {"repeats": 2}}))
    import pandas as pd

    table = pd.read_parquet(run / "samples.parquet")
    assert len(table) == 84 and table["is_adversarial"].sum() == 4
    assert table["cg_score"].notna().all() and table["si_weights"].notna().any()
    assert (run / "images").is_dir()  # PNGs of the adversarial copies, read from the store in batches


def test_hf_cells_are_read_in_the_dataset_row_order(tmp_path):
    datasets = pytest.importorskip("datasets")
    pix = [np.full((5, 5, 3), 40 * i, np.uint8) for i in range(6)]
    feats = datasets.Features({"image": datasets.Image(), "label": datasets.ClassLabel(names=["cat", "dog"])})
    ds = datasets.Dataset.from_dict({"image": [Image.fromarray(p) for p in pix], "label": [1, 0, 1, 0, 1, 0]},
                                    features=feats)
    ds.shuffle(seed=0).select([5, 3, 1, 0]).save_to_disk(str(tmp_path / "ds"))
    want = datasets.load_from_disk(str(tmp_path / "ds"))
    s = load_sources([f"hf:{tmp_path / 'ds'}"])
    assert isinstance(s.images, ImageStore)
    np.testing.assert_array_equal(np.asarray(s.images)[:, 0, 0, 0] * 255, [np.asarray(im)[0, 0, 0] for im in want["image"]])
    assert [s.class_names[v] for v in s.labels] == [["cat", "dog"][v] for v in want["label"]]
