"""The only place the package imports Dagster's private modules (``dagster._...``), pinned to dagster 1.13.27.

Everything else uses ``import dagster as dg``. Each name below is here because Dagster 1.13 has no
public API that serves; an upgrade of Dagster should start by re-checking this file.

- ``UnresolvedAssetJobDefinition``: the return type of the public ``dg.define_asset_job``, which
  ``dagster`` does not export; used only in annotations of the jobs and schedules built from it.
- ``RUN_KEY_TAG``: a stored run's run key is only kept as this tag; ``dg.DagsterRun`` has no accessor
  for it and ``dg.RunsFilter`` cannot list run keys (the history sensor skips keys already launched).
- ``ASSET_PARTITION_RANGE_START_TAG``/``ASSET_PARTITION_RANGE_END_TAG``: ``dg.RunRequest`` has no
  partition-range argument in 1.13 (its ``partition_key_range`` property reads these tags), so a
  single run over a range of partitions is requested by setting them, as Dagster's own backfills do.
- ``get_current_datetime``: the clock Dagster's schedules and sensors read and its test helper
  ``freeze_time`` controls; a sensor context has no public "now", and with the wall clock the history
  sensor could not be tested at a fixed time.
- ``InstigatorStatus``/``InstigatorType``: the stored state of a schedule (running, stopped, declared
  in code) is public only through GraphQL; ``DagsterInstance.all_instigator_state`` takes and returns these.
- ``get_daemon_statuses``: daemon heartbeats (``/worker/status``'s ``worker_active``) are public only
  through GraphQL or the ``dagster-daemon liveness-check`` CLI, neither of which names each daemon.
- ``SqliteEventLogStorage``: ``DagsterInstance.delete_run`` leaves a SQLite instance's per-run event
  shard files behind; only this class knows where they are (``path_for_shard``).
- ``PoolGranularity``: the instance's parsed pool granularity (``concurrency.pools.granularity``)
  has no public type to compare against.
- ``CheckRunHealthResult``/``WorkerStatus``: what a run launcher's public hook
  ``check_run_worker_health`` must return; ``dagster`` does not export them, so a launcher subclass
  (``celery_runs.WorkerCheckingCeleryRunLauncher``) cannot answer without them.

It is also the only place that calls an undocumented method of a public object:
``get_instance_values``/``set_instance_values`` read and write the instance's key-value store (the
table Dagster's daemons keep their cursors in, ``DagsterInstance.daemon_cursor_storage``), where a Celery
run worker's heartbeat lives: Dagster's storage is the one store the run worker and run monitoring
share that a broker restart does not touch, and it has no public key-value API.
"""

from collections.abc import Mapping, Set

import dagster as dg
from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition
from dagster._core.instance.config import PoolGranularity
from dagster._core.launcher import CheckRunHealthResult, WorkerStatus
from dagster._core.scheduler.instigation import InstigatorStatus, InstigatorType
from dagster._core.storage.event_log.sqlite.sqlite_event_log import SqliteEventLogStorage
from dagster._core.storage.tags import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG, RUN_KEY_TAG
from dagster._daemon.controller import get_daemon_statuses
from dagster._time import get_current_datetime


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
    "SqliteEventLogStorage",
    "UnresolvedAssetJobDefinition",
    "WorkerStatus",
    "get_current_datetime",
    "get_daemon_statuses",
    "get_instance_values",
    "set_instance_values",
]
