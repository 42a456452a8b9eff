"""The history sensor against a real temporary instance: which lookback partitions it requests, in which order, how, and when not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.markets.history import (
    HISTORY_TAG,
    MINUTE_HOURS_PER_RUN,
    PRODUCT_TAG,
    SENSOR_INTERVAL,
    STREAM_WAIT_SECONDS,
    missing_ranges,
    products,
    stream_wait,
    top_priority,
)
from dantaro_assets.markets.jobs import DAILY_CANDLES_TYPE
from dantaro_assets.markets.seen import StreamHealth, Window
from dantaro_assets.operations.limits import JOB_TAG, PRIORITY_TAG
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.operations.daemon import freeze_time

defs = build_definitions(load_settings())  # conftest's environment: the test database, not an embedded server in .dantaro/
history_sensor = defs.resolve_sensor_def("history_sensor")
REPOSITORY = defs.get_repository_def()

NOW = datetime(2026, 3, 10, 10, 25, tzinfo=UTC)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"
DAYS = [f"2026-02-{d}" for d in range(24, 29)] + [f"2026-03-{d:02d}" for d in range(1, 11)]  # today and the 14 days before
STATUS_DAYS = DAYS[-8:]  # the 6 days market status reads, widened to the 8 one page of 1-hour candles holds
CLOSED_HOURS = ["2026-03-10-08:00", "2026-03-10-09:00"]


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _materialise(instance: dg.DagsterInstance, asset: str, keys: list[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(asset), partition=key))


def _evaluate(instance: dg.DagsterInstance, now: datetime = NOW, cursor: str | None = None) -> dg.SensorResult:
    with freeze_time(now):
        with dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor, resources=defs.resources) as context:
            return history_sensor(context)


def _requests(instance: dg.DagsterInstance, now: datetime = NOW) -> list[dg.RunRequest]:
    return list(_evaluate(instance, now).run_requests or [])


def _summary(requests: list[dg.RunRequest]) -> list[tuple]:
    return [
        (r.job_name, r.tags[HISTORY_TAG], r.tags[RANGE_START], r.tags[RANGE_END], sorted(k.to_user_string() for k in r.asset_selection))
        for r in requests
    ]


def _store(instance: dg.DagsterInstance, *pairs: tuple[str, list[str]]) -> None:
    for asset, keys in pairs:
        _materialise(instance, asset, keys)


def _store_everything(instance: dg.DagsterInstance) -> None:
    _store(instance, ("upbit_markets", DAYS), ("candles_1h", DAYS), ("candles_1d", DAYS[-3:]), ("upbit_instruments", DAYS[-2:]),
           ("candles_1m", CLOSED_HOURS))


def test_the_products_are_the_analyses_in_priority_order_with_what_their_open_hour_reads():
    """From the schedules' jobs and their assets' partition mappings, optional inputs (the tick sizes) included; the
    24 h turnover reads candles_1h, so no product reads a day of minutes."""
    ordered = products(REPOSITORY, NOW)
    assert [(p.name, p.priority) for p in ordered] == [("market_status", 40), ("recommendations", 30), ("support_levels", 20)]
    status, recommendations, levels = (p.needs for p in ordered)
    assert status == {"upbit_markets": frozenset(DAYS[-2:]), "candles_1h": frozenset(DAYS[-6:]), "candles_1m": frozenset(CLOSED_HOURS)}
    assert recommendations == {"upbit_markets": frozenset(DAYS[-2:]), "candles_1h": frozenset(DAYS), "candles_1d": frozenset(DAYS[-3:]),
                               "upbit_instruments": frozenset(DAYS[-2:]), "candles_1m": frozenset(CLOSED_HOURS)}
    assert levels == {**recommendations, "candles_1d": frozenset(DAYS[-2:])}
    day = [f"2026-03-09-{h:02d}:00" for h in range(24)]
    assert [(r.first, r.last) for r in missing_ranges(day, set(), MINUTE_HOURS_PER_RUN)] == [
        ("2026-03-09-00:00", "2026-03-09-11:00"), ("2026-03-09-12:00", "2026-03-09-23:00")]


def test_fresh_instance_asks_for_market_status_days_first_with_their_universe_at_top_priority(instance):
    """One page of 1-hour candles holds 8 days: the run takes the 2 days recommendations read beyond market status's 6."""
    result = _evaluate(instance)
    assert _summary(result.run_requests) == [("daily_candles_job", "daily", STATUS_DAYS[0], STATUS_DAYS[-1], ["candles_1h", "upbit_markets"])]
    tags = result.run_requests[0].tags
    highest = max(int(job.run_tags[PRIORITY_TAG]) for job in REPOSITORY.get_all_jobs() if PRIORITY_TAG in job.run_tags)
    assert int(tags[PRIORITY_TAG]) == top_priority(REPOSITORY) > highest + 1  # ahead of every job's finalising runs too
    assert tags[JOB_TAG] == "daily_candles" and tags[PRODUCT_TAG] == "market_status"
    # the run takes its job's tags too: the monitoring backstop, 300 s + 30 s
    assert defs.resolve_job_def("daily_candles_job").run_tags["dagster/max_runtime"] == "330"


def test_with_the_universe_stored_each_lane_goes_market_status_first(instance):
    """The minute run (the 2 closed hours and the open one, one page) goes beside recommendations' daily run, ahead of it."""
    _store(instance, ("upbit_markets", STATUS_DAYS))
    requests = _requests(instance)
    assert _summary(requests) == [
        ("daily_candles_job", "daily", STATUS_DAYS[0], STATUS_DAYS[-1], ["candles_1h"]),
        ("candles_1m_job", "minute", "2026-03-10-08:00", "2026-03-10-10:00", ["candles_1m"]),
    ]
    assert [r.tags[PRODUCT_TAG] for r in requests] == ["market_status", "market_status"]
    assert requests[1].run_key == "minute:2026-03-10-08:00...2026-03-10-10:00:candles_1m@2026-03-10T10"
    assert requests[1].tags[JOB_TAG] == "history" and int(requests[1].tags[PRIORITY_TAG]) > DAILY_CANDLES_TYPE.priority

    _store(instance, ("candles_1h", STATUS_DAYS), ("candles_1m", [*CLOSED_HOURS, "2026-03-10-10:00"]))
    # then recommendations' two runs at once: 1-day candles with the tick sizes (neither costs more for a day more),
    # and the older 7 days of 1-hour candles with their universe, in the history's second slot
    recommendations = _requests(instance)
    assert _summary(recommendations) == [("daily_candles_job", "daily", DAYS[-3], DAYS[-1], ["candles_1d", "upbit_instruments"]),
                                         ("daily_candles_job", "daily", DAYS[0], DAYS[6], ["candles_1h", "upbit_markets"])]
    assert [r.tags[JOB_TAG] for r in recommendations] == ["daily_candles", "history"]
    assert {r.tags[PRODUCT_TAG] for r in recommendations} == {"recommendations"}
    assert int(recommendations[0].tags[PRIORITY_TAG]) < int(requests[1].tags[PRIORITY_TAG])  # below market status's history
    _store(instance, ("candles_1d", DAYS[-3:]), ("upbit_instruments", DAYS[-3:]), ("upbit_markets", DAYS[:7]), ("candles_1h", DAYS[:7]))
    assert not _requests(instance)


def test_only_the_gaps_are_requested(instance):
    _store(instance, ("upbit_markets", DAYS), ("candles_1h", DAYS), ("candles_1d", [DAYS[-3], DAYS[-1]]), ("upbit_instruments", DAYS[-2:]),
           ("candles_1m", CLOSED_HOURS))
    assert _summary(_requests(instance)) == [("daily_candles_job", "daily", DAYS[-2], DAYS[-2], ["candles_1d"])]
    _store(instance, ("candles_1d", [DAYS[-2]]))
    assert not _requests(instance)
    # an hour later the hour that just closed is new: one minute run of it and the open hour
    assert _summary(_requests(instance, NOW + timedelta(hours=1))) == [
        ("candles_1m_job", "minute", "2026-03-10-10:00", "2026-03-10-11:00", ["candles_1m"])]


def test_candles_wait_for_their_days_universe(instance):
    _store(instance, ("upbit_markets", DAYS[:-2]), ("candles_1h", DAYS), ("candles_1d", DAYS[-3:]), ("upbit_instruments", DAYS[-2:]))
    # today's and yesterday's universe missing: a run of them at top priority, the minutes wait
    result = _evaluate(instance)
    assert _summary(result.run_requests) == [("daily_candles_job", "daily", DAYS[-2], DAYS[-1], ["upbit_markets"])]


def test_nothing_is_requested_when_the_history_is_complete(instance):
    _store_everything(instance)
    result = _evaluate(instance)
    assert not result.run_requests and "complete" in result.skip_reason.skip_message
    assert result.cursor == "history: 57 of 57 partitions stored (market_status 10/10, recommendations 24/24, support_levels 23/23)"


def test_two_history_runs_at_once_and_none_asked_twice(instance):
    """A run in flight holds its slot (its ``dantaro/job``) and its partitions count as coming: the other slot takes the
    next run, and with both slots taken nothing goes."""
    _store(instance, ("upbit_markets", STATUS_DAYS))  # the first run has stored its universe and fetches its 1-hour candles
    hourly = instance.add_run(dg.DagsterRun(
        job_name="daily_candles_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.STARTED, asset_selection=frozenset({dg.AssetKey("candles_1h")}),
        tags={HISTORY_TAG: "daily", JOB_TAG: "daily_candles", RANGE_START: STATUS_DAYS[0], RANGE_END: STATUS_DAYS[-1]}))
    [minutes] = _requests(instance)
    assert _summary([minutes]) == [("candles_1m_job", "minute", "2026-03-10-08:00", "2026-03-10-10:00", ["candles_1m"])]
    assert minutes.tags[JOB_TAG] == "history"
    instance.add_run(dg.DagsterRun(
        job_name="candles_1m_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED, asset_selection=frozenset({dg.AssetKey("candles_1m")}),
        tags={HISTORY_TAG: "minute", JOB_TAG: "history", RANGE_START: "2026-03-10-08:00", RANGE_END: "2026-03-10-10:00"}))
    result = _evaluate(instance)
    assert not result.run_requests and "2 history run(s) still queued or running" in result.skip_reason.skip_message
    instance.delete_run(hourly.run_id)  # its slot free, and its 1-hour candles not coming: asked again, ahead of the rest
    assert _summary(_requests(instance)) == [("daily_candles_job", "daily", STATUS_DAYS[0], STATUS_DAYS[-1], ["candles_1h"])]


def test_a_run_that_failed_this_hour_lets_the_next_go(instance):
    _store(instance, ("upbit_markets", DAYS), ("candles_1h", STATUS_DAYS), ("candles_1m", [*CLOSED_HOURS, "2026-03-10-10:00"]))
    daily, _ = _requests(instance)
    instance.add_run(dg.DagsterRun(job_name=daily.job_name, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.FAILURE,
                                   tags={**daily.tags, "dagster/run_key": daily.run_key}))
    result = _evaluate(instance)
    assert _summary(result.run_requests) == [("daily_candles_job", "daily", DAYS[0], DAYS[6], ["candles_1h"])]
    # the next hour's key differs: the range is tried again first
    assert _summary(_requests(instance, NOW + timedelta(hours=1)))[0][2:4] == (DAYS[-3], DAYS[-1])


def test_progress_is_the_cursor_and_one_console_line_per_change(instance, capfd):
    fresh = _evaluate(instance)
    assert fresh.cursor == "history: 0 of 57 partitions stored (market_status 0/10, recommendations 0/24, support_levels 0/23)"
    _store(instance, ("upbit_markets", DAYS))
    capfd.readouterr()
    progressed = _evaluate(instance, cursor=fresh.cursor)
    unchanged = _evaluate(instance, cursor=progressed.cursor)
    assert progressed.cursor.startswith("history: 6 of 57 partitions stored (market_status 2/10") and unchanged.cursor == progressed.cursor
    console = "".join(capfd.readouterr())
    assert [line for line in console.splitlines() if "partitions stored" in line] == [line for line in console.splitlines() if progressed.cursor in line]
    assert console.count(progressed.cursor) == 1


def test_sensor_is_in_the_definitions_targeting_both_jobs():
    sensor = history_sensor
    assert {target.job_name for target in sensor.targets} == {"daily_candles_job", "candles_1m_job"}
    assert sensor.minimum_interval_seconds == SENSOR_INTERVAL == 1  # every loop of the sensor daemon (5 s)
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_worker_disabled_leaves_the_sensor_stopped():
    stopped = build_definitions(load_settings({"WORKER_ENABLED": "false"}))
    assert stopped.resolve_sensor_def("history_sensor").default_status == dg.DefaultSensorStatus.STOPPED


def test_the_open_hours_minutes_wait_for_the_streams_first_minute_and_no_longer():
    """The REST fetch covers minutes closed ``grace`` seconds before it; the stream's window begins at the minute it
    subscribed in. Fetched once that minute plus grace has passed, they meet; without a stream nothing waits."""
    wall = 1_773_138_330.0
    subscribed = StreamHealth(heartbeat=wall, server_now=wall, covered_through=0.0, running=True,
                              open_windows=[Window(1_773_138_300, 1_773_138_300, frozenset({"KRW-BTC"}), "stream")])  # opened 30 s ago
    assert stream_wait(subscribed, wall - 20, wall - 28, grace=5, max_lag=30) is not None  # its first minute not fetchable yet
    assert stream_wait(subscribed, wall - 20, wall, grace=5, max_lag=30) is None
    subscribing = StreamHealth(heartbeat=wall, server_now=0.0, covered_through=0.0, running=True)
    assert "subscribe" in stream_wait(subscribing, wall - 20, wall, grace=5, max_lag=30)
    assert stream_wait(subscribing, wall - STREAM_WAIT_SECONDS, wall, grace=5, max_lag=30) is None  # not for ever
    assert stream_wait(None, wall - 20, wall, grace=5, max_lag=30) is None  # no stream: REST alone
    stopped = StreamHealth(heartbeat=wall, server_now=wall, covered_through=wall, running=False)
    assert stream_wait(stopped, wall - 20, wall, grace=5, max_lag=30) is None
