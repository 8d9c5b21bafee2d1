"""The process-wide model pool and result store, and running an experiment through them.

``st.cache_resource`` holds one :class:`lens_core.pool.ModelPool` and one
``cache_store.ResultStore`` per server process, shared by every session. The pool
holds the loaded models keyed by ``(name, dtype, device)`` (LRU-bounded by the
settings), so a model is loaded once however many sessions ask for it.
"""

from __future__ import annotations

from typing import Any, Callable

import streamlit as st

from lens_core.pool import ModelPool, resolve_device
from lens_core.results import ExperimentResult
from ui.budget import budgeted
from ui.compute import compute_fn, remember_model
from ui.notebook_export import record_run
from ui.settings import Settings, get_settings


@st.cache_resource(show_spinner=False)
def _pool(max_models: int, max_runs_per_device: int) -> ModelPool:
    return ModelPool(max_models=max_models, max_runs_per_device=max_runs_per_device)


def get_pool(settings: Settings | None = None) -> ModelPool:
    settings = settings or get_settings()
    return _pool(settings.max_loaded_models, settings.max_concurrent_runs_per_device)


@st.cache_resource(show_spinner=False)
def _store(directory: str, size_limit_mb: int):
    from cache_store import ResultStore

    return ResultStore(directory, size_limit_bytes=size_limit_mb * 2**20)


@st.cache_resource(show_spinner=False)
def _redis_store(url: str, maxmemory_mb: int):
    from cache_store.redis_backend import RedisResultStore

    return RedisResultStore(url, maxmemory_mb=maxmemory_mb)


def get_store(settings: Settings | None = None):
    """The process's result store: the disk cache, or the shared Redis (``[cache] backend``)."""
    settings = settings or get_settings()
    if settings.cache_backend == "redis":
        return _redis_store(settings.redis_url, settings.redis_maxmemory_mb)
    return _store(str(settings.cache_directory), settings.cache_size_limit_mb)


def load_model(name: str, dtype: str, device: str, settings: Settings | None = None) -> Any:
    """The shared model for (name, dtype, device), with a spinner the first time it loads."""
    pool = get_pool(settings)
    if pool.is_loaded(name, dtype, device):
        model = pool.get(name, dtype, device)
    else:
        with st.spinner(f"Loading {name} ({dtype}, {resolve_device(device)}): first use on this server…"):
            model = pool.get(name, dtype, device)
    remember_model(model, name, dtype)  # the name a remote model worker loads it by
    return model


def run_experiment(
    model: Any,
    experiment: str,
    fn: Callable[..., ExperimentResult],
    request: Any,
    device: str = "auto",
    **fn_kwargs: Any,
) -> ExperimentResult:
    """``fn(model, request)`` through the disk cache, inside one of the device's run slots.

    The key is the tokenized request (``ResultStore.run_experiment``), the same one the
    ``python -m cache_store warm`` command writes, so a warmed view is a hit here.
    ``fn_kwargs`` (a progress callback) must not change the result. While every slot on
    the device is busy the page shows a "queued" notice. Out-of-memory errors come out as
    ``DeviceOutOfMemoryError`` (shown by ``ui.errors.guard``). With a run budget set
    (public demo), each new computation is charged first (``ui.budget``); hits are free.
    A miss runs here or on the Ray Serve model workers, per ``[compute] backend`` (``ui.compute``).
    """
    device = resolve_device(str(getattr(getattr(model, "cfg", None), "device", None) or device))
    settings = get_settings()
    notice = st.empty()

    def queued() -> None:
        notice.info(f"Queued: every run slot on {device} is busy; this run starts when one frees up.", icon=":material/hourglass_top:")

    waited = None
    try:
        with get_pool().run_slot(device, on_wait=queued, what=f"the {experiment} run") as slot:
            waited = slot.wait_seconds if slot.waited else None
            run = budgeted(compute_fn(model, experiment, fn, settings), settings)
            result = get_store().run_experiment(model, experiment, run, request, **fn_kwargs)
        record_run(model, experiment, fn, request, fn_kwargs)  # for the sidebar's notebook export
        return result
    finally:
        text = wait_notice(waited, device)
        if text is None:
            notice.empty()
        else:
            notice.caption(text)


def wait_notice(waited: float | None, device: str) -> str | None:
    """What to say after a run that waited for a slot; nothing for a wait too short to notice (under 0.1 s,
    which would read "queued for 0.0 s")."""
    if waited is None or waited < 0.1:
        return None
    return f"This run was queued for {waited:.1f} s behind other runs on {device}."
