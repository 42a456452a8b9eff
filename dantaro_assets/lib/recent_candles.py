"""The newest stored candles of one market, for people and scripts (the API's ``/candles``, ``dantaro_assets.reader``).

Intervals have pyupbit's names; ``minute5`` and ``minute15`` are built from the 1-minute candles as Upbit builds
them, and like Upbit a bucket exists only if something traded in it (docs/api.md, "Candles").
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource, quote_ident
from dantaro_assets.lib.postgres_io import read_table

OHLCV = ["open", "high", "low", "close", "volume", "value"]
START = "candle_start"


@dataclass(frozen=True)
class Source:
    """Where an interval's candles come from: a stored table, and how many of its candles make one."""

    table: str
    minutes_per_candle: int = 1  # > 1: buckets of that many minutes built from the 1-minute table


SOURCES: dict[str, Source] = {
    "minute1": Source("candles_1m"),
    "minute5": Source("candles_1m", 5),
    "minute15": Source("candles_1m", 15),
    "minute60": Source("candles_1h"),
    "day": Source("candles_1d"),
}


def source(interval: str) -> Source:
    """The source of a pyupbit interval name; a wrong name says which are stored."""
    try:
        return SOURCES[interval]
    except KeyError:
        raise ValueError(f"unknown or unstored candle interval {interval!r}; one of {', '.join(SOURCES)}") from None


def _newest_rows(postgres: PostgresResource, table: str, market: str, rows: int, before: datetime | None) -> pd.DataFrame | None:
    """The newest ``rows`` candles of ``market`` in ``table`` starting before ``before``, oldest first: one query.

    The key index leads with candle_start, so the subquery walks it backwards from ``before`` to the
    ``rows``-th candle of the market, and the outer read is the range from there.
    """
    start, params = quote_ident(START), [market]
    bounded = f"market = $1{f' AND {start} < $2' if before is not None else ''}"
    if before is not None:
        params.append(before)
    params.append(rows - 1)
    nth_newest = f"SELECT {start} FROM {postgres.table_name(table)} WHERE {bounded} ORDER BY {start} DESC OFFSET ${len(params)} LIMIT 1"
    where = f"{bounded} AND {start} >= COALESCE(({nth_newest}), '-infinity'::timestamptz)"
    return read_table(postgres, table, where=where, params=params, order=[START])


def recent_candles(postgres: PostgresResource, market: str, interval: str, count: int, before: datetime | None = None) -> pd.DataFrame | None:
    """The newest ``count`` candles of ``market`` that start before ``before`` (tz-aware; None: all stored),
    oldest first: ``candle_start`` (UTC) and :data:`OHLCV`. None when the interval's table was never written.
    """
    if count < 1:
        raise ValueError(f"count must be at least 1, got {count}")
    if before is not None and before.tzinfo is None:
        raise ValueError("before must be timezone-aware")
    spec = source(interval)
    # A bucket holds at most minutes_per_candle rows, so count buckets' worth of rows spans count buckets or more. Only the
    # oldest one read can lack its first minutes, and it is among the newest count only if exactly count are read, all full.
    rows = count * spec.minutes_per_candle
    frame = _newest_rows(postgres, spec.table, market, rows, before)
    if frame is None:
        return None
    frame = frame[[START, *OHLCV]]
    if spec.minutes_per_candle == 1 or frame.empty:
        return frame.reset_index(drop=True)
    buckets = frame.groupby(frame[START].dt.floor(f"{spec.minutes_per_candle}min"), sort=True).agg(
        open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
        volume=("volume", "sum"), value=("value", "sum"),
    )
    return buckets.tail(count).rename_axis(START).reset_index()
