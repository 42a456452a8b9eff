"""The market data jobs: the daily universe and candles (hourly schedule and history sensor), and 1-minute history."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from dantaro_assets.lib.dagster_internals import UnresolvedAssetJobDefinition
from dantaro_assets.operations.jobs import asset_job, upbit_retry_policy
from dantaro_assets.operations.limits import JobType
from dantaro_assets.operations.schedules import default_status, partitioned_schedule
from dantaro_assets.partitions import daily_partitions
from dantaro_assets.settings import Settings

DAILY_CANDLES_JOB = "daily_candles_job"
CANDLES_1M_JOB = "candles_1m_job"
DAILY_CANDLES_CRON = "1 * * * *"  # minute 1: the day's universe exists before the hour's analyses need it
# after the analyses; then the history sensor's 1-minute backfill (docs/operations.md: the worker's order)
DAILY_CANDLES_TYPE = JobType("daily_candles", priority=10)
HISTORY_TYPE = JobType("history", priority=7)


def build_jobs(settings: Settings) -> tuple[UnresolvedAssetJobDefinition, UnresolvedAssetJobDefinition]:
    """``daily_candles_job`` and ``candles_1m_job`` (the history sensor's 1-minute backfill)."""
    retries = upbit_retry_policy(settings.run_retries)
    daily = asset_job(
        DAILY_CANDLES_JOB, DAILY_CANDLES_TYPE, ["upbit_markets", "upbit_instruments", "candles_1h", "candles_1d"],
        "Refresh the day's KRW universe, its order price units and its 1-hour and 1-day candles.", settings, retry_policy=retries,
    )
    minutes = asset_job(
        CANDLES_1M_JOB, HISTORY_TYPE, ["candles_1m"],
        "Fetch closed hours of 1-minute candles the analyses look back over (the history sensor's backfill).", settings,
        retry_policy=retries,
    )
    return daily, minutes


def daily_candles_schedule(job: UnresolvedAssetJobDefinition, settings: Settings) -> dg.ScheduleDefinition:
    return partitioned_schedule(job, DAILY_CANDLES_TYPE, DAILY_CANDLES_CRON, daily_partitions, timedelta(hours=1), default_status(settings.worker_enabled))
