"""Technical indicators over long candle frames (one row per market and time), grouped by market.

TA-Lib's C functions run on each market's contiguous slice of one sorted array: values agree with TA-Lib and
a market never sees its neighbour's rows. Frames must be sorted by (market, time) (``sort_candles``); a market
shorter than the warm-up gets NaN.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd
import talib

MARKET = "market"


def sort_candles(frame: pd.DataFrame, time_column: str = "candle_start") -> pd.DataFrame:
    """The frame sorted by (market, time) with a fresh RangeIndex: the layout every indicator expects."""
    return frame.sort_values([MARKET, time_column], kind="stable").reset_index(drop=True)


def group_starts(markets: pd.Series | np.ndarray) -> np.ndarray:
    """Row offsets where each market's slice starts (plus the end); raises if a market is not contiguous."""
    values = np.asarray(markets)
    if len(values) == 0:
        return np.array([0], dtype=np.int64)
    changes = np.flatnonzero(values[1:] != values[:-1]) + 1
    starts = np.concatenate(([0], changes, [len(values)]))
    if len(starts) - 1 != len(pd.unique(values)):
        raise ValueError("candles must be sorted by market (each market's rows contiguous): use sort_candles()")
    return starts


def apply_grouped(func: Callable[..., np.ndarray | tuple[np.ndarray, ...]], markets: pd.Series | np.ndarray,
                  *columns: np.ndarray, outputs: int = 1, **params) -> list[np.ndarray]:
    """Run a TA-Lib function once per market slice of ``columns``; return ``outputs`` full-length arrays."""
    arrays = [np.ascontiguousarray(c, dtype=np.float64) for c in columns]
    results = [np.full(len(arrays[0]), np.nan) for _ in range(outputs)]
    starts = group_starts(markets)
    for begin, end in zip(starts[:-1], starts[1:]):
        out = func(*(a[begin:end] for a in arrays), **params)
        for target, values in zip(results, out if outputs > 1 else (out,)):
            target[begin:end] = values
    return results


def _series(values: np.ndarray, frame: pd.DataFrame, name: str) -> pd.Series:
    return pd.Series(values, index=frame.index, name=name)


def ema(frame: pd.DataFrame, period: int, column: str = "close") -> pd.Series:
    """Exponential moving average, alpha = 2/(period+1), seeded with the SMA of the first ``period`` rows."""
    return _series(apply_grouped(talib.EMA, frame[MARKET], frame[column].to_numpy(), timeperiod=period)[0], frame, f"ema_{period}")


def rsi(frame: pd.DataFrame, period: int = 14, column: str = "close") -> pd.Series:
    """Wilder's RSI (0-100)."""
    return _series(apply_grouped(talib.RSI, frame[MARKET], frame[column].to_numpy(), timeperiod=period)[0], frame, f"rsi_{period}")


def atr(frame: pd.DataFrame, period: int = 14) -> pd.Series:
    """Wilder's average true range, in price units."""
    values = apply_grouped(talib.ATR, frame[MARKET], frame["high"].to_numpy(), frame["low"].to_numpy(),
                           frame["close"].to_numpy(), timeperiod=period)[0]
    return _series(values, frame, f"atr_{period}")


def ema_step(previous_ema: pd.Series | np.ndarray | float, price: pd.Series | np.ndarray | float, period: int):
    """The EMA after one more observation: how a forming bar updates an EMA of closed bars."""
    alpha = 2.0 / (period + 1.0)
    return alpha * price + (1.0 - alpha) * previous_ema
