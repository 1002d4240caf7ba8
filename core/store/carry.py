"""Carry a person's decisions over when a dataset is scored again.

Runs are immutable and re-scoring writes a new run, so without this every keep / remove / relabel / tag would
stay behind in the old run's ``curation.sqlite``. ``carry_over`` finds the newest earlier complete run of the same
dataset (same ``sources`` in the manifest's config, and the same run name) in the same runs folder and copies its
current decisions into the new run's log **by sample id**: one batch per (action, value), authored
``carry-over:<old run id>``, so the dashboard can show them and undo them like any other batch. Decisions for
sample ids the new run does not have, and relabels to classes it does not have, are skipped and counted.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from core.store import layout
from core.store.decisions import Decisions
from core.store.run import COMPLETE, read_status

AUTHOR_PREFIX = "carry-over:"


@dataclass
class CarryReport:
    """What ``carry_over`` did."""

    source_run: str | None = None
    carried: int = 0
    skipped_unknown_id: int = 0
    skipped_unknown_class: int = 0
    batches: list[int] = field(default_factory=list)


def _identity(manifest: dict) -> tuple[str, tuple[str, ...]]:
    cfg = manifest.get("config") or {}
    sources = cfg.get("sources") or [s.get("spec", s.get("name", "")) for s in manifest.get("sources") or []]
    return str(manifest.get("name") or ""), tuple(str(s) for s in sources)


def _manifest(path: Path) -> dict | None:
    try:
        return json.loads((path / layout.MANIFEST).read_text())
    except (OSError, ValueError):
        return None


def previous_run(new_run: str | Path) -> Path | None:
    """The newest complete run before ``new_run`` in the same folder with the same name and sources."""
    new = Path(new_run)
    m = _manifest(new)
    if m is None:
        return None
    ident = _identity(m)
    candidates = []
    for d in new.parent.iterdir():
        if not d.is_dir() or d.resolve() == new.resolve() or d.name.startswith("."):
            continue
        pm = _manifest(d)
        if pm is None or _identity(pm) != ident or read_status(d)[0] != COMPLETE:
            continue
        key = (str(pm.get("created_at", "")), d.name)
        if key < (str(m.get("created_at", "")), new.name):  # written before the new run
            candidates.append((*key, d))
    return max(candidates)[2] if candidates else None


def carry_over(new_run: str | Path, source_run: str | Path | None = None) -> CarryReport:
    """Copy the current decisions of ``source_run`` (default: ``previous_run(new_run)``) into ``new_run``'s log.

    Does nothing when the new run's log already has a batch (it was carried over or curated before)."""
    new = Path(new_run)
    src = Path(source_run) if source_run is not None else previous_run(new)
    report = CarryReport(source_run=src.name if src is not None else None)
    if src is None or not (src / layout.CURATION).exists():
        return report
    m = _manifest(new) or {}
    ids = set(pd.read_parquet(new / layout.SAMPLES, columns=["sample_id"])["sample_id"].astype(str))
    classes = [str(c) for c in m.get("class_names", [])]
    target = Decisions(new / layout.CURATION, valid_ids=ids, class_names=classes or None)
    if not target.batches().empty:
        return report
    old = Decisions(src / layout.CURATION).latest()
    if old.empty:
        return report
    known = old["sample_id"].astype(str).isin(ids)
    report.skipped_unknown_id = int((~known).sum())
    old = old[known]
    author = f"{AUTHOR_PREFIX}{src.name}"
    note = f"carried over from run {src.name}"
    status = old[old["decision"].notna()]
    rel = status["decision"] == "relabel"
    bad = rel & ~status["relabel_to"].astype(str).isin(classes) if classes else rel & False
    report.skipped_unknown_class = int(bad.sum())
    status = status[~bad]
    for (action, value), part in status.groupby([status["decision"], status["relabel_to"].fillna("")], sort=True):
        report.batches.append(target.record(part["sample_id"].astype(str).tolist(), str(action),
                                            str(value) if action == "relabel" else None, note, author=author))
    tags = old.assign(tag=old["tags"].fillna("").str.split(",")).explode("tag")
    tags = tags[tags["tag"].astype(str) != ""]
    for tag, part in tags.groupby("tag", sort=True):
        report.batches.append(target.record(part["sample_id"].astype(str).tolist(), "tag", str(tag), note,
                                            author=author))
    report.carried = len(set(status["sample_id"].astype(str)) | set(tags["sample_id"].astype(str)))
    return report


def carried_batches(decisions: Decisions) -> pd.DataFrame:
    """The live (not undone) batches a carry-over wrote, newest first."""
    b = decisions.batches()
    return b[(~b["undone"]) & b["author"].fillna("").str.startswith(AUTHOR_PREFIX)]
