"""Write ``docs/evidence.md`` (the README section "What the scores tell you") from bench/results/evidence_*.json.

Each finding is the conclusion its script wrote (numbers included), the scale it ran at, and links to its table
and plot. Run after the evidence scripts: ``python bench/evidence_docs.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ITEMS = [  # (results name, heading, what the question is)
    ("summarization_4v9", "Summarizing a dataset (MNIST 4 vs 9)",
     "Remove the least informative training images first: how much can go before test accuracy drops?"),
    ("summarization_mnist10", "Summarizing a dataset (MNIST, 10 classes)",
     "The same on all ten digits of MNIST-5k."),
    ("undersampled", "Under-sampled classes",
     "Keep one class at 5–50% of its size: does it stand out, and does the Classes page name it first?"),
    ("subclass", "Under-sampled sub-class",
     "A class made of a common and a rare digit: does the rare part carry more unique information?"),
    ("sources", "Comparing data sources",
     "MNIST-5k and scikit-learn's digits in one run: which source is more informative, and by how much?"),
    ("detection", "Mislabeled and adversarial images",
     "Flipped labels and attacked copies: how well does each score rank them, next to cleanlab?"),
    ("cost", "Cost", "Wall time of each score, and how it grows with the number of images."),
]


def main() -> None:
    out = ["## What the scores tell you", "",
           "Every number below was measured by a script in `bench/` on real data (MNIST-5k and scikit-learn's "
           "digits, both bundled) with the same code paths `infoscope score` uses; each script is seeded and "
           "re-runs with the command shown in its table. Where a claim of the papers did not reproduce, the text "
           "says so. Full tables: [`bench/RESULTS.md`](bench/RESULTS.md); the Overview page's Evidence view reads "
           "the same files (`bench/results/evidence_*.json`).", ""]
    for name, head, question in ITEMS:
        f = ROOT / "bench" / "results" / f"evidence_{name}.json"
        out.append(f"### {head}")
        out.append("")
        out.append(f"*{question}*")
        out.append("")
        if not f.exists():
            out += ["Not measured yet.", ""]
            continue
        d = json.loads(f.read_text())
        scale = d.get("scale", "")
        tag = {"full": "", "reduced": " (reduced scale; see the table for the exact settings)",
               "quick": " (smoke-test scale only: NOT evidence)"}.get(scale, "")
        out.append(f"{d['conclusion']}{tag}")
        out.append("")
        links = [f"[table](bench/results/evidence_{name}.md)"] + [f"[plot]({p})" for p in d.get("plots", [])]
        out.append(f"{' · '.join(links)} · `{d['command']}` · {d['machine'].split(',')[0]}, {d['date']}")
        out.append("")
    path = ROOT / "docs" / "evidence.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("\n".join(out))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
