"""Schedules at hour and day boundaries: which partitions each tick requests, with which tags."""

from __future__ import annotations

from datetime import UTC, datetime

import dagster as dg
import pytest

from dantaro_assets.operations.limits import FINALISE_TAG, JOB_TAG, PRIORITIES
from dantaro_assets.operations.schedules import build_schedules, schedules
from dantaro_assets.settings import load_settings

BY_NAME = {schedule.name: schedule for schedule in schedules}


def _tick(name: str, when: str) -> list[dg.RunRequest]:
    context = dg.build_schedule_context(scheduled_execution_time=datetime.fromisoformat(when).replace(tzinfo=UTC))
    result = BY_NAME[name](context)
    return list(result) if isinstance(result, list) else [result]


def _keys(requests: list[dg.RunRequest]) -> list[str]:
    return [request.partition_key for request in requests]


def test_market_status_mid_hour_targets_the_open_hour_only():
    requests = _tick("market_status_schedule", "2026-03-10T10:58:00")
    assert _keys(requests) == ["2026-03-10-10:00"]
    tags = requests[0].tags
    assert tags["dagster/priority"] == str(PRIORITIES["market_status"])
    assert tags[JOB_TAG] == "market_status" and tags["dagster/max_runtime"] == "330"  # monitoring backstop: 300 s + 30 s
    assert FINALISE_TAG not in tags


def test_first_tick_of_an_hour_finalises_the_closed_hour_first():
    requests = _tick("market_status_schedule", "2026-03-10T11:00:00")
    assert _keys(requests) == ["2026-03-10-10:00", "2026-03-10-11:00"]
    final, current = requests
    assert final.tags[FINALISE_TAG] == "true"
    assert int(final.tags["dagster/priority"]) == int(current.tags["dagster/priority"]) + 1
    assert final.run_key == "2026-03-10-10:00:final"  # once per closed hour, however often the hour ticks
    assert len({r.run_key for r in requests}) == 2


def test_second_tick_of_an_hour_does_not_finalise_again():
    assert _keys(_tick("market_status_schedule", "2026-03-10T11:02:00")) == ["2026-03-10-11:00"]
    assert _keys(_tick("support_levels_schedule", "2026-03-10T11:15:00")) == ["2026-03-10-11:00"]
    assert _keys(_tick("recommendations_schedule", "2026-03-10T11:05:00")) == ["2026-03-10-11:00"]


def test_day_change_finalises_the_last_hour_of_yesterday():
    assert _keys(_tick("recommendations_schedule", "2026-03-10T23:55:00")) == ["2026-03-10-23:00"]
    assert _keys(_tick("recommendations_schedule", "2026-03-11T00:00:00")) == ["2026-03-10-23:00", "2026-03-11-00:00"]


def test_daily_candles_refresh_today_and_finalise_yesterday_after_midnight():
    assert _keys(_tick("daily_candles_schedule", "2026-03-11T00:01:00")) == ["2026-03-10", "2026-03-11"]
    assert _keys(_tick("daily_candles_schedule", "2026-03-11T13:01:00")) == ["2026-03-11"]
    assert BY_NAME["daily_candles_schedule"].cron_schedule == "1 * * * *"


def test_outcomes_score_the_hours_whose_horizons_closed():
    requests = _tick("recommendation_outcomes_schedule", "2026-03-11T12:10:00")
    # hour H is complete for horizon h once H + 1 h + h has passed: 1 h -> 10:00, 4 h -> 07:00, 24 h -> yesterday 11:00
    assert _keys(requests) == ["2026-03-11-10:00", "2026-03-11-07:00", "2026-03-10-11:00"]
    assert all(r.tags[JOB_TAG] == "recommendation_outcomes" for r in requests)


def test_cleanup_runs_every_six_hours_with_the_lowest_priority():
    schedule = BY_NAME["cleanup_schedule"]
    assert schedule.cron_schedule == "0 */6 * * *"
    (request,) = _tick("cleanup_schedule", "2026-03-11T06:00:00")
    assert request.partition_key is None
    assert int(request.tags["dagster/priority"]) == min(PRIORITIES.values())


def test_cadence_crons_follow_the_seed():
    assert {name: s.cron_schedule for name, s in BY_NAME.items() if name.split("_schedule")[0] in ("market_status", "recommendations", "support_levels")} == {
        "market_status_schedule": "*/2 * * * *",
        "recommendations_schedule": "*/5 * * * *",
        "support_levels_schedule": "*/15 * * * *",
    }
    assert all(s.execution_timezone == "UTC" for s in BY_NAME.values())


@pytest.mark.parametrize(("seconds", "cron"), [(60, "*/1 * * * *"), (600, "*/10 * * * *"), (3600, "0 * * * *")])
def test_intervals_come_from_settings(seconds: int, cron: str):
    settings = load_settings({"MARKET_STATUS_INTERVAL": str(seconds)})
    built = {s.name: s for s in build_schedules(settings)}
    assert built["market_status_schedule"].cron_schedule == cron


def test_an_interval_of_ten_minutes_finalises_on_any_tick_before_ten_past():
    settings = load_settings({"MARKET_STATUS_INTERVAL": "600"})
    schedule = {s.name: s for s in build_schedules(settings)}["market_status_schedule"]
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 11, 0, tzinfo=UTC))
    assert [r.partition_key for r in schedule(context)] == ["2026-03-10-10:00", "2026-03-10-11:00"]
    context = dg.build_schedule_context(scheduled_execution_time=datetime(2026, 3, 10, 11, 10, tzinfo=UTC))
    assert [r.partition_key for r in schedule(context)] == ["2026-03-10-11:00"]


def test_worker_disabled_leaves_every_schedule_stopped():
    stopped = build_schedules(load_settings({"WORKER_ENABLED": "false"}))
    assert {s.default_status for s in stopped} == {dg.DefaultScheduleStatus.STOPPED}
    running = build_schedules(load_settings({"WORKER_ENABLED": "true"}))
    assert {s.default_status for s in running} == {dg.DefaultScheduleStatus.RUNNING}
