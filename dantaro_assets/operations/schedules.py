"""The schedule machinery every domain builds its schedules with; each run targets the partition its tick falls in.

The analyses tick several times per partition, so a tick maps its time to the partition key itself, requests
the period that just closed once (``dantaro/finalise``), and skips, naming what it waits for, until the
lookback its assets read is stored (docs/operations.md).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timedelta

import dagster as dg

from dantaro_assets.lib.dagster_internals import UnresolvedAssetJobDefinition, get_current_datetime
from dantaro_assets.operations.limits import TICK_TAG, JobType
from dantaro_assets.partitions import hourly_partitions

PARTITION_TAG = "dagster/partition"  # a partitioned run's key; Dagster documents the tag, and exports no name for it
# Under the sensor daemon's 5 s loop, so the history and start sensors are evaluated on every loop: with 5, a tick
# ending a moment after a loop began is under the interval at the next loop, and the sensor ran every 10 s.
SENSOR_INTERVAL = 1


def cron_every(seconds: int) -> str:
    """The cron of a cadence in seconds that divides an hour (settings validate that)."""
    minutes = seconds // 60
    return "0 * * * *" if minutes == 60 else f"*/{minutes} * * * *"


def default_status(enabled: bool) -> dg.DefaultScheduleStatus:
    """WORKER_ENABLED=false leaves every schedule stopped (an operator can still start one in the UI)."""
    return dg.DefaultScheduleStatus.RUNNING if enabled else dg.DefaultScheduleStatus.STOPPED


def default_sensor_status(enabled: bool) -> dg.DefaultSensorStatus:
    """Sensors stop with the schedules when WORKER_ENABLED=false (an operator can still start one in the UI)."""
    return dg.DefaultSensorStatus.RUNNING if enabled else dg.DefaultSensorStatus.STOPPED


def period_run_requests(
    job_type: JobType,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    tick: datetime,
    first_tick_window: timedelta,
) -> list[dg.RunRequest]:
    """The open period's run, preceded on the period's first tick by the run finalising the one before."""
    stamp = tick.strftime("%Y-%m-%dT%H:%M")
    current = partitions_def.get_partition_key_for_timestamp(tick.timestamp())
    requests = []
    period_start = partitions_def.time_window_for_partition_key(current).start
    if tick - period_start < first_tick_window and period_start > partitions_def.start:
        previous = partitions_def.get_partition_key_for_timestamp((period_start - timedelta(seconds=1)).timestamp())
        requests.append(
            dg.RunRequest(
                run_key=f"{previous}:final",
                partition_key=previous,
                tags={**job_type.tags(finalise=True), TICK_TAG: stamp},
            )
        )
    requests.append(dg.RunRequest(run_key=f"{current}:{stamp}", partition_key=current, tags={**job_type.tags(), TICK_TAG: stamp}))
    return requests


def lookback_needs(
    repository: dg.RepositoryDefinition, job_assets: Collection[dg.AssetKey], partition_key: str, now: datetime, *, with_optional: bool = False
) -> dict[dg.AssetKey, set[str]]:
    """The upstream partitions that ``job_assets`` read for ``partition_key`` through their partition mappings,
    less the partitions the run materialises itself (``job_assets`` at ``partition_key``) and, unless
    ``with_optional`` (what the history fetches), inputs the asset can do without (input metadata
    ``{"optional": True}``, read as empty when never stored)."""
    assets = repository.assets_defs_by_key
    needs: dict[dg.AssetKey, set[str]] = {}
    for key in job_assets:
        asset = assets[key]
        if asset.partitions_def is None:
            continue
        own = asset.partitions_def.subset_with_partition_keys([partition_key])
        optional = set() if with_optional else {
            asset.keys_by_input_name[name] for name, put in asset.op.ins.items() if (put.metadata or {}).get("optional")}
        for parent in asset.dependency_keys - optional:
            parent_partitions = assets[parent].partitions_def if parent in assets else None
            if parent_partitions is None:
                continue
            # an input without a declared mapping reads the parent's window covering its own (Dagster's default)
            mapping = asset.get_partition_mapping(parent) or dg.TimeWindowPartitionMapping()
            upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(own, asset.partitions_def, parent_partitions, current_time=now)
            keys = set(upstream.partitions_subset.get_partition_keys())
            if parent in job_assets:
                keys.discard(partition_key)
            if keys:
                needs.setdefault(parent, set()).update(keys)
    return needs


def missing_lookback(instance: dg.DagsterInstance, needs: Mapping[dg.AssetKey, set[str]]) -> dict[dg.AssetKey, set[str]]:
    """The needed partitions never materialised: one indexed query per upstream asset, over the needed keys only."""
    missing = {}
    for key, keys in needs.items():
        stored = instance.get_latest_storage_id_by_partition(key, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=keys)
        if lacking := keys.difference(stored):
            missing[key] = lacking
    return missing


def describe_missing(missing: Mapping[dg.AssetKey, set[str]], needs: Mapping[dg.AssetKey, set[str]]) -> str:
    return ", ".join(
        f"{key.to_user_string()} {len(keys)} of {len(needs[key])} partitions ({min(keys)}...{max(keys)})" if len(keys) > 1
        else f"{key.to_user_string()} {next(iter(keys))}"
        for key, keys in sorted(missing.items(), key=lambda item: item[0].to_user_string())
    )


def requests_with_history(
    context: dg.ScheduleEvaluationContext | dg.SensorEvaluationContext, job: UnresolvedAssetJobDefinition,
    requests: Sequence[dg.RunRequest], now: datetime,
) -> list[dg.RunRequest] | dg.SkipReason:
    """``requests`` whose lookback at ``now`` is stored; a skip naming the missing partitions when none is ready."""
    repository = context.repository_def
    job_assets = job.selection.resolve(list(repository.assets_defs_by_key.values()))
    needs = {request.partition_key: lookback_needs(repository, job_assets, request.partition_key, now) for request in requests}
    every_need: dict[dg.AssetKey, set[str]] = {}
    for need in needs.values():
        for key, keys in need.items():
            every_need.setdefault(key, set()).update(keys)
    missing = missing_lookback(context.instance, every_need) if every_need else {}
    ready, waiting = [], []
    for request in requests:
        lacking = {key: keys & missing.get(key, set()) for key, keys in needs[request.partition_key].items()}
        lacking = {key: keys for key, keys in lacking.items() if keys}
        if lacking:
            waiting.append(f"waiting for history: {request.partition_key} needs {describe_missing(lacking, needs[request.partition_key])}")
        else:
            ready.append(request)
    if not ready:
        return dg.SkipReason("; ".join(waiting))
    for reason in waiting:
        context.log.info(reason)
    return ready


def cold_start(instance: dg.DagsterInstance, asset: dg.AssetKey, job_name: str, open_hour: str) -> bool:
    """Neither ``asset``'s open hour nor the hour before it is stored, and no run of ``job_name`` was made for the open
    hour: a first start, or a start after a stop of an hour or more. The open hour's first run is then the start
    sensor's (``start_sensor``), and the schedule leaves it alone, so exactly one of them launches it."""
    start = hourly_partitions.time_window_for_partition_key(open_hour).start
    hours = {open_hour}
    if start > hourly_partitions.start:
        hours.add(hourly_partitions.get_partition_key_for_timestamp((start - timedelta(hours=1)).timestamp()))
    if instance.get_latest_storage_id_by_partition(asset, dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=hours):
        return False
    return not instance.get_runs(dg.RunsFilter(job_name=job_name, tags={PARTITION_TAG: open_hour}), limit=1)


def start_sensor(job: UnresolvedAssetJobDefinition, job_type: JobType, asset: dg.AssetKey, enabled: bool) -> dg.SensorDefinition:
    """``<job type>_start_sensor``: on a cold start (``cold_start``) launches the open hour's run as soon as its lookback
    is stored, not at the cadence's next tick, once (its run key is the hour's)."""

    @dg.sensor(
        name=f"{job_type.name}_start_sensor",
        job=job,
        minimum_interval_seconds=SENSOR_INTERVAL,
        default_status=default_sensor_status(enabled),
        description=(f"On a first start (neither the open hour nor the hour before of {asset.to_user_string()} stored, no run of the "
                     "open hour made): launches the open hour's run as soon as what it reads is stored. Afterwards the schedule runs it."),
    )
    def _sensor(context: dg.SensorEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        now = get_current_datetime()
        open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
        if not cold_start(context.instance, asset, job.name, open_hour):
            return dg.SkipReason(f"{open_hour} is stored, or was run, or the hour before is stored: the schedule runs it")
        request = dg.RunRequest(run_key=f"{open_hour}:start", partition_key=open_hour,
                                tags={**job_type.tags(), TICK_TAG: now.strftime("%Y-%m-%dT%H:%M")})
        return requests_with_history(context, job, [request], now)

    return _sensor


def partitioned_schedule(
    job: UnresolvedAssetJobDefinition,
    job_type: JobType,
    cron: str,
    partitions_def: dg.TimeWindowPartitionsDefinition,
    first_tick_window: timedelta,
    status: dg.DefaultScheduleStatus,
    started_by_sensor: dg.AssetKey | None = None,
) -> dg.ScheduleDefinition:
    """``job``'s schedule at ``cron``: the open period's run, the closed one's finalised on a period's first tick. With
    ``started_by_sensor`` (the analysis's asset), a cold start's open hour is left to the start sensor."""
    period = "hour" if partitions_def is hourly_partitions else "day"

    @dg.schedule(
        name=f"{job_type.name}_schedule",
        cron_schedule=cron,
        job=job,
        execution_timezone="UTC",
        default_status=status,
        description=f"{cron} (UTC): the current {period}'s partition; the first tick of a {period} also finalises the one before.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        tick = context.scheduled_execution_time
        requests = period_run_requests(job_type, partitions_def, tick, first_tick_window)
        if started_by_sensor is not None:
            open_hour = partitions_def.get_partition_key_for_timestamp(tick.timestamp())
            if cold_start(context.instance, started_by_sensor, job.name, open_hour):
                requests = [request for request in requests if request.partition_key != open_hour]
                if not requests:
                    return dg.SkipReason(f"first start: {job_type.name}_start_sensor launches {open_hour} once its lookback is stored")
        return requests_with_history(context, job, requests, tick)

    return _schedule


def cadence_schedule(job: UnresolvedAssetJobDefinition, job_type: JobType, seconds: int, enabled: bool, asset: dg.AssetKey) -> dg.ScheduleDefinition:
    """An hourly analysis's schedule every ``seconds`` (its cadence setting), the hour's first tick finalising the last;
    on a cold start its open hour is ``start_sensor``'s."""
    return partitioned_schedule(job, job_type, cron_every(seconds), hourly_partitions, timedelta(seconds=seconds), default_status(enabled), asset)
