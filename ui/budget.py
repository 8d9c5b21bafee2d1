"""A public demo's run budget: new computations per minute, per browser session and per client address.

Only computations count: a view served from the result cache is free, so browsing
what others already computed never runs out. When either budget is spent the run
raises :class:`RunBudgetExceeded` (a :class:`ui.errors.UserInputError`, so the page
shows its message, says when to try again, and carries on). Settings:
``[limits] runs_per_minute_per_session`` and ``runs_per_minute_per_address``
(0 = no budget, the default). Behind a reverse proxy set ``trust_forwarded_for``
so the address is the client's, not the proxy's (only then: the header is
client-controlled when nothing in front rewrites it).

The counts live in this server process. With sticky sessions a session stays on
one replica, so its budget is exact; an address spread over N replicas gets up to
N times its budget.
"""

from __future__ import annotations

import collections
import threading
import time
from typing import Callable

import streamlit as st

from ui.errors import UserInputError
from ui.settings import Settings

WINDOW_S = 60.0


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
def _budget(scope: str, per_minute: int) -> RunBudget:
    return RunBudget(per_minute)


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
        budgets.append((_budget("address", settings.runs_per_minute_per_address), client_address(settings),
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
