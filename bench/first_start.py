"""First start of the app, as a visitor sees it: `streamlit run app.py` launched, then Chromium opens the root page
and waits until the first chart is drawn (the bundled model loaded, its first preset run, a cold result cache).

    .venv/bin/python -m bench.first_start   (from the repository root; needs /usr/bin/chromium and playwright)

Reference, measured in the same run on the same machine: a one-line Streamlit app (``st.write``) started and
opened the same way, so the ratio is the app's own cost (imports, model load, first experiments) over Streamlit's.
Prints seconds to a healthy server, seconds to the first chart, and the ratio.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run"]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def first_view(script: Path, selector: str, env: dict, browser) -> tuple[float, float]:
    """(seconds to /_stcore/health, seconds to ``selector`` in the browser), both from the launch."""
    port = free_port()
    start = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "streamlit", "run", str(script), "--server.port", str(port),
                             "--server.address", "127.0.0.1", "--server.headless", "true",
                             "--browser.gatherUsageStats", "false"], cwd=REPO_ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}"
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2):
                    break
            except OSError:
                if proc.poll() is not None or time.perf_counter() - start > 180:
                    raise RuntimeError("streamlit did not start")
                time.sleep(0.1)
        healthy = time.perf_counter() - start
        page = browser.new_page()
        page.goto(url)
        page.wait_for_selector(selector, timeout=300_000)
        drawn = time.perf_counter() - start
        page.close()
        return healthy, drawn
    finally:
        proc.terminate()
        proc.wait(15)


def main() -> None:
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        hello = tmp / "hello.py"
        hello.write_text("import streamlit as st\nst.write('hello')\n")
        settings = (REPO_ROOT / "settings.toml").read_text()
        settings = settings.replace('directory = ".cache/results"', f"directory = {str(tmp / 'cache')!r}")
        (tmp / "settings.toml").write_text(settings)
        env = dict(os.environ, CIRCUIT_EXPLORER_SETTINGS=str(tmp / "settings.toml"))
        with sync_playwright() as playwright:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, args=ARGS)
            ref_health, ref_drawn = first_view(hello, '[data-testid="stMarkdown"]', env, browser)
            app_health, app_drawn = first_view(REPO_ROOT / "app.py", '[data-testid="stPlotlyChart"] .main-svg', env, browser)
            browser.close()
    print(f"one-line streamlit app: healthy {ref_health:.1f} s, drawn {ref_drawn:.1f} s")
    print(f"Circuit Explorer (bundled model, cold result cache): healthy {app_health:.1f} s, first chart {app_drawn:.1f} s")
    print(f"ratio first chart / one-line app: {app_drawn / ref_drawn:.2f}x  (load average {os.getloadavg()[0]:.1f}, "
          f"{os.cpu_count()} CPUs)")


if __name__ == "__main__":
    main()
