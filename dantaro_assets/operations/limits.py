"""The seed worker's limits as Dagster run tags, an executor and instance checks.

Priorities reproduce the seed's order (market status first, cleanup last) in the run queue, where a
higher ``dagster/priority`` is dequeued first. ``dantaro/job`` names the job type: the instance's
``tag_concurrency_limits`` allow one run per value at a time, and the job log groups by it.
The 300 s timeout is the per-run ``dagster/max_runtime`` tag (enforced by run monitoring), and the
memory limit is an rlimit set by the executor inside the run worker process, so it holds for every
launcher that runs the job in a process of its own.
"""

from __future__ import annotations

import resource
from collections.abc import Mapping

import dagster as dg
from dagster._core.storage.tags import MAX_RUNTIME_SECONDS_TAG, PRIORITY_TAG

from dantaro_assets.settings import Settings, get_settings

JOB_TAG = "dantaro/job"
TICK_TAG = "dantaro/tick"
FINALISE_TAG = "dantaro/finalise"

# Higher runs first. Seed order: market status 1, recommendations 2, support levels 3, cleanup 4; the daily
# universe/candle refresh and outcomes sit between the analyses and cleanup, cleanup below manual runs (0).
# "history" is the bootstrap's 1-minute candle backfill (operations/bootstrap.py), after the daily refresh.
PRIORITIES: Mapping[str, int] = {
    "market_status": 40,
    "recommendations": 30,
    "support_levels": 20,
    "daily_candles": 10,
    "history": 7,
    "recommendation_outcomes": 5,
    "cleanup": -10,
}


def job_tags(job_type: str, settings: Settings | None = None, *, finalise: bool = False) -> dict[str, str]:
    """Tags of every run of ``job_type``: queue priority, one-at-a-time key, timeout.

    A run finalising a closed period goes one step ahead of the same job's run for the open period,
    so the open period's lookback reads complete candles.
    """
    settings = settings or get_settings()
    tags = {
        PRIORITY_TAG: str(PRIORITIES[job_type] + (1 if finalise else 0)),
        JOB_TAG: job_type,
        MAX_RUNTIME_SECONDS_TAG: str(settings.run_timeout),
    }
    if finalise:
        tags[FINALISE_TAG] = "true"
    return tags


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


@dg.executor(name="in_process_memory_limited", config_schema=dg.in_process_executor.config_schema)
def memory_limited_executor(init_context: dg.InitExecutorContext) -> dg.Executor:
    """The in-process executor after capping the run worker at ``DANTARO_RUN_MEMORY_MB``.

    In-process because a run here is a few short steps: one process per step would cost more start-up
    than the steps take, and a single process is what the limit can hold as a whole.
    """
    apply_memory_limit(get_settings().run_memory_mb)
    return dg.in_process_executor.executor_creation_fn(init_context)


def instance_limit_problems(instance: dg.DagsterInstance, settings: Settings | None = None) -> list[str]:
    """Where the instance's run queue disagrees with the settings (dagster.yaml is static config)."""
    settings = settings or get_settings()
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
    if not instance.run_monitoring_enabled:
        problems.append("run_monitoring is disabled: the dagster/max_runtime timeout is not enforced")
    return problems
