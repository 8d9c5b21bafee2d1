"""Where an experiment runs: in this process (default) or on the Ray Serve model workers.

:func:`compute_fn` is the seam ``ui.model.run_experiment`` calls: it returns the function
the result store runs on a miss. With ``[compute] backend = "ray"`` that is a call to the
workers (``workers.client.RayCompute``) for any registered experiment on a model this
process loaded through the pool; everything else (a function that is not in
``lens_core.experiments.REGISTRY``) runs here as before. Pages never know which.

The web host still loads each model it shows (for the tokenizer, the config and the
model fingerprint that keys the cache); the forward passes and sweeps, which are the
cost, run on the workers.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable

import streamlit as st

from ui.settings import Settings

_MODEL_KEYS: "weakref.WeakKeyDictionary[Any, tuple[str, str]]" = weakref.WeakKeyDictionary()


def remember_model(model: Any, name: str, dtype: str) -> None:
    """Record the pool name and dtype a model was loaded under (a worker loads it by these)."""
    try:
        _MODEL_KEYS[model] = (name, str(dtype))
    except TypeError:
        pass


@st.cache_resource(show_spinner=False)
def _ray_client(address: str, app: str, timeout_s: float):
    from workers.client import RayCompute

    return RayCompute(address=address, app=app, timeout_s=timeout_s)


def compute_fn(model: Any, experiment: str, fn: Callable, settings: Settings) -> Callable:
    if settings.compute_backend != "ray":
        return fn
    from lens_core.experiments import REGISTRY

    key = _MODEL_KEYS.get(model)
    if REGISTRY.get(experiment) is not fn or key is None:
        return fn
    client = _ray_client(settings.ray_address, settings.ray_app, settings.compute_timeout_s)
    weights = model.weights_hash() if callable(getattr(model, "weights_hash", None)) else None

    def remote(_model: Any, request: Any, progress: Callable[[int, int], None] | None = None, **kwargs: Any) -> Any:
        if kwargs:  # a feature dictionary chosen on the page lives in this process: the run stays here
            return fn(_model, request, progress=progress, **kwargs) if progress is not None else fn(_model, request, **kwargs)
        return client.run(experiment, key[0], key[1], weights, request, progress)

    return remote
