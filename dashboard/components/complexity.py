"""Dataset-level CG quantities read from the manifest: data complexity yᵀH⁻¹y and the bound sqrt(2 yᵀH⁻¹y / n).

The engine (``core.scores.cg``) records them in ``manifest["scores"]["cg_score"]["info"]``: per class for the
score's own one-vs-rest problems (``class_complexity``), and for the whole dataset, per class against all other
rows and per source (``dataset_complexity``). Papers: Ki, Choi, Chung, ICLR 2023; Arora et al., ICML 2019.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.state import RunView

EXPLAIN = ("Data complexity yᵀH⁻¹y of the ±1 one-vs-rest targets under the two-layer ReLU NTK Gram H (the CG "
           "score's kernel; *Ki, Choi, Chung, ICLR 2023*), and the leading term sqrt(2·yᵀH⁻¹y / n) of the test-error "
           "bound of a trained two-layer network (*Arora et al., ICML 2019*). Higher = harder to learn from these "
           "examples; label noise raises it. A bound above 1 says nothing on its own: compare it across classes or "
           "sources.")


def info(rv: RunView) -> dict:
    """The CG score's info in the manifest ({} when the run has none)."""
    return ((rv.run.manifest.get("scores", {}).get("cg_score") or {}).get("info") or {})


def dataset(rv: RunView) -> dict | None:
    d = info(rv).get("dataset_complexity")
    return d if isinstance(d, dict) and "complexity" in d else None


def class_table(rv: RunView) -> pd.DataFrame:
    """One row per class: complexity and bound against all rows, and for the score's own problems."""
    inf = info(rv)
    d = (inf.get("dataset_complexity") or {}).get("classes") or {}
    c = inf.get("class_complexity") or {}
    names = list(dict.fromkeys([*d, *c]))
    rows = []
    for name in names:
        a, b = d.get(name) or {}, c.get(name) or {}
        rows.append({"class": str(name), "yᵀH⁻¹y (vs all rows)": a.get("complexity"),
                     "bound (vs all rows)": a.get("bound"), "yᵀH⁻¹y (score problems)": b.get("complexity"),
                     "problem size n": b.get("n"), "bound (score problems)": b.get("bound")})
    return pd.DataFrame(rows)


def source_table(rv: RunView) -> pd.DataFrame:
    g = (dataset(rv) or {}).get("groups") or {}
    return pd.DataFrame([{"source": s, "rows": v.get("n"), "yᵀH⁻¹y (mean over classes)": v.get("complexity"),
                          "bound": v.get("bound")} for s, v in g.items()])


def overview_block(rv: RunView) -> None:
    """The dataset's complexity and bound as metrics, with the formula and papers."""
    d = dataset(rv)
    if d is None:
        st.caption("Data complexity (CG): not recorded in this run (needs `cg_score` with `dataset_level`).")
        return
    st.subheader("Data complexity (CG)")
    c = st.columns(3)
    c[0].metric("yᵀH⁻¹y (class mean)", f"{d['complexity']:.4g}", help="yᵀH⁻¹y averaged over the classes")
    c[1].metric("bound sqrt(2yᵀH⁻¹y/n)", f"{d['bound']:.3g}")
    c[2].metric("rows n", f"{d['n']:,}", help="a seeded subsample of the run" if d.get("subsampled") else None)
    sub = f" on a seeded subsample of {d['n']:,} of {d['n_total']:,} rows" if d.get("subsampled") else ""
    st.caption(EXPLAIN + f" One-vs-rest per class against all other rows{sub}; per class on the Classes page, per "
               "source on the Sources page.")
