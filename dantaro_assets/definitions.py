"""The one Definitions object of Dantaro: every asset, check, job, schedule and resource, assembled here."""

import dagster as dg

from dantaro_assets import market_status, markets, operations, recommendations, support_levels
from dantaro_assets.resources import build_resources
from dantaro_assets.settings import get_settings

defs = dg.Definitions(
    assets=[
        *markets.assets,
        *market_status.assets,
        *support_levels.assets,
        *recommendations.assets,
    ],
    jobs=operations.jobs,
    schedules=operations.schedules,
    sensors=operations.sensors,
    resources=build_resources(get_settings()),
)
