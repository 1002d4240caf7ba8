"""Score a dataset: sources, model and scores chosen on a page; the engine runs as its own process (``infoscope
score``) with a progress bar fed by its progress lines; when it is done, open the run."""

from __future__ import annotations

import time
import uuid

import streamlit as st

from core.scores.registry import SCORE_SPECS
from dashboard import state
from dashboard.components import jobs

JOB = "score_job"
POLL_S = 1.0

st.title("Score a dataset")
st.caption("Score a new dataset without leaving the dashboard. The scoring engine runs as a separate "
           "`infoscope score` process (the dashboard itself never trains); its progress shows here, and the run "
           "opens when it is done.")
st.sidebar.markdown("### Run")
st.sidebar.caption(f"New runs are written under `{state.runs_dir()}`.")


def start_job(args: list[str]) -> None:
    job_id = uuid.uuid4().hex[:12]
    jobs.registry()[job_id] = jobs.start(args, state.runs_dir())
    st.session_state[JOB] = job_id



with st.form("score_form"):
    c1, c2 = st.columns([2, 1])
    specs = c1.text_area("Sources, one per line (NAME=SPEC)", value="mnist5k", key="score_sources", height=110,
                         help="mnist5k · digits · folder:PATH (one sub-folder per class) · csv:PATH (path,label"
                              "[,source]) · npz:PATH (arrays x, y). Relative paths start from the folder the app "
                              "was started in.")
    name = c2.text_input("Run name", value="", key="score_name", placeholder="e.g. my-digits")
    model = c2.selectbox("Model", ["cnn", "mlp", "resnet18"], key="score_model")
    epochs = c2.number_input("Epochs", min_value=1, max_value=200, value=8, key="score_epochs")
    names = list(SCORE_SPECS)
    chosen = st.multiselect("Scores", names, default=names, key="score_scores")
    d1, d2, d3 = st.columns(3)
    map_method = d1.selectbox("Map", ["umap", "pca"], key="score_map")
    device = d2.selectbox("Device", ["auto", "cpu", "cuda"], key="score_device")
    noise = d3.number_input("Inject label noise (fraction, 0 = none)", min_value=0.0, max_value=0.9, value=0.0,
                            step=0.05, key="score_noise")
    submitted = st.form_submit_button("Score", type="primary", icon=":material/play_arrow:",
                                      disabled=st.session_state.get(JOB) is not None)
if submitted:
    lines = [s.strip() for s in specs.splitlines() if s.strip()]
    if not lines:
        st.error("Give at least one source.")
    elif not chosen:
        st.error("Choose at least one score.")
    else:
        args = [a for s in lines for a in ("--source", s)]
        args += ["--model", model, "--epochs", str(int(epochs)), "--scores", ",".join(chosen), "--map", map_method,
                 "--device", device]
        if name.strip():
            args += ["--name", name.strip()]
        if noise > 0:
            args += ["--label-noise", f"{float(noise):g}"]
        start_job(args)


@st.fragment(run_every=POLL_S)
def job_status() -> None:
    """The running job's progress (reruns alone every second while the page is open)."""
    job_id = st.session_state.get(JOB)
    job = jobs.registry().get(job_id) if job_id else None
    if job is None:
        return
    p = job.progress()
    rc = job.returncode
    elapsed = time.time() - job.started
    if rc is None:
        st.progress(p.fraction, text=f"**{p.step or 'starting'}** {p.message} · {elapsed:.0f} s")
        if p.done:
            st.caption("Finished: " + " · ".join(f"{s} {t:.1f} s" for s, t in p.done))
        if st.button("Cancel", key="score_cancel", icon=":material/stop:"):
            job.cancel()
        return
    if rc == 0 and job.run_path:
        st.success(f"Scored in {elapsed:.0f} s: `{job.run_path}`", icon=":material/task_alt:")
        if st.button("Open the run", key="score_open", type="primary", icon=":material/open_in_new:"):
            st.session_state[state.RUN_KEY] = job.run_path
            st.session_state.pop(JOB, None)
            st.switch_page("pages/overview.py")
    else:
        st.error(f"Scoring failed (exit status {rc}): {p.error or (job.err_lines[-1] if job.err_lines else '?')}",
                 icon=":material/error:")
        with st.expander("Output"):
            st.code("\n".join(job.err_lines[-40:]) or "(nothing)")
    if st.button("Score another dataset", key="score_reset"):
        st.session_state.pop(JOB, None)
        st.rerun()


job_status()
