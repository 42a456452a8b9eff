"""The worker's limits as Dagster run tags, an executor and instance checks.

A domain declares the :class:`JobType` of its jobs (priority, queue) beside them, so a new job type edits
nothing here. The memory limit, the timeout and stopping a run someone else ended are held by the executor
inside the run worker, so they hold under every launcher (docs/operations.md, "Schedules, priorities and limits").
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from dataclasses import dataclass

import dagster as dg

from dantaro_assets.lib.dagster_internals import PoolGranularity
from dantaro_assets.lib.upbit.client import stop_fetches
from dantaro_assets.settings import Settings

# Dagster reads these run tags; their names are documented (run queue priority, run retries) but not exported.
PRIORITY_TAG = "dagster/priority"
MAX_RETRIES_TAG = "dagster/max_retries"
JOB_TAG = "dantaro/job"
QUEUE_TAG = "dantaro/queue"
TICK_TAG = "dantaro/tick"
FINALISE_TAG = "dantaro/finalise"
TIMED_OUT_TAG = "dantaro/timed_out"
STOP_GRACE_SECONDS = 10
MONITORING_GRACE_SECONDS = 30

# The two classes of work: the cadence runs, and everything that may take longer (candle refreshes and backfills,
# outcomes, cleanup, runs of no job type). The Celery instance gives each its queue and run slots.
LIVE = "live"
BULK = "bulk"
QUEUES = (LIVE, BULK)


@dataclass(frozen=True)
class JobType:
    """A kind of run: ``name`` (``dantaro/job``), ``priority`` (``dagster/priority``, higher first; manual runs are 0)
    and ``queue`` (``dantaro/queue``: ``live`` or ``bulk``)."""

    name: str
    priority: int
    queue: str = BULK

    def __post_init__(self) -> None:
        if self.queue not in QUEUES:
            raise ValueError(f"job type {self.name}: queue {self.queue!r} is not one of {list(QUEUES)} (the Celery instance's queues)")

    def tags(self, *, finalise: bool = False) -> dict[str, str]:
        """Tags of every run of this type: queue priority, one-at-a-time key and class of work.

        A run finalising a closed period goes one step ahead of the same job's run for the open period,
        so the open period's lookback reads complete candles. The timeout tag is the job's own
        (:func:`timeout_tags`), which Dagster adds to every run of the job.
        """
        tags = {PRIORITY_TAG: str(self.priority + (1 if finalise else 0)), JOB_TAG: self.name, QUEUE_TAG: self.queue}
        if finalise:
            tags[FINALISE_TAG] = "true"
        return tags


def timeout_tags(run_timeout: int) -> dict[str, str]:
    """Run monitoring's backstop: ``dagster/max_runtime`` a grace period past the executor's own timeout."""
    return {dg.MAX_RUNTIME_SECONDS_TAG: str(run_timeout + MONITORING_GRACE_SECONDS)}


def apply_memory_limit(megabytes: int) -> None:
    """Cap this process's (and its children's) writable private memory: an allocation past it raises MemoryError.

    RLIMIT_DATA (heap, anonymous mappings, thread stacks) rather than RLIMIT_AS: the address space also
    counts untouched reservations (64 MB per glibc malloc arena, Arrow's allocator pools), so a run
    using a few hundred MB could not even start a thread under a 2 GB RLIMIT_AS.
    Only lowers the soft limit, never above the hard limit, so an operator's stricter ulimit wins.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    wanted = megabytes * 1024 * 1024
    if hard != resource.RLIM_INFINITY:
        wanted = min(wanted, hard)
    if soft == resource.RLIM_INFINITY or wanted < soft:
        resource.setrlimit(resource.RLIMIT_DATA, (wanted, hard))


@contextmanager
def run_deadline(instance: dg.DagsterInstance, run_id: str, seconds: float) -> Iterator[None]:
    """Stop the run if the block is still running ``seconds`` after the run started (docs/operations.md, the 300 s row)."""
    record = instance.get_run_record_by_id(run_id)
    started = record.start_time if record is not None and record.start_time else time.time()
    finished = threading.Event()
    watchdog = threading.Thread(
        target=_stop_at_deadline, args=(instance, run_id, started + seconds, seconds, finished), name="run-deadline", daemon=True
    )
    watchdog.start()
    try:
        yield
    finally:
        finished.set()


def _stop_at_deadline(instance: dg.DagsterInstance, run_id: str, deadline: float, seconds: float, finished: threading.Event) -> None:
    if finished.wait(max(0.0, deadline - time.time())):
        return
    try:
        # the tag first: whichever failure is reported next (ours or monitoring's), the retry daemon skips the run
        instance.add_run_tags(run_id, {MAX_RETRIES_TAG: "0", TIMED_OUT_TAG: "true"})
        stopping = f"Run exceeded DANTARO_RUN_TIMEOUT={seconds:g} s: stopping it (not to be retried)."
        instance.report_engine_event(stopping, instance.get_run_by_id(run_id))
    finally:  # the run stops even when the instance's storage does not answer
        stop_fetches(f"the run exceeded DANTARO_RUN_TIMEOUT={seconds:g} s")
        os.kill(os.getpid(), signal.SIGINT)  # Dagster's own termination signal: the step in progress is interrupted
    if finished.wait(STOP_GRACE_SECONDS):
        return
    message = f"Run exceeded DANTARO_RUN_TIMEOUT={seconds:g} s and did not stop within {STOP_GRACE_SECONDS} s: its worker exits."
    try:
        instance.report_run_failed(instance.get_run_by_id(run_id), message)
    finally:
        os._exit(1)


# the events after which a step works on, and what it does next: the last moments to stop before it does
_BEFORE_WORK = {dg.DagsterEventType.STEP_START: "computes", dg.DagsterEventType.STEP_OUTPUT: "stores its output"}


def _stop_unless_started(instance: dg.DagsterInstance, run_id: str, before: str) -> None:
    """Stop the run (``DagsterExecutionInterruptedError``) when its status is no longer STARTED.

    Dagster ends an interrupted run by its stored status: a run already FAILURE gets an engine event and keeps
    its failure (no second RUN_FAILURE, no SUCCESS), a CANCELING one is canceled.
    """
    run = instance.get_run_by_id(run_id)
    if run is None or run.status == dg.DagsterRunStatus.STARTED:
        return
    message = f"Run is {run.status.value} (set outside its run worker, e.g. failed by run monitoring): stopping before {before}."
    instance.report_engine_event(message, run)
    raise dg.DagsterExecutionInterruptedError(message)


class _DeadlineExecutor(dg.Executor):
    """Another executor's execution inside ``run_deadline``, stopped when the run is no longer STARTED."""

    def __init__(self, inner: dg.Executor, seconds: float) -> None:
        self._inner = inner
        self._seconds = seconds

    @property
    def retries(self):
        return self._inner.retries

    @property
    def step_dependency_config(self):
        return self._inner.step_dependency_config

    def execute(self, plan_context, execution_plan):
        instance, run_id = plan_context.instance, plan_context.run_id
        with run_deadline(instance, run_id, self._seconds), closing(self._inner.execute(plan_context, execution_plan)) as events:
            for event in events:
                if event.event_type in _BEFORE_WORK:  # the step resumes only after this event is passed on
                    _stop_unless_started(instance, run_id, f"step {event.step_key} {_BEFORE_WORK[event.event_type]}")
                yield event
            _stop_unless_started(instance, run_id, "the run reports its end")


def run_limited_executor(memory_mb: int, timeout_seconds: int) -> dg.ExecutorDefinition:
    """The in-process executor after capping the run worker at ``memory_mb``, within ``timeout_seconds``.

    In-process because a run here is a few short steps: one process per step would cost more start-up
    than the steps take, and a single process is what the limits can hold as a whole. The limits are
    arguments (definitions.py passes the settings') rather than ``.configured`` executor config, so the
    in-process executor's own run config (step retries) stays open to each run.
    """

    @dg.executor(name="in_process_memory_limited", config_schema=dg.in_process_executor.config_schema)
    def memory_limited_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
        apply_memory_limit(memory_mb)
        return _DeadlineExecutor(dg.in_process_executor.executor_creation_fn(init_context), timeout_seconds)

    return memory_limited_executor


def instance_limit_problems(instance: dg.DagsterInstance, settings: Settings) -> list[str]:
    """Where the instance's run queue disagrees with the settings (dagster.yaml is static config)."""
    problems = []
    queue = instance.get_concurrency_config().run_queue_config
    if queue is None:
        return ["the instance has no run queue: set run_coordinator to QueuedRunCoordinator"]
    if queue.max_concurrent_runs != settings.worker_max_workers:
        problems.append(
            f"run queue allows {queue.max_concurrent_runs} runs at once, WORKER_MAX_WORKERS={settings.worker_max_workers}"
        )
    per_job = [
        limit
        for limit in queue.tag_concurrency_limits
        if limit.get("key") == JOB_TAG and limit.get("limit") == 1 and isinstance(limit.get("value"), dict)
    ]
    if not per_job:
        problems.append(f"no tag_concurrency_limits entry {{key: {JOB_TAG}, value: {{applyLimitPerUniqueValue: true}}, limit: 1}}")
    pools = instance.get_concurrency_config().pool_config
    if pools.pool_granularity != PoolGranularity.OP or (pools.op_granularity_run_buffer or 0) < settings.worker_max_workers:
        problems.append(
            f"pools should use granularity op with op_granularity_run_buffer >= {settings.worker_max_workers}: a fetching run "
            "waiting for upbit_api would otherwise be passed over in the queue by lower-priority runs"
        )
    if not instance.run_monitoring_enabled:
        problems.append("run_monitoring is disabled: the dagster/max_runtime timeout is not enforced")
    return problems
