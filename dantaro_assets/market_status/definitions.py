"""The market status domain's wiring: its asset, its job and its schedule at MARKET_STATUS_INTERVAL."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.market_status import market_status, market_status_redis
from dantaro_assets.operations.jobs import asset_job, upbit_retry_policy
from dantaro_assets.operations.schedules import cadence_schedule
from dantaro_assets.partitions import freshness
from dantaro_assets.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """One cadence (MARKET_STATUS_INTERVAL) sets the cron, the freshness policy and, through ``run_settings``, the ticks."""
    seconds = settings.market_status_interval
    job = asset_job(
        "market_status_job", "market_status", ["candles_1m", "market_status", "market_status_redis"],
        "Fetch the hour's 1-minute candles, then compute and publish market status snapshots.", settings,
        retry_policy=upbit_retry_policy(settings.run_retries),
    )
    return dg.Definitions(
        assets=[*dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=freshness(seconds)), [market_status]), market_status_redis],
        jobs=[job],
        schedules=[cadence_schedule(job, "market_status", seconds, settings.worker_enabled)],
    )
