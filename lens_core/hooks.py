"""Hook points whose hooks belong to a call, not to the module.

A :class:`HookPoint` is a named place in the forward pass. The hooks that
apply to it live in a :class:`contextvars.ContextVar` that
``HookedTransformer.hooks()`` sets for the duration of one call. Each thread
(and each asyncio task) sees only its own value, so two Streamlit sessions
running different hooks on one shared model never see each other's hooks,
and nothing stays attached when a hook raises: leaving the ``with`` block
resets the variable, whatever happened inside.

With no hooks active, a hook point costs one ``ContextVar.get``.

TransformerLens's model-wide hooks (``HookPoint.add_hook``, ``model.add_hook``)
exist too, for notebooks: they live on the hook point, every thread sees them,
and they stay until removed. They run before the call's own hooks. The app
never adds them; an empty tuple on each point keeps them free when unused.
"""

from __future__ import annotations

import contextvars
import dataclasses
import re
from typing import Any, Callable, Iterable, Optional, Union

import torch

HookFn = Callable[[torch.Tensor, "HookPoint"], Optional[torch.Tensor]]
NameFilter = Union[str, Iterable[str], Callable[[str], bool], None]

# HookPoint -> tuple of hook functions, for the calling thread's current call.
_ACTIVE: contextvars.ContextVar[Optional[dict["HookPoint", tuple[HookFn, ...]]]] = contextvars.ContextVar(
    "lens_core_active_hooks", default=None
)

_LAYER_RE = re.compile(r"^blocks\.(\d+)\.")


@dataclasses.dataclass
class LensHandle:
    """What ``HookPoint.add_hook`` returns (TransformerLens's name): ``handle.hook.remove()`` detaches it."""

    hook: Any
    is_permanent: bool = False
    context_level: Optional[int] = None
    user_hook: Any = None


class _Remover:
    """The ``handle.hook`` part: ``remove()`` takes this one entry off its hook point."""

    def __init__(self, point: "HookPoint", entry: tuple) -> None:
        self._point, self._entry = point, entry

    def remove(self) -> None:
        self._point._wide = tuple(e for e in self._point._wide if e is not self._entry)


class HookPoint:
    """A named activation. Call it on a tensor; it returns the tensor or a hook's replacement.

    Deliberately not an ``nn.Module``: a module call costs microseconds, and a
    forward pass passes through hundreds of hook points.
    """

    __slots__ = ("name", "ctx", "_wide")

    def __init__(self, name: str) -> None:
        self.name = name
        self.ctx: dict = {}  # TransformerLens's scratch space for hooks (shared, like theirs)
        # Model-wide hooks: (callable, dir, is_permanent, level, user fn), in run order.
        self._wide: tuple = ()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self._wide:
            x = self._run(tuple(entry[0] for entry in self._wide), x)
        active = _ACTIVE.get()
        if active is None:
            return x
        fns = active.get(self)
        if fns is None:
            return x
        return self._run(fns, x)

    def _run(self, fns: tuple, x: torch.Tensor) -> torch.Tensor:
        for fn in fns:
            out = fn(x, self)
            if out is not None:
                if not isinstance(out, torch.Tensor):
                    raise TypeError(f"hook on {self.name} returned {type(out).__name__}, expected a Tensor or None")
                x = out
        return x

    def is_active(self) -> bool:
        """Whether any hook reads this point (used to skip optional work)."""
        if self._wide:
            return True
        active = _ACTIVE.get()
        return active is not None and self in active

    def layer(self) -> Optional[int]:
        match = _LAYER_RE.match(self.name)
        return int(match.group(1)) if match else None

    # ---- TransformerLens's model-wide hooks (visible to every thread) ------------
    def add_hook(self, hook: HookFn, dir: str = "fwd", is_permanent: bool = False, level: Optional[int] = None,
                 prepend: bool = False) -> LensHandle:
        """Attach ``hook(tensor, hook_point)`` to this point for every later run, in every thread.

        ``dir="bwd"``: ``hook(grad, hook_point)`` on the gradient of this activation (a returned
        tensor replaces the gradient). ``prepend`` runs it before the hooks already here; ``level``
        tags it for ``remove_hooks(level=...)``. Returns a handle (``handle.hook.remove()``)."""
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        entry = (hook if dir == "fwd" else grad_hook(hook), dir, is_permanent, level, hook)
        self._wide = (entry,) + self._wide if prepend else self._wide + (entry,)
        return LensHandle(_Remover(self, entry), is_permanent, level, hook)

    def add_perma_hook(self, hook: HookFn, dir: str = "fwd") -> None:
        self.add_hook(hook, dir=dir, is_permanent=True)

    def remove_hooks(self, dir: str = "fwd", including_permanent: bool = False, level: Optional[int] = None) -> None:
        if dir not in ("fwd", "bwd", "both"):
            raise ValueError(f"dir must be 'fwd', 'bwd' or 'both', got {dir!r}")
        self._wide = tuple(entry for entry in self._wide if not (
            dir in ("both", entry[1]) and (including_permanent or not entry[2]) and (level is None or entry[3] == level)))

    def has_hooks(self, dir: str = "both", including_permanent: bool = True, level: Optional[int] = None) -> bool:
        """Whether model-wide hooks are attached here (the call-scoped hooks of ``run_with_hooks`` are
        private to their call: ``is_active()`` sees those)."""
        if dir not in ("fwd", "bwd", "both"):
            raise ValueError(f"Invalid direction {dir}")
        return any(dir in ("both", entry[1]) and (including_permanent or not entry[2]) and (level is None or entry[3] == level)
                   for entry in self._wide)

    def _handles(self, dir: str) -> list[LensHandle]:
        return [LensHandle(_Remover(self, e), e[2], e[3], e[4]) for e in self._wide if e[1] == dir]

    @property
    def fwd_hooks(self) -> list[LensHandle]:
        """The model-wide forward hooks, as TransformerLens lists them (``.user_hook`` is the function)."""
        return self._handles("fwd")

    @property
    def bwd_hooks(self) -> list[LensHandle]:
        return self._handles("bwd")

    def clear_context(self) -> None:
        self.ctx = {}

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


def grad_hook(fn: HookFn) -> HookFn:
    """A forward hook that attaches ``fn(grad, hook)`` to the activation's gradient."""

    def attach(tensor: torch.Tensor, hook: HookPoint) -> None:
        if tensor.requires_grad:
            tensor.register_hook(lambda grad: fn(grad, hook))

    return attach


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
        self.on_exit: Optional[Callable[[], Any]] = None  # e.g. clear the points' ctx
        self.target: Any = None  # what ``with ... as x`` gives (the model, as in TransformerLens)

    def __enter__(self) -> "active_hooks":
        current = _ACTIVE.get()
        merged: dict[HookPoint, tuple[HookFn, ...]] = dict(current) if current else {}
        for point, fn in self._pairs:
            merged[point] = merged.get(point, ()) + (fn,)
        self._token = _ACTIVE.set(merged if merged else current)
        return self if self.target is None else self.target

    def __exit__(self, *exc) -> None:
        assert self._token is not None
        _ACTIVE.reset(self._token)
        self._token = None
        if self.on_exit is not None:
            self.on_exit()
