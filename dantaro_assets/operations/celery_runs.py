"""Runs on Celery workers: the run queue naming each run's Celery queue, dagster-celery's run launcher, told when a
worker is gone, and ``dantaro worker``.

With ``deploy/dagster.celery.yaml`` the daemon's run queue (priorities, per-job limits, the run cap) stays
where it is; :class:`CeleryQueueRunCoordinator` tags each run with the Celery queue of its job type as it is
queued (``CELERY_QUEUES``: live cadence runs vs bulk work), and the launcher sends it there as a Celery task;
``dantaro worker --queue NAME`` processes on any host execute them. Only this instance tags runs for Celery:
under any other (``dantaro dev``'s) no run carries a Celery tag. A
worker takes a run only when it has a free process (no prefetch) and forks a fresh child per run from a
parent that has already imported the code, so a run starts without paying Python's start-up and each
run's memory cap (an rlimit set by the jobs' executor) dies with its child.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Mapping

import dagster as dg
from celery.signals import task_prerun
from dagster_celery.launcher import CeleryRunLauncher
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG
from dagster_celery.tasks import create_execute_job_task, create_resume_job_task

from dantaro_assets.lib.dagster_internals import CheckRunHealthResult, WorkerStatus
from dantaro_assets.operations.limits import JOB_TAG

WORKER_TAG = "dantaro/worker"
# The Celery queue of each job type: the cadence runs apart from bulk work, so a history backfill or cleanup on a
# worker never holds up market status. Runs of no job type (an asset materialised from the UI) go to bulk too.
CELERY_QUEUES: Mapping[str, str] = {
    "market_status": "live",
    "recommendations": "live",
    "support_levels": "live",
    "daily_candles": "bulk",
    "history": "bulk",
    "recommendation_outcomes": "bulk",
    "cleanup": "bulk",
}
DEFAULT_QUEUE = "bulk"
INSPECT_TIMEOUT_SECONDS = 2.0
# a worker that does not answer for this long is taken for dead (one missed answer can be load, not death)
WORKER_LOST_SECONDS = 10.0


class CeleryQueueRunCoordinator(dg.QueuedRunCoordinator):
    """Dagster's run queue, tagging each run with its job type's Celery queue (``dagster-celery/queue``) as it is queued.

    Here rather than on the jobs so that only the Celery instance's runs carry it; set before the run
    waits in the queue, whose per-queue ``tag_concurrency_limits`` read it. A queue given at launch wins.
    """

    def submit_run(self, context: dg.SubmitRunContext) -> dg.DagsterRun:
        run = context.dagster_run
        if DAGSTER_CELERY_QUEUE_TAG not in run.tags:
            self._instance.add_run_tags(run.run_id, {DAGSTER_CELERY_QUEUE_TAG: CELERY_QUEUES.get(run.tags.get(JOB_TAG, ""), DEFAULT_QUEUE)})
        return super().submit_run(context)


class WorkerCheckingCeleryRunLauncher(CeleryRunLauncher):
    """dagster-celery's run launcher whose health check also asks the worker whether it still runs the task.

    The stock check reads the task's state from the result backend only, and a worker killed as a whole
    (SIGKILL, host lost) never records an end: its run would read STARTED until the run timeout, and
    Dagster would fail it without a retry. Here the worker named in the task's STARTED record is asked
    (Celery remote control); a worker that answers without the task, or does not answer for
    ``WORKER_LOST_SECONDS``, makes the run FAILED, and run retries launch it again on a live worker.
    """

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._silent_since: dict[str, float] = {}

    def check_run_worker_health(self, run: dg.DagsterRun) -> CheckRunHealthResult:
        health = super().check_run_worker_health(run)
        if health.status != WorkerStatus.RUNNING:
            return health
        task_id = run.tags[DAGSTER_CELERY_TASK_ID_TAG]
        started = self.celery.AsyncResult(task_id).info  # Celery's STARTED record: {"pid": ..., "hostname": ...}
        hostname = started.get("hostname") if isinstance(started, dict) else None
        if hostname is None:
            return health
        replies = self.celery.control.inspect(destination=[hostname], timeout=INSPECT_TIMEOUT_SECONDS).query_task(task_id) or {}
        if task_id in replies.get(hostname, {}):
            self._silent_since.pop(task_id, None)
            return health
        health = super().check_run_worker_health(run)  # the task may have ended while we asked
        if health.status != WorkerStatus.RUNNING:
            return health
        if hostname in replies:
            return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery worker {hostname} no longer runs task {task_id} (it restarted)")
        silent_since = self._silent_since.setdefault(task_id, time.monotonic())
        if time.monotonic() - silent_since < WORKER_LOST_SECONDS:
            return health
        self._silent_since.pop(task_id, None)
        return CheckRunHealthResult(WorkerStatus.FAILED, f"Celery worker {hostname} has not answered for {WORKER_LOST_SECONDS:g} s")


@task_prerun.connect
def _tag_run_with_worker(sender=None, kwargs=None, **_) -> None:
    """Name the worker on the run (tag ``dantaro/worker``) before it starts, so the UI and tests see where it ran."""
    packed = (kwargs or {}).get("execute_job_args_packed")
    if packed is None:
        return
    run_id = dg.deserialize_value(json.dumps(packed)).run_id
    with dg.DagsterInstance.get() as instance:
        instance.add_run_tags(run_id, {WORKER_TAG: sender.request.hostname})


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
            "render deploy/dagster.celery.yaml into DAGSTER_HOME (README: Past one machine)",
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
