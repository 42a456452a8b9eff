"""Snapshot-asset wiring: ticks of the partition in hand, daily lookbacks, the UI table."""

from datetime import datetime, timezone

import dagster as dg
import pandas as pd

from dantaro_assets.lib.snapshots import days_back, latest_table, partition_ticks
from dantaro_assets.partitions import daily_partitions, hourly_partitions


def _ticks(partition: str, interval: int, now: datetime | None = None) -> pd.DatetimeIndex:
    """partition_ticks as an hourly asset's step sees them (in-memory run, no storage)."""

    @dg.asset(partitions_def=hourly_partitions, io_manager_key="mem")
    def ticks(context: dg.AssetExecutionContext) -> pd.DatetimeIndex:
        return partition_ticks(context, interval, now=now)

    result = dg.materialize([ticks], partition_key=partition, resources={"mem": dg.InMemoryIOManager()})
    return result.output_for_node("ticks")


def test_a_closed_hour_has_every_tick_and_the_open_hour_only_those_reached():
    closed = _ticks("2025-09-01-10:00", 120)
    assert len(closed) == 30 and closed[-1] == pd.Timestamp("2025-09-01 10:58", tz="UTC")
    now = datetime(2025, 9, 1, 10, 47, 30, tzinfo=timezone.utc)
    assert list(_ticks("2025-09-01-10:00", 900, now).strftime("%H:%M")) == ["10:00", "10:15", "10:30", "10:45"]
    assert _ticks("2025-09-01-11:00", 900, now).empty


def test_days_back_maps_an_hour_onto_its_day_and_the_days_before():
    mapping = days_back(2)
    subset = hourly_partitions.empty_subset().with_partition_keys(["2025-09-10-05:00"])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, hourly_partitions, daily_partitions)
    assert sorted(upstream.partitions_subset.get_partition_keys()) == ["2025-09-08", "2025-09-09", "2025-09-10"]


def test_latest_table_shows_only_the_newest_snapshot():
    frame = pd.DataFrame({"as_of": pd.to_datetime(["2025-09-01 10:00", "2025-09-01 10:15", "2025-09-01 10:15"], utc=True),
                          "market": ["KRW-A", "KRW-A", "KRW-B"], "level": [1.0, 2.0, 3.0]})
    text = latest_table(frame, ["market", "level"]).value
    assert "as_of 2025-09-01 10:15 UTC, 2 row(s)" in text and "KRW-B" in text and "| 1 " not in text
    assert "no snapshot" in latest_table(frame.iloc[:0], ["market"]).value
