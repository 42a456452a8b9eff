"""What the analyses fetch given the stream's health and seen windows, on the test Redis."""

from __future__ import annotations

import itertools
import time

import pandas as pd
import pytest

from dantaro_assets.markets.seen import SeenStore, StreamHealth, Window, missing, plan_fetch, rest_windows

H12 = pd.Timestamp("2025-09-03T12:00Z")
H13 = H12 + pd.Timedelta(hours=1)
MARKETS = ["KRW-A", "KRW-B", "KRW-C"]
_SCHEMAS = itertools.count()


def t(minutes: float) -> int:
    return int(H12.timestamp() + minutes * 60)


def ts(minutes: float) -> pd.Timestamp:
    return H12 + pd.Timedelta(minutes=minutes)


@pytest.fixture
def store(redis_client, settings) -> SeenStore:
    return SeenStore(redis_client, settings.redis_prefix, f"seen{next(_SCHEMAS)}")


def health(*, covered: float, open_markets=MARKETS, opened: float = 0, heartbeat_age: float = 1, running: bool = True) -> StreamHealth:
    now = time.time()
    return StreamHealth(now - heartbeat_age, t(covered) + 5, t(covered), running, [Window(t(opened), t(covered), frozenset(open_markets), "stream")])


def test_missing_ranges_are_the_minutes_no_window_covers():
    windows = [Window(t(0), t(20), frozenset(MARKETS), "stream"), Window(t(23) - 30, t(60), frozenset(["KRW-A"]), "stream")]
    gaps = missing(windows, MARKETS, H12, H13)
    # a window starting mid-minute covers from the next whole minute on
    assert gaps == {"KRW-A": [(ts(20), ts(23))], "KRW-B": [(ts(20), ts(60))], "KRW-C": [(ts(20), ts(60))]}
    assert missing([Window(t(0), t(60), frozenset(MARKETS), "rest")], MARKETS, H12, H13) == {}


def test_a_healthy_stream_covering_the_hour_means_no_fetch(store):
    store.publish(health(covered=30))
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert (plan.source, plan.fetch) == ("stream", {})
    assert plan.metadata()["markets_fetched"] == 0


def test_a_stopped_stream_falls_back_to_rest_for_the_minutes_after_its_commit(store):
    stopped = health(covered=30, running=False)
    stopped.server_now = t(31) + 10
    store.publish(stopped)
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert plan.source == "rest fallback" and "stream stopped" in plan.why
    assert plan.fetch == {m: [(ts(30), ts(31))] for m in MARKETS}  # Upbit's clock (the stream's, plus the time since) closed 12:30


def test_a_stream_without_heartbeat_is_down(store):
    store.publish(health(covered=30, heartbeat_age=120))
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert plan.source == "rest fallback" and plan.why.startswith("stream down: no heartbeat for 12")
    assert set(plan.fetch) == set(MARKETS) and all(ranges[0][0] == ts(30) for ranges in plan.fetch.values())


def test_a_lagging_stream_falls_back(store):
    lagging = health(covered=30)
    lagging.server_now = t(32)
    store.publish(lagging)
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert plan.source == "rest fallback" and "stream lagging: 12" in plan.why
    assert plan.fetch == {m: [(ts(30), ts(32))] for m in MARKETS}


def test_markets_the_stream_does_not_subscribe_are_fetched_alone(store):
    store.publish(health(covered=30, open_markets=MARKETS[:2]))
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert plan.fetch == {"KRW-C": [(H12, ts(30))]}  # Upbit's clock is 12:30:06: 12:29 is the newest closed minute
    assert "1 market(s) the stream did not subscribe (KRW-C)" in plan.why


def test_a_final_run_fetches_only_what_the_stream_missed_and_never_twice(store):
    """Disconnected 12:20-12:23: the hour's final run fetches those three minutes of each market, once."""
    store.publish(StreamHealth(time.time(), t(61), t(61), False, []), [
        Window(t(0), t(20), frozenset(MARKETS), "stream"), Window(t(23), t(61), frozenset(MARKETS), "stream")])
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert plan.fetch == {m: [(ts(20), ts(23))] for m in MARKETS}
    store.record(rest_windows(plan.fetch, {"KRW-A", "KRW-B"}, ts(61)))  # KRW-C was skipped (404): not recorded
    assert plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30).fetch == {"KRW-C": [(ts(20), ts(23))]}


def test_a_final_run_waits_for_a_healthy_stream_to_commit_the_hour(store):
    behind = health(covered=59.9, heartbeat_age=0)
    behind.server_now = behind.covered_through + 1
    store.publish(behind)
    began = time.monotonic()
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=3)
    assert 1.5 <= time.monotonic() - began < 5  # until its lag passed max_lag
    assert plan.fetch == {m: [(ts(59), H13)] for m in MARKETS}  # never committed: the last minute goes to REST


def test_no_record_means_rest(store):
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert plan.source == "rest fallback" and plan.why == "stream never ran"
    assert plan.fetch == {m: [(H12, H13)] for m in MARKETS}


def test_a_tick_that_needs_nothing_while_the_stream_is_down_says_rest_fallback(store):
    store.publish(health(covered=30, running=False))
    store.record([Window(t(0), t(40), frozenset(MARKETS), "rest")])
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert (plan.source, plan.fetch) == ("rest fallback", {}) and plan.why.startswith("stream stopped; every minute is stored already")


def test_an_unreadable_record_means_a_full_rest_fetch():
    import redis

    unreachable = SeenStore(redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.5), "p", "s")
    plan = plan_fetch(unreachable, MARKETS, H12, H13, final=False, max_lag=30)
    assert plan.source == "rest" and plan.why.startswith("the stream's record is unreadable (ConnectionError")
    assert plan.fetch == {m: [(H12, H13)] for m in MARKETS}
