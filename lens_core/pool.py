"""Share loaded models and device time between the sessions of one server process.

* :meth:`ModelPool.get` loads each model once per process, keyed by
  ``(name, dtype, device)``. When many threads ask for the same key at once, one
  thread loads and the others wait for its result (or its error). At most
  ``max_models`` stay loaded; the least recently used is dropped first.
* :meth:`ModelPool.get_dictionary` keeps feature dictionaries (transcoders, CLTs, SAEs) the
  same way, under names of the caller's choosing. With ``max_bytes`` set, models and
  dictionaries share one memory budget (the bytes of their tensors' storages, memory-mapped
  ones included since every page may become resident): the least recently used entries are
  dropped until a new one fits, and one that alone exceeds the budget is refused
  (:class:`MemoryBudgetError`) and not kept. A load that fails leaves nothing behind.
* :meth:`ModelPool.run_slot` bounds how many experiment runs use one device at a
  time. A caller that has to wait is told so (``on_wait`` callback and
  ``slot.waited``) so a page can show "queued".
* :func:`translate_oom` turns an out-of-memory error into
  :class:`DeviceOutOfMemoryError`, a message meant for the user; the server and
  the other runs carry on.

Nothing here imports streamlit.
"""

from __future__ import annotations

import collections
import contextlib
import dataclasses
import gc
import threading
import time
from typing import Any, Callable, Iterator

import torch

ModelKey = tuple[str, str, str]
Loader = Callable[[str, str, str], Any]


class DeviceOutOfMemoryError(RuntimeError):
    """A run needed more memory than the device had left. Safe to show to a user."""


class MemoryBudgetError(RuntimeError):
    """A model or dictionary is larger than the pool's whole memory budget. Safe to show to a user."""


class QueueTimeoutError(RuntimeError):
    """Waited too long for a free run slot on a device. Safe to show to a user."""


def resolve_device(device: str | torch.device | None) -> str:
    """'auto' -> 'cuda' when available else 'cpu'; 'cuda' -> 'cuda:0' so both spellings share a slot."""
    if device is None or str(device) == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda" and dev.index is None:
        return "cuda:0"
    return str(dev)


def is_out_of_memory(exc: BaseException) -> bool:
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    if oom_type is not None and isinstance(exc, oom_type):
        return True
    return isinstance(exc, (RuntimeError, MemoryError)) and (
        isinstance(exc, MemoryError) or "out of memory" in str(exc).lower()
    )


@contextlib.contextmanager
def translate_oom(what: str = "this run") -> Iterator[None]:
    """Re-raise an out-of-memory error as :class:`DeviceOutOfMemoryError` and free cached memory."""
    try:
        yield
    except DeviceOutOfMemoryError:
        raise
    except BaseException as exc:
        if not is_out_of_memory(exc):
            raise
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        raise DeviceOutOfMemoryError(
            f"The device ran out of memory during {what}. Try a shorter prompt, fewer sweep "
            "options or a smaller model, or try again when the server is less busy."
        ) from exc


def default_loader(name: str, dtype: str, device: str) -> Any:
    from lens_core import HookedTransformer  # imported late: the pool itself needs only torch

    return HookedTransformer.from_pretrained(name, dtype=dtype, device=device)


def object_bytes(value: Any) -> int:
    """Bytes of the distinct tensor storages a loaded model or dictionary holds (0 for anything else)."""
    seen: dict[int, int] = {}
    stack = [value]
    while stack:
        obj = stack.pop()
        if isinstance(obj, torch.Tensor):
            storage = obj.untyped_storage()
            seen[storage.data_ptr()] = storage.nbytes()
        elif isinstance(obj, torch.nn.Module):
            stack.extend(obj.state_dict(keep_vars=True).values())
        elif hasattr(obj, "by_layer"):  # a TranscoderSet
            stack.extend(obj.by_layer.values())
        elif isinstance(obj, (list, tuple)):
            stack.extend(obj)
        elif isinstance(obj, dict):
            stack.extend(obj.values())
    return sum(seen.values())


@dataclasses.dataclass
class Slot:
    device: str
    waited: bool
    wait_seconds: float


class _Pending:
    """A load in progress: waiters block on ``done`` and then read value or error."""

    def __init__(self) -> None:
        self.done = threading.Event()
        self.value: Any = None
        self.error: BaseException | None = None


class ModelPool:
    def __init__(self, max_models: int = 2, max_runs_per_device: int = 2, loader: Loader = default_loader,
                 max_bytes: int | None = None):
        if max_models < 1 or max_runs_per_device < 1:
            raise ValueError("max_models and max_runs_per_device must be at least 1")
        self.max_models = max_models
        self.max_bytes = max_bytes
        self._bytes: dict[ModelKey, int] = {}
        self.max_runs_per_device = max_runs_per_device
        self._loader = loader
        self._lock = threading.Lock()
        self._loaded: collections.OrderedDict[ModelKey, Any] = collections.OrderedDict()
        self._pending: dict[ModelKey, _Pending] = {}
        self._slots: dict[str, threading.BoundedSemaphore] = {}

    # -- models ---------------------------------------------------------------
    @staticmethod
    def key(name: str, dtype: str = "float32", device: str = "auto") -> ModelKey:
        return (name, str(dtype), resolve_device(device))

    def is_loaded(self, name: str, dtype: str = "float32", device: str = "auto") -> bool:
        with self._lock:
            return self.key(name, dtype, device) in self._loaded

    def loaded_keys(self) -> list[ModelKey]:
        """Loaded keys, least recently used first."""
        with self._lock:
            return list(self._loaded)

    def get(self, name: str, dtype: str = "float32", device: str = "auto") -> Any:
        key = self.key(name, dtype, device)
        return self._get(key, lambda: self._loader(*key), f"loading {name!r}")

    def get_dictionary(self, name: str, loader: Callable[[], Any]) -> Any:
        """The dictionary kept under ``name``, loaded once with ``loader()`` (which should check it fits its model)."""
        return self._get(("dictionary", name, ""), loader, f"loading the dictionary {name!r}")

    def used_bytes(self) -> int:
        """Bytes of every loaded model and dictionary, as the budget counts them."""
        with self._lock:
            return sum(self._bytes.values())

    def _get(self, key: ModelKey, load: Callable[[], Any], what: str) -> Any:
        with self._lock:
            if key in self._loaded:
                self._loaded.move_to_end(key)
                return self._loaded[key]
            pending = self._pending.get(key)
            owner = pending is None
            if owner:
                pending = self._pending[key] = _Pending()
        if not owner:
            pending.done.wait()
            if pending.error is not None:
                raise pending.error
            return pending.value

        try:
            with translate_oom(what):
                value = load()
            size = object_bytes(value)
            if self.max_bytes is not None and size > self.max_bytes:
                raise MemoryBudgetError(f"{what[0].upper()}{what[1:]} needs {size / 2**20:,.1f} MiB, more than the "
                                        f"server's whole memory budget ({self.max_bytes / 2**20:,.1f} MiB)")
        except BaseException as exc:
            pending.error = exc
            with self._lock:
                del self._pending[key]  # a failed load is not remembered: the next ask retries
            pending.done.set()
            raise
        pending.value = value
        with self._lock:
            self._loaded[key] = value
            self._bytes[key] = size
            del self._pending[key]
            evicted = []
            models = [k for k in self._loaded if k[0] != "dictionary"]
            while len(models) > self.max_models:
                evicted.append(self._pop(models.pop(0)))
            while self.max_bytes is not None and sum(self._bytes.values()) > self.max_bytes:
                evicted.append(self._pop(next(k for k in self._loaded if k != key)))
        pending.done.set()
        if evicted:
            del evicted
            gc.collect()
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        return value

    def _pop(self, key: ModelKey) -> Any:
        self._bytes.pop(key, None)
        return self._loaded.pop(key)

    def evict(self, name: str, dtype: str = "float32", device: str = "auto") -> bool:
        with self._lock:
            key = self.key(name, dtype, device)
            return key in self._loaded and self._pop(key) is not None

    def evict_dictionary(self, name: str) -> bool:
        with self._lock:
            key = ("dictionary", name, "")
            return key in self._loaded and self._pop(key) is not None

    # -- device time ----------------------------------------------------------
    def _semaphore(self, device: str) -> threading.BoundedSemaphore:
        with self._lock:
            sem = self._slots.get(device)
            if sem is None:
                sem = self._slots[device] = threading.BoundedSemaphore(self.max_runs_per_device)
            return sem

    @contextlib.contextmanager
    def run_slot(
        self,
        device: str = "auto",
        on_wait: Callable[[], None] | None = None,
        timeout: float | None = None,
        what: str = "this run",
    ) -> Iterator[Slot]:
        """Hold one of the device's run slots for the ``with`` body.

        When every slot is taken, ``on_wait()`` is called once before blocking and
        the yielded ``slot.waited`` is True. Out-of-memory errors from the body
        come out as :class:`DeviceOutOfMemoryError`.
        """
        device = resolve_device(device)
        sem = self._semaphore(device)
        start = time.monotonic()
        waited = not sem.acquire(blocking=False)
        if waited:
            if on_wait is not None:
                on_wait()
            if not sem.acquire(timeout=timeout):
                raise QueueTimeoutError(
                    f"The server is busy: no free slot on {device} after {timeout:.0f} s. Please try again."
                )
        try:
            with translate_oom(what):
                yield Slot(device=device, waited=waited, wait_seconds=time.monotonic() - start)
        finally:
            sem.release()
