"""The app in a real headless Chromium: pages draw their charts, and a hostile prompt stays text."""

from __future__ import annotations

import json
import urllib.parse
from pathlib import Path

import pytest
from playwright.sync_api import expect


pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]

XSS = "<img src=x onerror=alert(1)>"
CHART = '[data-testid="stPlotlyChart"] .main-svg'
HEATMAP = '[data-testid="stPlotlyChart"] g.hm'


def wait_for_app(page):
    page.wait_for_selector('[data-testid="stSidebar"]')
    page.wait_for_selector(CHART)
    # Streamlit shows a running indicator while the script runs; wait until it settles.
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)


def _showcase_prompt() -> str:
    """The bundled model's induction preset (what the README screenshots show), else a plain repeat."""
    presets = REPO_ROOT / "lens_core" / "default_model" / "presets.json"
    if presets.exists():
        return json.loads(presets.read_text())[0]["prompt"]
    return "The cat sat on the mat. The cat sat on the"


PAGES = [("", "predictions"), ("attention", "attention"), ("logit_lens", "logit_lens"),
         ("direct_logit_attribution", "dla"), ("head_detectors", "detectors"), ("circuits", "circuits"),
         ("circuit_discovery", "circuit_discovery")]


@pytest.mark.parametrize(("path", "name"), PAGES)
def test_page_draws_its_chart_and_is_screenshotted(app_url, page, path, name, save_screenshot):
    query = urllib.parse.urlencode({"prompt": _showcase_prompt()})
    page.goto(f"{app_url}/{path}?{query}")
    wait_for_app(page)
    assert page.locator(CHART).count() >= 1
    if name in ("attention", "logit_lens", "dla", "detectors", "circuits"):
        assert page.locator(HEATMAP).count() >= 1
    assert page.locator('[data-testid="stException"]').count() == 0
    shot = save_screenshot(page, name, readme=True)
    assert shot.stat().st_size > 10_000


def test_hostile_prompt_is_shown_literally_and_runs_no_script(app_url, page, save_screenshot):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{app_url}/")  # the first page is the default, at the root
    wait_for_app(page)

    box = page.get_by_label("Prompt", exact=True)
    box.fill(f"Hello {XSS} world")
    box.press("Control+Enter")
    page.wait_for_function(
        "(needle) => new URL(window.location.href).searchParams.get('prompt') === needle", arg=f"Hello {XSS} world"
    )
    wait_for_app(page)

    page.get_by_text("Copy as Python").click()
    # The snippet shows the prompt as literal text (retrying while the rerun finishes).
    expect(page.locator('[data-testid="stCode"]').first).to_contain_text(XSS, timeout=60_000)

    # No element was created from the prompt, no script ran, and token chips show the pieces as text.
    assert page.locator('img[src="x"]').count() == 0
    pieces = page.locator(".token-chips .piece").all_inner_texts()
    assert "".join(pieces[1:]).replace("␣", " ") == f"Hello {XSS} world"  # after the BOS token
    page.wait_for_timeout(1000)
    assert dialogs == []
    save_screenshot(page, "hostile_prompt")


def _patching_page():
    pages = sorted((REPO_ROOT / "app_pages").glob("[0-9]*_Activation_patching.py"))  # not Path_patching
    assert pages, "no activation patching page in app_pages/"
    assert (REPO_ROOT / "lens_core" / "default_model" / "presets.json").exists(), "the bundled model's presets are missing"
    return pages[0].stem.split("_", 1)[1].lower()


def test_patching_preset_draws_its_heatmap(app_url, page, save_screenshot):
    path = _patching_page()
    page.goto(f"{app_url}/{path}")
    page.wait_for_selector('[data-testid="stSidebar"]')
    preset = page.locator('[class*="st-key-preset_"] button').first
    preset.wait_for()
    preset.click()
    run = page.get_by_role("button", name="Run")
    if run.count():
        run.first.click()
    page.wait_for_selector(HEATMAP, timeout=300_000)
    # The baselines name the preset's answer once the rerun it started has finished.
    answer = page.get_by_label("Answer token", exact=True).first.input_value().replace(" ", "\u2423")
    expect(page.get_by_text(f"Clean logit({answer})").first).to_be_visible(timeout=300_000)
    wait_for_app(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    save_screenshot(page, "patching", readme=True)


def test_clicking_a_head_in_the_circuit_opens_it_on_the_attention_page(app_url, page):
    query = urllib.parse.urlencode({"prompt": _showcase_prompt(), "method": "eap"})
    page.goto(f"{app_url}/circuit_discovery?{query}")
    wait_for_app(page)
    nodes = page.locator('.st-key-circuit_graph .scatterlayer .trace').last
    labels = nodes.locator("g.textpoint text").all_text_contents()
    head = next(label for label in labels if label.startswith("L") and "H" in label and "." not in label)
    box = nodes.locator("path.point").nth(labels.index(head)).bounding_box()
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_role("link", name=f"{head}'s attention").click()
    layer, index = head[1:].split("H")
    page.wait_for_url(f"**/attention?*layer={layer}&head={index}*")
    wait_for_app(page)
    assert page.locator('[data-testid="stException"]').count() == 0
