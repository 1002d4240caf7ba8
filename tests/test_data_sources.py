"""Data sources: spec parsing, each source kind on real files, merging, and every bad-input case."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from sklearn.datasets import load_digits

from core.data import load_sources, parse_spec, sort_class_names
from core.data.images import read_image, resize_images
from core.errors import DataError

# ------------------------------------------------------------------------------------------ helpers


def gray_pixels(seed: int, h: int = 10, w: int = 12) -> np.ndarray:
    """A deterministic uint8 grayscale image."""
    return np.random.default_rng(seed).integers(0, 256, size=(h, w), dtype=np.uint8)


def write_png(path: Path, arr: np.ndarray, mode: str | None = None) -> Path:
    """Write ``arr`` (uint8 HxW or HxWxC) as an image file, creating folders."""
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if mode is not None:
        img = img.convert(mode)
    img.save(path)
    return path


def make_gray_folder(top: Path, classes: dict[str, int], h: int = 10, w: int = 12) -> dict[str, np.ndarray]:
    """A class-per-folder tree of grayscale PNGs; returns {relative path: pixels}."""
    written = {}
    seed = 0
    for cls, count in classes.items():
        for i in range(count):
            arr = gray_pixels(seed, h, w)
            seed += 1
            write_png(top / cls / f"img{i}.png", arr)
            written[f"{cls}/img{i}.png"] = arr
    return written


def truncated_png(path: Path) -> Path:
    """A real PNG cut in half (PIL opens the header, fails on load)."""
    write_png(path, gray_pixels(99, 32, 32))
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def write_csv(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def mnist_digits():
    """mnist5k + digits merged once for this module."""
    return load_sources(["mnist5k", "digits"])


# ------------------------------------------------------------------------------------------- specs


def test_parse_spec_bare_named_and_paths():
    s = parse_spec("mnist5k")
    assert (s.name, s.kind, s.path) == ("mnist5k", "mnist5k", "")
    s = parse_spec("train=folder:data/a=b")
    assert (s.name, s.kind, s.path) == ("train", "folder", "data/a=b")
    s = parse_spec("folder:/x/y=z")  # bare kind: '=' belongs to the path
    assert (s.name, s.kind, s.path) == ("folder", "folder", "/x/y=z")
    s = parse_spec("csv=csv:list.csv")
    assert (s.name, s.kind, s.path) == ("csv", "csv", "list.csv")


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("zip:foo.zip", "unknown kind 'zip'"),
        ("a=tfrecord:x", "unknown kind 'tfrecord'"),
        ("folder:", "needs a path"),
        ("x=npz:", "needs a path"),
        ("mnist5k:foo", "takes no ':PATH'"),
        ("bad name=mnist5k", "invalid source name"),
        ("", "empty source spec"),
    ],
)
def test_parse_spec_errors(text, fragment):
    with pytest.raises(DataError, match=fragment):
        parse_spec(text)


def test_sort_class_names_natural():
    assert sort_class_names(["10", "2", "1", "2"]) == ["1", "2", "10"]
    assert sort_class_names(["dog", "10", "cat"]) == ["10", "cat", "dog"]


# ---------------------------------------------------------------------------------- bundled data


def test_mnist5k_and_digits_merge(mnist_digits, mnist_arrays):
    s = mnist_digits
    x, y = mnist_arrays
    assert s.images.shape == (5000 + 1797, 1, 28, 28)
    assert s.images.dtype == np.float32
    assert 0.0 <= s.images.min() and s.images.max() <= 1.0
    assert s.class_names == [str(i) for i in range(10)]
    assert list(s.source[:5000]) == ["mnist5k"] * 5000 and list(s.source[5000:]) == ["digits"] * 1797
    assert s.sample_id[0] == "mnist5k:0" and s.sample_id[4999] == "mnist5k:4999"
    assert s.sample_id[5000] == "digits:0" and s.sample_id[-1] == "digits:1796"
    assert len(set(s.sample_id)) == len(s)
    assert set(s.image_path) == {""}
    # MNIST rows are the bundled arrays, untouched; 500 per class.
    np.testing.assert_array_equal(s.images[:5000], x)
    np.testing.assert_array_equal(s.labels[:5000], y)
    assert np.bincount(s.labels[:5000]).tolist() == [500] * 10
    # digits rows are the 8x8 images resized (antialiased bilinear) to 28x28, labels unchanged.
    digits = load_digits()
    np.testing.assert_array_equal(s.labels[5000:], digits.target)
    expected = F.interpolate(
        torch.from_numpy(digits.images[:3, None].astype(np.float32) / 16.0),
        size=(28, 28),
        mode="bilinear",
        antialias=True,
    ).numpy()
    np.testing.assert_allclose(s.images[5000:5003], expected, atol=1e-6)
    assert not s.is_mislabeled.any() and not s.is_adversarial.any()
    np.testing.assert_array_equal(s.true_label, s.labels)


def test_image_size_option_resizes_everything():
    s = load_sources(["d=digits"], image_size=(14, 10))
    assert s.images.shape == (1797, 1, 14, 10)
    assert s.sample_id[0] == "d:0" and set(s.source) == {"d"}


def test_resize_preserves_constant_images():
    x = np.full((2, 1, 8, 8), 0.25, dtype=np.float32)
    np.testing.assert_allclose(resize_images(x, (28, 20)), 0.25, atol=1e-6)
    assert resize_images(x, (8, 8)) is x


# ------------------------------------------------------------------------------------------ folder


def test_folder_grayscale(tmp_path):
    written = make_gray_folder(tmp_path / "ds", {"cat": 3, "dog": 2})
    s = load_sources(["pets=folder:ds"], root=tmp_path)
    assert s.class_names == ["cat", "dog"]
    assert s.images.shape == (5, 1, 10, 12)
    assert list(s.labels) == [0, 0, 0, 1, 1]
    assert list(s.sample_id) == [f"pets:{k}" for k in sorted(written)]
    for i, sid in enumerate(s.sample_id):
        rel = sid.split(":", 1)[1]
        np.testing.assert_allclose(s.images[i, 0], written[rel] / 255.0, atol=1e-6)
        assert s.image_path[i] == str((tmp_path / "ds" / rel).absolute())
        assert Path(s.image_path[i]).is_absolute()
    assert set(s.source) == {"pets"} and s.skipped == []


def test_folder_bare_spec_name_and_ignored_files(tmp_path):
    make_gray_folder(tmp_path / "ds", {"a": 1, "b": 1})
    (tmp_path / "ds" / "a" / "notes.txt").write_text("not an image")
    write_png(tmp_path / "ds" / ".hidden" / "x.png", gray_pixels(5))
    s = load_sources([f"folder:{tmp_path / 'ds'}"])
    assert len(s) == 2 and s.class_names == ["a", "b"]
    assert set(s.source) == {"folder"} and s.sample_id[0] == "folder:a/img0.png"


def test_folder_rgb_modes_and_sizes(tmp_path):
    top = tmp_path / "rgb"
    rgb = np.random.default_rng(1).integers(0, 256, size=(16, 16, 3), dtype=np.uint8)
    write_png(top / "red" / "plain.png", rgb)
    write_png(top / "red" / "alpha.png", rgb, mode="RGBA")
    write_png(top / "blue" / "palette.png", rgb, mode="P")
    write_png(top / "blue" / "photo.jpg", rgb[:8, :8])  # smaller, JPEG
    s = load_sources([f"folder:{top}"])
    assert s.images.shape == (4, 3, 16, 16)  # resized to the most common size
    assert s.class_names == ["blue", "red"]
    by_id = dict(zip(s.sample_id, range(len(s)), strict=True))
    np.testing.assert_allclose(
        s.images[by_id["folder:red/alpha.png"]], rgb.transpose(2, 0, 1) / 255.0, atol=1e-6
    )


def test_folder_gray_and_rgb_mixed_is_converted_to_the_majority_and_counted(tmp_path):
    top = tmp_path / "mix"
    gray = make_gray_folder(top, {"a": 2, "b": 1})
    color = np.random.default_rng(5).integers(0, 256, size=(10, 12, 3), dtype=np.uint8)
    write_png(top / "b" / "color.png", color)
    for skip in (False, True):  # converted, never refused nor skipped
        s = load_sources([f"folder:{top}"], skip_bad=skip)
        assert len(s) == 4 and s.images.shape == (4, 1, 10, 12) and not s.skipped
        assert s.load_info["channels"] == 1 and s.load_info["converted_rgb_to_gray"] == 1
        row = list(s.sample_id).index("folder:b/color.png")
        luma = (0.299 * color[..., 0] + 0.587 * color[..., 1] + 0.114 * color[..., 2]) / 255.0
        np.testing.assert_allclose(s.images[row, 0], luma, atol=1e-5)
        row = list(s.sample_id).index("folder:a/img0.png")
        np.testing.assert_allclose(s.images[row, 0], gray["a/img0.png"] / 255.0, atol=1e-6)
    # the model's mode wins over the majority: every gray image repeated on three channels
    s = load_sources([f"folder:{top}"], channels=3)
    assert s.images.shape == (4, 3, 10, 12) and s.load_info["converted_gray_to_rgb"] == 3
    row = list(s.sample_id).index("folder:a/img0.png")
    for c in range(3):
        np.testing.assert_allclose(s.images[row, c], gray["a/img0.png"] / 255.0, atol=1e-6)


def test_one_outlier_no_longer_sets_the_size_of_all(tmp_path):
    top = tmp_path / "sizes"
    make_gray_folder(top, {"a": 3, "b": 3}, h=16, w=16)
    write_png(top / "b" / "huge.png", gray_pixels(99, 64, 64))
    s = load_sources([f"folder:{top}"])
    assert s.images.shape == (7, 1, 16, 16)
    assert s.load_info["rows_not_at_size"] == 1 and s.load_info["size_rule"].startswith("most common")


def test_resize_crop_brute_force():
    from core.data.images import resize_crop

    x = np.random.default_rng(0).random((2, 3, 4, 8)).astype(np.float32)
    # same scale (covers 4×4 at scale 1): the centre columns 2..5, untouched
    np.testing.assert_array_equal(resize_crop(x, (4, 4)), x[:, :, :, 2:6])
    # shrink by 2 then crop the centre: exactly resize_images to (2, 4) and columns 1..2
    np.testing.assert_allclose(resize_crop(x, (2, 2)), resize_images(x, (2, 4))[:, :, :, 1:3], atol=1e-6)
    assert resize_crop(x, (4, 8)) is x
    # a non-square target covering a tall image: width scaled to 6, height 3 rows cropped from 12
    y = np.random.default_rng(1).random((1, 1, 8, 4)).astype(np.float32)
    np.testing.assert_allclose(resize_crop(y, (6, 6)), resize_images(y, (12, 6))[:, :, 3:9], atol=1e-6)


def test_given_image_size_resizes_shorter_side_and_crops_each_file(tmp_path):
    from core.data.images import resize_crop

    top = tmp_path / "wide"
    pix = make_gray_folder(top, {"a": 2, "b": 2}, h=10, w=20)
    s = load_sources([f"folder:{top}"], image_size=(8, 8))
    assert s.images.shape == (4, 1, 8, 8) and s.load_info["size_rule"] == "given"
    row = list(s.sample_id).index("folder:b/img1.png")
    want = resize_crop((pix["b/img1.png"] / 255.0).astype(np.float32)[None, None], (8, 8))[0]
    np.testing.assert_allclose(s.images[row], want, atol=1e-6)


@pytest.mark.parametrize("kind", ["truncated", "text"])
def test_folder_corrupt_image_names_file(tmp_path, kind):
    top = tmp_path / "ds"
    make_gray_folder(top, {"a": 2, "b": 2})
    bad = top / "b" / "broken.png"
    if kind == "truncated":
        truncated_png(bad)
    else:
        bad.write_text("this is not a png")
    with pytest.raises(DataError, match="broken.png"):
        load_sources([f"folder:{top}"])
    with pytest.raises(DataError, match="broken.png"):
        read_image(bad)
    s = load_sources([f"folder:{top}"], skip_bad=True)
    assert len(s) == 4
    assert [w for w, _ in s.skipped] == [str(bad)]
    assert "broken.png" not in " ".join(s.sample_id)


def test_folder_structural_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no class sub-folders"):
        load_sources([f"folder:{tmp_path / 'empty'}"], skip_bad=True)
    top = tmp_path / "ds"
    make_gray_folder(top, {"a": 2})
    (top / "b").mkdir()
    (top / "b" / "readme.txt").write_text("x")
    with pytest.raises(DataError, match="'b' has no image files"):
        load_sources([f"folder:{top}"], skip_bad=True)
    with pytest.raises(DataError, match="folder not found"):
        load_sources([f"folder:{tmp_path / 'nope'}"])


def test_single_class_is_error_even_with_skip_bad(tmp_path):
    make_gray_folder(tmp_path / "ds", {"only": 3})
    with pytest.raises(DataError, match="only one class \\('only'\\)"):
        load_sources([f"folder:{tmp_path / 'ds'}"], skip_bad=True)


# --------------------------------------------------------------------------------------------- csv


def test_csv_relative_absolute_and_source_column(tmp_path):
    imgs = tmp_path / "imgs"
    write_png(imgs / "x0.png", gray_pixels(0))
    write_png(imgs / "x1.png", gray_pixels(1))
    abs_img = write_png(tmp_path / "elsewhere" / "x2.png", gray_pixels(2))
    csv_path = write_csv(
        tmp_path / "lists" / "list.csv",
        ["path,label,source", "../imgs/x0.png,2,", "../imgs/x1.png,10,web", f"{abs_img},2,"],
    )
    s = load_sources(["lab=csv:lists/list.csv"], root=tmp_path)
    assert s.class_names == ["2", "10"]  # numeric names sort numerically
    assert list(s.labels) == [0, 1, 0]
    assert list(s.source) == ["lab", "web", "lab"]
    assert list(s.sample_id) == ["lab:../imgs/x0.png", "web:../imgs/x1.png", f"lab:{abs_img.as_posix()}"]
    assert s.image_path[0] == str((imgs / "x0.png").absolute())
    np.testing.assert_allclose(s.images[1, 0], gray_pixels(1) / 255.0, atol=1e-6)
    assert csv_path.exists()


def test_csv_missing_label_names_row_and_skip_bad(tmp_path):
    write_png(tmp_path / "a.png", gray_pixels(0))
    write_png(tmp_path / "b.png", gray_pixels(1))
    write_png(tmp_path / "c.png", gray_pixels(2))
    write_csv(tmp_path / "l.csv", ["path,label", "a.png,cat", "b.png,", "c.png,dog", "missing.png,dog"])
    with pytest.raises(DataError, match=r"l\.csv, line 3: missing label"):
        load_sources([f"csv:{tmp_path / 'l.csv'}"])
    s = load_sources([f"csv:{tmp_path / 'l.csv'}"], skip_bad=True)
    assert len(s) == 2 and s.class_names == ["cat", "dog"]
    assert len(s.skipped) == 2
    assert s.skipped[0][0].endswith("l.csv, line 3") and "missing label" in s.skipped[0][1]
    assert s.skipped[1][0].endswith("l.csv, line 5") and "missing.png" in s.skipped[1][1]


def test_csv_missing_image_file_names_row(tmp_path):
    write_png(tmp_path / "a.png", gray_pixels(0))
    write_csv(tmp_path / "l.csv", ["path,label", "a.png,cat", "gone.png,dog"])
    with pytest.raises(DataError, match=r"line 3: image file .*gone\.png does not exist"):
        load_sources([f"csv:{tmp_path / 'l.csv'}"])


def test_csv_corrupt_image_names_row_and_file(tmp_path):
    write_png(tmp_path / "a.png", gray_pixels(0))
    (tmp_path / "b.png").write_text("text, not an image")
    write_csv(tmp_path / "l.csv", ["path,label", "a.png,cat", "b.png,dog"])
    with pytest.raises(DataError, match=r"line 3: image .*b\.png"):
        load_sources([f"csv:{tmp_path / 'l.csv'}"])


def test_csv_structural_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: CSV file not found"):
        load_sources([f"csv:{tmp_path / 'nope.csv'}"], skip_bad=True)
    write_csv(tmp_path / "nolabel.csv", ["path,class", "a.png,cat"])
    with pytest.raises(DataError, match=r"nolabel\.csv: no 'label' column"):
        load_sources([f"csv:{tmp_path / 'nolabel.csv'}"], skip_bad=True)
    write_csv(tmp_path / "header_only.csv", ["path,label"])
    with pytest.raises(DataError, match="no data rows"):
        load_sources([f"csv:{tmp_path / 'header_only.csv'}"])


def test_csv_duplicate_rows_give_duplicate_id_error(tmp_path):
    write_png(tmp_path / "a.png", gray_pixels(0))
    write_png(tmp_path / "b.png", gray_pixels(1))
    write_csv(tmp_path / "l.csv", ["path,label", "a.png,cat", "b.png,dog", "a.png,cat"])
    with pytest.raises(DataError, match="duplicate sample id.*a.png"):
        load_sources([f"csv:{tmp_path / 'l.csv'}"])


# --------------------------------------------------------------------------------------------- npz


def test_npz_layouts_and_dtypes(tmp_path, mnist_small):
    x, y = mnist_small
    x8 = np.round(x[:, 0] * 255).astype(np.uint8)  # (n, 28, 28) uint8
    np.savez(tmp_path / "hw.npz", x=x8, y=y)
    np.savez(tmp_path / "chw.npz", x=x, y=y.astype(np.int32))  # (n, 1, 28, 28) float
    s = load_sources(["a=npz:hw.npz", "b=npz:chw.npz"], root=tmp_path)
    n = len(y)
    assert s.images.shape == (2 * n, 1, 28, 28)
    np.testing.assert_allclose(s.images[:n], s.images[n:], atol=1 / 255)
    np.testing.assert_array_equal(s.labels[:n], y)
    assert s.sample_id[0] == "a:0" and s.sample_id[n] == "b:0" and s.sample_id[-1] == f"b:{n - 1}"


def test_npz_rgb_hwc_with_class_names_and_string_labels(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, size=(6, 5, 7, 3), dtype=np.uint8)
    np.savez(tmp_path / "rgb.npz", x=x, y=np.array([0, 1, 2, 0, 1, 2]), class_names=np.array(["c", "b", "a"]))
    np.savez(tmp_path / "str.npz", x=x[:2], y=np.array(["zebra", "a"]))
    s = load_sources([f"n=npz:{tmp_path / 'rgb.npz'}", f"m=npz:{tmp_path / 'str.npz'}"])
    assert s.images.shape == (8, 3, 5, 7)
    assert s.class_names == ["a", "b", "c", "zebra"]
    assert [s.class_names[i] for i in s.labels] == ["c", "b", "a", "c", "b", "a", "zebra", "a"]
    np.testing.assert_allclose(s.images[0], x[0].transpose(2, 0, 1) / 255.0, atol=1e-6)


def test_npz_nan_rows_named_and_skipped(tmp_path):
    x = np.random.default_rng(0).random((5, 4, 4)).astype(np.float32)
    x[3, 1, 2] = np.nan
    np.savez(tmp_path / "bad.npz", x=x, y=np.array([0, 1, 0, 1, 0]))
    with pytest.raises(DataError, match=r"bad\.npz, row 3: x holds NaN"):
        load_sources([f"npz:{tmp_path / 'bad.npz'}"])
    s = load_sources([f"npz:{tmp_path / 'bad.npz'}"], skip_bad=True)
    assert len(s) == 4 and list(s.sample_id) == ["npz:0", "npz:1", "npz:2", "npz:4"]
    assert s.skipped == [(f"{tmp_path / 'bad.npz'}, row 3", "x holds NaN or infinite values")]


@pytest.mark.parametrize(
    ("arrays", "fragment"),
    [
        ({"x": np.full((3, 4, 4), 2.0), "y": np.array([0, 1, 0])}, "must lie in \\[0, 1\\]; row 0"),
        ({"x": np.zeros((3, 4, 4)), "y": np.array([0, 1])}, "x has 3 rows but y has 2"),
        ({"x": np.zeros((3, 4, 4))}, "missing array"),
        ({"x": np.zeros((3, 5, 4, 4)), "y": np.array([0, 1, 0])}, "x has shape"),
        ({"x": np.zeros((2, 4, 4)), "y": np.array([0, 5]), "class_names": np.array(["a", "b"])}, "y\\[1\\] = 5"),
    ],
)
def test_npz_structural_errors(tmp_path, arrays, fragment):
    np.savez(tmp_path / "d.npz", **arrays)
    with pytest.raises(DataError, match=fragment) as err:
        load_sources([f"npz:{tmp_path / 'd.npz'}"], skip_bad=True)
    assert "d.npz" in str(err.value)


def test_npz_not_a_zip_and_pickled_objects(tmp_path):
    (tmp_path / "t.npz").write_text("hello")
    with pytest.raises(DataError, match=r"t\.npz: not a readable"):
        load_sources([f"npz:{tmp_path / 't.npz'}"])
    np.savez(tmp_path / "o.npz", x=np.zeros((2, 3, 3)), y=np.array(["a", None], dtype=object))
    with pytest.raises(DataError, match=r"o\.npz"):
        load_sources([f"npz:{tmp_path / 'o.npz'}"])


# -------------------------------------------------------------------------------------- merging


def test_union_of_classes_across_file_sources(tmp_path):
    make_gray_folder(tmp_path / "f", {"cat": 2, "dog": 1})
    write_png(tmp_path / "c" / "b.png", gray_pixels(7, 20, 20))  # an outlier: the common 10x12 wins
    write_csv(tmp_path / "c" / "l.csv", ["path,label", "b.png,bird"])
    s = load_sources(["f=folder:f", "c=csv:c/l.csv"], root=tmp_path)
    assert s.class_names == ["bird", "cat", "dog"]
    assert s.images.shape == (4, 1, 10, 12)
    assert [s.class_names[i] for i in s.labels] == ["cat", "cat", "dog", "bird"]
    assert list(s.source) == ["f", "f", "f", "c"]


def test_duplicate_source_names_and_channel_mismatch(tmp_path):
    with pytest.raises(DataError, match="duplicate source name 'digits'"):
        load_sources(["digits", "digits"])
    rgb = np.zeros((8, 8, 3), dtype=np.uint8)
    write_png(tmp_path / "rgb" / "a" / "1.png", rgb)
    write_png(tmp_path / "rgb" / "b" / "1.png", rgb)
    s = load_sources(["digits", f"rgb=folder:{tmp_path / 'rgb'}"])  # converted to the majority (gray)
    assert s.images.shape[1] == 1 and s.load_info["converted_rgb_to_gray"] == 2


def test_empty_spec_list_and_bad_image_size():
    with pytest.raises(DataError, match="no data source"):
        load_sources([])
    with pytest.raises(DataError, match="image_size"):
        load_sources(["digits"], image_size=(0, 28))
