"""The app replica's side of the Ray Serve model workers.

``RayCompute(address, app, timeout_s).run(experiment, model_name, dtype, weights_hash, request, progress)``
sends the experiment's registry name and its tokenized request to a ``ModelWorker``
replica and returns the decoded result (:func:`cache_store.codec.decode_result`).

Never a hang: the whole call, retry included, is bounded by ``timeout_s``; events are
read on a helper thread and waited for with that deadline, and a late call is
cancelled. A replica that dies mid-request (killed, out of host memory, node lost)
gets one retry, which Serve routes to a live or restarted replica; if that fails too
the caller gets :class:`WorkerUnavailableError`, a message for the user. Errors the
experiment itself raised come back by type name: the user-facing ones of
``lens_core`` (out of memory, prompt too long, model load failure) are re-raised as
the same class; anything else as :class:`WorkerError`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any, Callable

from cache_store.codec import CorruptEntry, decode_result
from lens_core.pool import QueueTimeoutError
from lens_core.results import ExperimentResult

log = logging.getLogger(__name__)
# Worker-side errors re-raised as themselves (their messages are written for users).
PASS_THROUGH = ("DeviceOutOfMemoryError", "QueueTimeoutError", "ModelLoadError", "PromptTooLongError")


class WorkerUnavailableError(QueueTimeoutError):
    """No model worker answered in time or they kept failing. Shown to the user like a queue timeout."""


class WorkerError(RuntimeError):
    """The experiment failed on the worker with an error not meant for users (a bug: see the worker's log)."""


def _worker_error(name: str, message: str) -> BaseException:
    import lens_core
    import lens_core.pool

    if name in PASS_THROUGH:
        for module in (lens_core.pool, lens_core):
            cls = getattr(module, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                try:
                    return cls(message)
                except TypeError:  # a constructor that takes other arguments
                    break
    if name == "WeightsMismatchError":
        return WorkerUnavailableError(f"The model workers cannot run this model: {message}.")
    return WorkerError(f"{name}: {message}")


class RayCompute:
    def __init__(self, address: str = "auto", app: str = "circuit-explorer", timeout_s: float = 300.0,
                 retries: int = 1) -> None:
        self.address, self.app, self.timeout_s, self.retries = address, app, float(timeout_s), int(retries)
        self._lock = threading.Lock()
        self._handle: Any = None

    def handle(self) -> Any:
        with self._lock:
            if self._handle is None:
                import ray
                from ray import serve

                if not ray.is_initialized():
                    ray.init(address=self.address, log_to_driver=False, ignore_reinit_error=True)
                self._handle = serve.get_app_handle(self.app)
            return self._handle

    def run(self, experiment: str, model_name: str, dtype: str, weights_hash: str | None, request: Any,
            progress: Callable[[int, int], None] | None = None) -> ExperimentResult:
        deadline = time.monotonic() + self.timeout_s
        last: BaseException | None = None
        for attempt in range(1 + self.retries):
            try:
                return self._attempt(experiment, model_name, dtype, weights_hash, request, progress, deadline)
            except _Retryable as error:
                last = error.__cause__ or error
                log.warning("model worker failed during %s (attempt %d: %s: %s)", experiment, attempt + 1,
                            type(last).__name__, last)
                with self._lock:
                    self._handle = None  # look the application up again (it may have been redeployed)
                if time.monotonic() >= deadline:
                    break
        raise WorkerUnavailableError(
            f"The model workers could not finish the {experiment} run ({type(last).__name__}); "
            "it was tried again once. Please try again in a minute.") from last

    def _attempt(self, experiment, model_name, dtype, weights_hash, request, progress, deadline) -> ExperimentResult:
        try:
            stream = self.handle().options(stream=True).run.remote(
                experiment, model_name, dtype, weights_hash, request, progress is not None)
        except Exception as error:  # noqa: BLE001 - Ray not running, app not deployed, ...
            raise _Retryable() from error
        events: queue.SimpleQueue = queue.SimpleQueue()

        def pump() -> None:
            try:
                for event in stream:
                    events.put(event)
            except BaseException as error:  # noqa: BLE001 - handed to the waiting thread
                events.put(("failed", error))
            else:
                events.put(("failed", RuntimeError("the worker's stream ended without a result")))

        threading.Thread(target=pump, name=f"ray-{experiment}", daemon=True).start()
        while True:
            remaining = deadline - time.monotonic()
            try:
                event = events.get(timeout=max(0.0, remaining))
            except queue.Empty:
                try:
                    stream.cancel()
                except Exception:  # noqa: BLE001 - best effort
                    pass
                raise WorkerUnavailableError(
                    f"The {experiment} run took longer than {self.timeout_s:.0f} s on the model workers and was "
                    "stopped. Try a smaller request, or try again when the server is less busy.") from None
            kind = event[0]
            if kind == "progress":
                if progress is not None:
                    progress(event[1], event[2])  # on the caller's thread (Streamlit widgets need it)
            elif kind == "result":
                try:
                    return decode_result(event[1])
                except CorruptEntry as error:
                    raise _Retryable() from error
            elif kind == "error":
                raise _worker_error(event[1], event[2])
            else:  # "failed": the replica died, the stream broke
                raise _Retryable() from event[1]


class _Retryable(Exception):
    """Internal: this attempt failed for a reason another attempt may not have."""
