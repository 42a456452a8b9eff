"""The maintenance domain's wiring: the cleanup job and its schedule (lowest priority, every six hours)."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.maintenance.cleanup import enforce_retention
from dantaro_assets.operations.jobs import run_executor, run_tags
from dantaro_assets.operations.limits import JobType
from dantaro_assets.operations.schedules import default_status
from dantaro_assets.settings import Settings

CLEANUP_CRON = "0 */6 * * *"
CLEANUP_TYPE = JobType("cleanup", priority=-10)  # last of all, below manual runs (0)


def build_defs(settings: Settings) -> dg.Definitions:
    @dg.job(name="cleanup_job", tags=run_tags(CLEANUP_TYPE, settings), executor_def=run_executor(settings))
    def cleanup_job() -> None:
        """Retention of the Postgres tables and of Dagster's run history (lowest priority)."""
        enforce_retention()

    @dg.schedule(
        name="cleanup_schedule",
        cron_schedule=CLEANUP_CRON,
        job=cleanup_job,
        execution_timezone="UTC",
        default_status=default_status(settings.worker_enabled),
        description=f"{CLEANUP_CRON} (UTC): retention of tables and of Dagster's run history, lowest priority.",
    )
    def cleanup_schedule(context: dg.ScheduleEvaluationContext) -> dg.RunRequest:
        return dg.RunRequest(run_key=context.scheduled_execution_time.strftime("%Y-%m-%dT%H:%M"), tags=CLEANUP_TYPE.tags())

    return dg.Definitions(jobs=[cleanup_job], schedules=[cleanup_schedule])
