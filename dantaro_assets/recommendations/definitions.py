"""The recommendations domain's wiring: the declared analysis (its asset, publish step, job and cadence schedule) and
the outcomes asset with its job and schedule."""

from __future__ import annotations

from datetime import datetime, timedelta
from pathlib import Path

import dagster as dg

from dantaro_assets.lib.dagster_internals import UnresolvedAssetJobDefinition
from dantaro_assets.operations.jobs import asset_job
from dantaro_assets.operations.limits import TICK_TAG, JobType
from dantaro_assets.operations.schedules import default_status, missing_lookback
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.recommendations.assets import RECOMMENDATIONS, recommendation_outcomes
from dantaro_assets.recommendations.calibration import CALIBRATION_FILE, checked_calibration
from dantaro_assets.recommendations.outcomes import HORIZONS
from dantaro_assets.recommendations.scorers import SCORERS, served_first
from dantaro_assets.settings import Settings

OUTCOMES_CRON = "10 * * * *"
OUTCOMES_TYPE = JobType("recommendation_outcomes", priority=5)  # after the history backfill, before cleanup


def closed_hour_run_requests(tick: datetime) -> list[dg.RunRequest]:
    """Outcome runs for the hours whose 1 h, 4 h and 24 h horizons closed in the last hour.

    An hour H of recommendations reaches horizon h once H + 1 h + h has passed; rescoring it then fills
    in the returns that were still null on earlier runs.
    """
    hour_start = tick.replace(minute=0, second=0, microsecond=0)
    requests = []
    for name, horizon in HORIZONS.items():
        closed = hourly_partitions.get_partition_key_for_timestamp((hour_start - timedelta(hours=1) - horizon).timestamp())
        requests.append(
            dg.RunRequest(run_key=f"{closed}:{name}", partition_key=closed, tags={**OUTCOMES_TYPE.tags(),
                TICK_TAG: tick.strftime("%Y-%m-%dT%H:%M")})
        )
    return requests


def outcomes_schedule(job: UnresolvedAssetJobDefinition, enabled: bool) -> dg.ScheduleDefinition:
    @dg.schedule(
        name="recommendation_outcomes_schedule",
        cron_schedule=OUTCOMES_CRON,
        job=job,
        execution_timezone="UTC",
        default_status=default_status(enabled),
        description=f"{OUTCOMES_CRON} (UTC): score the hours whose 1 h, 4 h and 24 h horizons just closed.",
    )
    def _schedule(context: dg.ScheduleEvaluationContext) -> list[dg.RunRequest] | dg.SkipReason:
        # an hour with no recommendations stored (a first start, or hours the worker was down) has nothing to grade
        requests = closed_hour_run_requests(context.scheduled_execution_time)
        picks = dg.AssetKey(RECOMMENDATIONS.name)
        never = missing_lookback(context.instance, {picks: {r.partition_key for r in requests}}).get(picks, set())
        graded = [request for request in requests if request.partition_key not in never]
        if not graded:
            return dg.SkipReason(f"no recommendations stored for {', '.join(r.partition_key for r in requests)}: nothing to grade")
        return graded

    return _schedule


def build_defs(settings: Settings) -> dg.Definitions:
    """One cadence (RECOMMENDATIONS_INTERVAL) sets the cron, the freshness policy and, through ``run_settings``, the ticks.

    An unknown DANTARO_SCORER stops the definitions from loading, naming the scorers there are, and so does a
    DANTARO_CALIBRATION table that is malformed or lacks a scorer's horizon, naming the file.
    """
    served_first(settings.scorer)
    checked_calibration(Path(settings.calibration) if settings.calibration else CALIBRATION_FILE,
                        {scorer.horizon_hours for scorer in SCORERS.values()})
    outcomes_job = asset_job(
        "recommendation_outcomes_job", OUTCOMES_TYPE, ["recommendation_outcomes"],
        "Score an hour's recommendations by their forward returns.", settings,
    )
    return dg.Definitions.merge(
        RECOMMENDATIONS.definitions(settings),
        dg.Definitions(assets=[recommendation_outcomes], jobs=[outcomes_job], schedules=[outcomes_schedule(outcomes_job, settings.worker_enabled)]),
    )
