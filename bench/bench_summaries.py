"""Summaries on a scored run: injected mislabels kept, information left out, retrained accuracy vs random.

Usage (the demo run takes ~90 s to score once, then reuse it)::

    python -m core.cli demo --no-app --runs-dir /tmp/sumruns
    python bench/bench_summaries.py --run /tmp/sumruns/<run_id>      # writes bench/results/summaries.md

For every method (top / class-balanced / diversity by ``si_function``, and iterative SI pruning) and budget
(100, 1000), with the default toggle (flagged and removed images left out) and without it, the table gives the
share of injected mislabels (``is_mislabeled``) and adversarial copies in the summary, how many held-out rows it
holds, the information the left-out rows carry about a ridge head on the embeddings (functional, nats; lower =
the summary keeps more) against 5 random subsets of the same size, and (toggle on) the held-out accuracy of a
logistic head fitted on the summary against 5 random subsets of the same size (``core.summary_eval``).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import pandas as pd

from core.selection import plan_summary, summary_information
from core.store import open_run
from core.summary_eval import evaluate_run_summary

METHODS = (("top", "si_function"), ("class_balanced", "si_function"), ("diversity", "si_function"),
           ("iterative", "si_function"))


def _md(t: pd.DataFrame) -> str:
    lines = ["| " + " | ".join(t.columns) + " |", "| " + " | ".join("---" for _ in t.columns) + " |"]
    lines += ["| " + " | ".join(str(v) for v in r) + " |" for r in t.itertuples(index=False)]
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--run", required=True, help="a scored run directory (e.g. the demo run)")
    ap.add_argument("--budgets", default="100,1000")
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "summaries.md"))
    ap.add_argument("--no-retrain", action="store_true", help="skip the retrained-accuracy column")
    ap.add_argument("--title", default="Summaries on the demo run", help="the section's heading")
    ap.add_argument("--made-by", default="`infoscope demo --no-app`", help="how the run was made (stated in the text)")
    args = ap.parse_args()
    run = open_run(args.run)
    df = run.df.merge(run.decisions.latest()[["sample_id", "decision", "relabel_to"]], on="sample_id", how="left")
    emb = np.asarray(run.embeddings())
    ev = (df["split"] == "test").to_numpy()
    rows = []
    for budget in (int(b) for b in args.budgets.split(",")):
        for method, score in METHODS:
            for exclude in (True, False):
                t0 = time.perf_counter()
                plan = plan_summary(df, emb, budget, method, score=score, exclude_flagged=exclude,
                                    exclude_removed=exclude)
                sel = df.iloc[plan.idx]
                secs = time.perf_counter() - t0
                info = summary_information(emb, plan, eval_mask=ev)
                row = {"method": method, "score": score if method != "iterative" else "ridge LOO SI",
                       "budget": budget, "flagged/removed left out": "yes" if exclude else "no",
                       "injected mislabels": f"{sel['is_mislabeled'].mean():.1%}" if "is_mislabeled" in sel else "—",
                       "adversarial copies": f"{sel['is_adversarial'].mean():.1%}" if "is_adversarial" in sel else "—",
                       "held-out rows": int((sel["split"] == "test").sum()),
                       "fallback": plan.fallback or "—",
                       "info left out (nats)": f"{info['function_nats']:.4f}",
                       "random, same size": f"{info['random_function_nats']:.4f} ± {info['random_function_sd']:.4f}",
                       "select (s)": f"{secs:.2f}"}
                if exclude and not args.no_retrain:
                    res = evaluate_run_summary(args.run, sel["sample_id"].tolist(), k_random=5, model="logistic")
                    row["held-out acc: summary"] = f"{res.summary_acc:.1%}"
                    row["random (mean ± sd of 5)"] = f"{res.random_mean:.1%} ± {res.random_sd:.1%}"
                rows.append(row)
                print(row, flush=True)
    table = pd.DataFrame(rows).fillna("—")
    text = (f"## {args.title}\n\n"
            f"Run: `{run.path.name}` ({len(df):,} rows; {int(df['is_mislabeled'].sum()) if 'is_mislabeled' in df else 0:,} "
            f"injected mislabels), made by {args.made_by}. Command: `python bench/bench_summaries.py --run RUN"
            f" --budgets {args.budgets}`. The dashboard's default method is diversity-aware. Information left out: "
            "½·mean over held-out x of ‖f_pool(x) − f_summary(x)‖²/σ² for a ridge head on the embeddings (σ = 1, "
            "λ = mean squared feature norm), lower = the summary keeps more. Held-out accuracy: a logistic head on "
            "the embeddings fitted on the summary vs 5 random subsets of the same size of the eligible rows, "
            "evaluated on eligible held-out rows outside the summary.\n\n"
            + _md(table) + "\n")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
