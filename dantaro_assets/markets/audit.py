"""An hour's final run checks the stream's minutes against REST before the hour is final.

A stream state that passed its checks can still be wrong, so the hour is fetched over REST and merged:
REST corrects and completes, and what differed is counted here for the run's metadata (docs/stream.md).
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import table_exists
from dantaro_assets.lib.upbit import CANDLE_COLUMNS, FetchStats, UpbitClient, UpbitLimiterUnavailableError
from dantaro_assets.lib.upbit.parsing import empty_candles
from dantaro_assets.markets.seen import AUDIT, Plan, Ranges

VALUES = ["open", "high", "low", "close", "volume", "value"]


def fetch_planned(upbit: UpbitClient, plan: Plan, interval: str) -> tuple[pd.DataFrame, FetchStats]:
    """The plan's REST fetch. A final run's audit is put off, not failed, when the rate limiter's Redis is
    down and the stream saw every minute: the analyses then read what is stored (``plan.deferred`` says so)."""
    try:
        return upbit.candle_ranges(plan.fetch, interval)
    except UpbitLimiterUnavailableError as exc:
        if plan.source != AUDIT or plan.unseen:
            raise
        plan.deferred = f"no request sent ({exc}); the stream's minutes stand until a final run of this hour can compare them"
        return empty_candles(), FetchStats(markets_requested=len(plan.fetch))


def differences(postgres: PostgresResource, fetched: pd.DataFrame, ranges: Ranges, asset: str = "candles_1m") -> dict[str, int]:
    """How the stored minutes of ``ranges`` compare with REST's (``fetched``): ``audit_compared`` REST minutes,
    ``audit_added`` not stored, ``audit_corrected`` stored with other values, ``audit_stream_only`` stored
    minutes REST does not have (kept)."""
    if not ranges:
        return {}
    start = min(s for spans in ranges.values() for s, _ in spans)
    end = max(e for spans in ranges.values() for _, e in spans)
    stored = empty_candles()[CANDLE_COLUMNS]
    if table_exists(postgres, asset):
        stored = postgres.read_frame(f"SELECT {', '.join(CANDLE_COLUMNS)} FROM {postgres.table_name(asset)}"
                                     " WHERE candle_start >= $1 AND candle_start < $2", (start, end))
    stored = stored[stored["market"].isin(list(ranges))]
    both = fetched[CANDLE_COLUMNS].merge(stored, on=["market", "candle_start"], how="outer", suffixes=("", "_stored"), indicator=True)
    matched = both[both["_merge"] == "both"]
    same = np.ones(len(matched), bool)
    for column in VALUES:
        same &= np.isclose(matched[column].to_numpy(float), matched[f"{column}_stored"].to_numpy(float), rtol=1e-9, atol=0.0)
    return {
        "audit_compared": int((both["_merge"] != "right_only").sum()),
        "audit_added": int((both["_merge"] == "left_only").sum()),
        "audit_corrected": int((~same).sum()),
        "audit_stream_only": int((both["_merge"] == "right_only").sum()),
    }
