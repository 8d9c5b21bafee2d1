"""End-to-end fixtures: the real app (``streamlit run``) on a free port, and Debian's headless Chromium.

The app runs the bundled default model when it is present, else a tiny random
GPT-2 built here. Screenshots go to ``artifacts/e2e/`` (kept by CI as test
artifacts); with ``UPDATE_SCREENSHOTS=1`` they are also copied to
``docs/screenshots/`` for the README.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]
CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = REPO_ROOT / "artifacts" / "e2e"
README_SHOTS = REPO_ROOT / "docs" / "screenshots"
BUNDLED = REPO_ROOT / "lens_core" / "default_model"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--no-first-run", "--disable-dev-shm-usage"]


def _tiny_model_module():
    spec = importlib.util.spec_from_file_location("e2e_tiny_model", REPO_ROOT / "tests" / "app" / "tiny_model.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="session")
def chromium_path() -> str:
    if not CHROMIUM.exists():
        if os.environ.get("CI"):
            pytest.fail("CI must run the browser tests, but /usr/bin/chromium is missing (.ci/run installs it)")
        pytest.skip("/usr/bin/chromium is not installed (apt-get install chromium chromium-driver); "
                    "the browser tests run in CI")
    return str(CHROMIUM)


@pytest.fixture(scope="session")
def app_url(tmp_path_factory, chromium_path):
    tmp = tmp_path_factory.mktemp("e2e_app")
    tiny = _tiny_model_module()
    bundled = (BUNDLED / "config.json").exists() and any(BUNDLED.glob("*.safetensors"))
    model = "default" if bundled else str(tiny.build_tiny_gpt2(tmp / "tiny_random_model"))
    settings = tiny.write_settings(tmp / "settings.toml", Path(model), tmp / "cache", max_prompt_tokens=128)
    if bundled:
        settings.write_text(settings.read_text().replace("allowlist = ['default']", 'allowlist = ["default"]'))
    port = _free_port()
    env = dict(os.environ, CIRCUIT_EXPLORER_SETTINGS=str(settings), PYTHONUNBUFFERED="1")
    log_path = tmp / "streamlit.log"
    log = open(log_path, "w")
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        cwd=REPO_ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(log_path, ARTIFACTS / "streamlit.log")


@pytest.fixture(scope="session")
def browser(chromium_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=chromium_path, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1600})
    page = context.new_page()
    page.set_default_timeout(90_000)
    yield page
    context.close()


@pytest.fixture
def save_screenshot():
    """``save_screenshot(page, name, readme=False)``: keep a full-page PNG under artifacts/e2e/."""
    return _save_screenshot


def _save_screenshot(page, name: str, readme: bool = False) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    page.mouse.move(1, 1)  # no hover tooltip in the picture
    page.screenshot(path=str(path), full_page=True)
    if readme and os.environ.get("UPDATE_SCREENSHOTS") == "1":
        README_SHOTS.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, README_SHOTS / f"{name}.png")
    return path
