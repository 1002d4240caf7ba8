"""The in-memory dataset every source loader returns and every score reads."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from core.data.image_store import ImageStore, concat_images, take_rows


@dataclass
class Samples:
    """A labelled image dataset, possibly made of several sources.

    Attributes:
        images: float32 (n, C, H, W) with values in [0, 1]: one array (array sources, tests), or an
            :class:`~core.data.image_store.ImageStore` (file sources: decoded once into shard files) that reads
            ``images[rows]`` batch by batch. Code that must not hold every image reads slices or row batches.
        labels: int64 array (n,), the *given* label (after any injected corruption), index into ``class_names``.
        class_names: the name of each class index.
        source: array (n,) of source names (``--source NAME=SPEC``).
        sample_id: array (n,) of stable string ids, ``"<source>:<key>"`` with key the file's relative path or
            the row index within the source.
        image_path: array (n,) of the original image file path, or ``""`` where the source is an array
            (the run store then writes a PNG).
        true_label: int64 array (n,): the label before corruption (equals ``labels`` where none was injected).
        is_mislabeled: bool array (n,): ``labels != true_label`` for injected label noise.
        is_adversarial: bool array (n,): rows that are injected adversarial copies.
        skipped: list of ``(where, why)`` for rows skipped with ``--skip-bad``.
        load_info: how the sources were brought onto one shape (image size and the rule that chose it, rows
            resized, channels, gray→RGB / RGB→gray conversions); recorded in the run manifest.
    """

    images: np.ndarray | ImageStore
    labels: np.ndarray
    class_names: list[str]
    source: np.ndarray
    sample_id: np.ndarray
    image_path: np.ndarray
    true_label: np.ndarray | None = None
    is_mislabeled: np.ndarray | None = None
    is_adversarial: np.ndarray | None = None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    load_info: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.labels)
        self.labels = np.asarray(self.labels, dtype=np.int64)
        self.source = np.asarray(self.source, dtype=object)
        self.sample_id = np.asarray(self.sample_id, dtype=object)
        self.image_path = np.asarray(self.image_path, dtype=object)
        if self.true_label is None:
            self.true_label = self.labels.copy()
        if self.is_mislabeled is None:
            self.is_mislabeled = self.labels != self.true_label
        if self.is_adversarial is None:
            self.is_adversarial = np.zeros(n, dtype=bool)
        for name in ("images", "source", "sample_id", "image_path", "true_label", "is_mislabeled", "is_adversarial"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"Samples.{name} has {len(getattr(self, name))} rows, labels has {n}")

    def __len__(self) -> int:
        return len(self.labels)

    @property
    def n_classes(self) -> int:
        return len(self.class_names)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.images.shape[1:])  # type: ignore[return-value]

    def subset(self, idx: np.ndarray) -> Samples:
        """Rows ``idx`` (an index or boolean array) as a new ``Samples`` sharing ``class_names``."""
        idx = np.asarray(idx)
        return Samples(
            images=take_rows(self.images, idx),
            labels=self.labels[idx],
            class_names=list(self.class_names),
            source=self.source[idx],
            sample_id=self.sample_id[idx],
            image_path=self.image_path[idx],
            true_label=self.true_label[idx],
            is_mislabeled=self.is_mislabeled[idx],
            is_adversarial=self.is_adversarial[idx],
            skipped=list(self.skipped),
            load_info=dict(self.load_info),
        )

    @staticmethod
    def concat(parts: list[Samples]) -> Samples:
        """Stack datasets that already share ``class_names`` and image shape."""
        if not parts:
            raise ValueError("nothing to concatenate")
        names = parts[0].class_names
        for p in parts[1:]:
            if p.class_names != names:
                raise ValueError("Samples.concat needs identical class_names; map labels first")
        return Samples(
            images=concat_images([p.images for p in parts]),
            labels=np.concatenate([p.labels for p in parts]),
            class_names=list(names),
            source=np.concatenate([p.source for p in parts]),
            sample_id=np.concatenate([p.sample_id for p in parts]),
            image_path=np.concatenate([p.image_path for p in parts]),
            true_label=np.concatenate([p.true_label for p in parts]),
            is_mislabeled=np.concatenate([p.is_mislabeled for p in parts]),
            is_adversarial=np.concatenate([p.is_adversarial for p in parts]),
            skipped=[s for p in parts for s in p.skipped],
            load_info=dict(parts[0].load_info),
        )
