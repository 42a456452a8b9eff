"""Dagster wiring shared by the snapshot assets (market_status, support_levels, recommendations).

A snapshot asset's hourly partition holds one row set per cadence tick; these helpers give the ticks
of the partition being materialised, the lookback mappings onto daily upstreams and the Markdown preview
of the newest snapshot shown in the Dagster UI.
"""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from dantaro_assets.lib import point_in_time


def partition_ticks(context: dg.AssetExecutionContext, interval_seconds: int, now: datetime | None = None) -> pd.DatetimeIndex:
    """The partition's ticks reached by ``now`` (UTC wall clock by default): all of them for a closed hour."""
    window = context.partition_time_window
    return point_in_time.ticks(window.start, window.end, interval_seconds, now=now or datetime.now(timezone.utc))


def days_back(days: int) -> dg.TimeWindowPartitionMapping:
    """An hourly asset reading a daily upstream: the last ``days`` days before its own day, its own day included."""
    return dg.TimeWindowPartitionMapping(start_offset=-24 * days, end_offset=0, allow_nonexistent_upstream_partitions=True)


def latest_table(frame: pd.DataFrame, columns: list[str], rows: int = 20, digits: int = 4) -> dg.MetadataValue:
    """The newest as_of's rows as a Markdown table (first ``rows`` rows, numbers rounded)."""
    if frame.empty:
        return dg.MetadataValue.md("_no snapshot: the hour has no tick yet_")
    latest = frame[frame["as_of"] == frame["as_of"].max()]
    shown = latest[columns].head(rows).round(digits)
    title = f"as_of {latest['as_of'].iloc[0].strftime('%Y-%m-%d %H:%M')} UTC, {len(latest)} row(s)"
    return dg.MetadataValue.md(f"**{title}**\n\n" + shown.to_markdown(index=False))
