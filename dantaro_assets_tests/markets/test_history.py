"""The history sensor against a real temporary instance: which lookback partitions it requests, how, and when not."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import dagster as dg
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.market_status.analysis import LOOKBACK as STATUS_LOOKBACK
from dantaro_assets.markets.history import (
    HISTORY_TAG,
    MINUTE_HOURS_PER_RUN,
    HistoryWindow,
    history_window,
    missing_ranges,
)
from dantaro_assets.markets.jobs import DAILY_CANDLES_TYPE
from dantaro_assets.operations.limits import JOB_TAG, PRIORITY_TAG
from dantaro_assets.partitions import days_back, hourly_partitions, lookback_hours
from dantaro_assets.recommendations.analysis import LOOKBACK as RECOMMENDATIONS_LOOKBACK
from dantaro_assets.recommendations.analysis import OUTCOMES_LOOKBACK
from dantaro_assets.recommendations.definitions import OUTCOMES_TYPE
from dantaro_assets.settings import load_settings
from dantaro_assets.support_levels.analysis import LOOKBACK as LEVELS_LOOKBACK
from dantaro_assets_tests.operations.daemon import freeze_time

defs = build_definitions(load_settings({}))
history_sensor = defs.resolve_sensor_def("history_sensor")

NOW = datetime(2026, 3, 10, 10, 25, tzinfo=UTC)
WINDOW = history_window(defs.get_repository_def(), NOW)
RANGE_START, RANGE_END = "dagster/asset_partition_range_start", "dagster/asset_partition_range_end"


@pytest.fixture
def instance() -> Iterator[dg.DagsterInstance]:
    with dg.instance_for_test() as instance:
        yield instance


def _materialise(instance: dg.DagsterInstance, asset: str, keys: list[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(asset), partition=key))


def _evaluate(instance: dg.DagsterInstance, now: datetime = NOW, cursor: str | None = None) -> dg.SensorResult:
    with freeze_time(now):
        return history_sensor(dg.build_sensor_context(instance=instance, definitions=defs, cursor=cursor))


def _requests(instance: dg.DagsterInstance, now: datetime = NOW) -> list[dg.RunRequest]:
    return list(_evaluate(instance, now).run_requests or [])


def _summary(requests: list[dg.RunRequest]) -> list[tuple]:
    return [
        (r.job_name, r.tags[HISTORY_TAG], r.tags[RANGE_START], r.tags[RANGE_END], sorted(k.to_user_string() for k in r.asset_selection))
        for r in requests
    ]


def _store_everything(instance: dg.DagsterInstance, now: datetime = NOW) -> None:
    for asset in ("upbit_markets", "candles_1h", "candles_1d"):
        _materialise(instance, asset, WINDOW.daily(now))
    _materialise(instance, "candles_1m", WINDOW.minutes(now))


def test_lookbacks_cover_today_and_14_days_and_the_2_closed_hours_the_analyses_read():
    """The sensor's window, from the assets' partition mappings, is the widest of the analyses' own lookbacks
    (the 24 h turnover reads candles_1h)."""
    lookbacks = (STATUS_LOOKBACK, LEVELS_LOOKBACK, RECOMMENDATIONS_LOOKBACK, OUTCOMES_LOOKBACK)
    widest = max(max(lb.hourly_days, lb.daily_days, lb.universe_days) for lb in lookbacks), max(lb.minute_hours for lb in lookbacks)
    assert WINDOW == HistoryWindow(*widest) == HistoryWindow(days=14, hours=2)
    assert WINDOW.daily(NOW)[0] == "2026-02-24" and WINDOW.daily(NOW)[-1] == "2026-03-10" and len(WINDOW.daily(NOW)) == 15
    assert WINDOW.minutes(NOW) == ["2026-03-10-08:00", "2026-03-10-09:00"]
    day = [f"2026-03-09-{h:02d}:00" for h in range(24)]
    assert [(r.first, r.last) for r in missing_ranges(day, set(), MINUTE_HOURS_PER_RUN)] == [
        ("2026-03-09-00:00", "2026-03-09-11:00"), ("2026-03-09-12:00", "2026-03-09-23:00")]


def test_an_analysis_reading_further_back_widens_the_window_without_an_edit_here():
    @dg.asset(partitions_def=hourly_partitions, ins={"candles_1m": dg.AssetIn(partition_mapping=lookback_hours(5)),
                                                     "candles_1h": dg.AssetIn(partition_mapping=days_back(20))})
    def wider(candles_1m, candles_1h) -> None: ...

    widened = dg.Definitions.merge(defs, dg.Definitions(assets=[wider]))
    assert history_window(widened.get_repository_def(), NOW) == HistoryWindow(days=20, hours=5)


def test_fresh_instance_asks_for_the_universe_first_at_top_priority(instance):
    requests = _requests(instance)
    assert _summary(requests) == [("daily_candles_job", "universe", "2026-02-24", "2026-03-10", ["upbit_markets"])]
    tags = requests[0].tags
    highest = max(int(job.run_tags[PRIORITY_TAG]) for job in defs.get_repository_def().get_all_jobs() if PRIORITY_TAG in job.run_tags)
    assert int(tags[PRIORITY_TAG]) > highest + 1  # ahead of every job's finalising runs too
    assert tags[JOB_TAG] == "daily_candles"
    # the run takes its job's tags too: the monitoring backstop, 300 s + 30 s
    assert defs.resolve_job_def("daily_candles_job").run_tags["dagster/max_runtime"] == "330"


def test_with_the_universe_stored_one_run_at_a_time_daily_candles_then_minutes(instance):
    _materialise(instance, "upbit_markets", WINDOW.daily(NOW))
    result = _evaluate(instance)
    assert _summary(result.run_requests) == [("daily_candles_job", "daily", "2026-02-24", "2026-03-10", ["candles_1d", "candles_1h"])]
    daily = result.run_requests[0].tags
    assert daily[JOB_TAG] == "daily_candles" and daily[PRIORITY_TAG] == str(DAILY_CANDLES_TYPE.priority)

    for asset in ("candles_1h", "candles_1d"):
        _materialise(instance, asset, WINDOW.daily(NOW))
    [minutes] = _requests(instance)
    assert _summary([minutes]) == [("candles_1m_job", "minute", "2026-03-10-08:00", "2026-03-10-09:00", ["candles_1m"])]
    assert minutes.tags[JOB_TAG] == "history" and OUTCOMES_TYPE.priority < int(minutes.tags[PRIORITY_TAG]) < DAILY_CANDLES_TYPE.priority
    assert minutes.run_key == "minute:2026-03-10-08:00...2026-03-10-09:00:candles_1m@2026-03-10T10"

    _materialise(instance, "candles_1m", WINDOW.minutes(NOW))
    assert not _requests(instance)


def test_only_the_gaps_are_requested(instance):
    missing_hours = ["2026-03-10-08:00"]
    for asset in ("upbit_markets", "candles_1h"):
        _materialise(instance, asset, WINDOW.daily(NOW))
    _materialise(instance, "candles_1d", [day for day in WINDOW.daily(NOW) if day not in ("2026-03-01", "2026-03-05")])
    _materialise(instance, "candles_1m", [hour for hour in WINDOW.minutes(NOW) if hour not in missing_hours])
    assert _summary(_requests(instance)) == [("daily_candles_job", "daily", "2026-03-01", "2026-03-05", ["candles_1d"])]
    _materialise(instance, "candles_1d", ["2026-03-01", "2026-03-05"])
    assert _summary(_requests(instance)) == [("candles_1m_job", "minute", "2026-03-10-08:00", "2026-03-10-08:00", ["candles_1m"])]
    _materialise(instance, "candles_1m", ["2026-03-10-08:00"])
    assert not _requests(instance)


def test_candles_wait_for_their_days_universe(instance):
    _materialise(instance, "upbit_markets", WINDOW.daily(NOW)[:-2])  # yesterday and today missing
    _materialise(instance, "candles_1h", WINDOW.daily(NOW)[:-1])
    _materialise(instance, "candles_1d", WINDOW.daily(NOW))
    _materialise(instance, "candles_1m", WINDOW.minutes(NOW)[:-1])  # 09:00 today missing
    assert _summary(_requests(instance)) == [("daily_candles_job", "universe", "2026-03-09", "2026-03-10", ["upbit_markets"])]


def test_nothing_is_requested_when_the_history_is_complete(instance):
    _store_everything(instance)
    result = _evaluate(instance)
    assert not result.run_requests and "complete" in result.skip_reason.skip_message
    assert result.cursor == "history: 47 of 47 partitions stored (universe 15/15, 1-hour/1-day candles 30/30, 1-minute candles 2/2)"
    # An hour later only the hour that just closed is new, and it is the schedules' (here: missing) hour.
    assert _summary(_requests(instance, NOW + timedelta(hours=1))) == [("candles_1m_job", "minute", "2026-03-10-10:00", "2026-03-10-10:00", ["candles_1m"])]


def test_no_history_run_is_requested_while_one_is_in_flight(instance):
    _materialise(instance, "upbit_markets", WINDOW.daily(NOW))
    # Not yet started (as a queued run is) or started: either holds every step back, so history never holds
    # more than one upbit_api slot.
    for step, job, status in (("daily", "daily_candles_job", dg.DagsterRunStatus.NOT_STARTED), ("minute", "candles_1m_job", dg.DagsterRunStatus.STARTED)):
        run = instance.add_run(dg.DagsterRun(job_name=job, run_id=str(uuid.uuid4()), status=status, tags={HISTORY_TAG: step}))
        result = _evaluate(instance)
        candles = "1-hour/1-day" if step == "daily" else "1-minute"
        assert not result.run_requests and f"the {candles} candles history run is still queued" in result.skip_reason.skip_message
        instance.delete_run(run.run_id)


def test_a_run_that_failed_this_hour_lets_the_next_step_go(instance):
    _materialise(instance, "upbit_markets", WINDOW.daily(NOW))
    [daily] = _requests(instance)
    instance.add_run(dg.DagsterRun(job_name=daily.job_name, run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.FAILURE,
                                   tags={**daily.tags, "dagster/run_key": daily.run_key}))
    result = _evaluate(instance)
    assert _summary(result.run_requests) == [("candles_1m_job", "minute", "2026-03-10-08:00", "2026-03-10-09:00", ["candles_1m"])]
    # the next hour's key differs: the daily range is tried again first
    assert _summary(_requests(instance, NOW + timedelta(hours=1)))[0][1] == "daily"


def test_progress_is_the_cursor_and_one_console_line_per_change(instance, capfd):
    fresh = _evaluate(instance)
    assert fresh.cursor == "history: 0 of 47 partitions stored (universe 0/15, 1-hour/1-day candles 0/30, 1-minute candles 0/2)"
    _materialise(instance, "upbit_markets", WINDOW.daily(NOW))
    capfd.readouterr()
    progressed = _evaluate(instance, cursor=fresh.cursor)
    unchanged = _evaluate(instance, cursor=progressed.cursor)
    assert progressed.cursor.startswith("history: 15 of 47 partitions stored") and unchanged.cursor == progressed.cursor
    console = "".join(capfd.readouterr())
    assert [line for line in console.splitlines() if "partitions stored" in line] == [line for line in console.splitlines() if progressed.cursor in line]
    assert console.count(progressed.cursor) == 1


def test_sensor_is_in_the_definitions_targeting_both_jobs():
    sensor = history_sensor
    assert {target.job_name for target in sensor.targets} == {"daily_candles_job", "candles_1m_job"}
    assert sensor.minimum_interval_seconds == 30
    assert sensor.default_status == dg.DefaultSensorStatus.RUNNING


def test_worker_disabled_leaves_the_sensor_stopped():
    stopped = build_definitions(load_settings({"WORKER_ENABLED": "false"}))
    assert stopped.resolve_sensor_def("history_sensor").default_status == dg.DefaultSensorStatus.STOPPED
