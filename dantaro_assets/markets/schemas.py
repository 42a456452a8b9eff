"""Pandera schemas of the Upbit assets; the windowed parts are built per partition."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats
from dantaro_assets.lib.upbit import MARKET_COLUMNS
from dantaro_assets.lib.upbit.parsing import spread_bps

_UTC = pd.DatetimeTZDtype("ns", "UTC")
_MARKET = pa.Column(str, pa.Check.str_matches(r"^KRW-[A-Z0-9]+$"), nullable=False)


def _in_window(start: pd.Timestamp, end: pd.Timestamp) -> list[pa.Check]:
    return [pa.Check.ge(start, error=f">= {start.isoformat()}"), pa.Check.lt(end, error=f"< {end.isoformat()} (partition end)")]


def candles_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """A candle partition: contract columns, positive consistent OHLC, one row per (market, candle_start) in the window."""
    price = pa.Column("float64", pa.Check.gt(0), nullable=False)
    amount = pa.Column("float64", pa.Check.ge(0), nullable=False)
    return finite_floats(pa.DataFrameSchema(
        {
            "market": _MARKET,
            "candle_start": pa.Column(_UTC, _in_window(start, end), nullable=False),
            **{c: price for c in ["open", "high", "low", "close"]},
            "volume": amount,
            "value": amount,
        },
        checks=[
            pa.Check(lambda df: df["high"] >= df[["open", "close"]].max(axis=1), name="high >= max(open, close)"),
            pa.Check(lambda df: df["low"] <= df[["open", "close"]].min(axis=1), name="low <= min(open, close)"),
        ],
        unique=["market", "candle_start"],
        strict=True,
        ordered=False,
        name="candles",
    ))


def upbit_markets_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """A day's KRW universe: one row per (day, market), names present, flags boolean."""
    flag = pa.Column(bool, nullable=False)
    return finite_floats(pa.DataFrameSchema(
        {
            "day": pa.Column(_UTC, [*_in_window(start, end), pa.Check(lambda s: s == s.dt.floor("D"), name="midnight UTC")], nullable=False),
            "market": _MARKET,
            "korean_name": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
            "english_name": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
            **{c: flag for c in MARKET_COLUMNS[3:]},
        },
        unique=["day", "market"],
        strict=True,
        name="upbit_markets",
    ))



def upbit_instruments_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """A day's order price units: one positive tick per (day, market)."""
    return finite_floats(pa.DataFrameSchema(
        {
            "day": pa.Column(_UTC, [*_in_window(start, end), pa.Check(lambda s: s == s.dt.floor("D"), name="midnight UTC")], nullable=False),
            "market": _MARKET,
            "tick_size": pa.Column("float64", pa.Check.gt(0), nullable=False),
        },
        unique=["day", "market"],
        strict=True,
        name="upbit_instruments",
    ))


def orderbook_top_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """Book tops fetched in the hour: one per (as_of, market), the ask above the bid, sizes not negative, the spread
    the prices' (in bps of the mid)."""
    price = pa.Column("float64", pa.Check.gt(0), nullable=False)
    size = pa.Column("float64", pa.Check.ge(0), nullable=False)
    return finite_floats(pa.DataFrameSchema(
        {
            "as_of": pa.Column(_UTC, _in_window(start, end), nullable=False),
            "market": _MARKET,
            "book_time": pa.Column(_UTC, nullable=False),
            "best_ask": price,
            "best_bid": price,
            **{c: size for c in ("ask_size", "bid_size", "total_ask_size", "total_bid_size")},
            "spread_bps": pa.Column("float64", pa.Check.gt(0), nullable=False),
        },
        checks=[
            pa.Check(lambda df: df["best_ask"] > df["best_bid"], name="best_ask > best_bid", error="a crossed book"),
            pa.Check(lambda df: (df["spread_bps"] - spread_bps(df["best_ask"], df["best_bid"])).abs() <= 1e-9 * df["spread_bps"],
                     name="spread_bps of the prices"),
        ],
        unique=["as_of", "market"],
        strict=True,
        name="orderbook_top",
    ))
