"""Filling the cache ahead of time: which experiments ``warm`` knows how to run.

Each entry names a function ``fn(model, request)`` and its request dataclass in
``lens_core.experiments``; both are looked up when ``warm`` runs, so this module
imports nothing from the experiments and a missing one is skipped with a
message. ``warm`` runs each with its default request for the prompt's token ids,
through :meth:`ResultStore.run_experiment`, which is the call pages should use
too: the same request gives the same key, so a warmed default view is a hit.
"""

from __future__ import annotations

import dataclasses
import importlib
import logging
from typing import Any, Callable, Iterable

from .store import ResultStore

log = logging.getLogger(__name__)

# experiment name -> (module, function, request class)
WARMABLE: dict[str, tuple[str, str, str]] = {
    "predictions": ("lens_core.experiments.views.predictions", "predictions", "PredictionsRequest"),
    "attention_patterns": ("lens_core.experiments.views.attention", "attention_patterns", "AttentionRequest"),
    "logit_lens": ("lens_core.experiments.views.logit_lens", "logit_lens", "LogitLensRequest"),
    "dla": ("lens_core.experiments.views.dla", "direct_logit_attribution", "DLARequest"),
}


def resolve(name: str, registry: dict[str, tuple[str, str, str]] = WARMABLE) -> tuple[Callable, type] | str:
    """(function, request class), or a message saying why the experiment is unavailable."""
    if name not in registry:
        return f"unknown experiment {name!r} (known: {', '.join(sorted(registry))})"
    module_name, fn_name, request_name = registry[name]
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as missing:
        return f"{module_name} is not available ({missing})"
    fn, request_cls = getattr(module, fn_name, None), getattr(module, request_name, None)
    if not callable(fn) or not dataclasses.is_dataclass(request_cls):
        return f"{module_name} has no {fn_name}() / {request_name}"
    return fn, request_cls


def warm(
    store: ResultStore,
    model: Any,
    prompts: Iterable[str],
    experiments: Iterable[str],
    registry: dict[str, tuple[str, str, str]] = WARMABLE,
    say: Callable[[str], None] = print,
) -> dict[str, int]:
    """Run each experiment's default request on each prompt through the store.

    Returns the number of prompts done per experiment (skipped experiments: 0).
    """
    done: dict[str, int] = {}
    prompts = [p for p in prompts if p.strip()]
    for name in experiments:
        found = resolve(name, registry)
        done[name] = 0
        if isinstance(found, str):
            say(f"skip {name}: {found}")
            continue
        fn, request_cls = found
        for prompt in prompts:
            tokens = tuple(model.to_tokens(prompt)[0].tolist())
            try:
                request = request_cls(tokens=tokens)
            except TypeError as error:
                say(f"skip {name}: its request needs more than tokens ({error})")
                break
            store.run_experiment(model, name, fn, request)
            done[name] += 1
        say(f"{name}: {done[name]} prompt(s) cached")
    return done
