"""A link with bad values on every page, in a real Chromium: the page uses the nearest valid values and a notice names
what it ignored and why (ui.state's shared rule). And the first load asks no host but the app's own (no icon font)."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
NOTICE = '[data-testid="stAlertContentWarning"]'

# For each page (by its file's words), a link value it cannot use and the words its notice must contain.
# Every page drawn from app_pages/ must be listed here (see the last test).
BAD_LINKS = {
    "Prompt_and_predictions": ({"top_k": "0"}, ["top_k=0 was ignored", "outside 1–20", "Showing 1"]),
    "Attention": ({"layer": "-1", "head": "999"}, ["layer=-1 was ignored", "head=999 was ignored", "outside 0–"]),
    "Logit_lens": ({"top_k": "100000", "lens_value": "banana"}, ["top_k=100000 was ignored", "lens_value=banana was ignored"]),
    "Direct_logit_attribution": ({"position": "abc"}, ["position=abc was ignored", "not a whole number"]),
    "Activation_patching": ({"direction": "sideways", "sweeps": "resid_pre,nonsense"},
                            ["direction=sideways was ignored", "nonsense is not among the choices"]),
    "Ablation": ({"abl_method": "explode"}, ["abl_method=explode was ignored", "not one of the choices"]),
    "Head_detectors": ({"detector": "psychic"}, ["detector=psychic was ignored"]),
    "Circuits": ({"layer": "99", "top_k": "0"}, ["layer=99 was ignored", "nearest valid value", "top_k=0 was ignored"]),
    "Browse_examples": ({"abl_method": "explode", "n_windows": "0"}, ["abl_method=explode was ignored", "n_windows=0 was ignored"]),
    "Compare_prompts": ({"layer": "-1"}, ["layer=-1 was ignored"]),
    "Path_patching": ({"direction": "sideways"}, ["direction=sideways was ignored"]),
    "Circuit_discovery": ({"method": "guesswork"}, ["method=guesswork was ignored", "not one of the choices"]),
    "Attribution_graph": ({"mass": "10"}, ["mass=10 was ignored", "outside 50–99"]),
    "Features": ({"rows": "0"}, ["rows=0 was ignored", "outside 1–30"]),
    "Guided_story": ({"dtype": "float99"}, ["dtype=float99 was ignored", "not one of the choices"]),  # its own prompt: the sidebar's
}

# Pages that draw their inputs only when a bundled file is there (otherwise they say it is missing and stop).
NEEDS = {"Attribution_graph": REPO_ROOT / "lens_core" / "default_model" / "transcoders",
         "Features": REPO_ROOT / "lens_core" / "default_model" / "transcoders"}


def page_paths() -> dict[str, str]:
    """Page words -> URL path, as app.py routes them (the first page is the root)."""
    files = sorted((REPO_ROOT / "app_pages").glob("[0-9]*_*.py"), key=lambda p: (int(p.name.split("_", 1)[0]), p.name))
    return {f.stem.split("_", 1)[1]: ("" if i == 0 else f.stem.split("_", 1)[1].lower()) for i, f in enumerate(files)}


@pytest.mark.parametrize("words", sorted(BAD_LINKS))
def test_a_link_with_bad_values_shows_a_notice_naming_them(app_url, page, words, save_screenshot):
    paths = page_paths()
    if words not in paths:
        pytest.skip(f"no page {words} in app_pages/")
    if words in NEEDS and not NEEDS[words].exists():
        pytest.skip(f"{NEEDS[words]} is missing: the page draws no inputs without it")
    query, expected = BAD_LINKS[words]
    page.goto(f"{app_url}/{paths[words]}?{urllib.parse.urlencode(query)}")
    page.wait_for_selector('[data-testid="stSidebar"]')
    notices = page.locator(NOTICE)
    for text in expected:
        expect(notices.filter(has_text=text).first).to_be_visible(timeout=120_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, f"link_notice_{words.lower()}")


def test_every_page_has_a_bad_link_case():
    assert set(page_paths()) <= set(BAD_LINKS), sorted(set(page_paths()) - set(BAD_LINKS))


def test_first_load_requests_only_the_apps_own_host(app_url, page):
    host = urllib.parse.urlparse(app_url).netloc
    requests, failed, console_errors = [], [], []
    page.on("request", lambda request: requests.append(request.url))
    page.on("requestfailed", lambda request: failed.append(request.url))
    page.on("console", lambda message: console_errors.append(message.text) if message.type == "error" else None)
    page.goto(f"{app_url}/")
    page.wait_for_selector('[data-testid="stPlotlyChart"] .main-svg', timeout=120_000)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)
    page.wait_for_timeout(1500)
    foreign = [url for url in requests if urllib.parse.urlparse(url).scheme in ("http", "https", "ws", "wss")
               and urllib.parse.urlparse(url).netloc != host]
    assert foreign == [], foreign
    assert failed == [], failed
    icon = page.evaluate("() => document.querySelector(\"link[rel='shortcut icon']\").href")
    assert icon.startswith("data:image/svg+xml"), icon[:80]  # the app's own icon, inline
    assert not [e for e in console_errors if "gstatic" in e or "googleapis" in e], console_errors
