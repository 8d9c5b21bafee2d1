"""lens_core.pool: one load per key under contention, LRU bound, per-device run slots, OOM translation."""

import threading
import time

import pytest
import torch

from lens_core.pool import DeviceOutOfMemoryError, ModelPool, QueueTimeoutError, translate_oom


class CountingLoader:
    def __init__(self, delay=0.0, fail_first=False):
        self.calls = []
        self.delay = delay
        self.fail_first = fail_first
        self.lock = threading.Lock()

    def __call__(self, name, dtype, device):
        with self.lock:
            self.calls.append((name, dtype, device))
            n = len(self.calls)
        time.sleep(self.delay)
        if self.fail_first and n == 1:
            raise OSError("disk said no")
        return object()


def _run_threads(n, target):
    barrier = threading.Barrier(n)
    results, errors = [None] * n, []

    def worker(i):
        barrier.wait()
        try:
            results[i] = target(i)
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results, errors


def test_many_threads_same_key_load_once_and_share_the_object():
    loader = CountingLoader(delay=0.2)
    pool = ModelPool(max_models=2, loader=loader)
    results, errors = _run_threads(16, lambda i: pool.get("m", "float32", "cpu"))
    assert errors == []
    assert len(loader.calls) == 1
    assert all(r is results[0] for r in results)


def test_different_keys_load_separately_and_in_parallel():
    loader = CountingLoader(delay=0.3)
    pool = ModelPool(max_models=4, loader=loader)
    start = time.monotonic()
    results, errors = _run_threads(3, lambda i: pool.get(f"m{i}", "float32", "cpu"))
    elapsed = time.monotonic() - start
    assert errors == [] and len(loader.calls) == 3
    assert len({id(r) for r in results}) == 3
    assert elapsed < 0.8  # three 0.3 s loads one after another would take >= 0.9 s


def test_key_includes_dtype_and_device_and_auto_resolves():
    loader = CountingLoader()
    pool = ModelPool(max_models=4, loader=loader)
    a = pool.get("m", "float32", "cpu")
    b = pool.get("m", "bfloat16", "cpu")
    assert a is not b
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    c = pool.get("m", "float32", "auto")
    assert loader.calls[-1][2] == expected
    assert (c is a) == (expected == "cpu")


def test_lru_bound_evicts_least_recently_used():
    loader = CountingLoader()
    pool = ModelPool(max_models=2, loader=loader)
    a = pool.get("a", "float32", "cpu")
    pool.get("b", "float32", "cpu")
    assert pool.get("a", "float32", "cpu") is a  # touch a: b is now least recent
    pool.get("c", "float32", "cpu")
    assert [k[0] for k in pool.loaded_keys()] == ["a", "c"]
    assert len(loader.calls) == 3
    pool.get("b", "float32", "cpu")  # evicted, so loaded again
    assert len(loader.calls) == 4
    assert len(pool.loaded_keys()) == 2


def test_failed_load_reaches_every_waiter_and_is_retried_later():
    loader = CountingLoader(delay=0.2, fail_first=True)
    pool = ModelPool(loader=loader)
    results, errors = _run_threads(5, lambda i: pool.get("m", "float32", "cpu"))
    assert len(errors) == 5 and all(isinstance(e, OSError) for e in errors)
    assert len(loader.calls) == 1
    assert pool.get("m", "float32", "cpu") is not None
    assert len(loader.calls) == 2


def test_run_slot_allows_at_most_n_concurrent_and_reports_waiting():
    pool = ModelPool(max_runs_per_device=2, loader=CountingLoader())
    active, peak, lock = [0], [0], threading.Lock()
    waited_flags, on_wait_calls = [], []

    def job(i):
        with pool.run_slot("cpu", on_wait=lambda: on_wait_calls.append(i)) as slot:
            with lock:
                active[0] += 1
                peak[0] = max(peak[0], active[0])
            time.sleep(0.15)
            with lock:
                active[0] -= 1
            waited_flags.append(slot.waited)

    _, errors = _run_threads(6, job)
    assert errors == []
    assert peak[0] == 2
    assert waited_flags.count(True) == 4  # 6 jobs start together on 2 slots: exactly 4 wait
    assert len(on_wait_calls) == waited_flags.count(True)


def test_slots_are_per_device():
    pool = ModelPool(max_runs_per_device=1, loader=CountingLoader())
    with pool.run_slot("cpu") as first:
        with pool.run_slot("meta") as other_device:
            assert not first.waited and not other_device.waited
        with pytest.raises(QueueTimeoutError):
            with pool.run_slot("cpu", timeout=0.05):
                pass
    with pool.run_slot("cpu") as again:  # released after the error and the with block
        assert not again.waited


def test_oom_inside_a_slot_becomes_user_error_and_frees_the_slot():
    pool = ModelPool(max_runs_per_device=1, loader=CountingLoader())
    with pytest.raises(DeviceOutOfMemoryError, match="ran out of memory"):
        with pool.run_slot("cpu"):
            raise RuntimeError("CUDA out of memory. Tried to allocate 20.00 GiB")
    with pool.run_slot("cpu", timeout=0.05) as slot:
        assert not slot.waited


def test_translate_oom_handles_torch_oom_type_and_leaves_other_errors_alone():
    with pytest.raises(DeviceOutOfMemoryError):
        with translate_oom():
            raise torch.cuda.OutOfMemoryError("boom")
    with pytest.raises(ValueError, match="unrelated"):
        with translate_oom():
            raise ValueError("unrelated")
    with pytest.raises(RuntimeError, match="shape mismatch"):
        with translate_oom():
            raise RuntimeError("shape mismatch")
