"""Every page and every preset on the bundled default model (runs once lens_core/default_model/ is committed)."""

from __future__ import annotations

import json

import pytest
from streamlit.testing.v1 import AppTest

from app_testkit import APP, REPO_ROOT

BUNDLED = REPO_ROOT / "lens_core" / "default_model"
PAGES = sorted(str(p.relative_to(REPO_ROOT)) for p in (REPO_ROOT / "app_pages").glob("[0-9]*_*.py"))

pytestmark = pytest.mark.skipif(
    not ((BUNDLED / "config.json").exists() and any(BUNDLED.glob("*.safetensors"))),
    reason="the bundled default model is not in lens_core/default_model/ yet",
)




def _open(page: str) -> AppTest:
    at = AppTest.from_file(APP, default_timeout=300)
    at.run()
    if page != PAGES[0]:
        at.switch_page(page)
        at.run()
    return at


@pytest.mark.parametrize("page", PAGES)
def test_page_renders_on_the_bundled_model_and_every_preset_runs(bundled_settings, page):
    at = _open(page)
    assert not at.exception, [e.value for e in at.exception]
    assert at.sidebar.selectbox(key="model").value == "default"
    assert len(at.get("plotly_chart")) >= 1
    preset_buttons = [b for b in at.button if (b.key or "").startswith("preset_")]
    for i in range(len(preset_buttons)):
        button = [b for b in at.button if (b.key or "").startswith("preset_")][i]
        button.click().run()
        assert not at.exception, (button.label, [e.value for e in at.exception])
        assert [e.value for e in at.error] + [e.value for e in at.sidebar.error] == [], button.label
        assert len(at.get("plotly_chart")) >= 1, button.label


def test_presets_file_is_well_formed():
    presets = json.loads((BUNDLED / "presets.json").read_text(encoding="utf-8"))
    assert presets and all({"name", "prompt"} <= set(p) for p in presets)
