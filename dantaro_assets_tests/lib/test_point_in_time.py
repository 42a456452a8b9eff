"""Gap filling and multi-timeframe bars use only candles closed before each as_of."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets_tests.lib.candle_data import (
    real_candles,
    synthetic_minutes,
    with_future_bars,
)

HOUR = pd.Timedelta(hours=1)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def test_regular_minutes_carry_the_previous_close_with_zero_volume():
    candles = pd.DataFrame({
        "market": ["KRW-A", "KRW-A", "KRW-A", "KRW-B"],
        "candle_start": [ts("2025-09-01 09:58"), ts("2025-09-01 10:00"), ts("2025-09-01 10:03"), ts("2025-09-01 10:02")],
        "open": [1.0, 2.0, 5.0, 7.0], "high": [1.5, 3.0, 6.0, 8.0], "low": [0.5, 1.0, 4.0, 6.0],
        "close": [1.2, 2.5, 5.5, 7.5], "volume": [1.0, 2.0, 3.0, 4.0], "value": [1.0, 5.0, 16.0, 30.0],
    })
    minutes = pit.regular_minutes(candles, ts("2025-09-01 09:59"), ts("2025-09-01 10:05"))
    a = minutes[minutes["market"] == "KRW-A"].set_index("candle_start")
    assert list(a.index.strftime("%H:%M")) == ["09:59", "10:00", "10:01", "10:02", "10:03", "10:04"]
    assert list(a["close"]) == [1.2, 2.5, 2.5, 2.5, 5.5, 5.5]
    assert list(a["open"]) == [1.2, 2.0, 2.5, 2.5, 5.0, 5.5]
    assert list(a["high"]) == [1.2, 3.0, 2.5, 2.5, 6.0, 5.5]
    assert list(a["volume"]) == [0.0, 2.0, 0.0, 0.0, 3.0, 0.0]
    b = minutes[minutes["market"] == "KRW-B"]
    assert list(b["candle_start"].dt.strftime("%H:%M")) == ["10:02", "10:03", "10:04"]  # nothing to carry before
    assert minutes[["market", "candle_start"]].equals(minutes.sort_values(["market", "candle_start"])[["market", "candle_start"]])


def test_hours_built_from_real_minutes_match_upbit_hour_candles(upbit_data_dir):
    minutes = real_candles(upbit_data_dir, "1m")
    hours = real_candles(upbit_data_dir, "1h")
    day = minutes[(minutes["candle_start"] >= "2025-09-10") & (minutes["candle_start"] < "2025-09-11")]
    built = pit.resample_bars(day, HOUR).set_index(["market", "candle_start"])
    upbit = hours.set_index(["market", "candle_start"]).loc[built.index]
    np.testing.assert_allclose(built[["open", "high", "low", "close"]], upbit[["open", "high", "low", "close"]], rtol=1e-12)
    np.testing.assert_allclose(built["volume"], upbit["volume"], rtol=1e-6)


@pytest.fixture(scope="module")
def history_inputs():
    """30 synthetic markets: 2 days of minutes, stored hours and days closed before 12:00 of day 2."""
    minutes = synthetic_minutes(30, "2025-09-01 00:00", "2025-09-02 13:00", gap_share=0.1)
    hours = pit.resample_bars(minutes, HOUR)
    days = pit.resample_bars(minutes, pd.Timedelta(days=1))
    return minutes, hours, days


def _history(minutes, hours, days, as_of_limit=None):
    start = ts("2025-09-01 12:00")
    if as_of_limit is not None:
        minutes = minutes[minutes["candle_start"] < as_of_limit]
    return pit.CandleHistory(minutes[minutes["candle_start"] >= start - HOUR], hours, days, start, ts("2025-09-02 12:58"))


@pytest.mark.parametrize("as_of", ["2025-09-02 12:00", "2025-09-02 12:37", "2025-09-02 12:58"])
def test_history_at_as_of_ignores_everything_after_it(history_inputs, as_of):
    minutes, hours, days = history_inputs
    as_of = ts(as_of)
    stored_hours = hours[hours["candle_start"] < ts("2025-09-02 12:00")]
    stored_days = days[days["candle_start"] < ts("2025-09-02")]
    full = _history(minutes, stored_hours, stored_days)
    cut = _history(minutes, stored_hours[stored_hours["candle_start"] + HOUR <= as_of],
                   stored_days[stored_days["candle_start"] + pd.Timedelta(days=1) <= as_of], as_of_limit=as_of)
    pd.testing.assert_series_equal(full.price(as_of), cut.price(as_of))
    pd.testing.assert_frame_equal(full.hourly(as_of), cut.hourly(as_of))
    pd.testing.assert_frame_equal(full.daily(as_of), cut.daily(as_of))


@pytest.mark.parametrize("as_of", ["2025-09-02 12:00", "2025-09-02 12:37", "2025-09-02 12:58"])
def test_stored_hours_and_days_after_as_of_never_reach_it(history_inputs, as_of):
    """Storage holding the hours from as_of on and the days from as_of's day on (tenfold prices): price, hours
    and days at as_of equal those from the closed candles alone; a leak through stored bars fails here."""
    minutes, hours, days = history_inputs
    as_of = ts(as_of)
    closed_hours = hours[hours["candle_start"] + HOUR <= as_of]
    closed_days = days[days["candle_start"] + pd.Timedelta(days=1) <= as_of]
    leaky = _history(minutes, with_future_bars(closed_hours, as_of.floor("h"), HOUR, count=5),
                     with_future_bars(closed_days, as_of.floor("D"), pd.Timedelta(days=1), count=3))
    assert (leaky.stored_hourly["candle_start"] >= as_of.floor("h")).any()
    assert (leaky.stored_daily["candle_start"] >= as_of.floor("D")).any()
    cut = _history(minutes, closed_hours, closed_days, as_of_limit=as_of)
    pd.testing.assert_series_equal(leaky.price(as_of), cut.price(as_of))
    pd.testing.assert_frame_equal(leaky.hourly(as_of), cut.hourly(as_of))
    pd.testing.assert_frame_equal(leaky.daily(as_of), cut.daily(as_of))


def test_forming_hour_and_day_are_built_from_closed_minutes(history_inputs):
    minutes, hours, days = history_inputs
    as_of = ts("2025-09-02 12:37")
    history = _history(minutes, hours[hours["candle_start"] < ts("2025-09-02 09:00")], days[days["candle_start"] < ts("2025-09-02")])
    closed = minutes[minutes["candle_start"] < as_of]
    hourly = history.hourly(as_of).set_index(["market", "candle_start"])
    expected_hour = pit.resample_bars(closed[closed["candle_start"] >= ts("2025-09-02 12:00")], HOUR).set_index(["market", "candle_start"])
    pd.testing.assert_frame_equal(hourly.loc[expected_hour.index, expected_hour.columns], expected_hour, check_exact=False, rtol=1e-12)
    assert not hourly.loc[expected_hour.index, "complete"].any()
    # 09:00-11:00 are not stored: they come from the minutes, complete, and equal the true hours.
    built = hourly.xs(ts("2025-09-02 10:00"), level="candle_start")
    truth = hours[hours["candle_start"] == ts("2025-09-02 10:00")].set_index("market")
    pd.testing.assert_frame_equal(built[truth.columns.drop("candle_start")], truth.drop(columns="candle_start"), check_exact=False, rtol=1e-12)
    daily = history.daily(as_of).set_index(["market", "candle_start"])
    expected_day = pit.resample_bars(closed[closed["candle_start"] >= ts("2025-09-02")], pd.Timedelta(days=1)).set_index(["market", "candle_start"])
    pd.testing.assert_frame_equal(daily.loc[expected_day.index, expected_day.columns], expected_day, check_exact=False, rtol=1e-9)
    assert daily.loc[(slice(None), ts("2025-09-01")), "complete"].all()
    assert history.price(as_of).equals(closed.groupby("market")["close"].last().rename("price").rename_axis("market"))


def test_a_market_quiet_since_the_lookback_start_carries_its_last_stored_hourly_close(history_inputs):
    minutes, hours, days = history_inputs
    as_of = ts("2025-09-02 12:37")
    quiet = minutes[~((minutes["market"] == "KRW-C005") & (minutes["candle_start"] >= ts("2025-09-02 11:00")))]
    history = pit.CandleHistory(quiet[quiet["candle_start"] >= ts("2025-09-02 11:00")], hours[hours["candle_start"] < ts("2025-09-02 11:00")],
                                days, ts("2025-09-02 11:00"), ts("2025-09-02 12:58"))
    last_close = hours[(hours["market"] == "KRW-C005") & (hours["candle_start"] < ts("2025-09-02 11:00"))]["close"].iloc[-1]
    assert history.price(as_of)["KRW-C005"] == last_close
    carried = history.minutes[history.minutes["market"] == "KRW-C005"]
    assert len(carried) == 118 and (carried["volume"] == 0).all() and (carried["high"] == last_close).all()
