"""A code location with one asset due every minute, for the freshness daemon in the webhook tests."""

from datetime import timedelta

import dagster as dg


@dg.asset(freshness_policy=dg.FreshnessPolicy.time_window(fail_window=timedelta(minutes=1)))
def ticker() -> None:
    """Materialised by the test, then left to go stale."""


defs = dg.Definitions(assets=[ticker])
