"""Long state in a real Chromium: a view whose link would be long keeps a short address bar (``state=<id>``) that
reopens the same view; the app server's own limit, which the app's links stay far below, is real."""

from __future__ import annotations

import sys
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path

import pytest

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO_ROOT))
from ui import navigation  # noqa: E402
from ui.link_store import MAX_QUERY_CHARS  # noqa: E402

WORDS = "descriptor provided sequences iterable example stdout"
CLEAN = " ".join([WORDS] * 18)
CORRUPTED = CLEAN.replace("example", "useful", 1)


def _settle(page):
    page.wait_for_selector('[data-testid="stSidebar"]')
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=180_000)


def test_the_server_refuses_a_request_past_its_limit(app_url):
    long_query = urllib.parse.urlencode({"prompt": "x" * 100_000})
    try:
        with urllib.request.urlopen(f"{app_url}/?{long_query}", timeout=30) as response:
            status, body = response.status, response.read().decode("utf-8", "replace")
    except urllib.error.HTTPError as error:
        status, body = error.code, error.read().decode("utf-8", "replace")
    assert status >= 400 and "Invalid HTTP request" in body  # what a too-long link met before issue 23


def test_a_long_view_keeps_a_short_address_that_reopens_it(app_url, page):
    path = navigation.url_path("Activation_patching")
    query = urllib.parse.urlencode({"prompt": CLEAN, "corrupted": CORRUPTED, "answer": " example", "wrong_answer": " useful"})
    assert len(query) > MAX_QUERY_CHARS
    page.goto(f"{app_url}/{path}?{query}")
    _settle(page)
    page.wait_for_function("() => location.search.includes('state=')", timeout=60_000)
    short = urllib.parse.urlsplit(page.url).query
    assert len(short) <= MAX_QUERY_CHARS and "state=" in short
    fresh = page.context.new_page()  # a pasted link: a new session
    fresh.goto(page.url)
    _settle(fresh)
    assert fresh.locator('[data-testid="stSidebar"] textarea').first.input_value() == CLEAN
    assert fresh.locator('[data-testid="stAlertContentWarning"]').filter(has_text="saved view").count() == 0
