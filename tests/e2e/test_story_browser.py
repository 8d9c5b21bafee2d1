"""The guided story in a real browser: it draws every step, an "Open in" link followed in the same tab opens the head
on the Attention page, and the sidebar's Export notebook button downloads a notebook of the session's runs."""

from __future__ import annotations

import json

import pytest

from test_browser import CHART, wait_for_app

pytestmark = pytest.mark.e2e


def test_story_link_and_notebook_export(app_url, page):
    page.goto(f"{app_url}/guided_story")
    wait_for_app(page)
    if page.get_by_text("Pick the model **default**").count() or page.get_by_role("button", name="Use the bundled model").count():
        pytest.skip("the story needs the bundled model")
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator(CHART).count() >= 7

    with page.expect_download() as download:
        page.get_by_role("button", name="Export notebook").click()
    notebook = json.loads(open(download.value.path(), encoding="utf-8").read())
    assert notebook["nbformat"] == 4
    sources = "\n".join(c["source"] for c in notebook["cells"] if c["cell_type"] == "code")
    for experiment in ("predictions", "head_detectors", "activation_patching", "circuit_faithfulness",
                       "attribution_graph"):
        assert f"= {experiment}(model, request" in sources, experiment

    link = page.locator('[data-testid="stPageLink"] a', has_text="'s attention").first
    head = link.inner_text().split("'s")[0].strip().split()[-1]
    layer, index = head[1:].split("H")
    link.click()
    page.wait_for_url(f"**/attention?*layer={layer}&head={index}*")
    wait_for_app(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert "from_link" not in page.url
