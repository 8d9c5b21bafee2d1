"""The public demo's run budget: a sliding minute per key, only new computations charged, a clear message when spent."""

from __future__ import annotations

import pytest
from streamlit.testing.v1 import AppTest

from app_testkit import APP
from ui.budget import RunBudget, RunBudgetExceeded, charge_both


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


def test_budget_is_a_sliding_minute_per_key():
    clock = Clock()
    budget = RunBudget(2, clock=clock)
    budget.charge("a")
    clock.now += 10
    budget.charge("a")
    assert budget.wait_s("a") == pytest.approx(50.0)  # the first run leaves the window at t=60
    assert budget.wait_s("b") == 0.0  # another key has its own budget
    clock.now += 49.5
    assert budget.wait_s("a") == pytest.approx(0.5)
    clock.now += 0.5
    assert budget.wait_s("a") == 0.0
    budget.charge("a")
    assert budget.wait_s("a") == pytest.approx(10.0)


def test_both_budgets_or_neither_are_charged():
    clock = Clock()
    session, address = RunBudget(5, clock=clock), RunBudget(1, clock=clock)
    charge_both([(session, "s1", "per session"), (address, "1.2.3.4", "per address")])
    with pytest.raises(RunBudgetExceeded, match=r"1 new computations per minute per address.*try again in 60 s"):
        charge_both([(session, "s1", "per session"), (address, "1.2.3.4", "per address")])
    assert session.wait_s("s1") == 0.0 and len(session._times["s1"]) == 1  # the refused run cost the session nothing


def test_page_says_when_the_session_budget_is_spent_and_cached_views_stay_free(app_settings):
    path = app_settings()
    path.write_text(path.read_text().replace("[limits]", "[limits]\nruns_per_minute_per_session = 1"))
    at = AppTest.from_file(APP, default_timeout=180)
    at.query_params["prompt"] = "The cat sat on the mat."
    at.run()  # one new computation (predictions): within the budget
    assert not at.exception and not at.error
    at.run()  # the same view again: a cache hit, free
    assert not at.error
    at.sidebar.text_area(key="prompt").set_value("The dog sat on the log.").run()  # a second new computation
    messages = [e.value for e in at.error]
    assert any("1 new computations per minute per browser session" in m and "try again in" in m for m in messages), messages
    assert not at.exception


def test_address_budget_in_redis_is_shared_by_replicas_and_survives_an_outage(tmp_path):
    from redis_server import RedisServer

    from ui.budget import RedisRunBudget

    server = RedisServer(tmp_path / "redis").start()
    try:
        clock = Clock()
        replica_a = RedisRunBudget(2, server.url, "address", clock=clock)
        replica_b = RedisRunBudget(2, server.url, "address", clock=clock)
        replica_a.charge("10.0.0.7")
        clock.now += 20
        replica_b.charge("10.0.0.7")
        assert replica_a.wait_s("10.0.0.7") == pytest.approx(40.0)  # one budget for both replicas
        assert replica_b.wait_s("10.0.0.8") == 0.0
        clock.now += 40
        assert replica_b.wait_s("10.0.0.7") == 0.0  # the first run left the window
        server.stop()
        replica_a.charge("10.0.0.9")  # Redis gone: counted in this replica, no error
        replica_a.charge("10.0.0.9")
        assert replica_a.wait_s("10.0.0.9") > 0
    finally:
        server.stop()
