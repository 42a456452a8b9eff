"""Partitions and cadences shared by every asset: all UTC, the open period included (end_offset=1)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from dantaro_assets.settings import get_settings

_START = get_settings().partitions_start.isoformat()

hourly_partitions = dg.HourlyPartitionsDefinition(start_date=f"{_START}-00:00", end_offset=1, timezone="UTC")
daily_partitions = dg.DailyPartitionsDefinition(start_date=_START, end_offset=1, timezone="UTC")


def lookback_hours(hours: int) -> dg.TimeWindowPartitionMapping:
    """An hourly asset reading the last ``hours`` hours before its own hour, its own hour included."""
    return dg.TimeWindowPartitionMapping(start_offset=-hours, end_offset=0, allow_nonexistent_upstream_partitions=True)


def freshness(seconds: int) -> dg.FreshnessPolicy:
    """Warn after two missed cadence ticks, fail after four (never under Dagster's 60 s floor)."""
    return dg.FreshnessPolicy.time_window(
        warn_window=timedelta(seconds=max(60, 2 * seconds)),
        fail_window=timedelta(seconds=max(120, 4 * seconds)),
    )
