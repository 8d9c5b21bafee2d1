"""A public demo's run budget: new computations per minute, per browser session and per client address.

Only computations count: a view served from the result cache is free, so browsing
what others already computed never runs out. When either budget is spent the run
raises :class:`RunBudgetExceeded` (a :class:`ui.errors.UserInputError`, so the page
shows its message, says when to try again, and carries on). Settings:
``[limits] runs_per_minute_per_session`` and ``runs_per_minute_per_address``
(0 = no budget, the default). Behind a reverse proxy set ``trust_forwarded_for``
so the address is the client's, not the proxy's (only then: the header is
client-controlled when nothing in front rewrites it).

A session's counts live in its server process (sticky sessions keep a session on one
replica). An address's counts live there too, unless the result store is Redis
(``[cache] backend = "redis"``): then they are kept in that Redis (a sorted set per
address, :class:`RedisRunBudget`), so an address has one budget across all replicas.
If Redis is unreachable, each replica falls back to its own count and logs a warning.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
import uuid
from typing import Callable

import streamlit as st

from ui.errors import UserInputError
from ui.settings import Settings

WINDOW_S = 60.0
log = logging.getLogger(__name__)


class RunBudgetExceeded(UserInputError):
    """The session or address has used its runs for this minute."""


class RunBudget:
    """At most ``per_minute`` charges per key in any sliding 60-second window (thread-safe)."""

    def __init__(self, per_minute: int, clock: Callable[[], float] = time.monotonic, max_keys: int = 100_000) -> None:
        self.per_minute = per_minute
        self._clock = clock
        self._max_keys = max_keys
        self._lock = threading.Lock()
        self._times: collections.OrderedDict[str, collections.deque[float]] = collections.OrderedDict()

    def wait_s(self, key: str) -> float:
        """0 when ``key`` may run now, else seconds until its oldest run leaves the window."""
        with self._lock:
            return self._wait_locked(key, self._clock())

    def charge(self, key: str) -> None:
        with self._lock:
            now = self._clock()
            self._wait_locked(key, now)
            self._times.setdefault(key, collections.deque()).append(now)
            self._times.move_to_end(key)
            while len(self._times) > self._max_keys:  # forget the least recently active keys
                self._times.popitem(last=False)

    def _wait_locked(self, key: str, now: float) -> float:
        times = self._times.get(key)
        if not times:
            return 0.0
        while times and now - times[0] >= WINDOW_S:
            times.popleft()
        if len(times) < self.per_minute:
            return 0.0
        return WINDOW_S - (now - times[0])


class RedisRunBudget:
    """:class:`RunBudget` kept in Redis, shared by every replica (wall-clock time; hosts should run NTP).

    Check-then-charge is not atomic across replicas: two replicas charging the same
    address in the same instant can each take the last run (an overshoot of at most
    one run per replica). On a Redis error it uses ``fallback`` (this process's count).
    """

    def __init__(self, per_minute: int, url: str, scope: str, prefix: str = "circuit-explorer:budget:",
                 clock: Callable[[], float] = time.time) -> None:
        import redis

        self.per_minute = per_minute
        self.fallback = RunBudget(per_minute)
        self._clock = clock
        self._prefix = f"{prefix}{scope}:"
        self._redis = redis.Redis.from_url(url, socket_timeout=1.0, socket_connect_timeout=1.0)
        self._warned = False

    def wait_s(self, key: str) -> float:
        try:
            name, now = self._prefix + key, self._clock()
            pipe = self._redis.pipeline()
            pipe.zremrangebyscore(name, "-inf", now - WINDOW_S)
            pipe.zcard(name)
            pipe.zrange(name, 0, 0, withscores=True)
            _, count, oldest = pipe.execute()
            if count < self.per_minute or not oldest:
                return 0.0
            return max(0.0, WINDOW_S - (now - float(oldest[0][1])))
        except Exception as error:  # noqa: BLE001 - redis errors and OS errors alike: count here instead
            return self._degraded(error).wait_s(key)

    def charge(self, key: str) -> None:
        try:
            name, now = self._prefix + key, self._clock()
            pipe = self._redis.pipeline()
            pipe.zadd(name, {uuid.uuid4().hex: now})
            pipe.expire(name, int(WINDOW_S) + 1)
            pipe.execute()
        except Exception as error:  # noqa: BLE001
            self._degraded(error).charge(key)

    def _degraded(self, error: BaseException) -> RunBudget:
        if not self._warned:
            self._warned = True
            log.warning("run budget: Redis unavailable (%s: %s); counting per replica", type(error).__name__, error)
        return self.fallback


def charge_both(budgets: list[tuple[RunBudget, str, str]]) -> None:
    """Charge every (budget, key, what) or none: raise for the first that is spent."""
    for budget, key, what in budgets:
        wait = budget.wait_s(key)
        if wait > 0:
            raise RunBudgetExceeded(
                f"This public demo allows {budget.per_minute} new computations per minute {what}, and they are used up. "
                f"Views that were already computed still show; try again in {max(1, round(wait))} s.")
    for budget, key, _ in budgets:
        budget.charge(key)


@st.cache_resource(show_spinner=False)
def _budget(scope: str, per_minute: int, redis_url: str = "") -> RunBudget | RedisRunBudget:
    return RedisRunBudget(per_minute, redis_url, scope) if redis_url else RunBudget(per_minute)


def client_address(settings: Settings) -> str:
    if settings.trust_forwarded_for:
        forwarded = st.context.headers.get("X-Forwarded-For") or ""
        if forwarded.strip():
            return forwarded.split(",")[0].strip()
    return str(st.context.ip_address or "unknown")


def session_id() -> str:
    from streamlit.runtime.scriptrunner import get_script_run_ctx

    ctx = get_script_run_ctx()
    return ctx.session_id if ctx is not None else "no-session"


def charge_run(settings: Settings) -> None:
    """Count one new computation against this session's and this address's budgets (no-op when unset)."""
    budgets = []
    if settings.runs_per_minute_per_session:
        budgets.append((_budget("session", settings.runs_per_minute_per_session), session_id(), "per browser session"))
    if settings.runs_per_minute_per_address:
        shared = settings.redis_url if settings.cache_backend == "redis" else ""
        budgets.append((_budget("address", settings.runs_per_minute_per_address, shared), client_address(settings),
                        "per client address"))
    if budgets:
        charge_both(budgets)


def budgeted(fn: Callable, settings: Settings) -> Callable:
    """``fn`` that first charges the run budgets (``fn`` itself when no budget is set).

    Wrapped around the compute function the result store calls on a miss, so only
    new computations are charged."""
    if not (settings.runs_per_minute_per_session or settings.runs_per_minute_per_address):
        return fn

    def run(*args, **kwargs):
        charge_run(settings)
        return fn(*args, **kwargs)

    return run
