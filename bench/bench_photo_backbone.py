"""The 420-photo case with a backbone from a local weights file: every score, grayscale files in the RGB folder.

7 classes × 60 random 64×64 crops of scikit-image's sample photos (``tests/photo_crops.py``), of which every
``--gray-every``-th file is re-saved as a single-channel grayscale PNG. ``infoscope score --model resnet18
--weights FILE`` with every score and the default recipe (frozen backbone on CPU, images resized to 224×224),
where FILE is torchvision's ``resnet18(weights=None)`` state dict saved with ``torch.save`` (random weights: no
download; it stands in for a pretrained file, so the accuracy says nothing about pretrained features).

Records: completion, wall time of the CLI process and of each step, peak RSS of the CLI process
(``ru_maxrss`` of the child), the grayscale conversions counted in the manifest (``image_mode``), held-out
accuracy, the guardrail state and the flag counts. Run:
``OMP_NUM_THREADS=1 python bench/bench_photo_backbone.py`` (writes bench/results/photo_backbone.md).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from photo_crops import make_photo_crops  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--per-class", type=int, default=60)
    ap.add_argument("--gray-every", type=int, default=10)
    ap.add_argument("--model", default="resnet18")
    args = ap.parse_args()
    import torch
    import torchvision
    from PIL import Image

    with tempfile.TemporaryDirectory() as tmp:
        src = make_photo_crops(Path(tmp) / "photos", args.per_class, 64, seed=0)
        files = sorted(src.rglob("*.png"))
        gray = files[::args.gray_every]
        for f in gray:
            Image.open(f).convert("L").save(f)
        weights = Path(tmp) / f"{args.model}.pt"
        torch.manual_seed(0)
        torch.save(getattr(torchvision.models, args.model)(weights=None).state_dict(), weights)
        cmd = [sys.executable, "-m", "core.cli", "score", "--source", f"photos=folder:{src}", "--model", args.model,
               "--weights", str(weights), "--runs-dir", str(Path(tmp) / "runs"), "--device", "cpu", "--seed", "0"]
        t0 = time.perf_counter()
        res = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT,
                             env={**os.environ, "PYTHONPATH": str(ROOT)})
        wall = time.perf_counter() - t0
        peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        if res.returncode:
            print(res.stdout[-3000:], res.stderr[-3000:])
            raise SystemExit(res.returncode)
        run = Path(res.stdout.strip().splitlines()[-1])
        m = json.loads((run / "manifest.json").read_text())
        t = pd.read_parquet(run / "samples.parquet")
        modes = m.get("load_info", {}).get("image_mode") or m.get("image_mode")
        q = m["model"]["quality"]
        scores = sorted(m["scores"])
        finite = {c: int(np.isfinite(t[c]).sum()) for c in scores if c in t.columns}
    lines = [
        "## The 420-photo case with a backbone from a weights file (`bench/bench_photo_backbone.py`)",
        "",
        f"Machine: 2 CPU cores shared with other jobs (1-min load at the end {os.getloadavg()[0]:.1f}), no GPU. "
        "Reproduce: `OMP_NUM_THREADS=1 python bench/bench_photo_backbone.py`.",
        "",
        f"{len(files)} crops of 64 px (7 classes), {len(gray)} of them re-saved as grayscale PNG; `infoscope score "
        f"--model {args.model} --weights FILE` (torchvision's random-init state dict saved with `torch.save`), every "
        "score, default recipe (frozen backbone on CPU, 224×224).",
        "",
        f"- completed: yes, in {wall:.0f} s; peak RSS of the scoring process {peak:,.0f} MB",
        f"- image modes converted and counted (manifest `image_mode`): `{json.dumps(modes)}`",
        f"- held-out accuracy {q['heldout_acc']:.3f} (random weights: a weak head is expected), trust_flags = "
        f"{q['trust_flags']}; flagged mislabeled {int(t['flag_mislabeled'].sum())}, adversarial "
        f"{int(t['flag_adversarial'].sum())}",
        f"- scores computed (rows with a finite value): {json.dumps(finite)}",
        "- step wall times (s): " + ", ".join(f"{k} {v:.1f}" for k, v in m["steps"].items() if v >= 0.5),
        f"- CG features: {m['scores']['cg_score']['params'].get('features')}; SI features / head: "
        f"{m['scores']['si_function']['params'].get('features')} / {m['scores']['si_function']['params'].get('head')}; "
        f"prediction-depth probes pooled: {json.dumps(m['scores']['prediction_depth']['info'].get('pooled_probes'))}",
        "",
    ]
    print("\n".join(lines))
    (ROOT / "bench" / "results" / "photo_backbone.md").write_text("\n".join(lines))


if __name__ == "__main__":
    main()
