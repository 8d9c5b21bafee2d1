"""Circuit Explorer: the Streamlit entry point (``streamlit run app.py``).

Draws the shared sidebar (model, dtype, device, prompt) and hands over to the page
picked in the navigation. Pages are discovered from ``app_pages/N_Title_words.py`` (not ``pages/``:
Streamlit would also route that folder by itself) and grouped in sections (``ui.navigation``).

``streamlit run app.py`` first reads this file as a module (``__name__ != "__main__"``) and finds the
ASGI app below: the usual Streamlit server, plus a middleware that tells the browser the server's
base path (no 404s for ``<page>/_stcore/health`` on a deep link: ``ui.base_url``). Each session then
runs this file as its script (``__name__ == "__main__"``).
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

PAGE_ICON = Path(__file__).resolve().parent / "ui" / "static" / "icon.svg"

if __name__ == "__main__":
    from ui.auth import require_sign_in
    from ui.errors import guard
    from ui.link_store import compact_url, expand_link_state
    from ui.links import take_link_state
    from ui.navigation import build_navigation
    from ui.notebook_export import sidebar_button
    from ui.widgets import sidebar

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    # A local SVG (sent inline as a data: URL): a ":material/..." page icon makes the browser fetch it from
    # fonts.gstatic.com, which fails offline and leaks a request from a private deployment.
    st.set_page_config(page_title="Circuit Explorer", page_icon=str(PAGE_ICON), layout="wide")
    with guard("checking the sign-in"):
        require_sign_in()  # off by default; when on, no page runs for a visitor who is not signed in and allowed
    navigation = build_navigation()
    with guard("setting up the sidebar"):
        expand_link_state()  # a link whose long values were saved server-side: them, back in the query string
        take_link_state()  # an "Open in" link followed in this session: its values, not the session's
        sidebar()
        sidebar_button()  # the notebook of this session's runs, built on click
    try:
        navigation.run()
    finally:  # also after st.stop(): the address bar's link stays short enough to share and reload
        compact_url()
else:
    from starlette.middleware import Middleware

    from ui.base_url import BaseUrlMiddleware

    app = st.App(__file__, middleware=[Middleware(BaseUrlMiddleware)])
