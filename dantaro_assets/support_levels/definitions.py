"""The support levels domain's wiring: its asset, its job and its schedule at SUPPORT_LEVELS_INTERVAL."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.operations.jobs import asset_job, upbit_retry_policy
from dantaro_assets.operations.schedules import cadence_schedule
from dantaro_assets.partitions import freshness
from dantaro_assets.settings import Settings
from dantaro_assets.support_levels import support_levels, support_levels_redis


def build_defs(settings: Settings) -> dg.Definitions:
    """One cadence (SUPPORT_LEVELS_INTERVAL) sets the cron, the freshness policy and, through ``run_settings``, the ticks."""
    seconds = settings.support_levels_interval
    job = asset_job(
        "support_levels_job", "support_levels", ["candles_1m", "support_levels", "support_levels_redis"],
        "Fetch the hour's 1-minute candles, then compute and publish support/resistance levels.", settings,
        retry_policy=upbit_retry_policy(settings.run_retries),
    )
    return dg.Definitions(
        assets=[*dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=freshness(seconds)), [support_levels]), support_levels_redis],
        jobs=[job],
        schedules=[cadence_schedule(job, "support_levels", seconds, settings.worker_enabled)],
    )
