"""Image decoding and resizing helpers shared by the file and array sources.

Conventions: every image is a float32 array ``(C, H, W)`` with values in ``[0, 1]`` and ``C`` 1 (grayscale)
or 3 (RGB). Resizing uses torch ``interpolate(mode="bilinear", antialias=True, align_corners=False)``, i.e.
bilinear with an anti-aliasing filter when shrinking (PIL-like), plain bilinear when enlarging.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, UnidentifiedImageError

from core.errors import DataError

IMAGE_EXTENSIONS = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})
"""File suffixes (lower case) that the folder source treats as images; other files are ignored."""

DEFAULT_MAX_PIXELS = 50_000_000
"""Largest decoded image accepted (width × height), below Pillow's decompression-bomb limit (~89.5 M): an
8000×6000 photo passes, a 12000×12000 PNG (16.6 GiB as float32 RGB) is refused from its header, before any
pixel is decoded. Override per run (``max_image_pixels`` in the TOML config) or with ``$INFOSCOPE_MAX_PIXELS``."""


def max_pixels_limit(value: int | None = None) -> int:
    """The pixel limit in force: ``value``, else ``$INFOSCOPE_MAX_PIXELS``, else :data:`DEFAULT_MAX_PIXELS`."""
    if value is not None:
        return int(value)
    env = os.environ.get("INFOSCOPE_MAX_PIXELS", "").strip()
    if env:
        try:
            limit = int(float(env))
        except ValueError as exc:
            raise DataError(f"INFOSCOPE_MAX_PIXELS={env!r} is not a number of pixels") from exc
        if limit < 1:
            raise DataError(f"INFOSCOPE_MAX_PIXELS={env!r} must be positive")
        return limit
    return DEFAULT_MAX_PIXELS



class ImageReadError(DataError):
    """An image file that cannot be decoded; ``path`` and ``reason`` are kept apart for skip records."""

    def __init__(self, path: str | Path, reason: str) -> None:
        super().__init__(f"{path}: {reason}")
        self.path = str(path)
        self.reason = reason


_GRAY_MODES = frozenset({"1", "L", "LA", "La"})
_WIDE_GRAY_MODES = frozenset({"I", "I;16", "I;16B", "I;16L", "I;16N"})
_RESIZE_CHUNK = 1024


def is_image_file(path: Path) -> bool:
    """True for a visible file whose suffix is one of :data:`IMAGE_EXTENSIONS`."""
    return path.is_file() and not path.name.startswith(".") and path.suffix.lower() in IMAGE_EXTENSIONS


def read_image(path: str | Path, max_pixels: int | None = None) -> np.ndarray:
    """Decode one image file into a float32 ``(C, H, W)`` array in ``[0, 1]``.

    An image larger than ``max_pixels`` (:func:`max_pixels_limit`) is refused from its header, before decoding.

    Grayscale modes ("1", "L", "LA", 16/32-bit integer) give one channel; every other mode (RGB, RGBA,
    palette, CMYK, ...) is converted to RGB (alpha dropped) and gives three channels.

    Raises:
        ImageReadError: (a ``DataError``) naming the file, when it is missing, not an image, truncated or otherwise undecodable.
    """
    path = Path(path)
    limit = max_pixels_limit(max_pixels)

    def decode() -> np.ndarray:
        with warnings.catch_warnings():  # Pillow only warns between its two limits; ours is stricter
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(path)
        with im:
            w, h = im.size
            _check_pixels(path, w, h, limit)
            im.load()
            return _pil_to_array(im)

    return _decoded(path, decode)


def _check_pixels(where: str | Path | bytes, w: int, h: int, limit: int) -> None:
    """One-line error for an image above the decoded-size limit (an image bomb guard)."""
    if w * h > limit:
        raise ImageReadError(where, f"image is {w}×{h} = {w * h / 1e6:.1f} Mpx, above the limit of "
                                    f"{limit / 1e6:.1f} Mpx (raise max_image_pixels in the config, or "
                                    "$INFOSCOPE_MAX_PIXELS, to accept it)")


def image_channels(mode: str) -> int:
    """Channels :func:`read_image` gives an image of PIL ``mode``: 1 for grayscale modes, 3 for every other."""
    return 1 if mode in _GRAY_MODES or mode in _WIDE_GRAY_MODES or mode == "F" else 3


def probe_image(source: str | Path | bytes, where: str | Path | None = None,
                max_pixels: int | None = None) -> tuple[int, int, int]:
    """``(channels, H, W)`` that decoding ``source`` (a file path, or encoded bytes) will give, read from the
    header only (no pixel decoded); the same checks and one-line errors as :func:`read_image` (missing file,
    unknown format, above ``max_pixels``, zero width or height). Damage past the header shows when decoding."""
    import io

    where = where if where is not None else source
    limit = max_pixels_limit(max_pixels)
    if isinstance(source, bytes | bytearray | memoryview) and len(source) == 0:
        raise ImageReadError(where, "empty or missing image bytes")

    def probe() -> tuple[int, int, int]:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            im = Image.open(io.BytesIO(bytes(source)) if isinstance(source, bytes | bytearray | memoryview)
                            else Path(source))
        with im:
            w, h = im.size
            _check_pixels(where, w, h, limit)
            return image_channels(im.mode), int(h), int(w)

    c, h, w = _guarded(where, probe)
    if h == 0 or w == 0:
        raise ImageReadError(where, "image has zero width or height")
    return c, h, w


def read_image_bytes(data: bytes, where: str) -> np.ndarray:
    """Decode encoded image bytes (PNG, JPEG, …; e.g. a parquet or Hugging Face ``Image`` cell) like
    :func:`read_image`; errors name ``where``."""
    import io

    if not isinstance(data, bytes | bytearray | memoryview) or len(data) == 0:
        raise ImageReadError(where, "empty or missing image bytes")

    def decode() -> np.ndarray:
        with Image.open(io.BytesIO(bytes(data))) as im:
            im.load()
            return _pil_to_array(im)

    return _decoded(where, decode)


def _decoded(where: str | Path, decode: Callable[[], np.ndarray]) -> np.ndarray:
    """Run ``decode`` and turn every way decoding fails into one :class:`ImageReadError` naming ``where``."""
    arr = _guarded(where, decode)
    if arr.shape[1] == 0 or arr.shape[2] == 0:
        raise ImageReadError(where, "image has zero width or height")
    return arr


def _guarded(where: str | Path, run: Callable[[], Any]) -> Any:
    """``run()``, with every way opening or decoding an image fails turned into one :class:`ImageReadError`."""
    try:
        return run()
    except FileNotFoundError as exc:
        raise ImageReadError(where, "file not found") from exc
    except UnidentifiedImageError as exc:
        raise ImageReadError(where, "not a readable image (unknown or damaged format)") from exc
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as exc:
        raise ImageReadError(where, f"corrupt or unreadable image ({exc})") from exc


def _pil_to_array(im: Image.Image) -> np.ndarray:
    """A loaded PIL image as float32 ``(C, H, W)`` in ``[0, 1]``."""
    if im.mode in _GRAY_MODES:
        gray = np.asarray(im.convert("L"), dtype=np.float32) / 255.0
        return gray[None]
    if im.mode in _WIDE_GRAY_MODES:
        raw = np.asarray(im, dtype=np.float64)
        return np.clip(raw / _full_scale(im, raw), 0.0, 1.0).astype(np.float32)[None]
    if im.mode == "F":
        raw = np.asarray(im, dtype=np.float32)
        if not np.all(np.isfinite(raw)):
            raise ValueError("floating-point image holds NaN or infinite values")
        return np.clip(raw, 0.0, 1.0)[None]
    rgb = np.asarray(im.convert("RGB"), dtype=np.float32) / 255.0
    return np.ascontiguousarray(rgb.transpose(2, 0, 1))


def _full_scale(im: Image.Image, raw: np.ndarray) -> float:
    """White of a wide grayscale image, from its bit depth (never from the image's own maximum, which would
    make a dark 16-bit image as bright as a light one): 16-bit modes and PNG (at most 16 bits per sample)
    65535; a TIFF's BitsPerSample tag; else 16 bits when the values fit, 32 otherwise."""
    if im.mode.startswith("I;16") or im.format == "PNG":
        return 65535.0
    bits = getattr(im, "tag_v2", {}).get(258) if hasattr(im, "tag_v2") else None
    if isinstance(bits, tuple):
        bits = bits[0] if bits else None
    if isinstance(bits, int) and 1 <= bits <= 32:
        return float(2 ** bits - 1)
    return 65535.0 if raw.max(initial=0) <= 65535 else float(2 ** 31 - 1)


def resize_images(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float32 batch ``(n, C, H, W)`` to ``size`` = (H, W) with anti-aliased bilinear interpolation.

    Returns the input unchanged (no copy) when it already has that size. Values stay in ``[0, 1]``.
    """
    size = (int(size[0]), int(size[1]))
    if tuple(x.shape[2:]) == size:
        return x
    out = np.empty((x.shape[0], x.shape[1], *size), dtype=np.float32)
    for start in range(0, x.shape[0], _RESIZE_CHUNK):
        chunk = torch.from_numpy(np.ascontiguousarray(x[start : start + _RESIZE_CHUNK], dtype=np.float32))
        resized = F.interpolate(chunk, size=size, mode="bilinear", align_corners=False, antialias=True)
        out[start : start + _RESIZE_CHUNK] = resized.clamp_(0.0, 1.0).numpy()
    return out


def resize_crop(x: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """Resize a float32 batch ``(n, C, h, w)`` keeping its aspect ratio so that it covers ``size`` = (H, W)
    (scale s = max(H/h, W/w): for a square target, the shorter side becomes H), then crop the centre H×W.

    The crop offsets are ⌊(h·s − H)/2⌋ and ⌊(w·s − W)/2⌋ (torchvision's ``Resize`` + ``CenterCrop`` for
    square targets). Returns the input unchanged when it already has that size.
    """
    size = (int(size[0]), int(size[1]))
    h, w = x.shape[2:]
    if (h, w) == size:
        return x
    s = max(size[0] / h, size[1] / w)
    covered = (max(size[0], round(h * s)), max(size[1], round(w * s)))
    y = resize_images(x, covered)
    top, left = (covered[0] - size[0]) // 2, (covered[1] - size[1]) // 2
    return np.ascontiguousarray(y[:, :, top:top + size[0], left:left + size[1]])


def convert_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """A ``(C, H, W)`` image with ``channels`` channels: gray → RGB repeats the channel, RGB → gray is the
    ITU-R 601 luma 0.299 R + 0.587 G + 0.114 B (PIL's "L" conversion)."""
    c = img.shape[0]
    if c == channels:
        return img
    if c == 1 and channels == 3:
        return np.repeat(img, 3, axis=0)
    if c == 3 and channels == 1:
        luma = np.tensordot(np.array([0.299, 0.587, 0.114], np.float32), img, axes=1)
        return np.clip(luma, 0.0, 1.0).astype(np.float32)[None]
    raise ValueError(f"cannot convert {c} channels to {channels}")


def most_common_size(counts: dict[tuple[int, int], int]) -> tuple[int, int]:
    """The (H, W) held by the most images (the largest area on ties)."""
    if not counts:
        raise ValueError("no shapes")
    best = max(counts.items(), key=lambda kv: (kv[1], kv[0][0] * kv[0][1], kv[0]))[0]
    return (int(best[0]), int(best[1]))


def stack_images(images: Sequence[np.ndarray], size: tuple[int, int]) -> np.ndarray:
    """Stack ``(C, H, W)`` images of possibly different sizes into one ``(n, C, *size)`` float32 array.

    Images of the same shape are resized together (:func:`resize_crop`: aspect kept, centre crop); the output keeps the input order. All images must share
    the channel count (callers check this first, with a message that names files).
    """
    if not images:
        raise ValueError("no images to stack")
    channels = images[0].shape[0]
    out = np.empty((len(images), channels, int(size[0]), int(size[1])), dtype=np.float32)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, img in enumerate(images):
        groups.setdefault(tuple(img.shape), []).append(i)
    for idx in groups.values():
        out[idx] = resize_crop(np.stack([images[i] for i in idx]), size)
    return out


def largest_size(shapes: Sequence[tuple[int, int]]) -> tuple[int, int]:
    """The (H, W) of largest area among ``shapes`` (the first one on ties)."""
    if not shapes:
        raise ValueError("no shapes")
    best = shapes[0]
    for h, w in shapes[1:]:
        if h * w > best[0] * best[1]:
            best = (h, w)
    return (int(best[0]), int(best[1]))
