"""20,000 images at 224×224 with resnet18 from a local weights file, every score, in one uninterrupted run.

Run: .venv/bin/python bench/bench_scale_224.py [--n 20000] [--workdir DIR]
     (prints one JSON line: wall time, each step's time and sampled peak RSS, the process's ru_maxrss; the
     table in bench/results/scale_224.md was written from it)

Workload: ``bench_scale.make_parquet(n)`` (coloured MNIST digits over scikit-image photo crops, 32×32 PNG bytes
in one parquet file) scored at ``image_size = 224`` (upscaled) with ``--model resnet18 --weights FILE``, FILE
being torchvision's ``resnet18(weights=None)`` state dict saved with ``torch.save`` (random weights, no
download), every score, the default recipe (frozen backbone on CPU), PCA map.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
sys.path.insert(0, str(HERE.parent))


def main() -> None:
    import torch
    import torchvision

    from bench.bench_scale import RssSampler, make_parquet
    from core.pipeline import RunConfig, score_run

    ap = argparse.ArgumentParser()
    ap.add_argument("--n", type=int, default=20_000)
    ap.add_argument("--workdir", default="/tmp/infoscope-scale-224")
    args = ap.parse_args()
    work = Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    weights, data = work / "resnet18.pt", work / f"s{args.n}.parquet"
    if not weights.exists():
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), weights)
    if not data.exists():
        make_parquet(args.n, data)
    cfg = RunConfig(sources=[f"synth=parquet:{data}"], runs_dir=str(work / "runs"), name=f"r18_{args.n}", seed=0,
                    device="cpu", model="resnet18", weights=str(weights), image_size=224, map_method="pca")
    with RssSampler() as rss:
        t0 = time.perf_counter()
        run = score_run(cfg, report=rss.report)
        wall = time.perf_counter() - t0
    m = json.loads((run / "manifest.json").read_text())
    print(json.dumps({"n": args.n, "wall_s": round(wall, 1), "steps": m["steps"],
                      "step_peak_rss_mb": {k: round(v) for k, v in rss.peak.items()},
                      "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
                      "run": str(run), "test_acc": m["model"].get("test_acc"),
                      "features": {k: v.get("params", {}).get("features") for k, v in m["scores"].items()}}))


if __name__ == "__main__":
    main()
