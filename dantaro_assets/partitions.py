"""Partitions and cadences shared by every asset: all UTC, the open period included (end_offset=1)."""

from __future__ import annotations

from datetime import timedelta

import dagster as dg
import pandas as pd

from dantaro_assets.lib.analysis_inputs import Lookback
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


def days_back(days: int) -> dg.TimeWindowPartitionMapping:
    """An hourly asset reading a daily upstream: the last ``days`` days before its own day, its own day included."""
    return dg.TimeWindowPartitionMapping(start_offset=-24 * days, end_offset=0, allow_nonexistent_upstream_partitions=True)


def analysis_ins(lookback: Lookback) -> dict[str, dg.AssetIn]:
    """The inputs of an hourly analysis asset over its ``lookback`` (``analysis_inputs.Lookback``), each a DataFrame:
    candles_1m, candles_1h, candles_1d (when read), upbit_markets and the optional upbit_instruments (when read)."""
    mappings = {"candles_1m": lookback_hours(lookback.minute_hours), "candles_1h": days_back(lookback.hourly_days)}
    if lookback.daily_days:
        mappings["candles_1d"] = days_back(lookback.daily_days)
    mappings["upbit_markets"] = days_back(lookback.universe_days)
    ins = {name: dg.AssetIn(partition_mapping=mapping, dagster_type=pd.DataFrame) for name, mapping in mappings.items()}
    if lookback.instruments:  # optional: without stored tick sizes the documented KRW table applies
        ins["upbit_instruments"] = dg.AssetIn(partition_mapping=days_back(lookback.universe_days), metadata={"optional": True},
                                              dagster_type=pd.DataFrame)
    return ins


def freshness(seconds: int) -> dg.FreshnessPolicy:
    """Warn after two missed cadence ticks, fail after four (never under Dagster's 60 s floor)."""
    return dg.FreshnessPolicy.time_window(
        warn_window=timedelta(seconds=max(60, 2 * seconds)),
        fail_window=timedelta(seconds=max(120, 4 * seconds)),
    )
