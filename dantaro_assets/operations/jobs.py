"""One asset job per product, built on asset keys so the jobs do not import the assets they run.

Each hourly analysis job completes the hour's 1-minute candles before computing (over REST only what
``dantaro stream`` did not store: markets/seen.py), so a run is one self-contained cycle. Every job carries
the tags of its type (priority, one-at-a-time key, timeout) and runs in one memory-capped process.
"""

from __future__ import annotations

import dagster as dg

from dantaro_assets.lib.dagster_internals import UnresolvedAssetJobDefinition
from dantaro_assets.maintenance import enforce_retention
from dantaro_assets.operations.limits import job_tags, memory_limited_executor


def _asset_job(name: str, job_type: str, keys: list[str], description: str) -> UnresolvedAssetJobDefinition:
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(*keys),
        tags=job_tags(job_type),
        executor_def=memory_limited_executor,
        description=description,
    )


market_status_job = _asset_job(
    "market_status_job", "market_status", ["candles_1m", "market_status", "market_status_redis"],
    "Fetch the hour's 1-minute candles, then compute and publish market status snapshots.",
)
recommendations_job = _asset_job(
    "recommendations_job", "recommendations", ["candles_1m", "recommendations", "recommendations_redis"],
    "Fetch the hour's 1-minute candles, then rank and publish coin recommendations.",
)
support_levels_job = _asset_job(
    "support_levels_job", "support_levels", ["candles_1m", "support_levels", "support_levels_redis"],
    "Fetch the hour's 1-minute candles, then compute and publish support/resistance levels.",
)
recommendation_outcomes_job = _asset_job(
    "recommendation_outcomes_job", "recommendation_outcomes", ["recommendation_outcomes"],
    "Score an hour's recommendations by their forward returns.",
)
daily_candles_job = _asset_job(
    "daily_candles_job", "daily_candles", ["upbit_markets", "upbit_instruments", "candles_1h", "candles_1d"],
    "Refresh the day's KRW universe, its order price units and its 1-hour and 1-day candles.",
)
candles_1m_job = _asset_job(
    "candles_1m_job", "history", ["candles_1m"],
    "Fetch closed hours of 1-minute candles the analyses look back over (the history sensor's backfill).",
)


@dg.job(tags=job_tags("cleanup"), executor_def=memory_limited_executor)
def cleanup_job() -> None:
    """Retention of the Postgres tables and of Dagster's run history (lowest priority)."""
    enforce_retention()


jobs = [
    market_status_job, recommendations_job, support_levels_job, recommendation_outcomes_job, daily_candles_job, candles_1m_job, cleanup_job,
]
