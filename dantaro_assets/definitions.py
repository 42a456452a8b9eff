"""The one Definitions object of Dantaro: each domain's assets, jobs, schedules and sensors, and the shared resources.

Settings are read here, once per code location load, and handed to every domain's ``build_defs`` and
to ``resources.build_resources``; nothing below reads the environment.
"""

import dagster as dg

from dantaro_assets.alerts import definitions as alerts
from dantaro_assets.maintenance import definitions as maintenance
from dantaro_assets.market_status import definitions as market_status
from dantaro_assets.markets import definitions as markets
from dantaro_assets.recommendations import definitions as recommendations
from dantaro_assets.resources import build_resources
from dantaro_assets.settings import Settings, load_settings
from dantaro_assets.support_levels import definitions as support_levels

DOMAINS = (markets, market_status, support_levels, recommendations, maintenance, alerts)


def build_definitions(settings: Settings) -> dg.Definitions:
    """Every domain's definitions under ``settings``, merged, with the resources they share."""
    return dg.Definitions.merge(
        *(domain.build_defs(settings) for domain in DOMAINS),
        dg.Definitions(resources=build_resources(settings)),
    )


defs = build_definitions(load_settings())
