"""Two app server processes, one Redis: a view computed through the first is a hit in the second."""

from __future__ import annotations

import urllib.parse
from pathlib import Path

import pytest
import redis

from app_server import AppServer
from app_settings import write_settings
from redis_server import RedisServer

pytestmark = pytest.mark.e2e

REPO_ROOT = Path(__file__).resolve().parents[2]
CHART = '[data-testid="stPlotlyChart"] .main-svg'
PREFIX = "circuit-explorer:"  # the app's default key prefix


def settings_for(path: Path, redis_url: str, cache_dir: Path) -> Path:
    return write_settings(path, cache_dir, cache=f'backend = "redis"\nredis_url = {redis_url!r}', app="demo_mode = true")


def counters(client: redis.Redis) -> tuple[int, int]:
    hits, misses = client.mget(PREFIX + "stats:hits", PREFIX + "stats:misses")
    return int(hits or 0), int(misses or 0)


def result_keys(client: redis.Redis) -> set[bytes]:
    return {k for k in client.scan_iter(match=PREFIX + "*") if not k.startswith(PREFIX.encode() + b"stats:")}


def open_and_wait(page, url: str) -> None:
    page.goto(url)
    page.wait_for_selector(CHART)
    page.wait_for_function("() => !document.querySelector('[data-testid=\"stStatusWidget\"]')", timeout=90_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_second_app_process_serves_the_first_ones_result_from_redis(tmp_path, browser):
    server = RedisServer(tmp_path / "redis").start()
    settings = settings_for(tmp_path / "settings.toml", server.url, tmp_path / "unused-disk-cache")
    apps = [AppServer(settings, tmp_path / f"app{i}.log") for i in range(2)]
    client = redis.Redis.from_url(server.url)
    context = browser.new_context(viewport={"width": 1400, "height": 1200})
    try:
        for app in apps:
            app.wait_healthy()
        page = context.new_page()
        page.set_default_timeout(90_000)
        query = urllib.parse.urlencode({"prompt": "The cat sat on the mat. The cat sat on the"})

        open_and_wait(page, f"{apps[0].url}/logit_lens?{query}")
        hits_a, misses_a = counters(client)
        entries = result_keys(client)
        assert misses_a >= 2 and len(entries) >= 2  # predictions (the answer guess) and the logit lens

        open_and_wait(page, f"{apps[1].url}/logit_lens?{query}")
        hits_b, misses_b = counters(client)
        assert misses_b == misses_a, "the second app process recomputed a result the first had stored"
        assert hits_b >= hits_a + 2
        assert result_keys(client) == entries
        assert not (tmp_path / "unused-disk-cache").exists()  # nothing went to a per-process disk cache
    finally:
        context.close()
        for app in apps:
            app.stop()
        client.close()
        server.stop()
