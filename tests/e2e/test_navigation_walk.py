"""Every page in a real Chromium, by its own URL and through the sidebar's sections: it draws, and the browser
console shows no error (no 404 for ``<page>/_stcore/health`` under a deep link, no "page not found")."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from ui import navigation  # noqa: E402

# A page whose heading is not its navigation title: the heading's start.
HEADINGS = {"Guided_story": "How the bundled model"}


def heading(words: str) -> str:
    return HEADINGS.get(words, navigation.title(words))


def _settle(page, title):
    page.wait_for_selector('[data-testid="stSidebar"]')
    page.wait_for_function("(t) => [...document.querySelectorAll('[data-testid=stMain] h1')]"
                           ".some(h => h.innerText.trim().startsWith(t))", arg=title, timeout=180_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)


def _watch(page):
    problems = []
    page.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("response", lambda r: problems.append(f"HTTP {r.status} {r.url}") if r.status >= 400 else None)
    return problems


def _check(page, title, problems):
    assert page.locator('[data-testid="stException"]').count() == 0, title
    assert page.get_by_text("Page not found").count() == 0, title
    assert problems == [], (title, problems)


def test_every_page_by_its_own_url_has_no_console_error(app_url, page):
    problems = _watch(page)
    first = navigation.page_files()[0]
    page.goto(f"{app_url}/")
    _settle(page, heading(navigation.words(first)))
    assert page.url.split("?")[0].endswith("/" + navigation.url_path(navigation.words(first)))  # the root moved on
    for path in navigation.page_files():
        words = navigation.words(path)
        page.goto(f"{app_url}/{navigation.url_path(words)}")
        _settle(page, heading(words))
        _check(page, heading(words), problems)


def test_the_sidebar_shows_the_sections_and_each_link_opens_its_page(app_url, page):
    problems = _watch(page)
    last = navigation.words(navigation.page_files()[-1])
    page.goto(f"{app_url}/{navigation.url_path(last)}")
    _settle(page, heading(last))
    nav = page.locator('[data-testid="stSidebarNav"]')
    for section, files in navigation.sectioned_files().items():
        assert nav.get_by_text(section, exact=True).count() >= 1, section  # its header (and a page of that name)
    assert nav.get_by_text("View", exact=False).count() == 0  # no "View 4 more": every page listed
    for files in navigation.sectioned_files().values():
        for path in files:
            words = navigation.words(path)
            nav.locator(f'a[href$="/{navigation.url_path(words)}"]').click()
            page.wait_for_url(f"**/{navigation.url_path(words)}*")
            _settle(page, heading(words))
            _check(page, heading(words), problems)
