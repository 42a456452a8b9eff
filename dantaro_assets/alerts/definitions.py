"""The alerts domain's wiring: the webhook sensors and the ``webhooks`` resource they read the receivers from."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.alerts.sensors import build_sensors
from dantaro_assets.alerts.webhooks import WebhookTargets
from dantaro_assets.settings import Settings


def build_defs(settings: Settings) -> dg.Definitions:
    """The receivers reach the sensors as ``dg.EnvVar("DANTARO_WEBHOOKS")`` (read when a sensor initialises the
    resource), like the database URLs: the code location's snapshot never holds a URL or a secret."""
    webhooks = WebhookTargets(config=dg.EnvVar("DANTARO_WEBHOOKS")) if settings.webhooks else WebhookTargets()
    return dg.Definitions(
        sensors=build_sensors(settings.scorer, settings.stream_max_lag_seconds, settings.worker_enabled),
        resources={"webhooks": webhooks},
    )
