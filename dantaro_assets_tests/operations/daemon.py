"""Runs as the daemon runs them: queued on a real instance, launched by the real DefaultRunLauncher into run
worker processes of a real code server, monitored and retried by the daemons' own iterations.

The daemons' iterations are called directly (rather than a ``dagster-daemon`` process polling on its own
clock) so a test can observe each step of the queue and act between them.

This module is also the tests' (and benches') only import of Dagster's private modules; each name has
no public API that serves:
- ``create_test_daemon_workspace_context``, ``WorkspaceProcessContext``, ``ModuleTarget``: a code
  server and workspace that the daemons' iterations accept, outside a ``dagster-daemon`` process;
- ``QueuedRunCoordinatorDaemon``, ``execute_run_monitoring_iteration``, ``EventLogConsumerDaemon``,
  ``FreshnessDaemon``: the run queue, run monitoring, run retries and freshness evaluation, one iteration at a time;
- ``DaemonHeartbeat``: a daemon's heartbeat written as the daemon writes it (``/worker/status``);
- ``freeze_time``: the clock sensors read (``dantaro_assets.lib.dagster_internals.get_current_datetime``);
- ``create_run_for_test``, ``RunsTable``: a stored run of a job that no code location holds, with its
  creation time moved into the past (retention);
- ``ComputeIOType``: which compute-log stream a test writes;
- ``dagster_instance_config``: an instance folder's ``dagster.yaml`` validated and defaulted as Dagster
  reads it, to compare two rendered configs.
"""

from __future__ import annotations

import importlib
import logging
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
from dagster._core.instance.config import dagster_instance_config
from dagster._core.storage.compute_log_manager import ComputeIOType
from dagster._core.storage.runs.schema import RunsTable
from dagster._core.test_utils import create_run_for_test, create_test_daemon_workspace_context, freeze_time
from dagster._core.workspace.context import WorkspaceProcessContext
from dagster._core.workspace.load_target import ModuleTarget
from dagster._daemon.auto_run_reexecution.event_log_consumer import (
    EventLogConsumerDaemon,
)
from dagster._daemon.freshness import FreshnessDaemon
from dagster._daemon.monitoring.run_monitoring import execute_run_monitoring_iteration
from dagster._daemon.run_coordinator.queued_run_coordinator_daemon import (
    QueuedRunCoordinatorDaemon,
)
from dagster._daemon.types import DaemonHeartbeat

from dantaro_assets.processes.instance import write_instance_config
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.fixtures.environment import environ

__all__ = [  # re-exported for the tests (see the docstring)
    "ComputeIOType",
    "DaemonHeartbeat",
    "EventLogConsumerDaemon",
    "FreshnessDaemon",
    "RunsTable",
    "WorkspaceProcessContext",
    "create_run_for_test",
    "dagster_instance_config",
    "freeze_time",
]

PROJECT_DIR = Path(__file__).resolve().parents[2]
FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
_LOG = logging.getLogger("daemon_test")


@contextmanager
def project_instance(dagster_home: Path) -> Iterator[dg.DagsterInstance]:
    """A real instance configured by the project's dagster.yaml (SQLite under ``dagster_home``)."""
    write_instance_config(dagster_home, load_settings())
    # Not ``with instance``: entering an instance makes its storage the process's current one, and module-scoped
    # instances torn down out of order would leave a disposed instance's storage current for later tests.
    instance = dg.DagsterInstance.from_config(str(dagster_home))
    try:
        yield instance
    finally:
        instance.dispose()


@contextmanager
def daemon_workspace(instance: dg.DagsterInstance, module: str, env: Mapping[str, str] | None = None) -> Iterator[WorkspaceProcessContext]:
    """A code server for ``module``'s ``defs``, its process (and the run workers it starts) seeing ``env``."""
    with environ(env or {}):
        target = ModuleTarget(module_name=module, attribute="defs", working_directory=str(PROJECT_DIR), location_name=module)
        with create_test_daemon_workspace_context(target, instance) as context:
            yield context


def submit(
    instance: dg.DagsterInstance,
    workspace: WorkspaceProcessContext,
    job_name: str,
    run_config: dict | None = None,
    tags: dict | None = None,
) -> str:
    """Queue a run of ``job_name`` with the tags the code server gives the job (plus ``tags``)."""
    request = workspace.create_request_context()
    location = next(iter(request.get_code_location_entries().values())).code_location
    assert location is not None
    remote_job = location.get_repository("__repository__").get_full_job(job_name)
    job_def = importlib.import_module(location.name).defs.resolve_job_def(job_name)
    run = instance.create_run_for_job(
        job_def=job_def,
        run_config=run_config or {},
        remote_job_origin=remote_job.get_remote_origin(),
        job_code_origin=remote_job.get_python_origin(),
        tags={**remote_job.tags, **(tags or {})},
    )
    instance.submit_run(run.run_id, request)
    return run.run_id


def dequeue(workspace: WorkspaceProcessContext) -> None:
    """One iteration of the run queue: launches what the limits allow, highest priority first."""
    with QueuedRunCoordinatorDaemon(interval_seconds=1) as daemon:
        list(daemon.run_iteration(workspace))


def monitor(workspace: WorkspaceProcessContext) -> None:
    """One iteration of run monitoring (timeouts, dead workers)."""
    list(execute_run_monitoring_iteration(workspace, _LOG))


def status(instance: dg.DagsterInstance, run_id: str) -> dg.DagsterRunStatus:
    return instance.get_run_by_id(run_id).status


def wait_for(instance: dg.DagsterInstance, run_ids: list[str], statuses: set, timeout: float = 120) -> dict[str, dg.DagsterRunStatus]:
    deadline = time.monotonic() + timeout
    while True:
        current = {run_id: status(instance, run_id) for run_id in run_ids}
        if all(value in statuses for value in current.values()) or time.monotonic() > deadline:
            return current
        time.sleep(0.5)


def retries_daemon(workspace: WorkspaceProcessContext) -> EventLogConsumerDaemon:
    """The run-retry daemon after its first iteration, which sets its cursor: failures from now on count."""
    daemon = EventLogConsumerDaemon()
    list(daemon.run_iteration(workspace))
    return daemon


def run_worker_pid(instance: dg.DagsterInstance, run_id: str) -> int | None:
    """The run worker's process id, from the code server's "Started process for run (pid: N)" event."""
    for event in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT):
        if event.message and event.message.startswith("Started process for run (pid: "):
            return int(event.message.split("pid: ")[1].split(")")[0])
    return None
