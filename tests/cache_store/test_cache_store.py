"""ResultStore: hits, misses, stored bytes, corruption, faults, eviction."""

from __future__ import annotations

import errno
import logging
import os
import pickle
import sqlite3
from pathlib import Path

import diskcache
import pytest
import torch

from cache_store import NullStore, ResultStore
from cache_store.codec import encode_result
from cache_store.keys import make_key, model_fingerprint
from cache_store.store import SafeDisk
from cache_store_testkit import MixedResult, TinyModel, assert_same, mixed_result

TOKENS = [50256, 40, 588]


class Counter:
    """A compute function that counts its calls."""

    def __init__(self, make=mixed_result):
        self.calls = 0
        self.make = make

    def __call__(self):
        self.calls += 1
        return self.make()


def big_result(seed: int = 0, numel: int = 20_000) -> MixedResult:
    result = mixed_result(seed)
    result.logits = torch.randn(numel, generator=torch.Generator().manual_seed(seed))
    return result


def rows(directory: Path):
    with sqlite3.connect(directory / "cache.db") as con:
        return con.execute("SELECT key, raw, mode, filename, value FROM Cache").fetchall()


@pytest.fixture
def store(tmp_path):
    with ResultStore(tmp_path / "cache", size_limit_bytes=50 * 2**20) as s:
        yield s


def test_miss_then_hit_computes_once_and_returns_equal_results(store):
    model, compute = TinyModel(), Counter()
    first = store.get_or_compute(model, "logit_lens", TOKENS, {"layer": 1}, compute)
    second = store.get_or_compute(TinyModel(), "logit_lens", torch.tensor(TOKENS), {"layer": 1}, compute)
    assert compute.calls == 1
    assert_same(second, mixed_result())
    assert_same(first, mixed_result())
    stats = store.stats()
    assert (stats.hits, stats.misses, stats.entries) == (1, 1, 1)
    assert stats.hit_rate == 0.5


def test_different_parameters_are_different_entries(store):
    compute = Counter()
    store.get_or_compute(TinyModel(), "logit_lens", TOKENS, {"layer": 1}, compute)
    store.get_or_compute(TinyModel(), "logit_lens", TOKENS, {"layer": 2}, compute)
    store.get_or_compute(TinyModel(), "dla", TOKENS, {"layer": 1}, compute)
    assert compute.calls == 3 and store.stats().entries == 3


def test_entries_persist_across_store_instances(tmp_path):
    compute = Counter()
    with ResultStore(tmp_path, 2**24) as first:
        first.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)
    with ResultStore(tmp_path, 2**24) as second:
        assert_same(second.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), mixed_result())
    assert compute.calls == 1


def test_activations_round_trip_through_the_store(tmp_path):
    acts = {"hook_embed": torch.randn(1, 3, 8), "blocks.0.attn.hook_pattern": torch.rand(1, 2, 3, 3)}
    calls = []
    with ResultStore(tmp_path / "full", 2**24) as full:
        for _ in range(2):
            got = full.get_or_compute_activations(TinyModel(), TOKENS, None, lambda: calls.append(1) or acts)
            for name in acts:
                assert_same(got[name], acts[name])
    assert len(calls) == 1
    with ResultStore(tmp_path / "half", 2**24, activations_fp16=True) as half:
        half.get_or_compute_activations(TinyModel(), TOKENS, None, lambda: acts)
        got = half.get_or_compute_activations(TinyModel(), TOKENS, None, lambda: pytest.fail("should hit"))
        for name in acts:
            assert torch.equal(got[name], acts[name].half().float())


def test_stored_values_are_raw_blobs_not_pickles(store):
    store.get_or_compute(TinyModel(), "small", TOKENS, {}, Counter())
    store.get_or_compute(TinyModel(), "large", TOKENS, {}, Counter(big_result))
    stored = rows(store.directory)
    assert len(stored) == 2
    modes = set()
    for key, raw, mode, filename, value in stored:
        assert raw == 1 and isinstance(key, str)  # keys stored as text, not pickled
        modes.add(mode)
        data = bytes(value) if value is not None else (store.directory / filename).read_bytes()
        assert data[:4] == b"CXRS", "value is our blob"
        assert not data.startswith(b"\x80")
    # diskcache modes: 1 raw bytes in SQLite, 2 raw bytes in a file (4 would be pickle).
    assert modes == {1, 2}


def test_a_pickled_entry_is_never_unpickled(store, monkeypatch):
    key = make_key("result", model_fingerprint(TinyModel()), TOKENS, "x", {})
    with diskcache.Cache(str(store.directory)) as plain:  # default Disk: pickles non-bytes values
        plain.set(key, {"payload": mixed_result()})
    assert {row[2] for row in rows(store.directory)} == {4}

    def refuse(*args, **kwargs):
        raise AssertionError("cache entry was unpickled")

    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    compute = Counter()
    assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), mixed_result())
    assert compute.calls == 1
    assert {row[2] for row in rows(store.directory)} == {1}  # rewritten as raw bytes


def test_safe_disk_refuses_to_store_non_bytes(tmp_path):
    with diskcache.Cache(str(tmp_path), disk=SafeDisk) as cache:
        with pytest.raises(TypeError):
            cache.set("k", {"a": 1})


def _damage_file_value(directory: Path, how: str) -> None:
    (filename,) = [row[3] for row in rows(directory)]
    path = directory / filename
    data = bytearray(path.read_bytes())
    if how == "flip":
        data[len(data) // 2] ^= 0xFF
    else:
        data = data[: len(data) // 3]
    path.write_bytes(bytes(data))


def _damage_sqlite_value(directory: Path, how: str) -> None:
    ((rowid, value),) = sqlite3.connect(directory / "cache.db").execute("SELECT rowid, value FROM Cache").fetchall()
    data = bytearray(value)
    if how == "flip":
        data[-5] ^= 0xFF
    else:
        data = data[:-7]
    with sqlite3.connect(directory / "cache.db") as con:
        con.execute("UPDATE Cache SET value = ? WHERE rowid = ?", (sqlite3.Binary(bytes(data)), rowid))


@pytest.mark.parametrize("how", ["flip", "truncate"])
@pytest.mark.parametrize("where", ["file", "sqlite"])
def test_corrupt_entry_is_recomputed_and_rewritten(store, how, where, caplog):
    make = big_result if where == "file" else mixed_result
    compute = Counter(make)
    store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)
    (_damage_file_value if where == "file" else _damage_sqlite_value)(store.directory, how)

    with caplog.at_level(logging.WARNING, logger="cache_store"):
        again = store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)
    assert compute.calls == 2
    assert_same(again, make())
    assert "unreadable" in caplog.text
    # Rewritten: the next call is a hit with the right value.
    assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), make())
    assert compute.calls == 2
    assert store.stats().corrupt == 1


def test_unopenable_directory_degrades_to_computing(tmp_path, caplog):
    blocker = tmp_path / "a_file"
    blocker.write_text("not a directory")
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        store = ResultStore(blocker / "cache", 2**20)
    assert store.degraded
    assert "open failed" in caplog.text
    compute = Counter()
    for _ in range(2):
        assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), mixed_result())
    assert compute.calls == 2
    assert store.stats().entries == 0 and store.clear() == 0


@pytest.mark.skipif(os.geteuid() == 0, reason="root ignores permission bits; see the simulated test")
def test_read_only_directory_by_permissions(tmp_path, caplog):
    directory = tmp_path / "ro"
    with ResultStore(directory, 2**20) as s:
        s.get_or_compute(TinyModel(), "x", TOKENS, {}, Counter())
    for path in [directory, *directory.iterdir()]:
        path.chmod(0o555 if path.is_dir() else 0o444)
    try:
        with caplog.at_level(logging.WARNING, logger="cache_store"):
            store = ResultStore(directory, 2**20)
            compute = Counter()
            hit = store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)  # stored before: served read-only
            result = store.get_or_compute(TinyModel(), "y", TOKENS, {}, compute)
        assert_same(hit, mixed_result()) and assert_same(result, mixed_result())
        assert compute.calls == 1 and store.read_only and not store.degraded
        assert "serving its entries read-only" in caplog.text
    finally:
        for path in [directory, *directory.iterdir()]:
            path.chmod(0o755 if path.is_dir() else 0o644)


def test_read_only_database_simulated(store, monkeypatch, caplog):
    """The database turns read-only under a live store: its hits are still served, read-only."""
    store.get_or_compute(TinyModel(), "x", TOKENS, {}, Counter())

    def read_only(*args, **kwargs):
        raise sqlite3.OperationalError("attempt to write a readonly database")

    # An LRU read updates access times, so on a read-only database diskcache's reads fail too.
    with monkeypatch.context() as patched:
        patched.setattr(diskcache.Cache, "get", read_only)
        patched.setattr(diskcache.Cache, "set", read_only)
        patched.setattr(diskcache.Cache, "delete", read_only)
        compute = Counter()
        with caplog.at_level(logging.WARNING, logger="cache_store"):
            for experiment in ("x", "y", "y"):
                assert_same(store.get_or_compute(TinyModel(), experiment, TOKENS, {}, compute), mixed_result())
        assert compute.calls == 2  # "x" was a hit; "y" computed twice: not stored
        assert store.read_only and store.stats().read_only and store.stats().entries == 1
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
        assert warnings[0].startswith("cache_store: read failed") and "serving its entries read-only" in warnings[1]
    # Writable again: the next request after RETRY_S reopens it read-write and stores.
    monkeypatch.setattr("cache_store.recovery.RETRY_S", 0.0)
    store._retry_at = 0.0
    store.get_or_compute(TinyModel(), "y", TOKENS, {}, compute)
    assert not store.read_only and compute.calls == 3
    store.get_or_compute(TinyModel(), "y", TOKENS, {}, compute)
    assert compute.calls == 3 and store.stats().entries == 2


@pytest.mark.parametrize("make", [mixed_result, big_result], ids=["sqlite-value", "file-value"])
def test_full_disk_serves_results_and_warns(store, monkeypatch, caplog, make):
    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    if make is big_result:
        monkeypatch.setattr(SafeDisk, "_write", disk_full)  # fails inside diskcache, writing the value file
    else:
        monkeypatch.setattr(diskcache.Cache, "set", disk_full)
    compute = Counter(make)
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        for _ in range(3):
            assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), make())
    assert compute.calls == 3
    assert store.stats().faults == 3 and store.stats().entries == 0
    assert sum(r.levelno == logging.WARNING and "write failed" in r.getMessage() for r in caplog.records) == 1


def test_size_limit_evicts_least_recently_used(tmp_path):
    limit = 1 * 2**20
    entry_bytes = len(encode_result(big_result(0, numel=16_000)))  # ~64 KB, stored as files
    with ResultStore(tmp_path, size_limit_bytes=limit) as store:
        for i in range(60):
            store.get_or_compute(TinyModel(), "e", TOKENS, {"i": i}, lambda i=i: big_result(i, numel=16_000))
            # Keep entry 0 in use: LRU must not evict it.
            store.get_or_compute(TinyModel(), "e", TOKENS, {"i": 0}, lambda: pytest.fail("entry 0 was evicted"))
            stats = store.stats()
            assert stats.bytes <= limit + 2 * entry_bytes
        on_disk = sum(p.stat().st_size for p in tmp_path.rglob("*.val"))
        assert on_disk <= limit + entry_bytes
        assert 5 < stats.entries < 60
        # An early entry not used since was evicted: computing it again is a miss.
        compute = Counter(lambda: big_result(1, numel=16_000))
        store.get_or_compute(TinyModel(), "e", TOKENS, {"i": 1}, compute)
        assert compute.calls == 1


def test_value_larger_than_the_limit_is_served_not_stored(tmp_path):
    with ResultStore(tmp_path, size_limit_bytes=10_000) as store:
        compute = Counter(big_result)
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute)
        assert compute.calls == 2 and store.stats().entries == 0


def test_clear_removes_everything_and_resets_counters(store):
    compute = Counter()
    for i in range(3):
        store.get_or_compute(TinyModel(), "x", TOKENS, {"i": i}, compute)
    assert store.clear() == 3
    stats = store.stats()
    assert (stats.entries, stats.hits, stats.misses) == (0, 0, 0)
    store.get_or_compute(TinyModel(), "x", TOKENS, {"i": 0}, compute)
    assert compute.calls == 4


def test_compute_errors_propagate_and_store_nothing(store):
    def broken():
        raise RuntimeError("model failed")

    with pytest.raises(RuntimeError, match="model failed"):
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, broken)
    assert store.stats().entries == 0


def test_non_result_values_are_a_programming_error(store):
    with pytest.raises(TypeError):
        store.get_or_compute(TinyModel(), "x", TOKENS, {}, lambda: {"not": "a result"})


def test_null_store_always_computes():
    store, compute = NullStore(), Counter()
    for _ in range(2):
        assert_same(store.get_or_compute(TinyModel(), "x", TOKENS, {}, compute), mixed_result())
    assert compute.calls == 2 and store.stats().entries == 0


def test_threads_sharing_one_store_get_correct_values(store):
    # Streamlit serves sessions from threads of one process, all using one store.
    from concurrent.futures import ThreadPoolExecutor

    def session(seed: int) -> int:
        wrong = 0
        for round_ in range(12):
            i = (seed + round_) % 3
            got = store.get_or_compute(TinyModel(), "threads", TOKENS, {"i": i}, lambda i=i: big_result(i, numel=9_000))
            try:
                assert_same(got, big_result(i, numel=9_000))
            except AssertionError:
                wrong += 1
        return wrong

    with ThreadPoolExecutor(max_workers=4) as pool:
        assert list(pool.map(session, range(4))) == [0, 0, 0, 0]
    stats = store.stats()
    assert stats.entries == 3 and stats.faults == 0 and stats.corrupt == 0
    assert stats.hits + stats.misses == 48 and stats.hits >= 48 - 12


def test_raw_bytes_round_trip_and_the_null_store_keeps_nothing(tmp_path):
    """``get_bytes``/``put_bytes``: the app's saved link states (ui.link_store), raw JSON bytes, never unpickled."""
    from cache_store import ResultStore
    from cache_store.store import NullStore

    blob = b'{"params": {"prompt": "x"}}'
    with ResultStore(tmp_path / "c", size_limit_bytes=2**20) as store:
        assert store.get_bytes("link-state/ab") is None
        store.put_bytes("link-state/ab", blob)
        assert store.get_bytes("link-state/ab") == blob
    with ResultStore(tmp_path / "c", size_limit_bytes=2**20) as reopened:  # on disk: another process reads it
        assert reopened.get_bytes("link-state/ab") == blob
    null = NullStore()
    null.put_bytes("k", blob)
    assert null.get_bytes("k") is None
