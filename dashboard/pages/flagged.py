"""Flagged: suspected mislabeled / adversarial images ranked by suspicion, with one-click decisions and keyboard
review on the cards (``components.card_review``: K / X / L / T / U / ← → act on the outlined card; a decision
reruns only the cards it changed). Filters, page, page size and the focused card live in the URL."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard.components import bulk_relabel, card_review, detail, images, page, quality, scores, views

rv = page.start()
PER_PAGE = [8, 16, 24, 48]
# filters, page, page size and the focused card survive reloads and page changes, and live in the URL
views.sync("flagged", {"flag_kind": views.one_of(["mislabeled", "adversarial"]), "flag_hide": views.boolean,
                       "flag_thr_*": views.number_in(0.0, 1.0), "flag_widen_*": views.boolean,
                       "flag_per_page": views.one_of(PER_PAGE), "flag_page_*": views.positive_int},
           extra={card_review.FOCUS: card_review.text_id})
st.title("Flagged images")
flags_trusted = quality.banner(rv.run.manifest)
st.caption("Images the engine suspects are mislabeled or adversarial, most suspicious first. Decide on each: "
           "keep it, remove it, relabel it, or tag it for later. Every decision can be undone (sidebar).")

KINDS = {"mislabeled": "Suspected mislabeled", "adversarial": "Suspected adversarial"}
kinds = [k for k in KINDS if f"flag_{k}" in rv.columns or f"suspicion_{k}" in rv.columns]
if not kinds:
    st.info("This run has no flags (`flag_mislabeled`, `flag_adversarial`, `suspicion_*`): the engine was run "
            "without the flagging step.", icon=":material/info:")
    st.stop()
c1, c2, c3 = st.columns([1.4, 2, 1])
kind = c1.radio("Show", kinds, format_func=KINDS.get, key="flag_kind")
flag_col, susp_col, truth_col = f"flag_{kind}", f"suspicion_{kind}", f"is_{kind}"
has_susp = susp_col in rv.columns and rv.count(f'"{susp_col}" IS NOT NULL') > 0
has_flag = flag_col in rv.columns


if has_flag:
    engine_where, engine_params = f'coalesce("{flag_col}", FALSE)', []
else:  # an older run with suspicion ranks only
    engine_where, engine_params = "FALSE", []
widen = has_susp and c2.toggle("Widen beyond the engine's flags", value=not has_flag, key=f"flag_widen_{kind}",
                               help="Off: exactly the rows the engine flagged (the same set Explore filters on). "
                                    "On: also every row whose suspicion rank is at or above the threshold.")
if widen:
    thr = c2.slider("Suspicion threshold (widens the flag set)", 0.0, 1.0, 0.9, step=0.01,
                    key=f"flag_thr_{kind}",
                    help="Rows with suspicion at or above the threshold are shown in addition to the engine's "
                         "flags. These extra rows are NOT flagged by the engine.")
    flagged_where = f'({engine_where} OR "{susp_col}" >= ?)'
    flagged_params = [*engine_params, thr]
else:
    thr = None
    flagged_where, flagged_params = engine_where, engine_params
hide = c3.toggle("Hide decided", value=False, key="flag_hide")

# ---- precision / recall against injected ground truth --------------------------------------------------
if truth_col in rv.columns and rv.count(f'coalesce("{truth_col}", FALSE)') > 0:
    r = rv.sql(f'SELECT count(*) FILTER (WHERE {flagged_where}) AS flagged, '
               f'count(*) FILTER (WHERE {flagged_where} AND coalesce("{truth_col}", FALSE)) AS hit, '
               f'count(*) FILTER (WHERE coalesce("{truth_col}", FALSE)) AS truth FROM samples',
               flagged_params * 2).iloc[0]
    prec = r["hit"] / r["flagged"] if r["flagged"] else float("nan")
    rec = r["hit"] / r["truth"] if r["truth"] else float("nan")
    m = st.columns(4)
    m[0].metric("Shown" if widen else "Flagged by the engine", f"{int(r['flagged']):,}")
    m[1].metric("Injected (ground truth)", f"{int(r['truth']):,}")
    m[2].metric("Precision", "—" if pd.isna(prec) else f"{prec:.0%}",
                help="Share of flagged images that really were corrupted.")
    m[3].metric("Recall", "—" if pd.isna(rec) else f"{rec:.0%}",
                help="Share of corrupted images that are flagged.")
else:
    st.caption("No ground truth in this run (no corruptions were injected), so precision and recall are unknown.")

where = flagged_where + (" AND decision IS NULL" if hide else "")
n = rv.count(where, flagged_params)
if n == 0:
    if not flags_trusted:
        st.info("The engine withheld every flag because the model failed the quality check above. Turn on "
                "\"Widen beyond the engine's flags\" to browse the suspicion ranking anyway.",
                icon=":material/info:")
    else:
        st.success("Nothing to review: no image is flagged" + (" (or all are decided)." if hide else "."),
                   icon=":material/task_alt:")
    st.stop()
order = susp_col if has_susp else None
# previous / next in the detail view walk through every flagged image in this order, not only this page
review_order = rv.select(where, flagged_params, columns=["sample_id"], order_by=order, descending=True)[
    "sample_id"].astype(str).tolist()
pc0, pc1, pc2 = st.columns([1, 1, 3])
per_page = pc0.selectbox("Per page", PER_PAGE, key="flag_per_page")
pages = (n + per_page - 1) // per_page
# a key turned the page: show the page that holds the card it moved to (with "hide decided" the rows shift)
card_review.seek(review_order, per_page, f"flag_page_{kind}")
if st.session_state.get(f"flag_page_{kind}", 1) > pages:
    st.session_state[f"flag_page_{kind}"] = pages
page = pc1.number_input(f"Page (of {pages})", min_value=1, max_value=pages, value=1, key=f"flag_page_{kind}")
pc2.caption(f"{n:,} image(s): " + ("the engine's flags plus every row with suspicion ≥ "
                                     f"{thr:.2f}" if widen else "exactly the engine's flags") +
            ", most suspicious first.")
rows = rv.select(where, flagged_params, order_by=order, descending=True, limit=per_page,
                 offset=(page - 1) * per_page)
shown_scores = [s for s in ("si_function", "cg_score", "loss", "margin", "uniqueness") if s in scores.available(rv)]
classes = list(rv.run.class_names)

# neighbour labels in one query
neigh = {sid: rv.run.neighbors(sid, 6) for sid in rows["sample_id"]}
all_n = sorted({i for v in neigh.values() for i in v})
labels_of = {}
if all_n:
    from core.store import build_filter

    nl = rv.select(*build_filter(ids=all_n), columns=["sample_id", "label_name", "image_path"])
    labels_of = dict(zip(nl["sample_id"], zip(nl["label_name"], nl["image_path"], strict=True), strict=True))




undecided = rv.select(where + " AND decision IS NULL", flagged_params, columns=["sample_id"], order_by=order,
                      descending=True, limit=1)["sample_id"].astype(str).tolist()
pc2.button("Review in the detail view", key="flag_keyboard", icon=":material/keyboard:", on_click=detail.open_detail,
           args=((undecided or review_order)[0], review_order), shortcut="Shift+Enter",
           help="Opens the first undecided image in the detail view (the same keys as on the cards): K keep · X remove · L relabel to the suggestion · "
                "T tag · U undo · ← → previous / next")
bulk_relabel.panel(rv, where, flagged_params, key=f"flag_bulk_{kind}")


def suggestion_of(row: pd.Series) -> str | None:
    """The class L relabels to: the engine's suggested label, else the prediction; None when that is the given
    label or the kind is adversarial (an attacked copy keeps its label)."""
    if kind != "mislabeled":
        return None
    sug = row.get("suggested_label_name")
    target = sug if isinstance(sug, str) and sug in classes else str(row.get("pred_name", row.get("pred", "")))
    return target if target in classes and target != str(row["label_name"]) else None


def card(i: int, row: pd.Series) -> None:
    """Card ``i`` of the page: a keyed fragment (``card_review``), so a decision or a key reruns this card only."""
    sid = str(row["sample_id"])
    if detail._fragment_rerun():  # decisions made since the page ran
        fresh = rv.select('"sample_id" = ?', [sid])
        row = fresh.iloc[0] if len(fresh) else row
    with st.container(border=True, key=card_review.BOX_KEY.format(i=i)):
        card_review.focus_badge(sid)
        a, b, c = st.columns([1, 2.4, 2.6])
        arr, found = images.thumbnail(rv, row.get("image_path"), 128)
        a.image(arr, caption=sid if found else f"{sid} · image file missing", width="stretch", alt=sid)
        with a:
            detail.open_button(sid, review_order, key=f"fl_open_{sid}")
        pred = row.get("pred_name", row.get("pred", "—"))
        prob = row.get("pred_prob")
        b.markdown(f"**Given label:** `{row['label_name']}`  \n**Predicted:** `{pred}`"
                   + (f" ({float(prob):.0%})" if pd.notna(prob) else ""))
        if has_susp:
            b.progress(min(max(float(row[susp_col]), 0.0), 1.0), text=f"suspicion {float(row[susp_col]):.2f}")
        if widen and has_flag and not bool(row.get(flag_col)):
            b.caption("Not flagged by the engine (shown because its suspicion is above the threshold).")
        reason = row.get("flag_reason")
        if isinstance(reason, str) and reason:
            b.caption(f"Why: {reason}")
        sug = row.get("suggested_label_name") if kind == "mislabeled" else None  # an attacked copy keeps its label
        if isinstance(sug, str) and sug:
            agrees = bool(row.get("suggestion_agrees"))
            text = row.get("suggestion") if isinstance(row.get("suggestion"), str) else ""
            b.markdown(f"**Suggested label:** `{sug}` " + ("(model and neighbours agree)" if agrees else
                                                           "(model and neighbours **disagree**)"))
            if text and not agrees:
                b.caption(text)
        if shown_scores:
            # percentiles within the run: raw values such as 9.6e-06 mean nothing on their own
            b.caption(" · ".join(
                f"{scores.label(s)} p{images.percentile_in(images.sorted_values(rv.static_key, rv, s), float(row[s])):.0f}"
                for s in shown_scores if pd.notna(row[s])))
        dec = row.get("decision")
        if isinstance(dec, str) and dec:
            b.markdown(f"Decision: **{dec}**" + (f" → `{row['relabel_to']}`" if dec == "relabel" else ""))
        tags = row.get("tags")
        if isinstance(tags, str) and tags:
            b.caption(f"Tags: {tags}")
        ids = neigh.get(sid, [])
        if ids:
            c.caption("Nearest neighbours (feature space)")
            thumbs = [images.thumbnail(rv, labels_of.get(nb, ("", None))[1], 64)[0] for nb in ids]
            c.image(thumbs, caption=[str(labels_of.get(nb, ("?",))[0]) for nb in ids], width=58)
        else:
            c.caption("No stored neighbours for this image.")
        k1, k2, k3 = c.columns(3)
        k1.button("Keep", key=f"keep_{sid}", icon=":material/check:", width="stretch", on_click=card_review.record,
                  args=(rv, sid, "keep"))
        k2.button("Remove", key=f"rm_{sid}", icon=":material/delete:", width="stretch", on_click=card_review.record,
                  args=(rv, sid, "remove"))
        k3.button("Tag review", key=f"tag_{sid}", icon=":material/bookmark:", width="stretch",
                  on_click=card_review.record, args=(rv, sid, "tag", "review"))
        r1, r2 = c.columns([1, 2])
        fallback = str(row["label_name"]) if kind == "adversarial" else str(pred)  # an attacked copy keeps its label
        suggested = sug if isinstance(sug, str) and sug in classes else fallback
        default = classes.index(suggested) if suggested in classes else 0
        r1.selectbox("Relabel to", classes, index=default, key=f"to_{sid}", label_visibility="collapsed")
        r2.button("Relabel to this class", key=f"rl_{sid}", icon=":material/label:", width="stretch",
                  on_click=lambda s=sid: card_review.record(rv, s, "relabel", st.session_state.get(f"to_{s}")))


ids_on_page = rows["sample_id"].astype(str).tolist()
start = (int(page) - 1) * per_page
card_review.set_deck(ids_on_page, {str(r["sample_id"]): suggestion_of(r) for _, r in rows.iterrows()},
                     f"flag_page_{kind}", int(page), pages, before=review_order[start - 1] if start > 0 else None,
                     after=review_order[start + len(ids_on_page)] if start + len(ids_on_page) < len(review_order)
                     else None)
card_review.key_bar(rv)
for i, (_, row) in enumerate(rows.iterrows()):
    card_review.card_fragment(card, i)(i, row)
