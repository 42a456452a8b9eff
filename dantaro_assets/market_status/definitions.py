"""The market status domain's wiring: its asset, its publish step, its job and its schedule at MARKET_STATUS_INTERVAL."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.market_status import market_status, market_status_redis
from dantaro_assets.operations.schedules import analysis_defs
from dantaro_assets.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    return analysis_defs(settings, market_status, market_status_redis, settings.market_status_interval,
                         "Fetch the hour's 1-minute candles, then compute and publish market status snapshots.")
