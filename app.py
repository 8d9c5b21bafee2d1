"""Circuit Explorer: the Streamlit entry point (``streamlit run app.py``).

Draws the shared sidebar (model, dtype, device, prompt) and hands over to the page
picked in the navigation. Pages are discovered from ``app_pages/N_Title_words.py`` (not ``pages/``: Streamlit would also route that folder by itself, and a
link straight to a page then flashed "Page not found"):
the number orders them, the rest is the title, the lower-cased words the URL path.
"""

from __future__ import annotations

import logging
from pathlib import Path

import streamlit as st

from ui.auth import require_sign_in
from ui.errors import guard
from ui.links import take_link_state
from ui.notebook_export import sidebar_button
from ui.widgets import sidebar

PAGES_DIR = Path(__file__).resolve().parent / "app_pages"
PAGE_ICON = Path(__file__).resolve().parent / "ui" / "static" / "icon.svg"

logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def discover_pages() -> list[st.Page]:
    pages = []
    files = sorted(PAGES_DIR.glob("[0-9]*_*.py"), key=lambda p: (int(p.name.split("_", 1)[0]), p.name))
    for i, path in enumerate(files):
        words = path.stem.split("_", 1)[1]
        title = words.replace("_", " ").replace(" and ", " & ")
        pages.append(st.Page(str(path), title=title, url_path=words.lower(), default=(i == 0)))
    return pages


# A local SVG (sent inline as a data: URL): a ":material/..." page icon makes the browser fetch it from
# fonts.gstatic.com, which fails offline and leaks a request from a private deployment.
st.set_page_config(page_title="Circuit Explorer", page_icon=str(PAGE_ICON), layout="wide")
with guard("checking the sign-in"):
    require_sign_in()  # off by default; when on, no page runs for a visitor who is not signed in and allowed
navigation = st.navigation(discover_pages())
with guard("setting up the sidebar"):
    take_link_state()  # an "Open in" link followed in this session: its values, not the session's
    sidebar()
    sidebar_button()  # the notebook of this session's runs, built on click
navigation.run()
