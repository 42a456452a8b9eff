"""Schedules at hour and day boundaries: which partitions each tick requests, with which tags, and the
skip while the lookback is not stored; evaluated against real instances and the project's definitions."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets.history import products
from dantaro_assets.operations.limits import FINALISE_TAG, JOB_TAG, PRIORITY_TAG
from dantaro_assets.operations.schedules import lookback_needs
from dantaro_assets.partitions import freshness
from dantaro_assets.settings import Settings, load_settings
from dantaro_assets_tests.operations.daemon import freeze_time


def build_schedules(settings: Settings) -> list[dg.ScheduleDefinition]:
    """Every domain's schedules under ``settings``."""
    return list(build_definitions(settings).schedules or [])


DEFS = build_definitions(load_settings())  # conftest's environment: the test database, not an embedded server in .dantaro/
BY_NAME = {schedule.name: schedule for schedule in DEFS.schedules or []}
JOBS = {job.name: job for job in DEFS.jobs or []}
REPOSITORY = DEFS.get_repository_def()
DAILY_ASSETS = ("upbit_markets", "candles_1h", "candles_1d")
ANALYSES = ("market_status", "recommendations", "support_levels")


def _at(when: str) -> datetime:
    return datetime.fromisoformat(when).replace(tzinfo=UTC)


def _store(instance: dg.DagsterInstance, asset: str, keys: Iterable[str]) -> None:
    for key in keys:
        instance.report_runless_asset_event(dg.AssetMaterialization(dg.AssetKey(asset), partition=key))


def _hours(first: str, last: str) -> list[str]:
    return [t.strftime("%Y-%m-%d-%H:00") for t in pd.date_range(first, last, freq="h")]


def _days(first: str, last: str) -> list[str]:
    return [t.strftime("%Y-%m-%d") for t in pd.date_range(first, last, freq="D")]


@pytest.fixture(scope="module")
def stored() -> Iterator[dg.DagsterInstance]:
    """An instance holding every partition the ticks below look back over (8 Mar to 12 Mar, days from 20 Feb), and the
    analyses' hours: a running install (on a first start the open hour is the start sensor's, below)."""
    with dg.instance_for_test() as instance:
        for asset in ("candles_1m", *ANALYSES):
            _store(instance, asset, _hours("2026-03-08T00:00", "2026-03-12T23:00"))
        for asset in DAILY_ASSETS:
            _store(instance, asset, _days("2026-02-20", "2026-03-12"))
        yield instance


def _evaluate(schedule: dg.ScheduleDefinition, instance: dg.DagsterInstance, when: str) -> list[dg.RunRequest] | dg.SkipReason:
    return schedule(dg.build_schedule_context(instance=instance, scheduled_execution_time=_at(when), repository_def=REPOSITORY))


@pytest.fixture
def tick(stored):
    def _tick(name: str, when: str) -> list[dg.RunRequest]:
        result = _evaluate(BY_NAME[name], stored, when)
        return list(result) if isinstance(result, list) else [result]

    return _tick


def _keys(requests: list[dg.RunRequest]) -> list[str]:
    return [request.partition_key for request in requests]


def test_market_status_mid_hour_targets_the_open_hour_only(tick):
    requests = tick("market_status_schedule", "2026-03-10T10:58:00")
    assert _keys(requests) == ["2026-03-10-10:00"]
    tags = requests[0].tags
    assert tags[PRIORITY_TAG] == str(MARKET_STATUS.priority)
    assert tags[JOB_TAG] == "market_status"
    # the run takes its job's tags too: the monitoring backstop, 300 s + 30 s
    assert DEFS.resolve_job_def("market_status_job").run_tags["dagster/max_runtime"] == "330"
    assert FINALISE_TAG not in tags


def test_first_tick_of_an_hour_finalises_the_closed_hour_first(tick):
    requests = tick("market_status_schedule", "2026-03-10T11:00:00")
    assert _keys(requests) == ["2026-03-10-10:00", "2026-03-10-11:00"]
    final, current = requests
    assert final.tags[FINALISE_TAG] == "true"
    assert int(final.tags["dagster/priority"]) == int(current.tags["dagster/priority"]) + 1
    assert final.run_key == "2026-03-10-10:00:final"  # once per closed hour, however often the hour ticks
    assert len({r.run_key for r in requests}) == 2


def test_second_tick_of_an_hour_does_not_finalise_again(tick):
    assert _keys(tick("market_status_schedule", "2026-03-10T11:02:00")) == ["2026-03-10-11:00"]
    assert _keys(tick("support_levels_schedule", "2026-03-10T11:15:00")) == ["2026-03-10-11:00"]
    assert _keys(tick("recommendations_schedule", "2026-03-10T11:05:00")) == ["2026-03-10-11:00"]


def test_day_change_finalises_the_last_hour_of_yesterday(tick):
    assert _keys(tick("recommendations_schedule", "2026-03-10T23:55:00")) == ["2026-03-10-23:00"]
    assert _keys(tick("recommendations_schedule", "2026-03-11T00:00:00")) == ["2026-03-10-23:00", "2026-03-11-00:00"]


def test_daily_candles_refresh_today_and_finalise_yesterday_after_midnight(tick):
    assert _keys(tick("daily_candles_schedule", "2026-03-11T00:01:00")) == ["2026-03-10", "2026-03-11"]
    assert _keys(tick("daily_candles_schedule", "2026-03-11T13:01:00")) == ["2026-03-11"]
    assert BY_NAME["daily_candles_schedule"].cron_schedule == "1 * * * *"


def test_outcomes_score_the_hours_whose_horizons_closed(tick):
    requests = tick("recommendation_outcomes_schedule", "2026-03-11T12:10:00")
    # hour H is complete for horizon h once H + 1 h + h has passed: 1 h -> 10:00, 4 h -> 07:00, 24 h -> yesterday 11:00
    assert _keys(requests) == ["2026-03-11-10:00", "2026-03-11-07:00", "2026-03-10-11:00"]
    assert all(r.tags[JOB_TAG] == "recommendation_outcomes" for r in requests)


def test_outcomes_skip_the_hours_with_no_recommendations_stored():
    """A first start at :10 (nothing stored yet) grades nothing instead of failing three runs on a missing table."""
    with dg.instance_for_test() as instance:
        skipped = _evaluate(BY_NAME["recommendation_outcomes_schedule"], instance, "2026-03-11T12:10:00")
        assert isinstance(skipped, dg.SkipReason) and "no recommendations stored for 2026-03-11-10:00" in skipped.skip_message
        _store(instance, "recommendations", ["2026-03-11-07:00"])
        requests = _evaluate(BY_NAME["recommendation_outcomes_schedule"], instance, "2026-03-11T12:10:00")
        assert _keys(requests) == ["2026-03-11-07:00"]


def test_cleanup_runs_every_six_hours_with_the_lowest_priority(tick):
    schedule = BY_NAME["cleanup_schedule"]
    assert schedule.cron_schedule == "0 */6 * * *"
    (request,) = tick("cleanup_schedule", "2026-03-11T06:00:00")
    assert request.partition_key is None
    assert int(request.tags[PRIORITY_TAG]) == min(int(job.run_tags[PRIORITY_TAG]) for job in REPOSITORY.get_all_jobs() if PRIORITY_TAG in job.run_tags)


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


def test_an_interval_of_ten_minutes_finalises_on_any_tick_before_ten_past(stored):
    settings = load_settings({"MARKET_STATUS_INTERVAL": "600"})
    schedule = {s.name: s for s in build_schedules(settings)}["market_status_schedule"]
    assert [r.partition_key for r in _evaluate(schedule, stored, "2026-03-10T11:00:00")] == ["2026-03-10-10:00", "2026-03-10-11:00"]
    assert [r.partition_key for r in _evaluate(schedule, stored, "2026-03-10T11:10:00")] == ["2026-03-10-11:00"]


def test_worker_disabled_leaves_every_schedule_stopped():
    stopped = build_schedules(load_settings({"WORKER_ENABLED": "false"}))
    assert {s.default_status for s in stopped} == {dg.DefaultScheduleStatus.STOPPED}
    running = build_schedules(load_settings({"WORKER_ENABLED": "true"}))
    assert {s.default_status for s in running} == {dg.DefaultScheduleStatus.RUNNING}


# What market status reads for hour 10:00 of 10 March (its own hour's 1-minute candles are fetched by the run):
MARKET_STATUS_NEEDS = {
    "candles_1m": ["2026-03-10-08:00", "2026-03-10-09:00"],  # 2 h of minutes before the hour
    "candles_1h": _days("2026-03-05", "2026-03-10"),  # 5 days back
    "upbit_markets": ["2026-03-09", "2026-03-10"],
}


def test_a_tick_whose_lookback_is_not_stored_skips_naming_what_it_waits_for(instance):
    _store(instance, "market_status", ["2026-03-10-09:00"])  # running, not a first start
    result = _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T10:58:00")
    assert isinstance(result, dg.SkipReason)
    assert result.skip_message == (
        "waiting for history: 2026-03-10-10:00 needs candles_1h 6 of 6 partitions (2026-03-05...2026-03-10), "
        "candles_1m 2 of 2 partitions (2026-03-10-08:00...2026-03-10-09:00), upbit_markets 2 of 2 partitions (2026-03-09...2026-03-10)"
    )

    for asset, keys in MARKET_STATUS_NEEDS.items():
        _store(instance, asset, [key for key in keys if key != "2026-03-07"])
    result = _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T10:58:00")
    assert result.skip_message == "waiting for history: 2026-03-10-10:00 needs candles_1h 2026-03-07"

    _store(instance, "candles_1h", ["2026-03-07"])
    [request] = _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T10:58:00")
    assert request.partition_key == "2026-03-10-10:00" and request.tags[JOB_TAG] == "market_status"


def test_the_closed_hour_is_finalised_while_the_open_hour_still_waits(instance):
    _store(instance, "market_status", ["2026-03-10-10:00"])  # running, not a first start
    for asset, keys in MARKET_STATUS_NEEDS.items():
        _store(instance, asset, keys)
    # at 11:00 the closed hour 10:00 has its lookback; the open hour 11:00 also needs 10:00's minutes, not stored yet
    [final] = _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T11:00:00")
    assert final.partition_key == "2026-03-10-10:00" and final.tags[FINALISE_TAG] == "true"
    _store(instance, "candles_1m", ["2026-03-10-10:00"])
    assert [r.partition_key for r in _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T11:02:00")] == ["2026-03-10-11:00"]


@pytest.mark.parametrize("job", [JOBS["market_status_job"], JOBS["recommendations_job"], JOBS["support_levels_job"]], ids=lambda job: job.name)
def test_what_the_schedules_wait_for_is_what_the_history_sensor_fetches(job):
    """The needs come from the assets' partition mappings; the sensor fetches each product's, or a tick would wait forever."""
    now = _at("2026-03-10T10:05:00")
    needs = lookback_needs(REPOSITORY, job.selection.resolve(list(REPOSITORY.assets_defs_by_key.values())), "2026-03-10-10:00", now)
    [product] = [product for product in products(REPOSITORY, now) if product.job == job.name]
    assert {key.to_user_string(): keys for key, keys in needs.items()} == {
        asset: set(keys) for asset, keys in product.needs.items() if asset != "upbit_instruments"}  # the tick sizes: optional
    assert set(needs) <= {dg.AssetKey(name) for name in ("candles_1m", *DAILY_ASSETS)}


def test_one_cadence_sets_the_cron_the_freshness_policy_and_the_ticks():
    definitions = build_definitions(load_settings({"MARKET_STATUS_INTERVAL": "600"}))
    assert definitions.resolve_schedule_def("market_status_schedule").cron_schedule == "*/10 * * * *"
    for asset in ("market_status", "candles_1m"):  # candles_1m is refreshed by the fastest cadence's job
        assert definitions.resolve_assets_def(asset).specs_by_key[dg.AssetKey(asset)].freshness_policy == freshness(600), asset
    assert definitions.resources["run_settings"].market_status_interval == 600


def test_a_first_starts_open_hour_is_the_start_sensors_and_the_schedule_takes_over_once_it_ran(instance):
    """Cold (neither the open hour nor the one before stored, no run of the open hour): the schedule leaves the open hour
    to the start sensor, which requests it once its lookback is stored and not before; once a run of it exists the
    sensor stops and the schedule's ticks go on."""
    sensor = DEFS.resolve_sensor_def("market_status_start_sensor")

    def sensed() -> list[dg.RunRequest]:
        with freeze_time(_at("2026-03-10T10:57:30")):
            result = sensor(dg.build_sensor_context(instance=instance, definitions=DEFS))
        return [] if isinstance(result, dg.SkipReason) else list(result)

    assert sensor.minimum_interval_seconds == 1  # every loop of the sensor daemon (5 s)
    assert not sensed()  # its lookback is not stored yet
    for asset, keys in MARKET_STATUS_NEEDS.items():
        _store(instance, asset, keys)
    skipped = _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T10:58:00")
    assert skipped.skip_message == "first start: market_status_start_sensor launches 2026-03-10-10:00 once its lookback is stored"
    [request] = sensed()
    assert (request.partition_key, request.run_key, request.tags[JOB_TAG]) == ("2026-03-10-10:00", "2026-03-10-10:00:start", "market_status")
    instance.add_run(dg.DagsterRun(job_name="market_status_job", run_id=str(uuid.uuid4()), status=dg.DagsterRunStatus.NOT_STARTED,
                                   tags={**request.tags, "dagster/partition": request.partition_key}))
    assert not sensed()
    assert [r.partition_key for r in _evaluate(BY_NAME["market_status_schedule"], instance, "2026-03-10T10:58:00")] == ["2026-03-10-10:00"]
