"""Dantaro's stored candles in pyupbit's shape: a script written for ``pyupbit.get_ohlcv`` reads Postgres instead of Upbit.

    from dantaro_assets.reader import get_ohlcv
    df = get_ohlcv("KRW-BTC", interval="minute60", count=48)

Where it departs from pyupbit (closed candles only, errors raise): docs/api.md, "Reading stored candles like pyupbit".
"""

from __future__ import annotations

import functools
from datetime import datetime

import pandas as pd

from dantaro_assets.lib.recent_candles import OHLCV, SOURCES, START, recent_candles
from dantaro_assets.resources import process_storage
from dantaro_assets.settings import Settings, load_settings

KST = "Asia/Seoul"
_ALIASES = {"minutes1": "minute1", "minutes5": "minute5", "minutes15": "minute15", "minutes60": "minute60", "days": "day"}  # pyupbit's too
INTERVALS = (*SOURCES, *_ALIASES)


def _upbit_to(to: datetime | str | None) -> datetime | None:
    """``to`` as Upbit reads it: a naive time is UTC."""
    if to is None:
        return None
    moment = pd.Timestamp(to)
    return (moment.tz_localize("UTC") if moment.tzinfo is None else moment.tz_convert("UTC")).to_pydatetime()


def pyupbit_frame(candles: pd.DataFrame) -> pd.DataFrame:
    """Stored candles (``candle_start`` UTC and the OHLCV columns) as pyupbit's frame."""
    index = pd.DatetimeIndex(candles[START]).tz_convert(KST).tz_localize(None).as_unit("ns").rename(None)
    return pd.DataFrame({column: candles[column].to_numpy(dtype=float) for column in OHLCV}, index=index)


class Reader:
    """Stored candles of the Postgres that ``settings`` name, read the way pyupbit reads Upbit's."""

    def __init__(self, settings: Settings) -> None:
        self.postgres = process_storage(settings).postgres

    def get_ohlcv(self, ticker: str = "KRW-BTC", interval: str = "day", count: int = 200, to: datetime | str | None = None) -> pd.DataFrame:
        """The newest ``count`` closed candles of ``ticker`` before ``to`` (default: all stored), oldest first."""
        name = _ALIASES.get(interval, interval)
        if name not in SOURCES:
            raise ValueError(f"interval {interval!r} is not stored by Dantaro; use one of {', '.join(INTERVALS)}")
        candles = recent_candles(self.postgres, ticker, name, max(count, 1), _upbit_to(to))
        if candles is None:
            raise LookupError(f"no {name} candles are stored yet (table {SOURCES[name].table} does not exist in schema "
                              f"{self.postgres.db_schema!r}): materialise the candle assets first")
        return pyupbit_frame(candles)


@functools.cache
def _default_reader() -> Reader:
    return Reader(load_settings())


def get_ohlcv(ticker: str = "KRW-BTC", interval: str = "day", count: int = 200, to: datetime | str | None = None) -> pd.DataFrame:
    """``pyupbit.get_ohlcv`` over Dantaro's stored candles, with the settings of this process's environment (read once)."""
    return _default_reader().get_ohlcv(ticker, interval, count, to)
