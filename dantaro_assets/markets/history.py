"""Fetch the history the hourly analyses look back over, on a fresh install and after a long stop.

The schedules only fetch the open hour and day, but the analyses read back further: how far is what
their partition mappings reach (``history_window``, through ``operations.schedules.lookback_needs``,
the same needs the schedules wait for), so this module knows no analysis and a new one's lookback is
fetched without an edit here. Today that is 14 days of 1-hour candles (support levels and
recommendations need >= 50 bars), 2 days of daily candles, the 2 closed hours of 1-minute candles
before the open hour (the 24 h turnover takes its older hours from candles_1h), and, for every candle
asset, the universe of each day it covers. Without this sensor a fresh ``dantaro dev`` fails those
jobs for hours or days until the schedules have accumulated the history one period at a time.

Every ``SENSOR_INTERVAL`` seconds the sensor compares the lookback partitions with what the instance
has ever materialised and requests the missing ones in as few runs as the run timeout allows, in
dependency order across ticks:

1. the universe (``upbit_markets``) of the missing days, one run per contiguous range: a range costs
   one Upbit request, and everything else (the schedules' runs included) fails without it, so it
   runs ahead of every job's runs (``top_priority``: above the highest job's finalising run);
2. once those days' universe is stored, the 1-hour and 1-day candles of the days as ONE range
   run of ``daily_candles_job``;
3. then the closed hours of 1-minute candles of the minute lookback in ranges of at most
   ``MINUTE_HOURS_PER_RUN`` hours, newest first.

Until an analysis's own lookback is stored, its schedule skips with the reason (``operations/schedules.py``).

One history run at a time, whatever its step: it holds at most one of the two ``upbit_api`` pool
slots and one of the three run slots, so the schedules' live runs always have a fetch slot and two run
slots (``test_limits`` shows a live run fetching beside a history run, not behind it). Run keys carry
the range and the hour of the request, so a failed range is retried at most once an hour.

Progress (lookback partitions stored of those needed, per step) is the sensor's cursor, shown on its
page in the UI, and is logged once each time it changes: ``history: 12 of 47 partitions stored ...``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

import dagster as dg

from dantaro_assets.lib.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    RUN_KEY_TAG,
    UnresolvedAssetJobDefinition,
    get_current_datetime,
)
from dantaro_assets.markets.jobs import CANDLES_1M_JOB, DAILY_CANDLES_JOB, DAILY_CANDLES_TYPE, HISTORY_TYPE
from dantaro_assets.operations.limits import PRIORITY_TAG, JobType
from dantaro_assets.operations.schedules import default_sensor_status, lookback_needs
from dantaro_assets.partitions import daily_partitions, hourly_partitions

HISTORY_TAG = "dantaro/history"  # which bootstrap step a run belongs to: universe, daily or minute
SENSOR_INTERVAL = 30
# a run in any of these may still materialise what it was asked for, so its partitions are not asked again
NOT_FINISHED_STATUSES = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUSPENDED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
]
MINUTE_HOURS_PER_RUN = 12  # under the candle assets' multi-run size (13 h): a run stays inside the run timeout
DAILY_CANDLES = ("candles_1h", "candles_1d")
DAILY_ASSETS = ("upbit_markets", *DAILY_CANDLES)


@dataclass(frozen=True)
class KeyRange:
    """Consecutive partition keys of one definition, first to last inclusive."""

    keys: tuple[str, ...]

    @property
    def first(self) -> str:
        return self.keys[0]

    @property
    def last(self) -> str:
        return self.keys[-1]

    def tags(self) -> dict[str, str]:
        return {ASSET_PARTITION_RANGE_START_TAG: self.first, ASSET_PARTITION_RANGE_END_TAG: self.last}


def lookback_keys(partitions_def: dg.TimeWindowPartitionsDefinition, starts: Iterable[datetime]) -> list[str]:
    """Partition keys of the given period starts, oldest first, none before the definition's start."""
    return [partitions_def.get_partition_key_for_timestamp(start.timestamp()) for start in sorted(starts) if start >= partitions_def.start]


@dataclass(frozen=True)
class HistoryWindow:
    """How far back the history reaches: ``days`` before today (the universe and 1-hour/1-day candles) and the
    ``hours`` closed hours of 1-minute candles before the open hour (the open hour is the schedules' own)."""

    days: int
    hours: int

    def daily(self, now: datetime) -> list[str]:
        """Today and the ``days`` days before."""
        today = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return lookback_keys(daily_partitions, (today - timedelta(days=n) for n in range(self.days + 1)))

    def minutes(self, now: datetime) -> list[str]:
        """The ``hours`` closed hours before the open hour."""
        hour = now.replace(minute=0, second=0, microsecond=0)
        return lookback_keys(hourly_partitions, (hour - timedelta(hours=n) for n in range(1, self.hours + 1)))


def history_window(repository: dg.RepositoryDefinition, now: datetime) -> HistoryWindow:
    """The widest reach of the hourly assets' partition mappings from the open hour at ``now``: the needs the
    schedules wait for (``lookback_needs``), so what they wait for is what this sensor fetches."""
    hourly = [key for key, asset in repository.assets_defs_by_key.items() if asset.partitions_def == hourly_partitions]
    open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
    needs = lookback_needs(repository, hourly, open_hour, now)

    def periods_back(asset: str, partitions_def: dg.TimeWindowPartitionsDefinition, period: timedelta) -> int:
        """Periods from ``asset``'s earliest needed partition to the one holding ``now`` (0: none needed)."""
        current = partitions_def.time_window_for_partition_key(partitions_def.get_partition_key_for_timestamp(now.timestamp())).start
        starts = (partitions_def.time_window_for_partition_key(key).start for key in needs.get(dg.AssetKey(asset), ()))
        return max(((current - start) // period for start in starts), default=0)

    return HistoryWindow(days=max(periods_back(asset, daily_partitions, timedelta(days=1)) for asset in DAILY_ASSETS),
                         hours=periods_back("candles_1m", hourly_partitions, timedelta(hours=1)))


def top_priority(repository: dg.RepositoryDefinition) -> int:
    """Above every run the definitions' jobs ask for, a finalising run's +1 included: read from their tags, so
    this module knows no job type but its own."""
    return max(int(job.run_tags[PRIORITY_TAG]) for job in repository.get_all_jobs() if PRIORITY_TAG in job.run_tags) + 2


def missing_ranges(keys: Sequence[str], present: set[str], max_len: int | None = None) -> list[KeyRange]:
    """Runs of consecutive ``keys`` not in ``present``, split to at most ``max_len`` keys, oldest first."""
    ranges: list[list[str]] = []
    previous_missing = False
    for key in keys:
        missing = key not in present
        if missing and previous_missing and (max_len is None or len(ranges[-1]) < max_len):
            ranges[-1].append(key)
        elif missing:
            ranges.append([key])
        previous_missing = missing
    return [KeyRange(tuple(keys)) for keys in ranges]


def _day_of_hour(hour_key: str) -> str:
    return daily_partitions.get_partition_key_for_timestamp(hourly_partitions.time_window_for_partition_key(hour_key).start.timestamp())


def _failed_this_hour(instance: dg.DagsterInstance, now: datetime) -> set[str]:
    """Run keys of history runs that failed since the hour began: Dagster would not launch the same key again."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED], tags={HISTORY_TAG: ["universe", "daily", "minute"]},
            created_after=hour)
    )
    return {run.tags[RUN_KEY_TAG] for run in runs if RUN_KEY_TAG in run.tags}


def _in_flight(instance: dg.DagsterInstance) -> set[str]:
    """Bootstrap steps with a run queued or in progress."""
    runs = instance.get_runs(filters=dg.RunsFilter(statuses=NOT_FINISHED_STATUSES, tags={HISTORY_TAG: ["universe", "daily", "minute"]}))
    return {run.tags[HISTORY_TAG] for run in runs}


def _request(
    job_name: str, step: str, job_type: JobType, key_range: KeyRange, assets: Sequence[str], stamp: str, extra_tags: Mapping[str, str] | None = None
) -> dg.RunRequest:
    return dg.RunRequest(
        run_key=f"{step}:{key_range.first}...{key_range.last}:{'+'.join(assets)}@{stamp}",
        job_name=job_name,
        asset_selection=[dg.AssetKey(asset) for asset in assets],
        tags={**job_type.tags(), **key_range.tags(), HISTORY_TAG: step, **(extra_tags or {})},
    )


_STEP_NAMES = {"universe": "universe", "daily": "1-hour/1-day candles", "minute": "1-minute candles"}


@dataclass(frozen=True)
class HistoryPlan:
    """The next history run (None while one is in flight or nothing is missing), why nothing else goes, and progress."""

    request: dg.RunRequest | None
    waiting: tuple[str, ...]
    stored: Mapping[str, tuple[int, int]]  # step -> (partitions stored, partitions needed)

    def progress(self) -> str:
        stored, needed = (sum(counts[i] for counts in self.stored.values()) for i in (0, 1))
        steps = ", ".join(f"{_STEP_NAMES[step]} {have}/{want}" for step, (have, want) in self.stored.items())
        return f"history: {stored} of {needed} partitions stored ({steps})"


def history_plan(instance: dg.DagsterInstance, now: datetime, window: HistoryWindow, universe_priority: int) -> HistoryPlan:
    """What the lookback history at ``now`` lacks, and the one run to fetch next (universe, then daily, then minutes);
    a universe run at ``universe_priority``."""
    days, hours = window.daily(now), window.minutes(now)
    stamp = now.strftime("%Y-%m-%dT%H")
    present = {name: instance.get_materialized_partitions(dg.AssetKey(name)) for name in (*DAILY_ASSETS, "candles_1m")}
    universe = present["upbit_markets"]
    stored = {
        "universe": (len(universe.intersection(days)), len(days)),
        "daily": (sum(len(present[name].intersection(days)) for name in DAILY_CANDLES), len(DAILY_CANDLES) * len(days)),
        "minute": (len(present["candles_1m"].intersection(hours)), len(hours)),
    }
    in_flight = _in_flight(instance)
    if in_flight:
        return HistoryPlan(None, tuple(f"the {_STEP_NAMES[step]} history run is still queued or running" for step in sorted(in_flight)), stored)

    candidates: list[dg.RunRequest] = []
    waiting: list[str] = []
    for key_range in missing_ranges(days, universe):
        candidates.append(_request(DAILY_CANDLES_JOB, "universe", DAILY_CANDLES_TYPE, key_range, ["upbit_markets"], stamp,
                                   {PRIORITY_TAG: str(universe_priority)}))

    daily_missing = [key for key in days if any(key not in present[name] for name in DAILY_CANDLES)]
    if daily_missing:
        span = KeyRange(tuple(days[days.index(daily_missing[0]) : days.index(daily_missing[-1]) + 1]))
        assets = [name for name in DAILY_CANDLES if any(key not in present[name] for key in span.keys)]
        if universe.issuperset(span.keys):
            candidates.append(_request(DAILY_CANDLES_JOB, "daily", DAILY_CANDLES_TYPE, span, assets, stamp))
        else:
            waiting.append(f"daily candles {span.first}...{span.last} wait for their days' universe")

    for key_range in reversed(missing_ranges(hours, present["candles_1m"], MINUTE_HOURS_PER_RUN)):
        if universe.issuperset(_day_of_hour(key) for key in key_range.keys):
            candidates.append(_request(CANDLES_1M_JOB, "minute", HISTORY_TYPE, key_range, ["candles_1m"], stamp))
        else:
            waiting.append(f"1-minute candles {key_range.first}...{key_range.last} wait for their days' universe")
    failed = _failed_this_hour(instance, now) if candidates else set()
    waiting += [f"{request.run_key} failed this hour: retried next hour" for request in candidates if request.run_key in failed]
    candidates = [request for request in candidates if request.run_key not in failed]
    if len(candidates) > 1:
        waiting.append(f"{len(candidates) - 1} more history run(s) follow, one at a time")
    return HistoryPlan(candidates[0] if candidates else None, tuple(waiting), stored)


def build_history_sensor(jobs: Sequence[UnresolvedAssetJobDefinition], enabled: bool) -> dg.SensorDefinition:
    """The sensor over ``jobs`` (``daily_candles_job`` and ``candles_1m_job``), running unless ``enabled`` is false."""

    @dg.sensor(
        name="history_sensor",
        jobs=list(jobs),
        minimum_interval_seconds=SENSOR_INTERVAL,
        default_status=default_sensor_status(enabled),
        description=(
            "Fetches the lookback history nobody has materialised, as far back as the hourly assets' partition mappings "
            "reach: the universe and 1-hour/1-day candles of those days, the closed hours of 1-minute candles."
        ),
    )
    def history_sensor(context: dg.SensorEvaluationContext) -> dg.SensorResult:
        now = get_current_datetime()
        repository = context.repository_def
        plan = history_plan(context.instance, now, history_window(repository, now), top_priority(repository))
        progress = plan.progress()
        if progress != context.cursor:  # one line per step of progress, not per tick
            context.log.info(progress)
        if plan.request is not None:
            return dg.SensorResult(run_requests=[plan.request], cursor=progress)
        if plan.waiting:
            return dg.SensorResult(skip_reason=f"{progress}; {'; '.join(plan.waiting)}", cursor=progress)
        return dg.SensorResult(skip_reason=f"{progress}: the lookback history is complete", cursor=progress)

    return history_sensor
