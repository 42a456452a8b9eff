"""Scoring rules, universe filters, point-in-time behaviour and determinism of the recommendations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.recommendations import analysis
from dantaro_assets.recommendations.analysis import (
    COMPONENTS,
    compute_recommendations,
)
from dantaro_assets.support_levels.analysis import compute_support_levels

from .conftest import END

MIN_TURNOVER = 1e7
HOUR = END - pd.Timedelta(hours=5)
TICKS = pit.ticks(HOUR, HOUR + pd.Timedelta(hours=1), 300)


def _run(market, ticks=TICKS, candles_1m=None, candles_1h=None, candles_1d=None, top_n=analysis.TOP_N):
    return compute_recommendations(
        market.candles_1m if candles_1m is None else candles_1m,
        market.candles_1h if candles_1h is None else candles_1h,
        market.candles_1d if candles_1d is None else candles_1d,
        market.upbit_markets, ticks, compute_support_levels, min_turnover_krw=MIN_TURNOVER, top_n=top_n,
    )


@pytest.fixture(scope="module")
def partition(market):
    return _run(market)


def test_snapshot_shape_and_invariants(partition, market):
    recs, counts = partition
    assert set(recs["as_of"]) == set(TICKS)
    for _, tick in recs.groupby("as_of"):
        assert list(tick["rank"]) == list(range(1, len(tick) + 1))
        assert tick["score"].is_monotonic_decreasing
    assert recs["score"].between(0, 100).all()
    assert recs[COMPONENTS].stack().between(0, 100).all()
    assert ((recs["stop"] < recs["entry"]) & (recs["entry"] < recs["target"])).all()
    assert "KRW-M000" not in set(recs["market"])  # warning
    assert "KRW-M002" not in set(recs["market"])  # thin turnover
    assert (recs.loc[recs["market"] == "KRW-M001", "caution"] == "price_fluctuations").all()
    assert (recs.loc[recs["market"] != "KRW-M001", "caution"] == "").all()
    assert list(counts["as_of"]) == list(TICKS)
    assert (counts["excluded_warning"] == 1).all() and (counts["excluded_turnover"] == 1).all()
    assert (counts["eligible"] == market.upbit_markets["market"].nunique() - 2).all()
    reasons = recs["reasons"].iloc[0]
    assert set(reasons) == set(COMPONENTS)
    assert recs["summary"].iloc[0].startswith(f"{recs['market'].iloc[0]} {recs['score'].iloc[0]:.0f}: ")


def test_entry_is_the_last_price_before_as_of(partition, market):
    recs, _ = partition
    row = recs.iloc[-1]
    minutes = market.candles_1m
    before = minutes[(minutes["market"] == row["market"]) & (minutes["candle_start"] < row["as_of"])]
    assert row["entry"] == before.sort_values("candle_start")["close"].iloc[-1]


def test_top_n_keeps_the_best(market, partition):
    recs, _ = partition
    top3, _ = _run(market, ticks=TICKS[:1], top_n=3)
    first = recs[recs["as_of"] == TICKS[0]].head(3).reset_index(drop=True)
    pd.testing.assert_frame_equal(top3, first)


@pytest.mark.parametrize("tick", [0, 7, 11])
def test_point_in_time_truncating_at_as_of_changes_nothing(market, partition, tick):
    """Candles that were not closed at as_of (and later ones) must not affect the snapshot."""
    as_of = TICKS[tick]
    m1 = market.candles_1m[market.candles_1m["candle_start"] + pd.Timedelta(minutes=1) <= as_of]
    h1 = market.candles_1h[market.candles_1h["candle_start"] + pd.Timedelta(hours=1) <= as_of]
    d1 = market.candles_1d[market.candles_1d["candle_start"] + pd.Timedelta(days=1) <= as_of]
    truncated, _ = _run(market, ticks=TICKS[tick : tick + 1], candles_1m=m1, candles_1h=h1, candles_1d=d1)
    full = partition[0][partition[0]["as_of"] == as_of].reset_index(drop=True)
    assert len(full) > 0
    pd.testing.assert_frame_equal(truncated, full)


def test_missing_stored_hours_are_rebuilt_from_minutes(market, partition):
    """Hours storage does not hold yet (today's candles_1h not fetched) come from the minutes: same snapshot."""
    h1 = market.candles_1h[market.candles_1h["candle_start"] < HOUR - pd.Timedelta(hours=3)]
    recs, _ = _run(market, candles_1h=h1)
    pd.testing.assert_frame_equal(recs, partition[0])


def test_recomputing_gives_identical_rows(market, partition):
    again, _ = _run(market)
    pd.testing.assert_frame_equal(again, partition[0])


def test_no_eligible_market_gives_an_empty_frame_with_the_columns(market):
    recs, counts = compute_recommendations(
        market.candles_1m, market.candles_1h, market.candles_1d, market.upbit_markets, TICKS[:1],
        compute_support_levels, min_turnover_krw=1e30,
    )
    assert recs.empty and list(recs.columns) == analysis.RECOMMENDATION_COLUMNS
    tick = counts.iloc[0]
    assert tick["eligible"] == 0 and tick["excluded_turnover"] == tick["listed"] - tick["excluded_warning"]


def test_nearest_levels_and_a_target_worth_the_trade():
    levels = pd.DataFrame(
        {
            "market": ["KRW-A"] * 4 + ["KRW-B"],
            "side": ["support", "support", "resistance", "resistance", "support"],
            "level": [95.0, 98.0, 100.5, 104.0, 40.0],
            "zone_low": [94.0, 97.5, 100.2, 103.0, 39.0],
            "zone_high": [96.0, 98.5, 101.0, 105.0, 41.0],
        }
    )
    price = pd.Series({"KRW-A": 100.0, "KRW-B": 50.0})
    atr = pd.Series({"KRW-A": 1.0, "KRW-B": 1.0})
    out = analysis.nearest_levels(levels, price, atr)
    a, b = out.loc["KRW-A"], out.loc["KRW-B"]
    assert (a["support_low"], a["support_high"]) == (97.5, 98.5)  # the nearest support below
    assert a["resistance_low"] == 100.2  # the nearest resistance, 0.2 ATR away ...
    assert a["target_level"] == 103.0  # ... is too close for a target: the next one, >= 1 ATR away
    assert b["support_high"] == 41.0 and np.isnan(b["resistance_low"]) and np.isnan(b["target_level"])


def test_recorded_upbit_candles(upbit_data_dir):
    """Real candles (4 markets): a full hour of snapshots, point-in-time against candles cut at the last tick."""
    m1 = pd.read_parquet(upbit_data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
    h1 = pd.read_parquet(upbit_data_dir / "candles_1h.parquet").rename(columns={"candle_start_utc": "candle_start"})
    for frame in (m1, h1):  # the recorded 1m/1h files carry no turnover: derive it as the replay server does
        frame["value"] = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    hour = pd.Timestamp("2025-09-20 14:00", tz="UTC")
    m1 = m1[(m1["candle_start"] >= hour - pd.Timedelta(hours=25)) & (m1["candle_start"] < hour + pd.Timedelta(hours=2))]
    daily = pit.resample_bars(h1, pit.DAY)
    universe = pd.DataFrame({"day": hour.floor("D"), "market": sorted(m1["market"].unique()), "warning": False})
    universe = universe.assign(**{flag: False for flag in analysis.CAUTION_FLAGS})
    ticks = pit.ticks(hour, hour + pd.Timedelta(hours=1), 300)
    recs, counts = compute_recommendations(m1, h1, daily, universe, ticks, compute_support_levels, min_turnover_krw=1e9)
    assert (counts["eligible"] == 4).all() and len(recs) == 4 * len(ticks)
    assert ((recs["stop"] < recs["entry"]) & (recs["entry"] < recs["target"])).all()
    last = ticks[-1]
    cut, _ = compute_recommendations(
        m1[m1["candle_start"] < last], h1[h1["candle_start"] + pit.HOUR <= last], daily[daily["candle_start"] + pit.DAY <= last],
        universe, ticks[-1:], compute_support_levels, min_turnover_krw=1e9,
    )
    pd.testing.assert_frame_equal(cut, recs[recs["as_of"] == last].reset_index(drop=True))


def test_turnover_of_a_partly_stored_window_is_scaled_to_24_hours_not_read_as_a_quiet_day():
    """A fresh install stores only the last hours: 6 h at 1e8 KRW/h is a 2.4e9 KRW day, not 6e8."""
    as_of = pd.Timestamp("2026-01-02T12:00Z")
    minutes = pd.date_range(as_of - pd.Timedelta(hours=6), as_of, freq="1min", inclusive="left")
    candles = pd.DataFrame({"market": "KRW-AAA", "candle_start": minutes, "value": 1e8 / 60})
    markets = pd.DataFrame({"day": [pd.Timestamp("2026-01-02T00:00Z")], "market": ["KRW-AAA"], "warning": [False]})
    turnover = analysis.Turnover.from_candles(candles, as_of - analysis.TURNOVER_WINDOW, as_of)

    universe, counts = analysis.universe_at(markets, turnover, as_of, min_turnover_krw=1e9)

    assert turnover.hours_stored(as_of - analysis.TURNOVER_WINDOW, as_of) == 6.0
    assert universe.loc["KRW-AAA", "turnover_24h"] == pytest.approx(2.4e9)
    assert counts.excluded_turnover == 0
