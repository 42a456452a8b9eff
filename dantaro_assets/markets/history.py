"""Fetch the lookback history a fresh install (or a long stop) lacks, in the order the products read it.

What each product reads is its job's partition mappings from the open hour (``lookback_needs``), so this
module knows no analysis; market status's lookback comes first, then what recommendations add, then
support levels, two runs at a time so Upbit's budget stays busy. docs/operations.md ("First start") has
the runs, the slots, the stream wait and the figures.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import dagster as dg

from dantaro_assets.lib.dagster_internals import (
    ASSET_PARTITION_RANGE_END_TAG,
    ASSET_PARTITION_RANGE_START_TAG,
    RUN_KEY_TAG,
    UnresolvedAssetJobDefinition,
    get_current_datetime,
)
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.run_settings import RunSettings
from dantaro_assets.lib.upbit import interval
from dantaro_assets.lib.upbit.client import MAX_CANDLES_PER_REQUEST
from dantaro_assets.markets.jobs import CANDLES_1M_JOB, DAILY_CANDLES_JOB, DAILY_CANDLES_TYPE, HISTORY_TYPE
from dantaro_assets.markets.seen import RecordUnreadable, SeenStore, StreamHealth
from dantaro_assets.operations.limits import JOB_TAG, LIVE, PRIORITY_TAG, QUEUE_TAG, JobType
from dantaro_assets.operations.schedules import SENSOR_INTERVAL, default_sensor_status, lookback_needs
from dantaro_assets.partitions import daily_partitions, hourly_partitions

HISTORY_TAG = "dantaro/history"  # what a history run fetches: daily partitions or minute ones
PRODUCT_TAG = "dantaro/history_for"  # the product whose lookback the run fetches
# a run in any of these may still materialise what it was asked for, so its partitions are not asked again
NOT_FINISHED_STATUSES = [
    dg.DagsterRunStatus.STARTING,
    dg.DagsterRunStatus.STARTED,
    dg.DagsterRunStatus.SUSPENDED,
    dg.DagsterRunStatus.CANCELING,
    dg.DagsterRunStatus.QUEUED,
    dg.DagsterRunStatus.NOT_STARTED,
]
STREAM_WAIT_SECONDS = 60  # how long the open hour's minutes wait for the stream to subscribe after the universe is stored
MINUTE_HOURS_PER_RUN = 12  # under the candle assets' multi-run size (13 h): a run stays inside the run timeout
UNIVERSE = "upbit_markets"
MINUTES = "candles_1m"
LANES = {"daily": (DAILY_CANDLES_JOB, DAILY_CANDLES_TYPE), "minute": (CANDLES_1M_JOB, HISTORY_TYPE)}
# the job types a history run is tagged with (``dantaro/job``: one run of each at a time): two history runs at once
SLOTS = (DAILY_CANDLES_TYPE, HISTORY_TYPE)
# a history run's priority, plus one for each product after its own: the first product's runs leave the queue first,
# above the daily refresh and under every analysis (docs/operations.md: the worker's order)
HISTORY_PRIORITY = DAILY_CANDLES_TYPE.priority


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


@dataclass(frozen=True)
class Product:
    """An hourly job a schedule runs, its ``dagster/priority`` and what its open hour reads (asset -> partition keys)."""

    job: str
    priority: int
    needs: Mapping[str, frozenset[str]]

    @property
    def name(self) -> str:
        return self.job.removesuffix("_job")


def products(repository: dg.RepositoryDefinition, now: datetime) -> list[Product]:
    """The live hourly jobs of the schedules (the analyses), highest priority first, each with the partitions its open hour reads,
    optional inputs included (the history stores them too)."""
    open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
    assets = list(repository.assets_defs_by_key.values())
    found = []
    for schedule in repository.schedule_defs:
        if not isinstance(schedule.job, UnresolvedAssetJobDefinition):  # an op job (cleanup) reads no partitions
            continue
        keys = schedule.job.selection.resolve(assets)
        if not any(repository.assets_defs_by_key[key].partitions_def == hourly_partitions for key in keys):
            continue
        tags = repository.get_job(schedule.job.name).run_tags
        if tags.get(QUEUE_TAG) != LIVE:  # bulk work (outcomes) reads past hours, not the open one's lookback
            continue
        needs = lookback_needs(repository, keys, open_hour, now, with_optional=True)
        priority = int(tags.get(PRIORITY_TAG, 0))
        found.append(Product(schedule.job.name, priority, {key.to_user_string(): frozenset(v) for key, v in needs.items() if v}))
    return sorted(found, key=lambda product: (-product.priority, product.job))


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


def _days(keys: Iterable[str]) -> list[str]:
    return sorted(set(keys))


def _span(partitions_def: dg.TimeWindowPartitionsDefinition, first: str, last: str) -> tuple[str, ...]:
    """Every key from ``first`` to ``last`` of ``partitions_def``."""
    start = partitions_def.time_window_for_partition_key(first).start
    end = partitions_def.time_window_for_partition_key(last).end
    return tuple(partitions_def.get_partition_keys_in_time_window(dg.TimeWindow(start, end)))


def _interval(repository: dg.RepositoryDefinition, asset: str) -> str | None:
    """The candle interval of a candle asset (its ``interval`` metadata), None for any other asset."""
    return repository.assets_defs_by_key[dg.AssetKey(asset)].metadata_by_key[dg.AssetKey(asset)].get("interval")


def _pages(spec: str, days: int) -> int:
    """Upbit requests one market's candles of ``spec`` over ``days`` days take, 200 candles a request."""
    return -(-days * (timedelta(days=1) // interval(spec).width) // MAX_CANDLES_PER_REQUEST)


def _day_before(key: str) -> str:
    return daily_partitions.get_partition_key_for_timestamp((daily_partitions.time_window_for_partition_key(key).start - timedelta(days=1)).timestamp())


def _widened(spec: str, span: tuple[str, ...], candidates: set[str]) -> tuple[str, ...]:
    """``span`` widened back a day at a time into ``candidates`` while its candles still take as many pages."""
    while (before := _day_before(span[0])) in candidates and _pages(spec, len(span) + 1) == _pages(spec, len(span)):
        span = (before, *span)
    return span


@dataclass
class HistoryRun:
    """One range run of the plan: its lane (``daily`` or ``minute``: its job), the product it is for, its assets and keys."""

    lane: str
    product: str
    assets: list[str]
    keys: KeyRange

    def request(self, stamp: str, priority: int, job_type: JobType) -> dg.RunRequest:
        """The run's request, tagged as ``job_type`` (the history's slot it takes) at ``priority``."""
        job_name = LANES[self.lane][0]
        tags = {**job_type.tags(), **self.keys.tags(), HISTORY_TAG: self.lane, PRODUCT_TAG: self.product, PRIORITY_TAG: str(priority)}
        assets = sorted(self.assets)
        return dg.RunRequest(
            run_key=f"{self.lane}:{self.keys.first}...{self.keys.last}:{'+'.join(assets)}@{stamp}",
            job_name=job_name,
            asset_selection=[dg.AssetKey(asset) for asset in assets],
            tags=tags,
        )

    def describe(self) -> str:
        return f"{'+'.join(sorted(self.assets))} {self.keys.first}...{self.keys.last} for {self.product}"


@dataclass
class _Planned:
    """What is stored, or will be once the runs planned so far have run."""

    present: dict[str, set[str]]
    runs: list[HistoryRun] = field(default_factory=list)

    def add(self, run: HistoryRun) -> None:
        self.runs.append(run)
        for asset in run.assets:
            self.present.setdefault(asset, set()).update(run.keys.keys)


def _daily_runs(repository: dg.RepositoryDefinition, product: Product, planned: _Planned, reach: Mapping[str, set[str]]) -> None:
    """``product``'s missing daily partitions as range runs: one a span of days (candle spans widened back into days a
    later product reads while the pages stay the same), other daily assets beside candles of days covering theirs,
    and the universe of every run's days in the run."""
    daily = [asset for asset in product.needs
             if asset != UNIVERSE and repository.assets_defs_by_key[dg.AssetKey(asset)].partitions_def == daily_partitions]
    runs: list[HistoryRun] = []
    for asset in sorted(daily, key=lambda name: (_interval(repository, name) is None, name)):  # candles first
        stored = planned.present.get(asset, set())
        lacking = _days(key for key in product.needs[asset] if key not in stored)
        if not lacking:
            continue
        span = _span(daily_partitions, lacking[0], lacking[-1])
        if (spec := _interval(repository, asset)) is not None:
            span = _widened(spec, span, reach.get(asset, set()) - stored)
            run = next((r for r in runs if r.keys.keys == span), None)
        else:  # its requests do not grow with its days
            run = next((r for r in runs if set(span) <= set(r.keys.keys)), None)
        if run is None:
            runs.append(HistoryRun("daily", product.name, [asset], KeyRange(span)))
        else:
            run.assets.append(asset)
    for run in runs:
        if not planned.present.get(UNIVERSE, set()).issuperset(run.keys.keys):
            run.assets.insert(0, UNIVERSE)
        planned.add(run)
    for key_range in missing_ranges(_days(product.needs.get(UNIVERSE, ())), planned.present.get(UNIVERSE, set())):
        planned.add(HistoryRun("daily", product.name, [UNIVERSE], key_range))


def _minute_runs(product: Product, planned: _Planned, open_hour: str) -> None:
    """``product``'s missing closed hours of 1-minute candles, newest range first, the newest taking the open hour
    while it stays one page (``MAX_CANDLES_PER_REQUEST`` minutes)."""
    hours = sorted(product.needs.get(MINUTES, ()))
    present = planned.present.get(MINUTES, set())
    ranges = list(reversed(missing_ranges(hours, present, MINUTE_HOURS_PER_RUN)))
    if ranges:
        newest = _span(hourly_partitions, ranges[0].first, open_hour)
        if len(newest) * 60 <= MAX_CANDLES_PER_REQUEST:
            ranges[0] = KeyRange(newest)
    for key_range in ranges:
        planned.add(HistoryRun("minute", product.name, [MINUTES], key_range))


def plan_runs(repository: dg.RepositoryDefinition, ordered: Sequence[Product], present: Mapping[str, set[str]], now: datetime) -> list[HistoryRun]:
    """Every history run still to go, product by product (see the module): daily runs first, they carry the universe."""
    open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
    planned = _Planned({asset: set(keys) for asset, keys in present.items()})
    reach: dict[str, set[str]] = {}
    for product in ordered:
        for asset, keys in product.needs.items():
            reach.setdefault(asset, set()).update(keys)
    for product in ordered:
        _daily_runs(repository, product, planned, reach)
        _minute_runs(product, planned, open_hour)
    return planned.runs


def stored_partitions(instance: dg.DagsterInstance, ordered: Sequence[Product], now: datetime) -> dict[str, set[str]]:
    """Of the partitions the products read (and the open hour's minutes, and the universe of every day read), those
    materialised: one indexed query per asset."""
    wanted: dict[str, set[str]] = {MINUTES: {hourly_partitions.get_partition_key_for_timestamp(now.timestamp())}, UNIVERSE: set()}
    for product in ordered:
        for asset, keys in product.needs.items():
            wanted.setdefault(asset, set()).update(keys)
            if asset != MINUTES:  # a daily run needs the universe of each of its days
                wanted[UNIVERSE].update(keys)
    return {asset: set(instance.get_latest_storage_id_by_partition(dg.AssetKey(asset), dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=keys))
            for asset, keys in wanted.items()}


def _failed_this_hour(instance: dg.DagsterInstance, now: datetime) -> set[str]:
    """Run keys of history runs that failed since the hour began: Dagster would not launch the same key again."""
    hour = now.replace(minute=0, second=0, microsecond=0)
    runs = instance.get_runs(
        filters=dg.RunsFilter(statuses=[dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED], tags={HISTORY_TAG: list(LANES)},
                              created_after=hour)
    )
    return {run.tags[RUN_KEY_TAG] for run in runs if RUN_KEY_TAG in run.tags}


def _in_flight(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """History runs queued or in progress."""
    return list(instance.get_runs(filters=dg.RunsFilter(statuses=NOT_FINISHED_STATUSES, tags={HISTORY_TAG: list(LANES)})))


def _fetching(runs: Iterable[dg.DagsterRun]) -> dict[str, set[str]]:
    """The partitions ``runs`` (history runs in flight) fetch, per asset: planned as if stored, so none is asked twice."""
    fetching: dict[str, set[str]] = {}
    for run in runs:
        first, last = run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)
        if first is None or last is None:
            continue
        partitions_def = hourly_partitions if run.tags[HISTORY_TAG] == "minute" else daily_partitions
        for key in run.asset_selection or ():
            fetching.setdefault(key.to_user_string(), set()).update(_span(partitions_def, first, last))
    return fetching


@dataclass(frozen=True)
class HistoryPlan:
    """The runs to request now (at most two at once), why nothing else goes, and progress per product."""

    requests: tuple[dg.RunRequest, ...]
    waiting: tuple[str, ...]
    stored: Mapping[str, tuple[int, int]]  # product -> (partitions stored, partitions read)

    def progress(self) -> str:
        stored, needed = (sum(counts[i] for counts in self.stored.values()) for i in (0, 1))
        each = ", ".join(f"{name} {have}/{want}" for name, (have, want) in self.stored.items())
        return f"history: {stored} of {needed} partitions stored ({each})"


def stream_wait(health: StreamHealth | None, universe_at: float | None, wall_now: float, grace: float, max_lag: float) -> str | None:
    """Why the run of the open hour's minutes waits for ``dantaro stream`` (None: it goes). A REST fetch covers the
    minutes closed ``grace`` seconds before it, the stream's window those from the minute it subscribed in: fetched
    once that minute plus ``grace`` has passed, the two meet and a first analysis run has no minute left to fetch.
    No stream, or one stopped or down, is not waited for, nor one still unsubscribed ``STREAM_WAIT_SECONDS`` after
    the universe was stored."""
    if health is None or (health.problem(wall_now, max_lag) or "").startswith(("stream stopped", "stream down")):
        return None
    if health.open_windows:
        opened = min(window.start for window in health.open_windows)
        if wall_now < opened + grace:
            return f"the open hour's minutes wait {opened + grace - wall_now:.0f} s for the stream's first minute to be fetchable beside it"
        return None
    if universe_at is not None and wall_now - universe_at < STREAM_WAIT_SECONDS:
        return "the open hour's minutes wait for the stream to subscribe to the stored universe"
    return None


def history_plan(instance: dg.DagsterInstance, repository: dg.RepositoryDefinition, now: datetime, minutes_wait: str | None = None) -> HistoryPlan:
    """What the products' lookback at ``now`` lacks, and the next runs in the products' order for the free slots; a run of
    the open hour's minutes held back while ``minutes_wait`` says why (``stream_wait``)."""
    ordered = products(repository, now)
    present = stored_partitions(instance, ordered, now)
    stored = {product.name: (sum(len(keys & present.get(asset, set())) for asset, keys in product.needs.items()),
                             sum(len(keys) for keys in product.needs.values())) for product in ordered}
    flying = _in_flight(instance)
    planned = {asset: present.get(asset, set()) | keys for asset, keys in _fetching(flying).items()}
    runs = plan_runs(repository, ordered, {**present, **planned}, now)
    in_flight = (f"{len(flying)} history run(s) still queued or running",) if flying else ()
    if not runs:
        return HistoryPlan((), in_flight, stored)
    stamp = now.strftime("%Y-%m-%dT%H")
    universe_priority = top_priority(repository)
    failed = _failed_this_hour(instance, now)
    free = [slot for slot in SLOTS if slot.name not in {run.tags.get(JOB_TAG) for run in flying}]
    requests: list[dg.RunRequest] = []
    waiting = list(in_flight)
    rank = {product.name: index for index, product in enumerate(ordered)}
    open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
    today = daily_partitions.get_partition_key_for_timestamp(now.timestamp())
    # in the products' order, none overtaking another: the next runs into the free slots until one has to wait
    for run in runs:
        # today's universe goes ahead of every job's runs (everything fetched or run needs it); the rest by product
        carries_today = UNIVERSE in run.assets and today in run.keys.keys
        priority = universe_priority if carries_today else HISTORY_PRIORITY + len(ordered) - rank[run.product]
        if run.request(stamp, priority, LANES[run.lane][1]).run_key in failed:
            waiting.append(f"{run.describe()} failed this hour: retried next hour")
            continue
        days = set(run.keys.keys) if run.lane == "daily" else {_day_of_hour(key) for key in run.keys.keys}
        if UNIVERSE not in run.assets and not days <= present.get(UNIVERSE, set()):
            waiting.append(f"{run.describe()} waits for its days' universe")
            break
        if minutes_wait is not None and run.lane == "minute" and open_hour in run.keys.keys:
            waiting.append(f"{run.describe()}: {minutes_wait}")
            break
        if not free:
            break
        slot = LANES[run.lane][1] if LANES[run.lane][1] in free else free[0]
        free.remove(slot)
        requests.append(run.request(stamp, priority, slot))
    left = len(runs) - len(requests)
    if left:
        waiting.append(f"{left} more history run(s) follow, two at a time in the products' order")
    return HistoryPlan(tuple(requests), tuple(waiting), stored)


def build_history_sensor(jobs: Sequence[UnresolvedAssetJobDefinition], enabled: bool) -> dg.SensorDefinition:
    """The sensor over ``jobs`` (``daily_candles_job`` and ``candles_1m_job``), running unless ``enabled`` is false."""

    @dg.sensor(
        name="history_sensor",
        jobs=list(jobs),
        minimum_interval_seconds=SENSOR_INTERVAL,
        default_status=default_sensor_status(enabled),
        description=(
            "Fetches the lookback history nobody has materialised, in the order the products read it (market status's "
            "first), as far back as their jobs' partition mappings reach: the universe, 1-hour and 1-day candles and tick "
            "sizes of those days, the hours of 1-minute candles."
        ),
    )
    def history_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource, run_settings: RunSettings) -> dg.SensorResult:
        now = get_current_datetime()
        try:
            health = SeenStore(postgres).health()
        except RecordUnreadable:  # the minutes go over REST as without a stream
            health = None
        universe = context.instance.get_latest_materialization_event(dg.AssetKey(UNIVERSE))
        wait = stream_wait(health, universe.timestamp if universe else None, now.timestamp(), run_settings.stream_grace_seconds,
                           run_settings.stream_max_lag_seconds)
        plan = history_plan(context.instance, context.repository_def, now, wait)
        progress = plan.progress()
        if progress != context.cursor:  # one line per step of progress, not per tick
            context.log.info(progress)
        if plan.requests:
            return dg.SensorResult(run_requests=list(plan.requests), cursor=progress)
        if plan.waiting:
            return dg.SensorResult(skip_reason=f"{progress}; {'; '.join(plan.waiting)}", cursor=progress)
        return dg.SensorResult(skip_reason=f"{progress}: the lookback history is complete", cursor=progress)

    return history_sensor
