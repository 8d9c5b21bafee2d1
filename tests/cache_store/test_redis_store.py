"""RedisResultStore against a real redis-server: shared hits, corrupt values, eviction, outages and reconnects."""

from __future__ import annotations

import logging
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cache_store.codec import encode_result
from cache_store.keys import make_key, model_fingerprint
from cache_store.redis_backend import RedisResultStore
from cache_store_testkit import TinyModel, assert_same, mixed_result
from redis_server import RedisServer, free_port

TOKENS = [50256, 40, 588]
REPO_ROOT = Path(__file__).resolve().parents[2]


class Counter:
    def __init__(self, seed: int = 0):
        self.calls, self.seed = 0, seed

    def __call__(self):
        self.calls += 1
        return mixed_result(self.seed)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = RedisServer(tmp_path_factory.mktemp("redis")).start()
    yield srv
    srv.stop()


@pytest.fixture
def store(server, request):
    # A prefix per test: tests never see each other's entries or counters.
    with RedisResultStore(server.url, prefix=f"t-{request.node.name}:", retry_after_s=0.2) as s:
        yield s
        s.clear()


def test_miss_then_hit_is_bit_exact_and_counted(store):
    model, compute = TinyModel(), Counter()
    first = store.get_or_compute(model, "x", TOKENS, {"layer": 1}, compute)
    second = store.get_or_compute(model, "x", TOKENS, {"layer": 1}, compute)
    assert compute.calls == 1
    assert_same(second, first)
    assert_same(second, mixed_result(0))
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.degraded) == (1, 1, False)
    store.get_or_compute(model, "x", TOKENS, {"layer": 2}, compute)  # another parameter is another entry
    assert compute.calls == 2


def test_stored_value_is_the_codec_blob_under_the_content_key(store):
    model = TinyModel()
    store.get_or_compute(model, "x", TOKENS, {"layer": 1}, Counter())
    key = make_key("result", model_fingerprint(model), TOKENS, "x", {"layer": 1})
    assert store._redis.get(store.prefix + key) == encode_result(mixed_result(0))


def test_two_processes_share_results(server, tmp_path):
    """A result computed in another process is a hit here (and the reverse), with no recompute."""
    prefix = "t-two-processes:"
    script = textwrap.dedent(f"""
        import sys
        sys.path[:0] = [{str(REPO_ROOT)!r}, {str(Path(__file__).parent)!r}]
        from cache_store.redis_backend import RedisResultStore
        from cache_store_testkit import TinyModel, mixed_result
        store = RedisResultStore({server.url!r}, prefix={prefix!r})
        calls = []
        store.get_or_compute(TinyModel(), "x", [1, 2, 3], {{"seed": int(sys.argv[1])}},
                             lambda: calls.append(1) or mixed_result(int(sys.argv[1])))
        print(len(calls))
    """)
    run = lambda seed: subprocess.run([sys.executable, "-c", script, str(seed)], capture_output=True, text=True,
                                      check=True, timeout=120).stdout.strip()
    assert run(7) == "1"  # the first process computes
    with RedisResultStore(server.url, prefix=prefix) as here:
        hit = here.get_or_compute(TinyModel(), "x", [1, 2, 3], {"seed": 7}, lambda: pytest.fail("expected a hit"))
        assert_same(hit, mixed_result(7))
        here.get_or_compute(TinyModel(), "x", [1, 2, 3], {"seed": 8}, lambda: mixed_result(8))
        assert run(8) == "0"  # ... and another process finds what this one stored
        here.clear()


def test_value_that_fails_to_decode_is_a_miss(store, caplog):
    model, compute = TinyModel(), Counter()
    store.get_or_compute(model, "x", TOKENS, {}, compute)
    key = store.prefix + make_key("result", model_fingerprint(model), TOKENS, "x", {})
    blob = bytearray(store._redis.get(key))
    blob[-1] ^= 0xFF
    store._redis.set(key, bytes(blob))
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        again = store.get_or_compute(model, "x", TOKENS, {}, compute)
    assert compute.calls == 2
    assert_same(again, mixed_result(0))
    assert store.stats().corrupt == 1
    assert store._redis.get(key) == encode_result(mixed_result(0))  # rewritten
    store._redis.set(key, b"\x80\x04pickle?")  # not even our format: also a miss, never unpickled
    store.get_or_compute(model, "x", TOKENS, {}, compute)
    assert compute.calls == 3


def test_size_is_bounded_by_redis_lru_eviction(server):
    with RedisResultStore(server.url, prefix="t-evict:", maxmemory_mb=4) as small:
        model = TinyModel()
        big = lambda seed: lambda: _big(seed)
        for seed in range(40):  # ~40 x 400 kB = 16 MB into a 4 MB Redis: no error, old entries evicted
            small.get_or_compute(model, "big", TOKENS, {"seed": seed}, big(seed))
        assert small.stats().faults == 0
        info = small._redis.info("memory")
        assert info["maxmemory"] == 4 * 2**20 and info["maxmemory_policy"] == "allkeys-lru"
        assert small._redis.info("stats")["evicted_keys"] > 0
        recent = small.get_or_compute(model, "big", TOKENS, {"seed": 39}, lambda: pytest.fail("newest entry evicted"))
        assert_same(recent, _big(39))
        small._redis.config_set("maxmemory", "0")
        small.clear()


def _big(seed: int):
    import torch

    result = mixed_result(seed)
    result.logits = torch.randn(100_000, generator=torch.Generator().manual_seed(seed))
    return result


def test_redis_down_at_start_computes_warns_and_connects_later(tmp_path, caplog):
    srv = RedisServer(tmp_path / "late", port=free_port())  # not started yet
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        store = RedisResultStore(srv.url, prefix="late:", retry_after_s=0.2, timeout_s=1.0)
    assert store.degraded
    assert any("Redis connect failed" in r.getMessage() for r in caplog.records)
    compute = Counter()
    started = time.monotonic()
    for _ in range(3):
        assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), mixed_result(0))
    assert compute.calls == 3 and time.monotonic() - started < 5
    srv.start()
    try:
        time.sleep(0.3)  # past retry_after_s
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)  # reconnects, misses, stores
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)  # hit
        assert compute.calls == 4 and not store.degraded
    finally:
        store.close()
        srv.stop()


def test_redis_killed_mid_request_and_restarted(tmp_path, caplog):
    srv = RedisServer(tmp_path / "flaky").start()
    store = RedisResultStore(srv.url, prefix="flaky:", retry_after_s=0.2, timeout_s=1.0)
    try:
        model, compute = TinyModel(), Counter()

        def dies_while_computing():
            srv.stop()  # Redis goes away between the read and the write of this request
            return compute()

        with caplog.at_level(logging.WARNING, logger="cache_store"):
            value = store.get_or_compute(model, "x", TOKENS, {}, dies_while_computing)
        assert_same(value, mixed_result(0))
        assert store.degraded and store.stats().faults >= 1
        assert any("write failed" in r.getMessage() for r in caplog.records)
        store.get_or_compute(model, "x", TOKENS, {}, compute)  # still served while Redis is down
        assert compute.calls == 2
        srv.start()  # restarted, empty (no persistence)
        time.sleep(0.3)
        with caplog.at_level(logging.WARNING, logger="cache_store"):
            store.get_or_compute(model, "x", TOKENS, {}, compute)
        assert any("reachable again" in r.getMessage() for r in caplog.records)
        store.get_or_compute(model, "x", TOKENS, {}, lambda: pytest.fail("expected a hit after the reconnect"))
        assert compute.calls == 3 and not store.degraded
    finally:
        store.close()
        srv.stop()


def test_cli_stats_and_clear_on_redis(server, capsys):
    from cache_store.cli import main

    with RedisResultStore(server.url) as store:  # the CLI uses the app's default prefix
        store.get_or_compute(TinyModel(), "x", TOKENS, {"cli": 1}, Counter())
    assert main(["--redis", server.url, "stats", "--json"]) == 0
    assert '"entries": 1' in capsys.readouterr().out
    assert main(["--redis", server.url, "clear"]) == 0
    assert "removed 1 entries" in capsys.readouterr().out


def test_raw_bytes_round_trip_for_saved_link_states(store):
    """``get_bytes``/``put_bytes`` (ui.link_store's saved links): what one replica saves, every replica reads."""
    blob = '{"schema": "circuit-explorer/link-state@1", "params": {"prompt": "é <b>"}}'.encode("utf-8")
    assert store.get_bytes("link-state/00000000000000ff") is None
    store.put_bytes("link-state/00000000000000ff", blob)
    assert store.get_bytes("link-state/00000000000000ff") == blob
