"""Assemble bench/RESULTS.md from the per-script tables in bench/results/*.md (each script writes its own).

Run: python bench/collect.py
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
HEADER = """# Benchmark results

Every table below was written by the script named in its heading, on the machine it names (the project's
reference machine is a 2-core CPU, 24 GiB, no GPU). Speeds are ratios against a baseline measured in the same
run. Re-run a script to refresh its section, then `python bench/collect.py`.
"""


def main() -> None:
    parts = [HEADER]
    for f in sorted((HERE / "results").glob("*.md")):
        parts.append(f.read_text().strip() + "\n")
    out = HERE / "RESULTS.md"
    tmp = out.with_suffix(".md.tmp")
    tmp.write_text("\n".join(parts))
    tmp.replace(out)
    print(f"wrote {out} from {len(parts) - 1} section(s)")


if __name__ == "__main__":
    main()
