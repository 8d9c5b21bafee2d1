"""The Ray Serve model workers on a local Ray instance (2 CPUs, 127.0.0.1), with the bundled model.

One Ray instance and one deployment for the whole module (Ray takes ~15 s to start on 2 cores).
"""

from __future__ import annotations

import concurrent.futures
import dataclasses
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch

ray = pytest.importorskip("ray")
from ray import serve  # noqa: E402

from lens_core import HookedTransformer  # noqa: E402
from lens_core.experiments import PatchingRequest, PredictionsRequest, activation_patching, predictions  # noqa: E402
from tests.support.app_settings import write_settings  # noqa: E402
from workers.client import RayCompute, WorkerUnavailableError  # noqa: E402
from workers.ray_serve import build_app  # noqa: E402

APP = "circuit-explorer-test"
REPO_ROOT = Path(__file__).resolve().parents[2]
PROMPT = "The cat sat on the mat. The cat sat on the"


@pytest.fixture(scope="module")
def cluster():
    # The replica uses as many torch threads as this process: float sums in another order
    # (another thread count) could differ in the last bit, and the test is for the transport.
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", runtime_env={"env_vars": {"OMP_NUM_THREADS": str(torch.get_num_threads())}})
    try:
        serve.start(proxy_location="Disabled")
        serve.run(build_app(max_models=1, max_runs_per_device=2, device="cpu"), name=APP, route_prefix=None)
        yield serve.get_app_handle(APP)
    finally:
        serve.shutdown()
        ray.shutdown()


@pytest.fixture(scope="module")
def model():
    return HookedTransformer.from_pretrained("default", dtype="float32", device="cpu")


def assert_bit_equal(actual, expected):
    assert type(actual) is type(expected)
    for field in dataclasses.fields(expected):
        a, e = getattr(actual, field.name), getattr(expected, field.name)
        if isinstance(e, torch.Tensor):
            assert a.dtype == e.dtype and a.shape == e.shape and torch.equal(a, e), field.name
        else:
            assert a == e, field.name


def patching_request(model, n_tokens=None, sweep="resid_pre"):
    text = PROMPT if n_tokens is None else "The cat sat on the mat. " * 40
    ids = model.to_tokens(text, truncate=True)[0].tolist()[: n_tokens or None]
    corrupted = list(ids)
    corrupted[2] = corrupted[3]
    return PatchingRequest(clean_tokens=tuple(ids), corrupted_tokens=tuple(corrupted), answer=ids[-1],
                           wrong_answer=ids[-2], sweep=sweep)


def test_results_are_bit_equal_to_the_in_process_run_and_progress_arrives(cluster, model):
    client = RayCompute(app=APP, timeout_s=120)
    ids = tuple(model.to_tokens(PROMPT)[0].tolist())
    request = PredictionsRequest(tokens=ids, top_k=5)
    remote = client.run("predictions", "default", "float32", model.weights_hash(), request)
    assert_bit_equal(remote, predictions(model, request))

    request = patching_request(model)
    seen = []
    remote = client.run("activation_patching", "default", "float32", model.weights_hash(), request,
                        progress=lambda done, total: seen.append((done, total, threading.get_ident())))
    assert_bit_equal(remote, activation_patching(model, request))
    assert seen and seen[-1][0] == seen[-1][1]  # the last event is the whole sweep
    assert {thread for *_, thread in seen} == {threading.get_ident()}  # progress runs on the caller's thread


def test_worker_refuses_other_weights(cluster, model):
    client = RayCompute(app=APP, timeout_s=60)
    request = PredictionsRequest(tokens=(1, 2, 3), top_k=2)
    with pytest.raises(WorkerUnavailableError, match="other weights than the app's"):
        client.run("predictions", "default", "float32", "0" * 64, request)


def replica_pid(cluster, timeout_s: float) -> int:
    """The replica's pid, asked from a fresh thread: a sync Serve call refuses to run on a thread with a
    running event loop (Playwright's sync API leaves one on the main thread when browser tests ran first)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(lambda: cluster.health.remote().result(timeout_s=timeout_s)["pid"]).result()


def test_worker_killed_mid_request_retries_or_says_so_never_hangs(cluster, model):
    client = RayCompute(app=APP, timeout_s=150)
    before = replica_pid(cluster, 60)
    request = patching_request(model, n_tokens=128)
    killed = threading.Event()

    def kill_on_first_progress(done, total):
        if not killed.is_set():
            killed.set()
            os.kill(before, signal.SIGKILL)

    started = time.monotonic()
    try:
        result = client.run("activation_patching", "default", "float32", model.weights_hash(), request,
                            progress=kill_on_first_progress)
    except WorkerUnavailableError as error:
        assert "tried again once" in str(error) or "took longer" in str(error)
    else:
        assert_bit_equal(result, activation_patching(model, request))  # the retry ran on a restarted replica
    assert killed.is_set()
    assert time.monotonic() - started < 160
    deadline = time.monotonic() + 90  # Serve replaces the replica
    while time.monotonic() < deadline:
        try:
            if replica_pid(cluster, 10) != before:
                break
        except Exception:  # noqa: BLE001 - the replacement is still starting
            time.sleep(1)
    else:
        pytest.fail("Serve did not replace the killed replica")


def test_app_not_deployed_is_a_clear_error_quickly(cluster):
    client = RayCompute(app="no-such-app", timeout_s=30)
    started = time.monotonic()
    with pytest.raises(WorkerUnavailableError, match="tried again once"):
        client.run("predictions", "default", "float32", None, PredictionsRequest(tokens=(1, 2), top_k=1))
    assert time.monotonic() - started < 30


def test_pages_run_through_the_workers_and_show_a_clear_error_without_them(cluster, tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    def settings(app_name: str) -> None:
        path = tmp_path / f"settings-{app_name}.toml"
        write_settings(path, tmp_path / app_name, max_prompt_tokens=64,
                       compute=f'backend = "ray"\nray_app = {app_name!r}\ntimeout_s = 60')
        monkeypatch.setenv("CIRCUIT_EXPLORER_SETTINGS", str(path))

    calls = []
    original = RayCompute.run

    def counted(self, experiment, *args, **kwargs):
        calls.append(experiment)
        return original(self, experiment, *args, **kwargs)

    monkeypatch.setattr(RayCompute, "run", counted)
    settings(APP)
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = PROMPT
    at.run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert calls == ["predictions"]  # the page's miss ran on the workers
    model = HookedTransformer.from_pretrained("default", dtype="float32", device="cpu")
    ids = model.to_tokens(PROMPT)[0].tolist()
    table = at.dataframe[0].value
    assert list(table["token id"]) == ids
    expected = predictions(model, PredictionsRequest(tokens=tuple(ids), top_k=5)).loss_per_token
    shown = torch.tensor(table["loss on next token"].iloc[:-1].astype(float).to_numpy(), dtype=torch.float32)
    assert torch.equal(shown, expected)

    settings("no-such-app")  # the workers are gone: a message on the page, the app still answers
    at = AppTest.from_file(str(REPO_ROOT / "app.py"), default_timeout=180)
    at.query_params["prompt"] = "A prompt nobody computed before"
    at.run()
    assert not at.exception
    assert any("model workers could not finish" in e.value for e in at.error), [e.value for e in at.error]
    assert at.sidebar.text_area(key="prompt").value == "A prompt nobody computed before"
