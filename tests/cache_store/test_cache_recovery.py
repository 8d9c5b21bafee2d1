"""The disk store recovers its index without a person, on real directories: deleted under a live store,
replaced by garbage (at open and in use), read-only (asked for, and a real read-only mount)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cache_store import ResultStore
from cache_store_testkit import TinyModel, assert_same, mixed_result
from test_cache_store import TOKENS, Counter, big_result

REPO_ROOT = Path(__file__).resolve().parents[2]


def get(store, experiment, compute, make=mixed_result):
    """The store's value for ``experiment`` (``make()``'s); ``compute.calls`` counts the computations."""

    def run():
        compute.calls += 1
        return make()

    result = store.get_or_compute(TinyModel(), experiment, TOKENS, {}, run)
    assert_same(result, make())
    return result


def snapshot(directory: Path) -> dict[str, tuple[bytes, int]]:
    """Every file's bytes and modification time: a read-only store must change none of them. (SQLite's
    shared-memory/WAL files, which its read-only mode may create beside a WAL database, hold no entry.)"""
    return {str(p.relative_to(directory)): (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(directory.rglob("*"))
            if p.is_file() and not p.name.endswith(("-shm", "-wal"))}


def test_directory_deleted_under_live_stores_is_recreated_and_still_shared(tmp_path, caplog):
    directory = tmp_path / "cache"
    first, second = ResultStore(directory, 2**24), ResultStore(directory, 2**24)  # two users of one directory
    compute = Counter()
    get(first, "x", compute)
    shutil.rmtree(directory)
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        get(first, "y", compute)  # noticed within this request: reopened, computed, stored in the new index
    assert compute.calls == 2 and (directory / "cache.db").exists()
    assert "was deleted while in use" in caplog.text
    get(second, "y", compute)  # the other user reopens the same new index: a hit
    get(second, "x", compute)  # gone with the directory: computed again, stored where both see it
    get(first, "x", compute)
    assert compute.calls == 3
    assert first.stats().entries == second.stats().entries == 2 and not first.degraded
    first.close(), second.close()


@pytest.mark.parametrize("when", ["at open", "under a live store"])
def test_index_replaced_by_garbage_is_moved_aside_and_a_fresh_one_started(tmp_path, caplog, when):
    directory = tmp_path / "cache"
    compute = Counter()
    live = ResultStore(directory, 2**24)
    get(live, "x", compute)
    get(live, "big", compute, lambda: big_result(1))
    garbage = os.urandom(64 * 1024)
    if when == "at open":
        live.close()
    (tmp_path / "garbage").write_bytes(garbage)
    os.replace(tmp_path / "garbage", directory / "cache.db")
    with caplog.at_level(logging.WARNING, logger="cache_store"):
        store = ResultStore(directory, 2**24) if when == "at open" else live
        get(store, "x", compute)  # the old entries are gone: computed, then stored in the fresh index
    assert compute.calls == 3 and not store.degraded
    (aside,) = [p for p in directory.glob("cache.db.corrupt-*") if not p.name.endswith(("-wal", "-shm"))]
    assert aside.read_bytes() == garbage
    assert "damaged" in caplog.text and aside.name in caplog.text
    get(store, "x", compute)
    with ResultStore(directory, 2**24) as other:  # another user of the directory shares the fresh index
        get(other, "x", compute)
    assert compute.calls == 3 and store.stats().entries == 1
    store.close()


def _populate(directory: Path) -> Counter:
    compute = Counter()
    with ResultStore(directory, 2**24) as store:
        get(store, "x", compute)
        get(store, "big", compute, lambda: big_result(2))  # a value kept in its own file, not in SQLite
    assert any(directory.rglob("*.val"))
    return compute


def test_read_only_store_serves_hits_and_writes_nothing(tmp_path, caplog):
    directory = tmp_path / "cache"
    _populate(directory)
    before = snapshot(directory)
    compute = Counter()
    with caplog.at_level(logging.INFO, logger="cache_store"):
        store = ResultStore(directory, 2**24, read_only=True)
        get(store, "x", compute)
        get(store, "big", compute, lambda: big_result(2))
        assert compute.calls == 0
        for _ in range(2):
            get(store, "y", compute)  # a miss: computed each time, never stored
    assert compute.calls == 2 and store.read_only and not store.degraded
    stats = store.stats()
    assert (stats.entries, stats.hits, stats.misses, stats.read_only) == (2, 2, 2, True)
    assert store.clear() == 0
    store.close()
    assert snapshot(directory) == before
    assert "opened read-only, as asked" in caplog.text and "not stored" in caplog.text


READ_ONLY_CHILD = r"""
import json, sys
sys.path[:0] = sys.argv[2:]
from cache_store import ResultStore
from cache_store_testkit import TinyModel, mixed_result
from test_cache_store import TOKENS, big_result
calls = []
store = ResultStore(sys.argv[1], 2**24)
def run(experiment, make):
    value = store.get_or_compute(TinyModel(), experiment, TOKENS, {}, lambda: calls.append(experiment) or make())
    return value.labels == make().labels and bool((value.logits == make().logits).all())
same = [run("x", mixed_result), run("big", lambda: big_result(2)), run("y", mixed_result), run("y", mixed_result)]
print(json.dumps({"same": same, "calls": calls, "read_only": store.read_only, "degraded": store.degraded}))
"""


def _read_only_mount_available(path: Path) -> bool:
    if not shutil.which("unshare"):
        return False
    probe = subprocess.run(["unshare", "-rm", "sh", "-c", f"mount --bind '{path}' '{path}' && "
                            f"mount -o remount,bind,ro '{path}' && ! touch '{path}/probe'"], capture_output=True)
    return probe.returncode == 0 and not (path / "probe").exists()


def test_a_real_read_only_mount_serves_hits(tmp_path):
    """The directory bind-mounted read-only (a user and mount namespace: even root cannot write there)."""
    directory = tmp_path / "cache"
    _populate(directory)
    if not _read_only_mount_available(directory):
        pytest.skip("unprivileged user namespaces with mounts are not available here")
    before = snapshot(directory)
    paths = [str(REPO_ROOT), str(REPO_ROOT / "tests" / "cache_store")]
    script = (f"mount --bind '{directory}' '{directory}' && mount -o remount,bind,ro '{directory}' && "
              f"exec '{sys.executable}' -c \"$0\" \"$@\"")
    out = subprocess.run(["unshare", "-rm", "sh", "-c", script, READ_ONLY_CHILD, str(directory), *paths],
                         capture_output=True, text=True, timeout=120, cwd=REPO_ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    report = json.loads(out.stdout.strip().splitlines()[-1])
    assert report == {"same": [True] * 4, "calls": ["y", "y"], "read_only": True, "degraded": False}, report
    assert "serving its entries read-only" in out.stderr
    assert snapshot(directory) == before
