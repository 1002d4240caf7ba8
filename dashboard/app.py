"""infoscope dashboard entry point: page config, logo, navigation.

Run: ``streamlit run dashboard/app.py -- --run PATH --runs-dir DIR`` (or ``infoscope app``).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from dashboard.launch import address_problem

HERE = Path(__file__).resolve().parent
ASSETS = HERE.parent / "assets"
LOGO = ASSETS / "logo.png"

st.set_page_config(page_title="infoscope", page_icon=str(LOGO) if LOGO.exists() else "🔭", layout="wide",
                   initial_sidebar_state="expanded")
if LOGO.exists():
    st.logo(str(LOGO), size="large", icon_image=str(ASSETS / "logo-icon.png"))

# started as `streamlit run dashboard/app.py` from outside the repo, Streamlit listens on all interfaces:
# show nothing of any run unless it is bound to loopback or the user opted in (INFOSCOPE_ALLOW_REMOTE=1)
_problem = address_problem(st.get_option("server.address"))
if _problem:
    st.error(_problem, icon=":material/gpp_bad:")
    st.stop()

PAGES = [
    st.Page("pages/overview.py", title="Overview & summary", icon=":material/dashboard:", default=True),
    st.Page("pages/classes.py", title="Classes", icon=":material/category:"),
    st.Page("pages/sources.py", title="Sources", icon=":material/compare_arrows:"),
    st.Page("pages/flagged.py", title="Flagged", icon=":material/flag:"),
    st.Page("pages/health.py", title="Dataset health", icon=":material/health_and_safety:"),
    st.Page("pages/confusion.py", title="Confusion", icon=":material/grid_on:"),
    st.Page("pages/duplicates.py", title="Near-duplicates", icon=":material/content_copy:"),
    st.Page("pages/similar.py", title="More like this", icon=":material/image_search:"),
    st.Page("pages/score.py", title="Score a dataset", icon=":material/play_circle:"),
    st.Page("pages/explore.py", title="Explore & export", icon=":material/grid_view:"),
]


# Each page starts with ``components.page.start()``: run picker, open run, undo panel (see state.py).
st.navigation(PAGES).run()
