"""The result store on Redis: one cache shared by every app replica.

``RedisResultStore`` has the API of :class:`cache_store.store.ResultStore`
(``get_or_compute``, ``run_experiment``, ``get_or_compute_activations``,
``stats``, ``clear``, ``close``) and keeps its whole hit/miss/compute logic: it
only replaces the three storage operations (read a key, write a key, drop a
corrupt key). Keys are the same content hashes (:mod:`cache_store.keys`), with a
prefix; values are the same pickle-free blobs (:mod:`cache_store.codec`), stored
as plain Redis strings, so two processes sharing one Redis see each other's results.

Size bound: Redis's own eviction. Run Redis with ``maxmemory <bytes>`` and
``maxmemory-policy allkeys-lru`` (``deploy/redis.conf``); then a full Redis drops
its least recently used entries instead of refusing writes. ``maxmemory_mb``
(settings ``[cache] redis_maxmemory_mb``) makes the store set both at start with
``CONFIG SET``, for a Redis the app owns; leave it 0 for a managed Redis that
disallows ``CONFIG``. A value larger than ``max_value_mb`` is computed and served
but not stored.

Faults never reach the caller. Redis down at start, down in the middle of a
request or restarted: the result is computed and served, one warning is logged,
and the store stops trying for ``retry_after_s`` seconds (so a dead Redis costs
one refused connection, not a timeout per request); the next call after that
tries again, and the first success logs "reconnected". A value that fails to
decode is a miss: it is deleted and recomputed.

Statistics (hits, misses) are counters in Redis, shared by all replicas, like
diskcache's statistics are shared by all processes using a directory.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

import redis

from .store import ResultStore, StoreStats

log = logging.getLogger(__name__)

DEFAULT_URL = "redis://127.0.0.1:6379/0"
DEFAULT_PREFIX = "circuit-explorer:"
# What a broken or unreachable Redis can raise (connection refused, timeouts, OOM without eviction, READONLY replica...).
REDIS_FAULTS = (redis.RedisError, OSError)


class RedisResultStore(ResultStore):
    """Content-keyed result cache on Redis (see the module docstring)."""

    def __init__(
        self,
        url: str = DEFAULT_URL,
        prefix: str = DEFAULT_PREFIX,
        maxmemory_mb: int = 0,
        max_value_mb: int = 256,
        activations_fp16: bool = False,
        timeout_s: float = 2.0,
        retry_after_s: float = 5.0,
    ) -> None:
        # Not ResultStore.__init__: nothing on disk is opened.
        self.directory = url  # shown by stats() and in log lines, like the disk store's directory
        self.url = url
        self.prefix = prefix
        self.activations_fp16 = activations_fp16
        self.size_limit_bytes = int(max_value_mb) * 2**20
        self.retry_after_s = float(retry_after_s)
        self._maxmemory = int(maxmemory_mb) * 2**20
        self._corrupt = 0
        self._faults = 0
        self._warned: set[str] = set()
        self._lock = threading.Lock()
        self._down_until = 0.0  # monotonic time before which Redis is not tried again
        self._down = False
        self._configured = False
        self._cache = None  # the disk store's handle; never used here
        self._redis = redis.Redis.from_url(
            url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s, retry_on_timeout=False,
            health_check_interval=30,
        )
        self._call("connect", self._redis.ping)

    @property
    def degraded(self) -> bool:
        """True while Redis is unreachable (calls compute; it is retried every ``retry_after_s``)."""
        return self._down

    # -- the three storage operations -------------------------------------------------

    def _read(self, key: str) -> bytes | None:
        blob = self._call("read", self._redis.get, self.prefix + key)
        if blob is None:
            if not self._down:
                self._call("stats", self._redis.incr, self.prefix + "stats:misses")
            return None
        self._call("stats", self._redis.incr, self.prefix + "stats:hits")
        return blob

    def _write(self, key: str, blob: bytes) -> None:
        if len(blob) > self.size_limit_bytes:
            log.info("cache_store: %d-byte value exceeds the %d-byte value limit; not stored",
                     len(blob), self.size_limit_bytes)
            return
        self._call("write", self._redis.set, self.prefix + key, blob)

    def _drop_corrupt(self, key: str, error: Exception) -> None:
        self._corrupt += 1
        log.warning("cache_store: entry %s… unreadable (%s); recomputing", key[:12], error)
        self._call("delete", self._redis.delete, self.prefix + key)

    # -- inspection ------------------------------------------------------------------

    def stats(self) -> StoreStats:
        entries = size = limit = hits = misses = 0
        counters = self._call("stats", self._redis.mget, self.prefix + "stats:hits", self.prefix + "stats:misses")
        if counters is not None:
            hits, misses = (int(v or 0) for v in counters)
            entries = max(0, int(self._call("stats", self._redis.dbsize) or 0) - sum(v is not None for v in counters))
            memory = self._call("stats", self._redis.info, "memory") or {}
            size, limit = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0))
        return StoreStats(self.url, self.degraded, entries, size, limit, hits, misses, self._corrupt, self._faults)

    def clear(self) -> int:
        """Remove every entry under this store's prefix and reset the counters; returns entries removed."""
        removed = 0
        counters = (self.prefix + "stats:").encode()

        def sweep() -> None:
            nonlocal removed
            names = list(self._redis.scan_iter(match=self.prefix + "*", count=500))
            for start in range(0, len(names), 500):
                self._redis.unlink(*names[start:start + 500])
            removed = sum(not name.startswith(counters) for name in names)

        self._call("clear", sweep)
        return removed

    def close(self) -> None:
        try:
            self._redis.close()
        except REDIS_FAULTS:
            pass

    # -- fault handling --------------------------------------------------------------

    def _call(self, operation: str, fn: Any, *args: Any) -> Any:
        """``fn(*args)``, or None when Redis is (known to be) unavailable."""
        if self._down and time.monotonic() < self._down_until:
            return None
        try:
            if not self._configured and self._maxmemory:
                self._configure()
            value = fn(*args)
        except REDIS_FAULTS as error:
            with self._lock:
                self._down = True
                self._down_until = time.monotonic() + self.retry_after_s
            self._fault(operation, error)
            return None
        if self._down:
            with self._lock:
                self._down = False
                self._warned.clear()  # the next outage warns again
            log.warning("cache_store: Redis at %s is reachable again; the shared cache is back in use", self.url)
        return value

    def _configure(self) -> None:
        self._redis.config_set("maxmemory", str(self._maxmemory))
        self._redis.config_set("maxmemory-policy", "allkeys-lru")
        self._configured = True

    def _fault(self, operation: str, error: BaseException) -> None:
        self._faults += 1
        level = logging.DEBUG if operation in self._warned else logging.WARNING
        self._warned.add(operation)
        log.log(level, "cache_store: Redis %s failed at %s (%s: %s); results are computed without the shared cache, "
                "retrying in %.0f s", operation, self.url, type(error).__name__, error, self.retry_after_s)
