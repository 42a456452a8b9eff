"""What the analyses fetch given the stream's health and seen windows, recorded in a Postgres schema of each test's own."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.markets.seen import AUDIT, SeenStore, StreamHealth, Window, missing, plan_fetch, rest_windows, stream_status

H12 = pd.Timestamp("2025-09-03T12:00Z")
H13 = H12 + pd.Timedelta(hours=1)
MARKETS = ["KRW-A", "KRW-B", "KRW-C"]
_SCHEMAS = itertools.count()


def t(minutes: float) -> int:
    return int(H12.timestamp() + minutes * 60)


def ts(minutes: float) -> pd.Timestamp:
    return H12 + pd.Timedelta(minutes=minutes)


@pytest.fixture
def store(pg_url, settings) -> Iterator[SeenStore]:
    schema = f"{settings.db_schema}_seen{next(_SCHEMAS)}"
    yield SeenStore(PostgresResource(url=pg_url, db_schema=schema))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


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


def test_a_final_run_audits_every_market_s_hour_once_and_knows_what_the_stream_missed(store):
    """Disconnected 12:20-12:23: the hour's final run compares the whole hour of every market with REST (one
    request each, the missed minutes among them); the next final run of the hour fetches only what the first
    could not (KRW-C answered 404), and a tick's REST fetch is no audit."""
    store.publish(StreamHealth(time.time(), t(61), t(61), False, []), [
        Window(t(0), t(20), frozenset(MARKETS), "stream"), Window(t(23), t(61), frozenset(MARKETS), "stream")])
    store.record([Window(t(0), t(5), frozenset(MARKETS), "rest")])  # a tick's fetch
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert (plan.source, plan.window_source) == (AUDIT, "audit") and "3 market(s) with minutes the stream did not see" in plan.why
    assert plan.fetch == {m: [(H12, H13)] for m in MARKETS}
    assert plan.unseen == {m: [(ts(20), ts(23))] for m in MARKETS}
    store.record(rest_windows(plan.fetch, {"KRW-A", "KRW-B"}, ts(61), plan.window_source))  # KRW-C was skipped (404): not recorded
    again = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert again.fetch == {"KRW-C": [(H12, H13)]}
    store.record(rest_windows(again.fetch, {"KRW-C"}, ts(61), again.window_source))
    done = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert (done.source, done.fetch) == ("stream", {}) and "compared with REST already" in done.why


def test_a_final_run_waits_for_a_healthy_stream_to_commit_the_hour(store):
    behind = health(covered=59.9, heartbeat_age=0)
    behind.server_now = behind.covered_through + 1
    store.publish(behind)
    began = time.monotonic()
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=3)
    assert 1.5 <= time.monotonic() - began < 5  # until its lag passed max_lag
    assert plan.unseen == {m: [(ts(59), H13)] for m in MARKETS}  # never committed: the last minute is REST's alone
    assert plan.fetch == {m: [(H12, H13)] for m in MARKETS}


def test_no_record_means_rest(store):
    plan = plan_fetch(store, MARKETS, H12, H13, final=True, max_lag=30)
    assert plan.source == AUDIT and "stream never ran" in plan.why
    assert plan.fetch == plan.unseen == {m: [(H12, H13)] for m in MARKETS}
    tick = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=H12.timestamp() + 600)
    assert (tick.source, tick.why) == ("rest fallback", "stream never ran") and tick.fetch == {m: [(H12, ts(10))] for m in MARKETS}


def test_a_tick_that_needs_nothing_while_the_stream_is_down_says_rest_fallback(store):
    store.publish(health(covered=30, running=False))
    store.record([Window(t(0), t(40), frozenset(MARKETS), "rest")])
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert (plan.source, plan.fetch) == ("rest fallback", {}) and plan.why.startswith("stream stopped; every minute is stored already")


def test_an_unreadable_record_means_a_full_rest_fetch():
    unreachable = SeenStore(PostgresResource(url="postgresql://postgres@127.0.0.1:1/test?connect_timeout=1", db_schema="s"))
    plan = plan_fetch(unreachable, MARKETS, H12, H13, final=False, max_lag=30)
    assert plan.source == "rest" and plan.why.startswith("the stream's record is unreadable (PostgresUnavailableError")
    assert plan.fetch == {m: [(H12, H13)] for m in MARKETS}


def test_a_quarantined_minute_is_a_hole_in_the_stream_s_window_that_rest_fills():
    stream = Window(t(0), t(60), frozenset(MARKETS), "stream")
    holes = [Window(t(26), t(27), frozenset(["KRW-A"]), "unseen"), Window(t(40), t(41), frozenset(["KRW-B"]), "unseen")]
    assert missing([stream, *holes], MARKETS, H12, H13) == {"KRW-A": [(ts(26), ts(27))], "KRW-B": [(ts(40), ts(41))]}
    fetched = Window(t(26), t(28), frozenset(["KRW-A"]), "rest")
    assert missing([stream, *holes, fetched], MARKETS, H12, H13) == {"KRW-B": [(ts(40), ts(41))]}


def test_a_tick_fetches_a_market_s_scattered_minutes_in_one_request(store):
    store.publish(health(covered=50), [Window(t(12), t(13), frozenset(["KRW-A"]), "unseen"), Window(t(30), t(31), frozenset(["KRW-A"]), "unseen")])
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=time.time())
    assert plan.fetch == {"KRW-A": [(ts(12), ts(31))]} and "quarantined" in plan.why


def test_a_stream_that_has_not_subscribed_yet_is_starting_not_healthy(store):
    """Before its first message the stream's record has no commit: state ``starting``, not healthy, no 1970 dates."""
    store.publish(StreamHealth(time.time(), 0.0, 0.0, True, [], {"markets": 0}))
    status = stream_status(store, max_lag=30)
    assert (status["state"], status["healthy"], status["covered_through"], status["lag_s"]) == ("starting", False, None, None)
    assert status["problem"].startswith("stream starting")
    plan = plan_fetch(store, MARKETS, H12, H13, final=False, max_lag=30, wall_now=H12.timestamp() + 600)
    assert plan.source == "rest fallback" and plan.why.startswith("stream starting")


def test_the_record_is_kept_in_postgres_beside_the_candles(store):
    assert store.health() is None and store.windows(0) == []  # no table yet: no record, no error
    ended = [Window(t(0), t(20), frozenset(MARKETS), "stream"), Window(t(5), t(6), frozenset(["KRW-A"]), "unseen")]
    store.publish(health(covered=30), ended)
    store.record([Window(t(20), t(23), frozenset(["KRW-B"]), "audit")])
    assert sorted(store.windows(t(0)), key=lambda w: w.start) == [*ended, Window(t(20), t(23), frozenset(["KRW-B"]), "audit")]
    assert store.windows(t(21)) == [Window(t(20), t(23), frozenset(["KRW-B"]), "audit")]  # the windows reaching past 12:21
    assert store.health().covered_through == t(30)
    fresh = SeenStore(store.postgres)  # another process reads the same record
    assert fresh.health().open_windows == [Window(t(0), t(30), frozenset(MARKETS), "stream")]
