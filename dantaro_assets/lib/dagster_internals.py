"""The only place the package imports Dagster's private modules (``dagster._...``), pinned to dagster 1.13.27.

Everything else uses ``import dagster as dg``; each name here says beside it why no public API serves,
so a Dagster upgrade starts by re-checking this file.
"""

from collections.abc import Mapping, Sequence, Set
from typing import Any

import dagster as dg

# The return type of the public dg.define_asset_job, which dagster does not export (annotations only).
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

# The instance's parsed pool granularity (concurrency.pools.granularity) has no public type to compare against.
from dagster._core.instance.config import PoolGranularity

# What a run launcher's public hook check_run_worker_health must return; dagster does not export them, so
# a launcher subclass (celery_runs.WorkerCheckingCeleryRunLauncher) cannot answer without them.
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus

# A schedule's stored state (running, stopped, declared in code) is public only through GraphQL;
# DagsterInstance.all_instigator_state takes and returns these.
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType

# RUN_KEY_TAG: a stored run's run key is only kept as this tag (dg.DagsterRun has no accessor, dg.RunsFilter
# cannot list run keys). The range tags: dg.RunRequest has no partition-range argument in 1.13 (its
# partition_key_range property reads them), so one run over a range is requested by setting them, as
# Dagster's own backfills do.
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG

# The clock Dagster's schedules and sensors read and its test helper freeze_time controls: a sensor
# context has no public "now", and on the wall clock the sensors could not be tested at a fixed time.
from dagster._time import get_current_datetime

# The two functions below are the only calls of an undocumented method of a public object: the instance's
# key-value store (DagsterInstance.daemon_cursor_storage, where the daemons keep their cursors) holds a
# Celery run worker's heartbeat, the one store the run worker and run monitoring share that a broker
# restart does not touch; Dagster has no public key-value API.


def get_daemon_statuses(instance: dg.DagsterInstance, daemon_types: Sequence[str], *, ignore_errors: bool,
                        heartbeat_tolerance_seconds: float) -> Mapping[str, Any]:
    """Each daemon's heartbeat status (/worker/status's worker_active): public only through GraphQL or the
    dagster-daemon liveness-check CLI, neither of which names each daemon. Imported on call: Dagster's daemon
    controller loads the instance's storages (0.38 s) into every process that loads the definitions otherwise."""
    from dagster._daemon.controller import get_daemon_statuses as statuses

    return statuses(instance, daemon_types, ignore_errors=ignore_errors, heartbeat_tolerance_seconds=heartbeat_tolerance_seconds)


def sqlite_event_shard(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """Where a SQLite instance keeps a run's events (DagsterInstance.delete_run leaves that file behind; only
    SqliteEventLogStorage.path_for_shard knows it); None for other storages. Imported on call: the module
    loads the event-log storages (0.45 s) into every process that loads the definitions otherwise."""
    from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage

    events = instance.event_log_storage
    return events.path_for_shard(run_id) if isinstance(events, SqliteEventLogStorage) else None


def get_instance_values(instance: dg.DagsterInstance, keys: Set[str]) -> Mapping[str, str]:
    """The stored values of ``keys`` in the instance's key-value store (keys never written are absent)."""
    return instance.daemon_cursor_storage.get_cursor_values(set(keys))


def set_instance_values(instance: dg.DagsterInstance, values: Mapping[str, str]) -> None:
    """Store ``values`` in the instance's key-value store, replacing what its keys held."""
    instance.daemon_cursor_storage.set_cursor_values(values)


__all__ = [
    "ASSET_PARTITION_RANGE_END_TAG",
    "ASSET_PARTITION_RANGE_START_TAG",
    "RUN_KEY_TAG",
    "CheckRunHealthResult",
    "InstigatorStatus",
    "InstigatorType",
    "PoolGranularity",
    "UnresolvedAssetJobDefinition",
    "WorkerStatus",
    "get_current_datetime",
    "get_daemon_statuses",
    "get_instance_values",
    "set_instance_values",
    "sqlite_event_shard",
]
