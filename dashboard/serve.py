"""``python -m dashboard.serve run dashboard/app.py …``: Streamlit's own command line, with the multipage-v1
heuristic switched off.

Streamlit still treats a ``pages/`` folder next to the main script as a v1 multipage app until ``st.navigation``
has run once; when the first request of a fresh server is a deep link (``/explore?…``, e.g. a saved or shared
view), the whole server stays in that mode: file names in the sidebar, no page config, no logo. The app declares
its pages with ``st.navigation``, so the heuristic is turned off before the server starts.
"""

from __future__ import annotations

import sys


def main() -> int:
    from streamlit.runtime.pages_manager import PagesManager
    from streamlit.web.cli import main as streamlit_main

    PagesManager.uses_pages_directory = False
    return streamlit_main()


if __name__ == "__main__":
    sys.exit(main())
