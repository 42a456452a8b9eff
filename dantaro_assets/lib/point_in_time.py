"""Point-in-time inputs for snapshot ticks: each tick sees only candles closed before its ``as_of``.

The forming hour (or day) is built from the closed minutes and merged after the stored closed bars; what does
not depend on ``as_of`` is done once per partition and sampled per tick (docs/analyses.md, "Point in time").
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
import pandas as pd

MARKET = "market"
START = "candle_start"
OHLCV = ["open", "high", "low", "close", "volume", "value"]
MINUTE = pd.Timedelta(minutes=1)
HOUR = pd.Timedelta(hours=1)
DAY = pd.Timedelta(days=1)


def utc(moment: datetime | pd.Timestamp) -> pd.Timestamp:
    """A UTC timestamp (a naive one is taken as UTC)."""
    stamp = pd.Timestamp(moment)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def closed_before(candles: pd.DataFrame, as_of: pd.Timestamp, interval: pd.Timedelta) -> pd.DataFrame:
    """The candles closed by ``as_of`` (``candle_start + interval <= as_of``)."""
    return candles[candles[START] + interval <= as_of]


def regular_minutes(candles_1m: pd.DataFrame, start: datetime, end: datetime,
                    previous_close: pd.Series | None = None) -> pd.DataFrame:
    """A gap-filled 1-minute series for every market over [start, end), sorted by (market, candle_start).

    A minute without a trade (no candle) carries the previous close as open/high/low/close and zero
    volume and value. The close carried into ``start`` is the last candle before ``start`` in the
    input, else ``previous_close`` (index market, e.g. the last stored hourly close), so a market
    that has not traded for a while still has a price; minutes before any known price are left out.
    """
    start, end = utc(start), utc(end)
    minutes = pd.date_range(start, end, freq=MINUTE, inclusive="left")
    data = candles_1m[candles_1m[START] < end]
    seed = previous_close.dropna() if previous_close is not None else pd.Series(dtype="float64")
    if (data.empty and seed.empty) or len(minutes) == 0:
        return pd.DataFrame({c: pd.Series(dtype="float64") for c in [MARKET, START, *OHLCV]}).astype(
            {MARKET: object, START: "datetime64[ns, UTC]"})
    # Scatter every candle into a (market, minute) grid; column 0 holds the close carried into start.
    markets = pd.Index(np.union1d(data[MARKET].unique().astype(object), seed.index.to_numpy(dtype=object)))
    codes = markets.get_indexer(data[MARKET])
    slot = ((data[START] - start) // MINUTE).to_numpy()
    inside = slot >= 0
    width = len(minutes) + 1
    grid = {column: np.full(len(markets) * width, np.nan) for column in OHLCV}
    cells = codes[inside] * width + slot[inside] + 1
    for column in OHLCV:
        grid[column][cells] = data[column].to_numpy()[inside]
    before = data[~inside].sort_values(START).groupby(MARKET)["close"].last()
    close = grid["close"].reshape(len(markets), width)
    close[:, 0] = before.reindex(markets).fillna(seed.reindex(markets)).to_numpy()
    traded = ~np.isnan(close)
    carried = np.maximum.accumulate(np.where(traded, np.arange(width), 0), axis=1)
    close = np.take_along_axis(close, carried, axis=1)[:, 1:].ravel()
    columns = {"close": close}
    for column in ("open", "high", "low", "volume", "value"):
        values = grid[column].reshape(len(markets), width)[:, 1:].ravel()
        columns[column] = np.where(np.isnan(values), 0.0 if column in ("volume", "value") else close, values)
    known = ~np.isnan(close)
    frame = pd.DataFrame({
        MARKET: np.repeat(markets.to_numpy(dtype=object), len(minutes))[known],
        START: pd.DatetimeIndex(np.tile(minutes.asi8, len(markets))[known]).tz_localize("UTC"),
        **{column: columns[column][known] for column in OHLCV},
    })
    return frame


def forming_bars(candles_1m: pd.DataFrame, freq: pd.Timedelta) -> pd.DataFrame:
    """For every 1-minute candle, the bar of period ``freq`` formed by the candles of that period so far.

    Built from the traded candles (not the gap-filled minutes) so that a complete period equals the
    candle Upbit reports for it: open of the first trade, extremes of the traded minutes, and no bar
    for a period without a trade. Columns: market, candle_start (the period's start), known_at
    (minute + 1 min: the first as_of that may use it), open, high, low, close, volume, value.
    """
    frame = candles_1m.sort_values([MARKET, START], kind="stable").reset_index(drop=True)
    period = frame[START].dt.floor(freq)
    groups = frame.groupby([frame[MARKET], period], sort=False)
    return pd.DataFrame({
        MARKET: frame[MARKET],
        START: period,
        "known_at": frame[START] + MINUTE,
        "open": groups["open"].transform("first"),
        "high": groups["high"].cummax(),
        "low": groups["low"].cummin(),
        "close": frame["close"],
        "volume": groups["volume"].cumsum(),
        "value": groups["value"].cumsum(),
    })


def bars_as_of(stored: pd.DataFrame, forming: pd.DataFrame, as_of: pd.Timestamp, freq: pd.Timedelta,
               minutes_start: pd.Timestamp) -> pd.DataFrame:
    """Bars of period ``freq`` usable at ``as_of``: stored closed bars, then minute-built ones, then the forming bar.

    ``stored`` are closed bars from storage (candles_1h / candles_1d); ``forming`` is ``forming_bars``
    of the 1-minute candles from ``minutes_start`` on. Minute-built bars fill the periods storage does
    not hold yet (e.g. hours of the current day not yet fetched as candles_1h), but only periods the
    minutes cover from their start; the last bar of a market may still be forming (``complete``
    False). Sorted by (market, candle_start).
    """
    closed = closed_before(stored, as_of, freq)[[MARKET, START, *OHLCV]].assign(complete=True)
    known = forming[(forming["known_at"] <= as_of) & (forming[START] >= minutes_start)]
    latest = known[~known.duplicated([MARKET, START], keep="last")]
    built = latest[[MARKET, START, *OHLCV]].assign(complete=(latest[START] + freq <= as_of).to_numpy())
    return _merge(closed, built)


def _merge(stored: pd.DataFrame, built: pd.DataFrame) -> pd.DataFrame:
    """Stored bars plus the built bars of periods storage lacks, sorted by (market, candle_start)."""
    if not built.empty and not stored.empty:
        overlap = stored[stored[START] >= built[START].min()]  # only recent stored bars can collide
        keys = pd.MultiIndex.from_frame(overlap[[MARKET, START]])
        built = built[~pd.MultiIndex.from_frame(built[[MARKET, START]]).isin(keys)]
    merged = pd.concat([stored, built], ignore_index=True) if not built.empty else stored
    codes = pd.factorize(merged[MARKET], sort=True)[0]
    order = np.lexsort((merged[START].to_numpy(dtype="datetime64[ns]").view(np.int64), codes))
    return merged.take(order).reset_index(drop=True)


def resample_bars(bars: pd.DataFrame, freq: pd.Timedelta) -> pd.DataFrame:
    """Aggregate finer bars (e.g. hourly) into coarser periods (e.g. UTC days), per market."""
    period = bars[START].dt.floor(freq)
    ordered = bars.assign(**{START: period}).sort_values([MARKET, START], kind="stable")
    return (ordered.groupby([MARKET, START], sort=True)
            .agg(open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"),
                 volume=("volume", "sum"), value=("value", "sum"))
            .reset_index())


def price_at(minutes: pd.DataFrame, as_of: pd.Timestamp) -> pd.Series:
    """The last traded price per market before ``as_of`` (close of the minute ending at ``as_of``)."""
    last = minutes[minutes[START] == as_of - MINUTE]
    return last.set_index(MARKET)["close"].rename("price")


class CandleHistory:
    """Every candle input of a partition's ticks, prepared once and sampled per ``as_of``.

    Built from the stored candles an analysis asset loads (candles_1m over its lookback, candles_1h,
    candles_1d). ``minutes_start`` is where the 1-minute lookback starts (an hour boundary; a market
    without a trade since then carries its last stored hourly close) and
    ``minutes_end`` the last tick: the gap-filled minutes (``minutes``, for prices and minute
    returns) and the forming hours (from the traded candles) are computed once here; ``price``,
    ``hourly`` and ``daily`` then only select rows closed before ``as_of``.
    """

    def __init__(self, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame, candles_1d: pd.DataFrame,
                 minutes_start: datetime, minutes_end: datetime):
        self.minutes_start = utc(minutes_start)
        self.stored_hourly = candles_1h[[MARKET, START, *OHLCV]]
        stored_before = closed_before(self.stored_hourly, self.minutes_start, HOUR).sort_values(START, kind="stable")
        last_stored_close = stored_before.groupby(MARKET)["close"].last()
        self.minutes = regular_minutes(candles_1m, self.minutes_start, utc(minutes_end), previous_close=last_stored_close)
        traded = candles_1m[(candles_1m[START] >= self.minutes_start) & (candles_1m[START] < utc(minutes_end))]
        self.stored_daily = candles_1d[[MARKET, START, *OHLCV]]
        self._forming_hours = forming_bars(traded, HOUR)
        hourly_start = self.stored_hourly[START].min() if not self.stored_hourly.empty else self.minutes_start
        self._derived_days_start = min(utc(hourly_start), self.minutes_start).ceil("D")
        self._last_hourly: tuple[pd.Timestamp, pd.DataFrame] | None = None

    def price(self, as_of: pd.Timestamp) -> pd.Series:
        """Last price per market before ``as_of``."""
        return price_at(self.minutes, as_of)

    def hourly(self, as_of: pd.Timestamp) -> pd.DataFrame:
        """Hourly bars usable at ``as_of``: stored closed hours, minute-built hours, the forming hour last.

        The newest ``as_of``'s bars are kept: a tick's analyses (recommendations and the regime they
        state) read them twice. Treat the frame as read-only.
        """
        if self._last_hourly is None or self._last_hourly[0] != as_of:
            self._last_hourly = (as_of, bars_as_of(self.stored_hourly, self._forming_hours, as_of, HOUR, self.minutes_start))
        return self._last_hourly[1]

    def daily(self, as_of: pd.Timestamp, hourly: pd.DataFrame | None = None) -> pd.DataFrame:
        """Daily bars usable at ``as_of``: stored closed days, then days built from the hourly bars (the forming day last).

        Pass ``hourly`` when already built for this ``as_of`` to reuse it.
        """
        hours = self.hourly(as_of) if hourly is None else hourly
        closed = closed_before(self.stored_daily, as_of, DAY).assign(complete=True)
        # Days are built only after the earliest market's last stored day: older ones are stored.
        first = self._derived_days_start
        if not closed.empty:
            first = max(first, closed.groupby(MARKET)[START].max().min() + DAY)
        built = resample_bars(hours[hours[START] >= first], DAY)
        built["complete"] = (built[START] + DAY <= as_of).to_numpy()
        return _merge(closed, built)
