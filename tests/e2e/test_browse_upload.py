"""The Browse examples page's upload in a real Chromium: a binary file is refused with its message, a text file
is browsed (ranking and histogram drawn), and a hostile token in the upload is shown as text, not run."""

from __future__ import annotations

import pytest
from playwright.sync_api import expect

pytestmark = pytest.mark.e2e

CHART = '[data-testid="stPlotlyChart"] .main-svg'
CODE = "".join(f"def f{i}(x, y):\n    total = x + y  # <b>bold</b><script>alert({i})</script>\n    return total * {i}\n\n"
               for i in range(60))


def _upload(page, name: str, data: bytes) -> None:
    page.locator('[data-testid="stFileUploader"] input[type="file"]').set_input_files(
        files=[{"name": name, "mimeType": "application/octet-stream", "buffer": data}])


def test_binary_upload_is_refused_then_text_is_browsed(app_url, page, save_screenshot):
    dialogs = []
    page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
    page.goto(f"{app_url}/browse_examples?corpus=upload&component=L1H0&abl_method=zero")
    page.wait_for_selector('[data-testid="stSidebar"]')
    expect(page.get_by_text("Upload a text file to browse it").first).to_be_visible(timeout=120_000)
    _upload(page, "image.png", b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    expect(page.get_by_text("image.png: The file is not UTF-8 text").first).to_be_visible(timeout=120_000)
    _upload(page, "code.py", CODE.encode())
    page.wait_for_selector(CHART, timeout=300_000)
    expect(page.get_by_text("code.py (sha256").first).to_be_visible(timeout=120_000)
    expect(page.locator("text=#1 ").first).to_be_visible()
    assert page.locator('[data-testid="stException"]').count() == 0
    page.wait_for_timeout(1000)
    assert dialogs == []  # the <script> in the upload's tokens is text, never run
    save_screenshot(page, "browse_upload")
