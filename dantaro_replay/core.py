"""Shared pieces of the replay server: candle arrays, interval aggregation, Upbit's KRW tick sizes (the pipeline's table).

Both data sources (simulated and recorded) produce minute-or-coarser candles as columnar numpy
arrays; everything coarser is aggregated from them here, so OHLCV stays consistent across
intervals and no per-candle Python runs in the hot path.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Protocol

import numpy as np

from dantaro_assets.lib.tick_grid import krw_tick_size
from dantaro_assets.lib.tick_grid import round_to_tick as grid_round

MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)
DAY_MINUTES = 1440
DAY_SECONDS = 86_400
_SMALLEST_PRICE = 1e-8  # a simulated price never falls below one tick of the finest band

CAUTION_KEYS = (
    "PRICE_FLUCTUATIONS",
    "TRADING_VOLUME_SOARING",
    "DEPOSIT_AMOUNT_SOARING",
    "GLOBAL_PRICE_DIFFERENCES",
    "CONCENTRATION_OF_SMALL_ACCOUNTS",
)


@dataclass(frozen=True)
class MarketInfo:
    """One entry of ``/v1/market/all``; ``caution`` follows ``CAUTION_KEYS``."""

    market: str
    korean_name: str
    english_name: str
    warning: bool = False
    caution: tuple[bool, ...] = (False,) * len(CAUTION_KEYS)


@dataclass(frozen=True)
class Candles:
    """Candles of one market, oldest first. ``start`` is the open time in UTC epoch seconds;
    ``last_trade_ms`` is Upbit's ``timestamp`` (time of the candle's last trade)."""

    start: np.ndarray
    open: np.ndarray
    high: np.ndarray
    low: np.ndarray
    close: np.ndarray
    volume: np.ndarray
    value: np.ndarray
    last_trade_ms: np.ndarray

    def __len__(self) -> int:
        return len(self.start)

    def take(self, index: slice | np.ndarray) -> Candles:
        return Candles(*(getattr(self, f.name)[index] for f in fields(self)))

    def before(self, end: float) -> Candles:
        """The candles whose open time is before ``end`` (Upbit's exclusive ``to``)."""
        return self.take(slice(0, int(np.searchsorted(self.start, end, side="left"))))

    def since(self, start: float) -> Candles:
        return self.take(slice(int(np.searchsorted(self.start, start, side="left")), None))

    @staticmethod
    def empty() -> Candles:
        return Candles(np.empty(0, np.int64), *(np.empty(0) for _ in range(6)), np.empty(0, np.int64))

    @staticmethod
    def concat(blocks: list[Candles]) -> Candles:
        blocks = [b for b in blocks if len(b)]
        if not blocks:
            return Candles.empty()
        if len(blocks) == 1:
            return blocks[0]
        return Candles(*(np.concatenate([getattr(b, f.name) for b in blocks]) for f in fields(Candles)))


def aggregate(candles: Candles, unit_minutes: int) -> Candles:
    """Roll finer candles up into ``unit_minutes`` candles aligned to the UTC epoch (so to the UTC day).

    A bucket without any finer candle gets no candle: gaps stay gaps.
    """
    if len(candles) == 0:
        return candles
    width = unit_minutes * 60
    bucket = candles.start // width
    firsts = np.flatnonzero(np.r_[True, bucket[1:] != bucket[:-1]])
    lasts = np.r_[firsts[1:], len(bucket)] - 1
    return Candles(
        start=bucket[firsts] * width,
        open=candles.open[firsts],
        high=np.maximum.reduceat(candles.high, firsts),
        low=np.minimum.reduceat(candles.low, firsts),
        close=candles.close[lasts],
        volume=np.add.reduceat(candles.volume, firsts),
        value=np.add.reduceat(candles.value, firsts),
        last_trade_ms=candles.last_trade_ms[lasts],
    )


class CandleSource(Protocol):
    """What the HTTP layer needs from a data set (simulated or recorded)."""

    def markets(self, now: float) -> list[MarketInfo]: ...

    def has_market(self, market: str) -> bool: ...

    def candles(self, market: str, unit_minutes: int, end: float, count: int, now: float) -> Candles:
        """Up to ``count`` newest candles with open time < ``end``, as known at ``now``, oldest first."""
        ...

    def extremes_52w(self, market: str, now: float) -> tuple[float, str, float, str]:
        """(highest price, its date, lowest price, its date) over the 52 weeks before ``now``."""
        ...

    def default_clock(self) -> float | None:
        """The replay clock at start-up; None means the real time."""
        ...


def tick_size(price: np.ndarray | float) -> np.ndarray:
    """Upbit's KRW order price unit for each price: the pipeline's table (one table, ``lib/tick_grid.py``)."""
    return krw_tick_size(np.maximum(np.asarray(price, dtype=float), _SMALLEST_PRICE))


def round_to_tick(price: np.ndarray, mode: str = "nearest") -> np.ndarray:
    """Snap prices to the tick of their band: ``nearest``, ``up`` (for highs) or ``down`` (for lows); at least one tick."""
    price = np.maximum(np.asarray(price, dtype=float), _SMALLEST_PRICE)
    return np.maximum(grid_round(price, krw_tick_size(price), mode), krw_tick_size(price))


def iso_seconds(epoch_seconds: np.ndarray) -> np.ndarray:
    """Upbit's candle time format (ISO-8601 without offset or fraction), vectorised: strftime per
    candle was most of a response's cost."""
    return np.datetime_as_string(np.asarray(epoch_seconds, dtype=np.int64).astype("datetime64[s]"), unit="s")
