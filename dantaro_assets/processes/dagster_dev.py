"""Stopping a `dagster dev` so that no run is left queued or in flight (``dantaro dev``, ``dantaro stop``, the harness)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import dagster as dg

QUEUED = (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.QUEUED)
IN_FLIGHT = (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED, dg.DagsterRunStatus.CANCELING)


def open_runs(instance: dg.DagsterInstance) -> list[dg.DagsterRun]:
    """Runs queued or in flight."""
    return list(instance.get_runs(dg.RunsFilter(statuses=[*QUEUED, *IN_FLIGHT])))


def cancel_runs(instance: dg.DagsterInstance) -> None:
    """Cancel queued runs and ask in-flight ones to stop, as the UI's Terminate does (through the code server)."""
    for run in open_runs(instance):
        if run.status != dg.DagsterRunStatus.CANCELING:
            try:
                instance.run_coordinator.cancel_run(run.run_id)
            except dg.DagsterError:  # its code server is gone: close_runs marks it below
                pass


def close_runs(instance: dg.DagsterInstance, reason: str) -> int:
    """Mark every run still queued or in flight CANCELED with ``reason`` (its process is gone); returns how many."""
    runs = open_runs(instance)
    for run in runs:
        if run.status != dg.DagsterRunStatus.CANCELING:
            instance.report_run_canceling(run, message=reason)
        instance.report_run_canceled(run, message=reason)
    return len(runs)


def stop_dagster_dev(process: subprocess.Popen, dagster_home: Path, timeout: float = 6.0) -> int:
    """Stop a `dagster dev` started in a session of its own within ``timeout`` s; returns the runs it left open.

    Runs are canceled first, while the code server can still pass the request to their workers; then
    `dagster dev` gets SIGINT and shuts its daemon, webserver and code servers down itself. What is
    left of its process group when the time is up is killed, and runs still open are marked CANCELED,
    so no run stays STARTED or QUEUED for the next start.
    """
    deadline = time.monotonic() + timeout
    with dg.DagsterInstance.from_config(str(dagster_home)) as instance:
        cancel_runs(instance)
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
        while time.monotonic() < deadline and (process.poll() is None or any(r.status in IN_FLIGHT for r in open_runs(instance))):
            time.sleep(0.2)
        try:
            os.killpg(process.pid, signal.SIGKILL)  # the leader, or run workers and log tails it left behind
        except ProcessLookupError:
            pass
        process.wait()
        return close_runs(instance, "dagster dev was stopped before the run ended")
