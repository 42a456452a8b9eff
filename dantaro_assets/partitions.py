"""Partitions and cadences shared by every asset: all UTC, the open period included (end_offset=1)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg

from dantaro_assets.lib.upbit.client import MAX_CANDLES_PER_REQUEST

# The first partition of every asset (UTC). It is part of each asset's identity (its partition keys),
# so changing it is a code change that re-partitions stored history, not a deployment setting.
PARTITIONS_START = "2025-09-01"

hourly_partitions = dg.HourlyPartitionsDefinition(start_date=f"{PARTITIONS_START}-00:00", end_offset=1, timezone="UTC")
daily_partitions = dg.DailyPartitionsDefinition(start_date=PARTITIONS_START, end_offset=1, timezone="UTC")

# A backfill runs ranges of partitions: each candle request pages 200 candles over the range. At most
# PAGES_PER_BACKFILL_RUN pages per market keeps a run inside the run timeout (250 markets x 4 pages =
# 1,000 requests = 100 s at 10/s) instead of one run of a month of minutes (54,000 requests, 90 min).
PAGES_PER_BACKFILL_RUN = 4


def backfill_policy(finest_candles_per_partition: int) -> dg.BackfillPolicy:
    """Runs of as many partitions as ``PAGES_PER_BACKFILL_RUN`` pages of the finest candles of a partition hold."""
    return dg.BackfillPolicy.multi_run(max_partitions_per_run=max(1, PAGES_PER_BACKFILL_RUN * MAX_CANDLES_PER_REQUEST // finest_candles_per_partition))


# One policy per partitioning, shared by every asset a job runs together (Dagster warns about, and takes
# the smallest of, differing policies in one job): hourly assets by their 1-minute candles (13 hours a
# run), daily assets by their 1-hour candles (33 days a run).
hourly_backfill = backfill_policy(60)
daily_backfill = backfill_policy(24)


def lookback_hours(hours: int) -> dg.TimeWindowPartitionMapping:
    """An hourly asset reading the last ``hours`` hours before its own hour, its own hour included."""
    return dg.TimeWindowPartitionMapping(start_offset=-hours, end_offset=0, allow_nonexistent_upstream_partitions=True)


def freshness(seconds: int) -> dg.FreshnessPolicy:
    """Warn after two missed cadence ticks, fail after four (never under Dagster's 60 s floor)."""
    return dg.FreshnessPolicy.time_window(
        warn_window=timedelta(seconds=max(60, 2 * seconds)),
        fail_window=timedelta(seconds=max(120, 4 * seconds)),
    )
