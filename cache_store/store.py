"""The result store: hit from disk, or compute, store and return.

``ResultStore`` sits on ``diskcache.Cache`` (SQLite index + one file per large
value, LRU eviction under a size limit; several processes on one machine may
share a directory: writes are SQLite transactions, value files get random
names, so two processes computing the same key both succeed and the last
write wins).

Values are the bytes blobs of :mod:`cache_store.codec`; :class:`SafeDisk`
lets diskcache store only ``bytes`` (raw in SQLite when small, raw in a file
when large) and refuses to read back anything it would have to unpickle.

Faults never reach the caller: a corrupt or truncated entry is a miss (it is
recomputed and rewritten); a cache that cannot be written (disk full, locked)
logs a warning and the result is computed and served anyway. Errors raised by
``compute`` itself do propagate. The index recovers without a person:

- the directory (or its ``cache.db``) deleted or replaced while the store is
  live: noticed at the next read or write (one ``stat``), the store reopens the
  path (recreating it), so every process using it shares the new index;
- an index that is not a SQLite database (or is malformed): moved aside to
  ``cache.db.corrupt-<time>-<pid>``, a fresh index is started, a warning says so;
- a directory that cannot be written: hits are served from the index opened
  read-only (:mod:`cache_store.readonly`), misses are computed and not stored,
  a warning says so, and opening it read-write is retried every ``RETRY_S``;
- a directory that cannot be opened at all leaves the store ``degraded``
  (computes every time), retried every ``RETRY_S`` too.

Precision: experiment results are stored at full precision (bit-exact).
Activation caches too, unless ``activations_fp16=True``: then float32/float64
activations are stored as float16 (about 3 significant digits; half the
bytes) and read back cast to their original dtype. The value returned on a
miss is always the freshly computed one, at full precision.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import threading
from pathlib import Path
from typing import Any, Callable, TypeVar

import diskcache
import torch
from diskcache.core import MODE_BINARY, MODE_RAW, UNKNOWN

from lens_core.results import ExperimentResult

from .codec import CorruptEntry, decode_activations, decode_result, encode_activations, encode_result
from .keys import make_key, model_fingerprint
from .readonly import ReadOnlyIndex
from .recovery import CACHE_FAULTS, RETRY_S, IndexRecovery, is_corrupt_index  # noqa: F401 (re-exported)

log = logging.getLogger(__name__)

T = TypeVar("T")
ENV_DIR = "CIRCUIT_EXPLORER_CACHE_DIR"
DEFAULT_SIZE_LIMIT = 4 * 2**30


def default_cache_dir() -> Path:
    """``$CIRCUIT_EXPLORER_CACHE_DIR``, else ``~/.cache/circuit-explorer/results``.

    A subdirectory, because CI keeps virtual environments in ``~/.cache/circuit-explorer``.
    """
    return Path(os.environ.get(ENV_DIR) or "~/.cache/circuit-explorer/results").expanduser()


def tokenize_request(model: Any, request: Any) -> tuple[Any, tuple[int, ...]] | tuple[None, None]:
    """(the request with each ``*prompt`` text replaced by ``*tokens`` ids, the first ids),
    or (None, None) when a pair has both text and ids. A pair with neither stays as it is
    (the experiment decides: an error, or no prompt at all, like repeated random tokens);
    a request with no prompt reads only the weights and is keyed with no token ids."""
    changes: dict[str, Any] = {}
    all_ids: list[tuple[int, ...]] = []
    for field in dataclasses.fields(request):
        ids_field = field.name[: -len("prompt")] + "tokens"
        if not field.name.endswith("prompt") or not hasattr(request, ids_field):
            continue
        text, ids = getattr(request, field.name), getattr(request, ids_field)
        if text is not None and ids is not None:
            return None, None
        if text is None and ids is None:
            continue
        if ids is None:
            ids = model.to_tokens(text)[0]
        ids = tuple(int(t) for t in torch.as_tensor(ids).reshape(-1).tolist())
        changes[field.name], changes[ids_field] = None, ids
        all_ids.append(ids)
    return dataclasses.replace(request, **changes), (all_ids[0] if all_ids else ())


class UnsafeEntry(CorruptEntry):
    """An entry diskcache would have to unpickle: never read, treated as corrupt."""


class SafeDisk(diskcache.Disk):
    """diskcache serialization restricted to str keys and bytes values, no pickle either way."""

    def put(self, key):
        if type(key) is not str:
            raise TypeError("cache keys are hex strings")
        return super().put(key)

    def get(self, key, raw):
        if not raw:
            raise UnsafeEntry("pickled key in cache")
        return super().get(key, raw)

    def store(self, value, read, key=UNKNOWN):
        if type(value) is not bytes:
            raise TypeError("cache values are bytes blobs")
        return super().store(value, read, key=key)

    def fetch(self, mode, filename, value, read):
        if mode not in (MODE_RAW, MODE_BINARY):
            raise UnsafeEntry(f"cache entry in diskcache mode {mode} (only raw bytes are read)")
        data = super().fetch(mode, filename, value, read)
        if mode == MODE_RAW and not isinstance(data, bytes):
            raise UnsafeEntry("raw cache entry is not bytes")
        return data


@dataclasses.dataclass
class StoreStats:
    directory: str
    degraded: bool
    entries: int
    bytes: int
    size_limit_bytes: int
    hits: int  # shared by all processes using the directory (diskcache statistics)
    misses: int
    corrupt: int  # entries found unreadable and recomputed, this process
    faults: int  # cache read/write errors survived, this process
    read_only: bool = False  # hits served from an index opened read-only; nothing is stored

    @property
    def hit_rate(self) -> float:
        total = self.hits + self.misses
        return self.hits / total if total else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "hit_rate": self.hit_rate}


class ResultStore(IndexRecovery):
    """Content-keyed disk cache for experiment results and activation caches.

    ``store.get_or_compute(model, "logit_lens", tokens, {"layer": 3}, lambda: run(...))``
    returns the stored result for that model fingerprint, token ids, experiment
    and parameters, or calls ``compute`` (an ``ExperimentResult``), stores and
    returns it. ``params`` must hold everything that changes the result
    (see :func:`cache_store.keys.canonical` for accepted types).
    """

    def __init__(
        self,
        directory: str | os.PathLike | None = None,
        size_limit_bytes: int | None = DEFAULT_SIZE_LIMIT,
        activations_fp16: bool = False,
        timeout_s: float = 10.0,
        read_only: bool = False,
    ) -> None:
        """``read_only=True``: never write to the directory (serve its hits, store nothing)."""
        self.directory = Path(directory).expanduser() if directory is not None else default_cache_dir()
        # None keeps the limit already recorded in the directory (diskcache's 1 GiB if new).
        settings: dict[str, Any] = {} if size_limit_bytes is None else {"size_limit": int(size_limit_bytes)}
        self.size_limit_bytes = int(size_limit_bytes or 0)
        self.activations_fp16 = activations_fp16
        self._corrupt = 0
        self._faults = 0
        self._warned: set[str] = set()
        self._cache: diskcache.Cache | None = None
        self._reader: ReadOnlyIndex | None = None
        self._options = dict(timeout=timeout_s, disk=SafeDisk, eviction_policy="least-recently-used", statistics=1, **settings)
        self._always_read_only = read_only
        self._lock = threading.RLock()  # reopening: one thread at a time
        self._index_id: tuple[int, int] | None = None  # (st_dev, st_ino) of the cache.db that is open
        self._retry_at = 0.0
        self._ro_hits = self._ro_misses = 0
        self._open()

    @property
    def degraded(self) -> bool:
        """True when the directory could not be opened at all: every call computes."""
        return self._cache is None and self._reader is None

    @property
    def read_only(self) -> bool:
        """True while hits come from an index opened read-only (misses are computed, not stored)."""
        return getattr(self, "_reader", None) is not None

    # -- public API -----------------------------------------------------------------

    def get_or_compute(
        self, model: Any, experiment: str, tokens: Any, params: Any, compute: Callable[[], ExperimentResult]
    ) -> ExperimentResult:
        key = make_key("result", model_fingerprint(model), tokens, experiment, params)
        return self._get_or_compute(key, compute, encode_result, decode_result)

    def run_experiment(self, model: Any, experiment: str, fn: Callable[..., ExperimentResult], request: Any, **fn_kwargs: Any) -> ExperimentResult:
        """``fn(model, request)`` through the cache, for lens_core's request dataclasses.

        Every text/ids field pair of the request (``prompt``/``tokens``,
        ``clean_prompt``/``clean_tokens``, ``corrupted_prompt``/``corrupted_tokens``...)
        is turned into token ids with ``model.to_tokens``, so a prompt and its ids
        share an entry. The key parameters are that tokenized request (all its
        fields), and ``fn`` runs on it. ``fn_kwargs`` (e.g. a progress callback)
        must not change the result. A request that gives both text and ids for a
        pair is passed to ``fn`` uncached, for ``fn`` to report.
        """
        tokenized, tokens = tokenize_request(model, request)
        if tokenized is None:
            return fn(model, request, **fn_kwargs)
        return self.get_or_compute(model, experiment, tokens, {"request": tokenized}, lambda: fn(model, tokenized, **fn_kwargs))

    def get_or_compute_activations(
        self, model: Any, tokens: Any, names_filter_key: Any, compute: Callable[[], dict[str, torch.Tensor]]
    ) -> dict[str, torch.Tensor]:
        """A ``run_with_cache`` activation dict (hook name -> tensor) for one prompt.

        ``names_filter_key`` identifies which hooks were cached (None for all, a
        name, or a list of names); a callable filter cannot be keyed. The caller
        rebuilds ``ActivationCache(d, model)`` from the returned dict.
        """
        storage = "float16" if self.activations_fp16 else "native"
        params = {"names": names_filter_key, "storage": storage}
        key = make_key("activations", model_fingerprint(model), tokens, "run_with_cache", params)
        fp16 = self.activations_fp16
        return self._get_or_compute(key, compute, lambda d: encode_activations(d, fp16=fp16), decode_activations)

    def get_bytes(self, key: str) -> bytes | None:
        """A raw value put with :meth:`put_bytes` (saved link states), or None; never unpickled, a fault is a miss."""
        blob = self._read(key)
        return bytes(blob) if blob is not None else None

    def put_bytes(self, key: str, blob: bytes) -> None:
        """Store raw bytes under ``key`` (evicted like results; a fault is logged, not raised)."""
        self._write(key, bytes(blob))

    def stats(self) -> StoreStats:
        entries = size = hits = misses = 0
        self._check_index()
        cache, reader = self._cache, self._reader
        try:
            if cache is not None:
                entries = int(cache.reset("count"))
                size = int(cache.volume())
                hits, misses = int(cache.reset("hits")), int(cache.reset("misses"))
            elif reader is not None:
                entries, size = reader.count_and_bytes()
                hits, misses = self._ro_hits, self._ro_misses  # this process's: nothing is recorded in the directory
        except CACHE_FAULTS as error:
            self._fault("stats", error)
        return StoreStats(
            str(self.directory), self.degraded, entries, size, self.size_limit_bytes, hits, misses, self._corrupt, self._faults,
            self.read_only,
        )

    def clear(self) -> int:
        """Remove every entry and reset the hit/miss counters; returns entries removed."""
        self._check_index()
        if self._reader is not None:
            log.warning("cache_store: %s is read-only; nothing cleared", self.directory)
        if self._cache is None:
            return 0
        try:
            removed = self._cache.clear(retry=False)
            self._cache.stats(enable=True, reset=True)
            return removed
        except CACHE_FAULTS as error:
            self._fault("clear", error)
            return 0

    def close(self) -> None:
        if self._cache is not None:
            self._cache.close()
        if self._reader is not None:
            self._reader.close()

    def __enter__(self) -> "ResultStore":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # -- internals ------------------------------------------------------------------

    def _get_or_compute(
        self, key: str, compute: Callable[[], T], encode: Callable[[T], bytes], decode: Callable[[bytes | bytearray], T]
    ) -> T:
        blob = self._read(key)
        if blob is not None:
            try:
                return decode(blob)
            except CorruptEntry as error:
                self._drop_corrupt(key, error)
        value = compute()
        blob = encode(value)  # a result that cannot be encoded is a bug in its class: raise
        self._write(key, blob)
        return value

    def _read(self, key: str, retry: bool = True) -> bytes | bytearray | None:
        self._check_index()
        cache, reader = self._cache, self._reader
        if cache is None and reader is None:
            return None
        try:
            # read=True: a large value comes back as an open file, read outside the lock.
            found = cache.get(key, default=None, read=True) if cache is not None else reader.get(key)
            if cache is None:
                self._ro_hits, self._ro_misses = self._ro_hits + (found is not None), self._ro_misses + (found is None)
            if found is None or isinstance(found, bytes):
                return found
            with found:  # into a bytearray the decoder then owns: no further copy
                blob = bytearray(os.fstat(found.fileno()).st_size)
                if found.readinto(blob) != len(blob):
                    raise CorruptEntry("value file changed size while being read")
                return blob
        except CorruptEntry as error:
            self._drop_corrupt(key, error)
        except CACHE_FAULTS as error:
            self._fault("read", error)
            if retry and cache is not None and self._recover(cache, error):
                return self._read(key, retry=False)
        return None

    def _write(self, key: str, blob: bytes) -> None:
        self._check_index()
        if self._cache is None:
            if self._reader is not None:
                self._note_once("not-stored", logging.INFO, "cache_store: %s is read-only: results are computed and "
                                "served, not stored", self.directory)
            return
        if len(blob) > self.size_limit_bytes:
            log.info("cache_store: %d-byte value exceeds the %d-byte size limit; not stored", len(blob), self.size_limit_bytes)
            return
        cache = self._cache
        try:
            cache.set(key, blob)
        except CACHE_FAULTS as error:
            self._fault("write", error)
            if self._recover(cache, error) and self._cache is not None:
                try:
                    self._cache.set(key, blob)
                except CACHE_FAULTS as again:
                    self._fault("write", again)

    def _drop_corrupt(self, key: str, error: Exception) -> None:
        self._corrupt += 1
        log.warning("cache_store: entry %s… unreadable (%s); recomputing", key[:12], error)
        if self._cache is None:  # read-only: it stays, and is recomputed each time
            return
        try:
            self._cache.delete(key)
        except CACHE_FAULTS as fault:
            self._fault("delete", fault)

    def _fault(self, operation: str, error: BaseException) -> None:
        self._faults += 1
        # Warn once per operation, then quietly: a full disk should not flood the log.
        level = logging.DEBUG if operation in self._warned else logging.WARNING
        self._warned.add(operation)
        log.log(level, "cache_store: %s failed in %s (%s: %s); results are computed without the cache",
                operation, self.directory, type(error).__name__, error)


class NullStore:
    """Same API as ResultStore, stores nothing: every call computes."""

    degraded = True

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.directory = None

    def get_or_compute(self, model, experiment, tokens, params, compute):
        return compute()

    def get_or_compute_activations(self, model, tokens, names_filter_key, compute):
        return compute()

    def run_experiment(self, model, experiment, fn, request, **fn_kwargs):
        return fn(model, request, **fn_kwargs)

    def get_bytes(self, key: str) -> None:
        return None

    def put_bytes(self, key: str, blob: bytes) -> None:
        pass

    def stats(self) -> StoreStats:
        return StoreStats("", True, 0, 0, 0, 0, 0, 0, 0)

    def clear(self) -> int:
        return 0

    def close(self) -> None:
        pass
