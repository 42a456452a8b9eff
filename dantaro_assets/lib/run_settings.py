"""The settings a run reads while it computes, as a resource: resources.py builds it from ``Settings``.

Assets and ops take it by name (``run_settings``) instead of reading the environment, so a test or a
bench runs them under any values by passing another ``RunSettings``. Definition-time values (cron,
freshness policies, retry counts) never come from here: each domain's ``build_defs(settings)`` sets
them from the same ``Settings``, so a cadence is read once for its schedule, freshness and ticks.
"""

from __future__ import annotations

import dagster as dg


class RunSettings(dg.ConfigurableResource):
    """Cadences, thresholds, the served scorer, retention windows and the stream's health limits; no defaults: ``Settings`` holds them."""

    market_status_interval: int
    recommendations_interval: int
    support_levels_interval: int
    min_coverage: float
    max_spread_bps: float
    min_turnover_krw: float
    min_reward_risk: float
    calibration: str | None  # DANTARO_CALIBRATION: None = the shipped table
    scorer: str
    retention_candles_1m_days: int
    retention_candles_days: int
    retention_analyses_days: int
    retention_runs_days: int
    stream_max_lag_seconds: float
    stream_grace_seconds: float
