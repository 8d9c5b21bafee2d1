"""Hook points whose hooks belong to a call, not to the module.

A :class:`HookPoint` is a named place in the forward pass. The hooks that
apply to it live in a :class:`contextvars.ContextVar` that
``HookedTransformer.hooks()`` sets for the duration of one call. Each thread
(and each asyncio task) sees only its own value, so two Streamlit sessions
running different hooks on one shared model never see each other's hooks,
and nothing stays attached when a hook raises: leaving the ``with`` block
resets the variable, whatever happened inside.

With no hooks active, a hook point costs one ``ContextVar.get``.
"""

from __future__ import annotations

import contextvars
import re
from typing import Callable, Iterable, Optional, Union

import torch

HookFn = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]
NameFilter = Union[str, Iterable[str], Callable[[str], bool], None]

# HookPoint -> tuple of hook functions, for the calling thread's current call.
_ACTIVE: contextvars.ContextVar[Optional[dict["HookPoint", tuple[HookFn, ...]]]] = contextvars.ContextVar(
    "lens_core_active_hooks", default=None
)

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


class HookPoint:
    """A named activation. Call it on a tensor; it returns the tensor or a hook's replacement.

    Deliberately not an ``nn.Module``: a module call costs microseconds, and a
    forward pass passes through hundreds of hook points.
    """

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        active = _ACTIVE.get()
        if active is None:
            return x
        fns = active.get(self)
        if fns is None:
            return x
        for fn in fns:
            out = fn(x, self)
            if out is not None:
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"hook on {self.name} returned {type(out).__name__}, expected a Tensor or None")
                x = out
        return x

    def is_active(self) -> bool:
        """Whether any hook of the current call reads this point (used to skip optional work)."""
        active = _ACTIVE.get()
        return active is not None and self in active

    def layer(self) -> Optional[int]:
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def resolve_names(name_filter: NameFilter, all_names: Iterable[str]) -> list[str]:
    """Names selected by a filter: None (all), a name, a list of names, or a predicate."""
    all_names = list(all_names)
    if name_filter is None:
        return all_names
    if isinstance(name_filter, str):
        selected = [name_filter]
    elif callable(name_filter):
        return [name for name in all_names if name_filter(name)]
    else:
        selected = list(name_filter)
    known = set(all_names)
    unknown = [name for name in selected if name not in known]
    if unknown:
        raise KeyError(f"no hook point named {unknown[0]!r} in this model")
    return selected


class active_hooks:
    """Context manager: add hooks for the duration of a ``with`` block, in this thread only.

    Nested blocks compose: inner hooks run after the outer ones on the same point.
    """

    def __init__(self, pairs: list[tuple[HookPoint, HookFn]]) -> None:
        self._pairs = pairs
        self._token: Optional[contextvars.Token] = None

    def __enter__(self) -> "active_hooks":
        current = _ACTIVE.get()
        merged: dict[HookPoint, tuple[HookFn, ...]] = dict(current) if current else {}
        for point, fn in self._pairs:
            merged[point] = merged.get(point, ()) + (fn,)
        self._token = _ACTIVE.set(merged if merged else current)
        return self

    def __exit__(self, *exc) -> None:
        assert self._token is not None
        _ACTIVE.reset(self._token)
        self._token = None
