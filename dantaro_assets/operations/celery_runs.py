"""Runs on Celery workers: the run queue naming each run's Celery queue, a launcher judging a run alive by its heartbeat, ``dantaro worker``.

The daemon's run queue stays the one queue (priorities, limits); runs go to the Celery queue their job type
declares, and a run is judged alive by the heartbeat its worker writes into Dagster's storage, which a broker
restart does not lose (docs/operations.md, "Past one machine: runs on Celery workers").
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import sys
import threading
import time

import dagster as dg
from celery.signals import task_postrun, task_prerun
from celery.utils.log import current_process_index
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from dantaro_assets.lib.dagster_internals import CheckRunHealthResult, WorkerStatus, get_instance_values, set_instance_values
from dantaro_assets.operations.limits import BULK, QUEUE_TAG
from dantaro_assets.redaction import redact_text

WORKER_TAG = "dantaro/worker"
HEARTBEAT_TAG = "dantaro/heartbeat"
# Runs of no job type (an asset materialised from the UI) go to bulk, with the backfills: never ahead of market status.
DEFAULT_QUEUE = BULK
HEARTBEAT_SECONDS = 2.0
# a run whose heartbeat has not changed for this long is taken for lost (a few missed beats can be load, not death)
WORKER_LOST_SECONDS = 20.0
FORGET_BEATS_SECONDS = 3600.0  # heartbeats of runs monitoring no longer asks about
_LOG = logging.getLogger(__name__)


class CeleryQueueRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's run queue, tagging each run with the Celery queue its job type declares (``dantaro/queue``, as
    ``dagster-celery/queue``) as it is queued.

    Here rather than on the jobs so that only the Celery instance's runs carry it; set before the run
    waits in the queue, whose per-queue ``tag_concurrency_limits`` read it. A queue given at launch wins.
    """

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if DAGSTER_CELERY_QUEUE_TAG not in run.tags:
            self._instance.add_run_tags(run.run_id, {DAGSTER_CELERY_QUEUE_TAG: run.tags.get(QUEUE_TAG, DEFAULT_QUEUE)})
        return super().submit_run(context)


class WorkerCheckingCeleryRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher whose health check reads the run's heartbeat, not only the task's state.

    The stock check reads the task's state from the result backend, which misleads both ways: a worker
    killed as a whole (SIGKILL, host lost) never records an end, so its run reads STARTED until the run
    timeout; a broker and backend restarted empty have forgotten every task, so a live run reads PENDING,
    is failed, retried and executed twice. Here an end the worker recorded (SUCCESS, FAILURE) stands;
    otherwise the run is alive while the heartbeat its worker process writes into Dagster's storage (no
    part of the broker) keeps changing, and lost once it has not changed for ``WORKER_LOST_SECONDS`` of
    this process's clock (hosts' clocks need not agree) or its worker process beats for another run.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._beats: dict[str, tuple[str, float]] = {}  # run id -> (its heartbeat as last read, when it last changed)

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        key = run.tags.get(HEARTBEAT_TAG)
        if health.status in (WorkerStatus.SUCCESS, WorkerStatus.FAILED) or key is None:  # an end, or not a `dantaro worker`'s run
            self._beats.pop(run.run_id, None)
            return health
        beat = get_instance_values(self._instance, {key}).get(key)
        beating_for = json.loads(beat)["run_id"] if beat else None
        if beating_for != run.run_id:
            self._beats.pop(run.run_id, None)
            return CheckRunHealthResult(WorkerStatus.FAILED, f"worker process {key} no longer runs this run (it beats for run {beating_for})")
        now = time.monotonic()
        self._beats = {run_id: seen for run_id, seen in self._beats.items() if now - seen[1] < FORGET_BEATS_SECONDS}
        last = self._beats.get(run.run_id)
        if last is None or last[0] != beat:
            self._beats[run.run_id] = (beat, now)
        elif now - last[1] >= WORKER_LOST_SECONDS:
            del self._beats[run.run_id]
            return CheckRunHealthResult(WorkerStatus.FAILED, f"worker process {key} has not beaten for {WORKER_LOST_SECONDS:g} s")
        return CheckRunHealthResult(WorkerStatus.RUNNING, f"worker process {key} beating ({health.msg or 'Celery task STARTED'})")


class _Heartbeat(threading.Thread):
    """Writes ``{run_id, beat, at}`` under the worker process's key every ``HEARTBEAT_SECONDS`` until stopped."""

    def __init__(self, instance: dg.DagsterInstance, key: str, run_id: str) -> None:
        super().__init__(name="run-heartbeat", daemon=True)
        self.key = key
        self._run_id = run_id
        self._instance = instance  # its own: disposed when the heartbeat stops
        self._count = 0
        self._stopped = threading.Event()

    def beat(self) -> None:
        self._count += 1
        set_instance_values(self._instance, {self.key: json.dumps({"run_id": self._run_id, "beat": self._count, "at": time.time()})})

    def run(self) -> None:
        while not self._stopped.wait(HEARTBEAT_SECONDS):
            try:
                self.beat()
            except Exception as error:  # noqa: BLE001 - any storage error: the thread lives on, the next beat tries again
                _LOG.warning("run %s: heartbeat not written: %s", self._run_id, redact_text(str(error)))

    def stop(self) -> None:
        self._stopped.set()
        if self.is_alive():
            self.join(timeout=HEARTBEAT_SECONDS * 2)
        self._instance.dispose()


_heartbeats: dict[str, _Heartbeat] = {}  # Celery task id -> the heartbeat of the run it executes


@task_prerun.connect
def _start_run_worker(sender=None, task_id=None, kwargs=None, **_) -> None:
    """Before the run starts, in the process executing it: its first heartbeat, then the run's tags naming the
    worker (``dantaro/worker``, for the UI and tests) and the heartbeat's key (``dantaro/heartbeat``, for run monitoring)."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    run_id = dg.deserialize_value(json.dumps(packed)).run_id
    hostname = sender.request.hostname
    instance = dg.DagsterInstance.get()
    run = instance.get_run_by_id(run_id)
    if run is None or run.status not in (dg.DagsterRunStatus.NOT_STARTED, dg.DagsterRunStatus.STARTING):
        instance.dispose()  # a task delivered again for a run that started elsewhere or ended: Dagster ignores it, so do we
        return
    heartbeat = _Heartbeat(instance, f"dantaro/run_heartbeat/{hostname}/{current_process_index() or 0}", run_id)
    heartbeat.beat()
    instance.add_run_tags(run_id, {WORKER_TAG: hostname, HEARTBEAT_TAG: heartbeat.key})
    heartbeat.start()
    _heartbeats[task_id] = heartbeat


@task_postrun.connect
def _stop_heartbeat(task_id=None, **_) -> None:
    heartbeat = _heartbeats.pop(task_id, None)
    if heartbeat is not None:
        heartbeat.stop()


def main(argv: list[str] | None = None) -> int:
    """``dantaro worker --queue live [--queue bulk] [--name NAME] [--concurrency 1]``: a Celery worker for Dagster runs."""
    parser = argparse.ArgumentParser(
        prog="dantaro worker",
        description="Execute Dagster runs from Celery queues (DAGSTER_HOME's dagster.yaml must use the Celery run launcher).",
    )
    parser.add_argument("--queue", "-q", action="append", required=True, help="a queue to take runs from (repeatable): live, bulk")
    parser.add_argument("--name", "-n", help="the worker's name; default dantaro-<queues>@<host>")
    parser.add_argument("--concurrency", "-c", type=int, default=1, help="runs at once in this worker (default 1)")
    parser.add_argument(
        "--preload", action="append", default=None,
        help="module imported once before runs are forked (repeatable; default dantaro_assets.definitions)",
    )
    parser.add_argument("--loglevel", "-l", default="INFO")
    args = parser.parse_args(argv)

    instance = dg.DagsterInstance.get()
    launcher = instance.run_launcher
    if not isinstance(launcher, CeleryRunLauncher):
        print(
            f"DAGSTER_HOME's run launcher is {type(launcher).__name__}, not a Celery run launcher: "
            "render deploy/dagster.celery.yaml into DAGSTER_HOME (docs/operations.md: Past one machine)",
            file=sys.stderr,
        )
        instance.dispose()
        return 2
    app = launcher.celery
    instance.dispose()  # the runs open their own; nothing of it crosses the fork
    create_execute_job_task(app)
    create_resume_job_task(app)
    # one run per child process, taken only when a process is free: a busy worker leaves runs to idle ones
    app.conf.update(worker_max_tasks_per_child=1, worker_disable_prefetch=True, worker_hijack_root_logger=False)
    for module in args.preload or ["dantaro_assets.definitions"]:
        importlib.import_module(module)
    name = args.name or f"dantaro-{'-'.join(args.queue)}@%h"
    app.worker_main(
        ["worker", "--pool", "prefork", "--concurrency", str(args.concurrency), "-Q", ",".join(args.queue), "-n", name, "--loglevel", args.loglevel]
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
