"""Start the real app (``streamlit run app.py``) on a free 127.0.0.1 port with a given settings file."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from redis_server import free_port

REPO_ROOT = Path(__file__).resolve().parents[2]


class AppServer:
    def __init__(self, settings: Path, log_path: Path, extra_env: dict[str, str] | None = None,
                 extra_args: list[str] | None = None, port: int | None = None) -> None:
        self.settings, self.log_path = Path(settings), Path(log_path)
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        env = dict(os.environ, CIRCUIT_EXPLORER_SETTINGS=str(self.settings), PYTHONUNBUFFERED="1", **(extra_env or {}))
        self._log = open(self.log_path, "w")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(self.port),
             "--server.address", "127.0.0.1", "--server.headless", "true", "--browser.gatherUsageStats", "false",
             *(extra_args or [])],
            cwd=REPO_ROOT, env=env, stdout=self._log, stderr=subprocess.STDOUT,
        )

    def wait_healthy(self, timeout_s: float = 90) -> "AppServer":
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as response:
                    if response.status == 200:
                        return self
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"streamlit did not become healthy:\n{self.log()[-3000:]}")
            time.sleep(0.3)

    def log(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self._log.close()
