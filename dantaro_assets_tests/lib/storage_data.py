"""Small frames and IO-manager contexts for the storage tests.

Each context is used in a ``with`` block: it holds an ephemeral Dagster instance, and one left to the garbage
collector fails unrelated tests (docs/tests.md says how).
"""

from __future__ import annotations

import dagster as dg
import numpy as np
import pandas as pd

from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.partitions import hourly_partitions

# Candle-shaped frames written with partition replace (the IO manager's derived-data mode); the merge
# tests pass MERGE_METADATA, the mode of the real candle assets.
CANDLE_METADATA = {"partition_expr": "candle_start", "primary_key": ["market", "candle_start"], "write_mode": WriteMode.REPLACE}
MERGE_METADATA = {**CANDLE_METADATA, "write_mode": WriteMode.MERGE}
HOUR_A, HOUR_B, HOUR_C = "2025-09-01-00:00", "2025-09-01-01:00", "2025-09-01-02:00"


def candles(hour: str, *, markets: tuple[str, ...] = ("KRW-BTC", "KRW-ETH"), minutes: int = 3, base: float = 100.0) -> pd.DataFrame:
    """1-minute candles of ``markets`` for the first ``minutes`` minutes of ``hour`` (a partition key)."""
    start = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start)
    times = pd.date_range(start, periods=minutes, freq="1min")
    frame = pd.DataFrame(
        [(market, t) for market in markets for t in times], columns=["market", "candle_start"]
    )
    price = base + np.arange(len(frame), dtype=float)
    return frame.assign(open=price, high=price + 1, low=price - 1, close=price + 0.5, volume=1.5, value=price * 1.5)


def write(io_manager: dg.IOManager, frame: pd.DataFrame, asset: str, *, partitions: tuple[str, str] | None = None, metadata: dict | None = None,
          output_metadata: dict | None = None) -> dict:
    """``handle_output`` for ``asset`` over the partition range ``partitions`` (or unpartitioned), with the asset's
    ``metadata`` and the ``Output``'s ``output_metadata``; returns the metadata it logged."""
    with dg.build_output_context(
        asset_key=asset,
        definition_metadata=CANDLE_METADATA if metadata is None else metadata,
        output_metadata=output_metadata,
        asset_partitions_def=hourly_partitions if partitions else None,
        asset_partition_key_range=dg.PartitionKeyRange(*partitions) if partitions else None,
        run_id="test-run",
    ) as context:
        io_manager.handle_output(context, frame)
        return context.get_logged_metadata()


def read(io_manager: dg.IOManager, asset: str, *, partitions: tuple[str, str] | None = None, metadata: dict | None = None) -> pd.DataFrame:
    """``load_input`` of ``asset``'s partition range ``partitions`` (or the whole table)."""
    with (
        dg.build_output_context(asset_key=asset, definition_metadata=CANDLE_METADATA if metadata is None else metadata) as upstream,
        dg.build_input_context(
            asset_key=asset,
            upstream_output=upstream,
            asset_partitions_def=hourly_partitions if partitions else None,
            asset_partition_key_range=dg.PartitionKeyRange(*partitions) if partitions else None,
        ) as context,
    ):
        return io_manager.load_input(context)
