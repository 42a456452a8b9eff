"""Replay of recorded real Upbit candles (the parquet files of ../shared/data/upbit).

Recorded intervals are served exactly, others aggregated from them, nothing after the replay clock;
the rules: docs/replay.md, "Recorded replay".
"""

from __future__ import annotations

import functools
import math
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from dantaro_replay.core import DAY_MINUTES, Candles, MarketInfo, aggregate
from dantaro_replay.simulated import KNOWN_NAMES

FILES = {1: "candles_1m.parquet", 60: "candles_1h.parquet", DAY_MINUTES: "candles_1d.parquet"}


def _series(frame: pd.DataFrame, interval: int) -> Candles:
    start = frame["candle_start_utc"].to_numpy(dtype="datetime64[s]").astype(np.int64)
    o, h, l, c, v = (frame[col].to_numpy(dtype=float) for col in ("open", "high", "low", "close", "volume"))
    value = frame["value"].to_numpy(dtype=float) if "value" in frame else v * (o + h + l + c) / 4
    return Candles(start, o, h, l, c, v, value, (start + interval * 60) * 1000 - 1)


class RecordedMarket:
    """The recorded data source (its rules: docs/replay.md, "Recorded replay")."""

    def __init__(self, data_dir: Path):
        self.data_dir = Path(data_dir)
        self._series: dict[tuple[str, int], Candles] = {}
        order: list[str] = []
        for interval, name in FILES.items():
            path = self.data_dir / name
            if not path.exists():
                continue
            frame = pd.read_parquet(path).sort_values(["market", "candle_start_utc"], kind="stable")
            if frame.duplicated(["market", "candle_start_utc"]).any():
                raise ValueError(f"{path} has duplicate (market, candle_start_utc) rows")
            for market, rows in frame.groupby("market", sort=False):
                self._series[(market, interval)] = _series(rows, interval)
                if market not in order:
                    order.append(market)
        if not self._series:
            raise FileNotFoundError(f"no recorded candles ({', '.join(FILES.values())}) in {self.data_dir}")
        self._markets = [self._info(market) for market in order]
        self._known = set(order)
        self._aggregated = functools.lru_cache(maxsize=256)(self._aggregate_series)

    @staticmethod
    def _info(market: str) -> MarketInfo:
        ticker = market.split("-", 1)[-1]
        english, korean = KNOWN_NAMES.get(ticker, (ticker, ticker))
        return MarketInfo(market, korean, english)

    # --- CandleSource ---
    def default_clock(self) -> float | None:
        finest = min((interval for (_, interval) in self._series), default=1)
        return max(float(s.start[-1]) + finest * 60 for (_, interval), s in self._series.items() if interval == finest)

    def has_market(self, market: str) -> bool:
        return market in self._known

    def markets(self, now: float) -> list[MarketInfo]:
        return list(self._markets)

    def candles(self, market: str, unit_minutes: int, end: float, count: int, now: float) -> Candles:
        width = unit_minutes * 60
        series = self._aggregated(market, unit_minutes)
        closed = series.before(min(end, math.floor(now / width) * width))
        blocks = [closed.take(slice(max(0, len(closed) - count), None))]
        forming_start = math.floor(now / width) * width
        if forming_start < end:
            blocks.append(self._forming(market, unit_minutes, forming_start, now))
        merged = Candles.concat(blocks)
        return merged.take(slice(max(0, len(merged) - count), None))

    def extremes_52w(self, market: str, now: float) -> tuple[float, str, float, str]:
        days = self.candles(market, DAY_MINUTES, now, 366, now).since(now - 365 * 86_400)
        if len(days) == 0:
            return 0.0, "", 0.0, ""
        hi, lo = int(np.argmax(days.high)), int(np.argmin(days.low))

        def day(i: int) -> str:
            return datetime.fromtimestamp(int(days.start[i]), tz=timezone.utc).strftime("%Y-%m-%d")

        return float(days.high[hi]), day(hi), float(days.low[lo]), day(lo)

    # --- internals ---
    def _intervals(self, market: str) -> list[int]:
        return sorted(interval for (m, interval) in self._series if m == market)

    def _aggregate_series(self, market: str, unit_minutes: int) -> Candles:
        """The recorded series at this interval, extended by aggregates of finer recordings.

        The coarsest recorded divisor of the interval is served (exactly, when it is the interval
        itself); finer recordings fill only the time outside its span, so recorded gaps stay gaps.
        """
        bases = sorted((i for i in self._intervals(market) if i <= unit_minutes and unit_minutes % i == 0), reverse=True)
        merged = Candles.empty()
        for base in bases:
            series = self._series[(market, base)]
            if base != unit_minutes:
                series = aggregate(series, unit_minutes)
            if len(merged):
                outside = (series.start < merged.start[0]) | (series.start > merged.start[-1])
                series = series.take(outside)
                combined = Candles.concat([merged, series])
                merged = combined.take(np.argsort(combined.start, kind="stable"))
            else:
                merged = series
        return merged

    def _forming(self, market: str, unit_minutes: int, start: float, now: float) -> Candles:
        """The candle at the clock, from the finest recorded candles of it that closed by ``now``."""
        finer = [i for i in self._intervals(market) if i < unit_minutes and unit_minutes % i == 0]
        if not finer:
            return Candles.empty()
        interval = min(finer)
        # closed by now: start + interval <= now, i.e. start < floor(now - interval) + 1 (starts are whole seconds)
        parts = self._series[(market, interval)].since(start).before(math.floor(now - interval * 60) + 1)
        if len(parts) == 0:
            return Candles.empty()
        return aggregate(parts, unit_minutes)
