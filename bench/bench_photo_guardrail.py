"""The model-quality guardrail on real photos: 7 classes × 60 random 64×64 crops of scikit-image's sample
photos (420 images, no label errors), the default recipe (no --epochs: step budget + early stopping).

Prints held-out accuracy, whether the CLI warned (``model.quality.trust_flags``), and how many clean images were
flagged. Run: ``OMP_NUM_THREADS=1 python bench/bench_photo_guardrail.py [--epochs N]``.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from photo_crops import make_photo_crops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--size", type=int, default=64)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        src = make_photo_crops(Path(tmp) / "photos", args.per_class, args.size, seed=0)
        cmd = [sys.executable, "-m", "core.cli", "score", "--source", f"photos=folder:{src}", "--runs-dir",
               str(Path(tmp) / "runs"), "--scores", "loss,margin,confidence,variability,uniqueness,cg_score",
               "--map", "pca", "--device", "cpu"] + (["--epochs", str(args.epochs)] if args.epochs else [])
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        wall = time.perf_counter() - t0
        if res.returncode:
            print(res.stdout, res.stderr)
            raise SystemExit(res.returncode)
        run = Path(res.stdout.strip().splitlines()[-1])
        m = json.loads((run / "manifest.json").read_text())
        t = pd.read_parquet(run / "samples.parquet")
        q = m["model"]["quality"]
        warned = "WARNING" in res.stdout + res.stderr
        print(f"images {len(t)}, epochs {m['model']['epochs']} (requested {m['model']['epochs_requested']}), "
              f"held-out acc {q['heldout_acc']:.3f}, train acc {q['train_acc']:.3f}, trust_flags {q['trust_flags']}, "
              f"CLI warned {warned}, flagged mislabeled {int(t['flag_mislabeled'].sum())} "
              f"({t['flag_mislabeled'].mean():.1%}), adversarial {int(t['flag_adversarial'].sum())}, wall {wall:.0f} s")


if __name__ == "__main__":
    main()
