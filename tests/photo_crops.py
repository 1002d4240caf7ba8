"""Real RGB photo crops from scikit-image's bundled sample images: a small "folder" source with 7 classes.

Each class is one photo (astronaut, coffee, chelsea, rocket, immunohistochemistry, hubble_deep_field,
colorwheel); each image is a seeded random ``size``×``size`` crop of it (no label errors). Used by the
model-quality guardrail test and by ``bench/bench_photo_guardrail.py`` (the 420-image case, 60 crops of 64 px).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

PHOTOS = {"astronaut": "astronaut", "coffee": "coffee", "cat": "chelsea", "rocket": "rocket",
          "ihc": "immunohistochemistry", "hubble": "hubble_deep_field", "colorwheel": "colorwheel"}


def make_photo_crops(root: str | Path, per_class: int = 60, size: int = 64, seed: int = 0) -> Path:
    """Write ``per_class`` random crops of each photo as PNG into ``root/<class>/<i>.png``; return ``root``."""
    import skimage.data
    from PIL import Image

    root = Path(root)
    rng = np.random.default_rng(seed)
    for cls, fn in PHOTOS.items():
        img = getattr(skimage.data, fn)()
        if img.ndim == 2:
            img = np.stack([img] * 3, axis=-1)
        img = img[..., :3]
        out = root / cls
        out.mkdir(parents=True, exist_ok=True)
        h, w = img.shape[:2]
        for i in range(per_class):
            y, x = rng.integers(0, h - size + 1), rng.integers(0, w - size + 1)
            Image.fromarray(np.ascontiguousarray(img[y:y + size, x:x + size])).save(out / f"{i:03d}.png")
    return root
