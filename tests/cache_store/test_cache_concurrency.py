"""Two processes hammering the same keys in one directory: no exception, right values, no damage."""

from __future__ import annotations

import multiprocessing
import sys
import types

import torch

from cache_store import ResultStore
from cache_store_testkit import TinyModel, assert_same, mixed_result

N_KEYS = 4
ROUNDS = 25


def expected(i: int):
    result = mixed_result(i)
    result.logits = torch.full((40_000,), float(i))  # large enough to be stored as a file
    return result


def hammer(directory: str, barrier, queue) -> None:
    try:
        store = ResultStore(directory, size_limit_bytes=64 * 2**20)
        barrier.wait(timeout=60)  # both start the loop together, after their imports
        computed = wrong = 0
        for round_ in range(ROUNDS):
            for i in range(N_KEYS):
                if round_ % 7 == 3:
                    store.clear()  # also race deletes against reads and writes

                def compute(i=i):
                    nonlocal computed
                    computed += 1
                    return expected(i)

                got = store.get_or_compute(TinyModel(), "hammer", [1, 2, 3], {"i": i}, compute)
                try:
                    assert_same(got, expected(i))
                except AssertionError:
                    wrong += 1
        queue.put(("ok", computed, wrong, store.stats().corrupt, store.stats().faults))
    except BaseException as error:  # report instead of dying silently
        queue.put(("error", repr(error), 0, 0, 0))


def test_two_processes_share_a_directory_safely(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    queue = ctx.Queue()
    barrier = ctx.Barrier(2)
    workers = [ctx.Process(target=hammer, args=(str(tmp_path), barrier, queue)) for _ in range(2)]
    # A spawned child re-runs the parent's __main__ script; after Streamlit's AppTest ran in this
    # process, __main__ is a generated page script. Start the children with a bare __main__.
    main = sys.modules["__main__"]
    sys.modules["__main__"] = types.ModuleType("__main__")
    try:
        for w in workers:
            w.start()
    finally:
        sys.modules["__main__"] = main
    # Generous: spawned children import torch, slow on a loaded 2-core machine.
    reports = [queue.get(timeout=300) for _ in workers]
    for w in workers:
        w.join(timeout=30)
        assert w.exitcode == 0
    for status, computed, wrong, corrupt, faults in reports:
        assert status == "ok", computed
        assert wrong == 0 and corrupt == 0 and faults == 0
        assert 0 < computed < ROUNDS * N_KEYS  # some hits, some recomputation after clears
    # Afterwards the directory reads back correctly from a third store.
    with ResultStore(tmp_path, size_limit_bytes=64 * 2**20) as store:
        for i in range(N_KEYS):
            assert_same(store.get_or_compute(TinyModel(), "hammer", [1, 2, 3], {"i": i}, lambda i=i: expected(i)), expected(i))
        assert store.stats().entries == N_KEYS
