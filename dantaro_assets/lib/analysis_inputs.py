"""The one analysis contract: what an analysis reads, which ticks it computes, and its inputs, assembled once.

Every snapshot analysis is ``compute(inputs: AnalysisInputs, ticks, params) -> AnalysisResult``. ``Lookback``
says how far back it reads (the partition mappings derive from it), ``stored_ticks`` which ticks its stored
minutes reach, and ``AnalysisInputs.assemble`` builds a partition's inputs once to be sampled per tick
(docs/analyses.md, "Point in time" and "Declaring an analysis").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import cached_property
from typing import NamedTuple

import numpy as np
import pandas as pd

from dantaro_assets.lib.point_in_time import DAY, HOUR, MARKET, MINUTE, START, CandleHistory, utc
from dantaro_assets.lib.tick_grid import round_to_tick, tick_for
from dantaro_assets.lib.upbit.parsing import CAUTION_FLAGS

__all__ = ["BOOK_DELAY", "CAUTION_FLAGS", "DAY_COLUMN", "AnalysisInputs", "AnalysisResult", "Lookback", "Turnover", "book_at", "flags",
           "latest_day", "listed_at", "stored_ticks", "tick_times", "ticks_at"]

DAY_COLUMN = "day"  # the day column of upbit_markets and upbit_instruments


@dataclass(frozen=True)
class Lookback:
    """How far back an analysis reads: its partition mappings and the history a fresh install must fetch.

    ``minute_hours``: hours of 1-minute candles before the tick's hour (the tick's hour included
    besides); ``hourly_days`` / ``daily_days``: days of 1-hour / 1-day candles before the tick's day
    (0: the input is not read); the universe and tick sizes: the tick's day and the day before.
    """

    minute_hours: int
    hourly_days: int
    daily_days: int = 0
    universe_days: int = 1
    instruments: bool = False  # reads upbit_instruments (optional: the documented KRW table otherwise)

    @staticmethod
    def covering(*lookbacks: Lookback) -> Lookback:
        """The smallest lookback that holds every one of ``lookbacks`` (an analysis that reads what others read)."""
        return Lookback(
            minute_hours=max(lb.minute_hours for lb in lookbacks),
            hourly_days=max(lb.hourly_days for lb in lookbacks),
            daily_days=max(lb.daily_days for lb in lookbacks),
            universe_days=max(lb.universe_days for lb in lookbacks),
            instruments=any(lb.instruments for lb in lookbacks),
        )


def tick_times(window_start: datetime, window_end: datetime, interval_seconds: int,
               reached: datetime | None = None) -> pd.DatetimeIndex:
    """Snapshot times of a partition window [start, end): start + k*interval < end, and <= ``reached`` if given.

    With a 2-minute cadence an hour has ticks H:00, H:02, ..., H:58; the open hour only has the ticks
    already reached, and an hour whose first tick is still ahead has none (an empty index).
    """
    start, end = utc(window_start), utc(window_end)
    times = pd.date_range(start, end, freq=pd.Timedelta(seconds=interval_seconds), inclusive="left", name="as_of")
    if reached is not None:
        times = times[times <= utc(reached)]
    return times


def stored_ticks(window_start: datetime, window_end: datetime, interval_seconds: int, candles_1m: pd.DataFrame,
                 now: datetime | None = None) -> pd.DatetimeIndex:
    """The window's ticks whose minutes are stored: up to the newest stored minute's end, capped by ``now``.

    A tick reads the minutes before it, so a tick after the newest stored minute waits for the next run
    (nothing stored at all: no tick, not even the one at the window's start). ``now`` defaults to the
    UTC wall clock.
    """
    if candles_1m.empty:
        return tick_times(window_start, window_end, interval_seconds, reached=utc(window_start) - MINUTE)
    wall = utc(now or datetime.now(timezone.utc))
    return tick_times(window_start, window_end, interval_seconds, reached=min(wall, candles_1m[START].max() + MINUTE))


def latest_day(days: pd.Series, times: pd.DatetimeIndex) -> pd.DatetimeIndex:
    """For each of ``times``, the latest of ``days`` <= it (NaT where none is)."""
    known = pd.DatetimeIndex(pd.unique(days)).sort_values()
    position = known.searchsorted(pd.DatetimeIndex(times), side="right") - 1
    return pd.DatetimeIndex([known[p] if p >= 0 else pd.NaT for p in position], dtype=known.dtype)


def listed_at(frame: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.DataFrame | None:
    """Rows of ``frame`` (upbit_markets or upbit_instruments) of its latest day <= ``as_of``, indexed by
    market; None when no day <= ``as_of`` is stored."""
    if frame is None or frame.empty:
        return None
    days = frame[DAY_COLUMN]
    known = days[days <= as_of]
    if known.empty:
        return None
    return frame[days == known.max()].set_index(MARKET)


def ticks_at(instruments: pd.DataFrame | None, as_of: pd.Timestamp) -> pd.Series:
    """Upbit's tick per market of the newest stored instruments day <= as_of (empty when none is stored)."""
    newest = listed_at(instruments, as_of)
    return pd.Series(dtype=float) if newest is None else newest["tick_size"].astype(float)


# A tick's book is the first one fetched in [tick, tick + BOOK_DELAY): the book the run computing the tick fetched
# (on the stream a run reaches its fetch steps ~8 s after its schedule tick, over REST ~35 s: docs/operations.md).
# Books are fetched after their tick, never before it, and a recomputation finds the same stored book.
BOOK_DELAY = pd.Timedelta(seconds=60)


def book_at(books: pd.DataFrame | None, as_of: pd.Timestamp, stored_ticks: pd.Series) -> pd.DataFrame:
    """Per market (index), ``entry`` (the best ask, rounded **up** onto the market's grid: ``tick_for`` with its stored
    tick) and ``spread_bps`` of the tick's book: the first fetched in ``[as_of, as_of + BOOK_DELAY)``. Empty when
    no book was fetched for the tick (a backfill, a run later than that, no order book history)."""
    if books is None or books.empty:
        return pd.DataFrame({"entry": pd.Series(dtype=float), "spread_bps": pd.Series(dtype=float)})
    fetched = books[(books["as_of"] >= as_of) & (books["as_of"] < as_of + BOOK_DELAY)]
    first = fetched.sort_values("as_of", kind="stable").groupby(MARKET).first()
    ask = first["best_ask"].astype(float)
    entry = pd.Series(round_to_tick(ask, tick_for(ask, stored_ticks), "up"), index=first.index)
    return pd.DataFrame({"entry": entry, "spread_bps": first["spread_bps"].astype(float)})


def flags(listed: pd.DataFrame) -> pd.DataFrame:
    """``warning`` and ``caution`` (any of Upbit's caution flags) per market of a universe day."""
    cautions = listed.reindex(columns=CAUTION_FLAGS, fill_value=False).astype(bool)
    return pd.DataFrame({"warning": listed["warning"].astype(bool), "caution": cautions.any(axis=1)}, index=listed.index)


class Turnover:
    """KRW traded per market over any window that ends at a tick: closed hours plus the recent minutes.

    From ``minutes_start`` (the analysis's minute lookback, an hour boundary) on, the sum is exact over
    the 1-minute candles (a minute without a candle traded nothing). Before it, whole hours come from
    the stored 1-hour candles (candles_1h: an hour's value is the sum of its minutes' values), and a
    window starting inside such an hour takes that hour's value pro rata to the part of the hour it
    covers. So no tick re-reads a day of minutes; a window that starts at an hour boundary, or after
    ``minutes_start``, equals the sum of its minutes.
    """

    def __init__(self, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame, minutes_start: datetime,
                 minutes_end: datetime, hours_start: datetime | None = None):
        self.minutes_start = utc(minutes_start)
        minutes_end = utc(minutes_end)
        hours_start = self.minutes_start if hours_start is None else min(utc(hours_start).floor("h"), self.minutes_start)
        minutes = candles_1m[(candles_1m[START] >= self.minutes_start) & (candles_1m[START] < minutes_end)]
        hours = candles_1h[(candles_1h[START] >= hours_start) & (candles_1h[START] < self.minutes_start)]
        markets = pd.Index(np.union1d(minutes[MARKET].unique().astype(object), hours[MARKET].unique().astype(object)))
        minute_grid = pd.date_range(self.minutes_start - MINUTE, max(minutes_end, self.minutes_start), freq=MINUTE, inclusive="left")
        hour_grid = pd.date_range(hours_start - HOUR, self.minutes_start, freq=HOUR, inclusive="left")
        self._minutes = _cumulative(minutes, minute_grid, markets)  # row t: traded before t + 1 min
        self._hours = _cumulative(hours, hour_grid, markets)  # row h: traded before h + 1 h
        self._hour_value = hours.pivot(index=START, columns=MARKET, values="value").reindex(columns=markets).fillna(0.0)
        self._held = set(pd.DatetimeIndex(hours[START].unique())) | set(pd.DatetimeIndex(minutes[START].dt.floor("h").unique()))
        self.markets = markets

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        """KRW traded per market over [start, end) (``end`` at most the last tick)."""
        split = max(start, self.minutes_start)
        total = self._minutes.loc[end - MINUTE] - self._minutes.loc[split - MINUTE]
        if start < self.minutes_start:
            whole = start.ceil("h")
            total = total + self._hours.loc[self.minutes_start - HOUR] - self._hours.loc[whole - HOUR]
            if whole > start:
                head = self._hour_value.loc[start.floor("h")] if start.floor("h") in self._hour_value.index else 0.0
                total = total + head * ((whole - start) / HOUR)
        return total.rename("turnover")

    def hours_stored(self, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """Hours of [start, end) that storage covers (at least 1): hours without any candle of any market
        (a fresh install, a gap in storage) are unknown, and the window's sum must not read them as quiet."""
        covered = pd.Timedelta(0)
        for hour in pd.date_range(start.floor("h"), end, freq=HOUR, inclusive="left"):
            if hour in self._held:
                covered += min(end, hour + HOUR) - max(start, hour)
        return max(covered / HOUR, 1.0)


def _cumulative(candles: pd.DataFrame, grid: pd.DatetimeIndex, markets: pd.Index) -> pd.DataFrame:
    """Cumulative ``value`` per market over ``grid`` (its first row, before any candle, is zero)."""
    value = candles.pivot(index=START, columns=MARKET, values="value")
    return value.reindex(index=grid, columns=markets).fillna(0.0).cumsum()


class AnalysisResult(NamedTuple):
    """What an analysis computed for a partition: ``frame``, its rows (stored, then published), and ``per_tick``,
    one row of figures per tick (``as_of`` first) about how they came about; None when the rows say it all."""

    frame: pd.DataFrame
    per_tick: pd.DataFrame | None = None


@dataclass(frozen=True)
class AnalysisInputs:
    """Everything of a partition that does not depend on the tick, assembled once and sampled per tick.

    The candle history and the turnover are built on first use over the ticks' span; a partition without
    a tick has no span, and an analysis of no tick returns its empty frame without reading them.
    """

    universe: pd.DataFrame  # upbit_markets rows (day, market, warning, caution_*)
    instruments: pd.DataFrame | None  # upbit_instruments rows (day, market, tick_size); None: the KRW table
    _candles: tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame] = field(repr=False)  # candles_1m, candles_1h, candles_1d
    _span: tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp] | None  # minutes start, last tick, turnover start
    books: pd.DataFrame | None = None  # orderbook_top rows (as_of, market, best_ask, spread_bps, ...); None: last trades

    @cached_property
    def history(self) -> CandleHistory:
        """Every tick's candles: minutes from the minute lookback's start to the last tick, closed hours and days as stored."""
        minutes_start, last, _ = self._ticks_span()
        return CandleHistory(*self._candles, minutes_start, last)

    @cached_property
    def turnover(self) -> Turnover:
        """KRW turnover per market over windows ending at the ticks (market status and support levels never need it)."""
        minutes_start, last, hours_start = self._ticks_span()
        candles_1m, candles_1h, _ = self._candles
        return Turnover(candles_1m, candles_1h, minutes_start, last, hours_start)

    def _ticks_span(self) -> tuple[pd.Timestamp, pd.Timestamp, pd.Timestamp]:
        if self._span is None:
            raise ValueError("no tick to read candles for: an analysis of no tick returns its empty frame")
        return self._span

    @classmethod
    def assemble(cls, lookback: Lookback, ticks: pd.DatetimeIndex, *, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame,
                 upbit_markets: pd.DataFrame, candles_1d: pd.DataFrame | None = None,
                 upbit_instruments: pd.DataFrame | None = None, turnover_window: pd.Timedelta = DAY,
                 orderbook_top: pd.DataFrame | None = None) -> AnalysisInputs:
        """The inputs of ``ticks`` (one partition): minutes from ``lookback.minute_hours`` before the first
        tick's hour to the last tick, closed hours and days as stored, the turnover over
        ``turnover_window`` before any tick, and the order book tops stored for the ticks (``orderbook_top``, where fetched)."""
        span = None
        if len(ticks):
            first, last = ticks[0], ticks[-1]
            span = (first.floor("h") - lookback.minute_hours * HOUR, last, first - turnover_window)
        daily = candles_1d if candles_1d is not None else candles_1h.iloc[:0]
        instruments = upbit_instruments if upbit_instruments is not None and len(upbit_instruments) else None
        books = orderbook_top if orderbook_top is not None and len(orderbook_top) else None
        return cls(universe=upbit_markets, instruments=instruments, _candles=(candles_1m, candles_1h, daily), _span=span, books=books)
