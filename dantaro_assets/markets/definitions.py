"""The markets domain's wiring: its assets, the daily candles job and schedule, the history sensor."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.markets.assets import candles_1d, candles_1h, candles_1m, orderbook_top, upbit_instruments, upbit_markets
from dantaro_assets.markets.history import build_history_sensor
from dantaro_assets.markets.jobs import build_jobs, daily_candles_schedule
from dantaro_assets.partitions import freshness
from dantaro_assets.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """candles_1m is refreshed by every analysis job, so it is as fresh as the fastest cadence (market status)."""
    minutes = dg.map_asset_specs(
        lambda spec: spec.replace_attributes(freshness_policy=freshness(settings.market_status_interval)), [candles_1m]
    )
    daily_job, minute_job = build_jobs(settings)
    return dg.Definitions(
        assets=[upbit_markets, upbit_instruments, *minutes, candles_1h, candles_1d, orderbook_top],
        jobs=[daily_job, minute_job],
        schedules=[daily_candles_schedule(daily_job, settings)],
        sensors=[build_history_sensor([daily_job, minute_job], settings.worker_enabled)],
    )
