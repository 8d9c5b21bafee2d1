"""The app's navigation: pages discovered from ``app_pages/N_Title_words.py``, grouped in sections.

N orders the pages (1, 2, 3, ... without gaps), the words after it are the title and, lower-cased,
the URL path. Every page is served at its own path (``/prompt_and_predictions``): the app's root is
a hidden start page that moves on to the first page, so no page hides behind the root's empty path.
A page whose words are not listed in ``SECTIONS`` still appears, under "More".
"""

from __future__ import annotations

from pathlib import Path

PAGES_DIR = Path(__file__).resolve().parents[1] / "app_pages"
START_PATH = "start"  # the hidden page at the root

# Section title -> the words of its pages' files (in the order the file numbers give).
SECTIONS: dict[str, tuple[str, ...]] = {
    "Look": ("Prompt_and_predictions", "Attention", "Logit_lens", "Direct_logit_attribution", "Compare_prompts"),
    "Intervene": ("Activation_patching", "Path_patching", "Ablation"),
    "Discover circuits": ("Head_detectors", "Circuits", "Circuit_discovery", "Attribution_graph"),
    "Features": ("Features",),
    "Data": ("Browse_examples",),
    "Guided story": ("Guided_story",),
}
OTHER_SECTION = "More"


def page_files(pages_dir: Path = PAGES_DIR) -> list[Path]:
    """The page files, in their number's order."""
    files = pages_dir.glob("[0-9]*_*.py")
    return sorted(files, key=lambda p: (int(p.name.split("_", 1)[0]), p.name))


def words(path: Path) -> str:
    """``7_Path_patching.py`` -> ``Path_patching``."""
    return path.stem.split("_", 1)[1]


def title(page_words: str) -> str:
    return page_words.replace("_", " ").replace(" and ", " & ")


def url_path(page_words: str) -> str:
    return page_words.lower()


def section_of(page_words: str) -> str:
    return next((name for name, members in SECTIONS.items() if page_words in members), OTHER_SECTION)


def page_file(page_words: str, pages_dir: Path = PAGES_DIR) -> str:
    """The file of the page with these words, as ``st.switch_page`` takes it (``app_pages/7_Path_patching.py``)."""
    for path in page_files(pages_dir):
        if words(path) == page_words:
            return f"{pages_dir.name}/{path.name}"
    raise KeyError(f"no page {page_words!r} in {pages_dir}")


def sectioned_files(pages_dir: Path = PAGES_DIR) -> dict[str, list[Path]]:
    """Section title -> its page files; sections in the order of their first page."""
    out: dict[str, list[Path]] = {}
    for path in page_files(pages_dir):
        out.setdefault(section_of(words(path)), []).append(path)
    return out


def build_navigation():
    """``st.navigation`` over the sections, run from app.py; returns the page to run."""
    import streamlit as st

    sections = {
        name: [st.Page(str(path), title=title(words(path)), url_path=url_path(words(path))) for path in files]
        for name, files in sectioned_files().items()
    }
    first = next(iter(sections.values()))[0]
    start = st.Page(lambda: None, title="Start", url_path=START_PATH, default=True, visibility="hidden")
    page = st.navigation({"": [start], **sections}, expanded=True)  # every page listed, no "View 4 more"
    if page is start:  # the root: move on to the first page, keeping the link's query (its state)
        st.switch_page(first, query_params=st.query_params.to_dict())
    return page
