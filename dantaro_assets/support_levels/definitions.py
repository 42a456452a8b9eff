"""The support levels domain's wiring: its asset, its publish step, its job and its schedule at SUPPORT_LEVELS_INTERVAL."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.operations.schedules import analysis_defs
from dantaro_assets.settings import Settings
from dantaro_assets.support_levels import support_levels, support_levels_redis


def build_defs(settings: Settings) -> dg.Definitions:
    return analysis_defs(settings, support_levels, support_levels_redis, settings.support_levels_interval,
                         "Fetch the hour's 1-minute candles, then compute and publish support/resistance levels.")
