"""Indicators agree with their definitions written out here (loops and pandas formulas) and with TA-Lib on
real candles, and the grouped application never mixes markets."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import talib

from dantaro_assets.lib import indicators
from dantaro_assets_tests.lib.candle_data import real_candles, synthetic_minutes


@pytest.fixture(scope="module")
def hourly(upbit_data_dir) -> pd.DataFrame:
    frame = real_candles(upbit_data_dir, "1h")
    return indicators.sort_candles(frame[frame["candle_start"] >= "2025-06-01"])


def _reference(frame: pd.DataFrame, func, *columns, **params) -> np.ndarray:
    """TA-Lib called market by market: the definition the grouped version must reproduce."""
    out = np.full(len(frame), np.nan)
    for rows in frame.groupby("market", sort=False).groups.values():
        result = func(*(frame.loc[rows, c].to_numpy(dtype=float) for c in columns), **params)
        out[np.asarray(rows)] = result
    return out


def _own_ema(close: np.ndarray, period: int) -> np.ndarray:
    """EMA written out: SMA seed of the first ``period`` closes, then alpha = 2/(period+1)."""
    out = np.full(len(close), np.nan)
    out[period - 1] = close[:period].mean()
    alpha = 2.0 / (period + 1)
    for i in range(period, len(close)):
        out[i] = alpha * close[i] + (1 - alpha) * out[i - 1]
    return out


def _own_wilder_rsi(close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's RSI written out: mean of the first ``period`` gains/losses, then (prev*(n-1)+x)/n."""
    delta = np.diff(close)
    gain, loss = np.clip(delta, 0, None), np.clip(-delta, 0, None)
    out = np.full(len(close), np.nan)
    avg_gain, avg_loss = gain[:period].mean(), loss[:period].mean()
    out[period] = 100 * avg_gain / (avg_gain + avg_loss)
    for i in range(period + 1, len(close)):
        avg_gain = (avg_gain * (period - 1) + gain[i - 1]) / period
        avg_loss = (avg_loss * (period - 1) + loss[i - 1]) / period
        out[i] = 100 * avg_gain / (avg_gain + avg_loss)
    return out


def _own_wilder_atr(high: np.ndarray, low: np.ndarray, close: np.ndarray, period: int) -> np.ndarray:
    """Wilder's ATR written out: true range = max(high - low, |high - previous close|, |low - previous close|)
    from the second bar on; the first ATR is the mean of the first ``period`` true ranges, then (prev*(n-1)+TR)/n."""
    true_range = np.full(len(close), np.nan)
    for i in range(1, len(close)):
        true_range[i] = max(high[i] - low[i], abs(high[i] - close[i - 1]), abs(low[i] - close[i - 1]))
    out = np.full(len(close), np.nan)
    if len(close) <= period:
        return out
    out[period] = true_range[1 : period + 1].mean()
    for i in range(period + 1, len(close)):
        out[i] = (out[i - 1] * (period - 1) + true_range[i]) / period
    return out


def _pandas_rsi(close: pd.Series, period: int) -> pd.Series:
    """Wilder's RSI as a pandas formula: gains and losses smoothed with alpha = 1/period (SMA-seeded)."""
    delta = close.diff()
    smoothed = {}
    for name, moves in (("gain", delta.clip(lower=0)), ("loss", (-delta).clip(lower=0))):
        seeded = moves.copy()
        seeded.iloc[: period + 1] = np.nan
        seeded.iloc[period] = moves.iloc[1 : period + 1].mean()
        smoothed[name] = seeded.ewm(alpha=1.0 / period, adjust=False, ignore_na=True).mean()
    return 100.0 * smoothed["gain"] / (smoothed["gain"] + smoothed["loss"])


def test_atr_ema_and_rsi_follow_their_written_out_definitions_on_real_candles(hourly):
    for _, market in hourly.groupby("market", sort=False):
        market = market.reset_index(drop=True)
        high, low, close = (market[c].to_numpy() for c in ("high", "low", "close"))
        np.testing.assert_allclose(indicators.atr(market, 14).to_numpy(), _own_wilder_atr(high, low, close, 14),
                                   rtol=1e-9, equal_nan=True)
        np.testing.assert_allclose(indicators.rsi(market, 14).to_numpy(), _pandas_rsi(market["close"], 14).to_numpy(),
                                   rtol=1e-9, atol=1e-9, equal_nan=True)
        np.testing.assert_allclose(indicators.ema(market, 20).to_numpy(), _own_ema(close, 20), rtol=1e-9, equal_nan=True)


def test_grouped_indicators_follow_the_definitions_per_market_with_gaps_and_a_short_market():
    frame = synthetic_minutes(8, "2025-09-01 00:00", "2025-09-01 03:00", gap_share=0.2)
    short = frame[frame["market"] == "KRW-C000"].head(10)
    frame = indicators.sort_candles(pd.concat([frame[frame["market"] != "KRW-C000"], short]))
    atr, ema = indicators.atr(frame, 14).to_numpy(), indicators.ema(frame, 20).to_numpy()
    for rows in frame.groupby("market", sort=False).indices.values():
        part = frame.iloc[rows]
        high, low, close = (part[c].to_numpy() for c in ("high", "low", "close"))
        np.testing.assert_allclose(atr[rows], _own_wilder_atr(high, low, close, 14), rtol=1e-9, equal_nan=True)
        expected_ema = _own_ema(close, 20) if len(close) >= 20 else np.full(len(close), np.nan)
        np.testing.assert_allclose(ema[rows], expected_ema, rtol=1e-9, equal_nan=True)


def test_ema_and_rsi_follow_the_textbook_seeding_on_real_candles(hourly):
    """SMA-seeded EMA and Wilder RSI, checked against loops written from the definitions."""
    btc = hourly[hourly["market"] == "KRW-BTC"].reset_index(drop=True)
    close = btc["close"].to_numpy()
    np.testing.assert_allclose(indicators.ema(btc, 20).to_numpy(), _own_ema(close, 20), rtol=1e-9, equal_nan=True)
    rsi = indicators.rsi(btc, 14).to_numpy()
    # TA-Lib's RSI starts from the same Wilder seed; past the warm-up the two agree to rounding.
    np.testing.assert_allclose(rsi[200:], _own_wilder_rsi(close, 14)[200:], atol=1e-6)


@pytest.mark.parametrize(
    ("name", "func", "columns", "params"),
    [
        ("ema", talib.EMA, ("close",), {"timeperiod": 20}),
        ("rsi", talib.RSI, ("close",), {"timeperiod": 14}),
        ("atr", talib.ATR, ("high", "low", "close"), {"timeperiod": 14}),
    ],
)
def test_grouped_matches_per_market_talib_on_real_candles(hourly, name, func, columns, params):
    ours = getattr(indicators, name)(hourly, params["timeperiod"]).to_numpy()
    np.testing.assert_array_equal(ours, _reference(hourly, func, *columns, **params))
    assert hourly["market"].nunique() == 4 and np.isfinite(ours).sum() > 0.99 * len(ours)


def test_grouped_matches_per_market_talib_with_gaps_and_short_markets():
    """Many markets with missing minutes, one too short for the warm-up: no value leaks across markets."""
    frame = synthetic_minutes(12, "2025-09-01 00:00", "2025-09-01 03:00", gap_share=0.2)
    short = frame[frame["market"] == "KRW-C000"].head(10)
    frame = indicators.sort_candles(pd.concat([frame[frame["market"] != "KRW-C000"], short]))
    np.testing.assert_array_equal(indicators.ema(frame, 20).to_numpy(), _reference(frame, talib.EMA, "close", timeperiod=20))
    np.testing.assert_array_equal(indicators.atr(frame, 14).to_numpy(),
                                  _reference(frame, talib.ATR, "high", "low", "close", timeperiod=14))
    assert indicators.ema(frame, 20)[frame["market"] == "KRW-C000"].isna().all()


def test_unsorted_frames_are_refused():
    frame = synthetic_minutes(3, "2025-09-01 00:00", "2025-09-01 01:00").sample(frac=1.0, random_state=1)
    with pytest.raises(ValueError, match="sorted by market"):
        indicators.ema(frame, 10)


def test_ema_step_extends_a_series_like_one_more_row(hourly):
    btc = hourly[hourly["market"] == "KRW-BTC"].reset_index(drop=True)
    full = indicators.ema(btc, 20)
    assert indicators.ema_step(full.iloc[-2], btc["close"].iloc[-1], 20) == pytest.approx(full.iloc[-1], rel=1e-12)
