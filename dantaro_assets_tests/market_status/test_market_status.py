"""market_status on real candles: formulas, point-in-time ticks, schema checks, and a real materialisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest
import talib

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, tick_times
from dantaro_assets.lib.checks import pandera_check
from dantaro_assets.market_status.analysis import COLUMNS, LOOKBACK, compute_market_status
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.market_status.schemas import market_status_schema
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import (
    always_failing_schema,
    materialise,
    real_candles,
    store,
    universe,
    with_future_bars,
)

HOUR = pd.Timestamp("2025-09-27 15:00", tz="UTC")
PARTITION = "2025-09-27-15:00"
MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-XRP"]


@pytest.fixture(scope="module")
def postgres_resource(pg_url, settings):
    """The module's own schema (io_resources and snapshot_store take it): the tests read every stored market-status
    row, and other modules' runs on this worker store the open hour's rows in the run's schema."""
    with own_schema(pg_url, f"{settings.db_schema}_market_status") as resource:
        yield resource


@pytest.fixture(scope="module")
def candles(upbit_data_dir):
    """Real 1m candles over the lookback and the hour; real 1h candles of the five days before, lagging 2 hours."""
    minutes = real_candles(upbit_data_dir, "1m")
    start = HOUR - pd.Timedelta(hours=LOOKBACK.minute_hours)
    minutes = minutes[(minutes["candle_start"] >= start) & (minutes["candle_start"] < HOUR + pit.HOUR)].reset_index(drop=True)
    hours = real_candles(upbit_data_dir, "1h")
    day = HOUR.floor("D")
    hours = hours[(hours["candle_start"] >= day - pd.Timedelta(days=LOOKBACK.hourly_days)) & (hours["candle_start"] < HOUR - 2 * pit.HOUR)]
    markets = universe(MARKETS, ["2025-09-26", "2025-09-27"], warning=("KRW-SOL",), caution=("KRW-SOL", "KRW-ETH"))
    return minutes, hours.reset_index(drop=True), markets


def _status(minutes, hours, markets, ticks):
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=minutes, candles_1h=hours, upbit_markets=markets)
    return compute_market_status(inputs, ticks).frame


@pytest.fixture(scope="module")
def status(candles):
    return _status(*candles, tick_times(HOUR, HOUR + pit.HOUR, 120))


def test_one_row_per_two_minute_tick_with_documented_columns(status):
    assert list(status.columns) == COLUMNS
    assert len(status) == 30 and status["as_of"].iloc[-1] == HOUR + pd.Timedelta(minutes=58)
    assert pandera_check(market_status_schema(HOUR, HOUR + pit.HOUR), status).passed
    assert (status["markets"] == 4).all() and (status["markets_warning"] == 1).all() and (status["markets_caution"] == 2).all()


def test_breadth_returns_and_turnover_match_a_direct_computation(candles, status):
    minutes, hours, _ = candles
    row = status.iloc[7]
    as_of = row["as_of"]
    regular = pit.regular_minutes(minutes, HOUR - pd.Timedelta(hours=LOOKBACK.minute_hours), as_of)
    close = regular.pivot(index="candle_start", columns="market", values="close")
    now, hour_ago = close.loc[as_of - pit.MINUTE], close.loc[as_of - pd.Timedelta(minutes=61)]
    prev_day_close = hours[hours["candle_start"] < as_of.floor("D")].groupby("market")["close"].last()
    ret = now / hour_ago - 1
    assert row["breadth_1h"] == pytest.approx((ret > 0).mean())
    assert row["breadth_day"] == pytest.approx((now > prev_day_close).mean())
    assert row["median_return_1h_pct"] == pytest.approx(100 * ret.median())
    assert row["dispersion_1h_pct"] == pytest.approx(100 * ret.std(ddof=0))
    traded = minutes[(minutes["candle_start"] >= as_of - pit.HOUR) & (minutes["candle_start"] < as_of)]
    assert row["turnover_krw_1h"] == pytest.approx(traded["value"].sum(), rel=1e-9)


def test_reference_values_come_from_the_closed_hours(candles, status):
    """Previous close, 24 h turnover norm and 24 h volatility use the hourly bars closed before the hour."""
    minutes, hours, _ = candles
    row = status.iloc[4]
    as_of = row["as_of"]
    last_day = hours[(hours["candle_start"] >= HOUR - pd.Timedelta(hours=24)) & (hours["candle_start"] < HOUR)]
    assert len(last_day) < 4 * 24  # today's hours are not all stored: the rest come from the minutes
    built = pit.resample_bars(minutes[(minutes["candle_start"] < HOUR)], pit.HOUR)
    day = pd.concat([last_day, built]).drop_duplicates(["market", "candle_start"])
    day = day[(day["candle_start"] >= HOUR - pd.Timedelta(hours=24)) & (day["candle_start"] < HOUR)]
    traded = minutes[(minutes["candle_start"] >= as_of - pit.HOUR) & (minutes["candle_start"] < as_of)]
    assert row["turnover_ratio_24h"] == pytest.approx(traded["value"].sum() / (day["value"].sum() / 24), rel=1e-9)
    btc = day[day["market"] == "KRW-BTC"]
    assert len(btc) == 24
    parkinson = np.log(btc["high"] / btc["low"]) / np.sqrt(4 * np.log(2))
    assert row["btc_vol_24h_pct"] == pytest.approx(100 * np.sqrt((parkinson ** 2).mean()), rel=1e-9)
    btc_minutes = traded[traded["market"] == "KRW-BTC"]
    expected_1h = np.log(btc_minutes["high"].max() / btc_minutes["low"].min()) / np.sqrt(4 * np.log(2))
    assert row["btc_vol_1h_pct"] == pytest.approx(100 * expected_1h, rel=1e-9)


def test_btc_trend_is_talib_ema_of_hourly_closes_with_the_forming_hour(candles, status):
    minutes, hours, _ = candles
    row = status.iloc[10]
    as_of = row["as_of"]
    hourly = pd.concat([hours, pit.resample_bars(minutes[minutes["candle_start"] < as_of], pit.HOUR)])
    btc = hourly[hourly["market"] == "KRW-BTC"].drop_duplicates("candle_start").sort_values("candle_start")
    ema = talib.EMA(btc["close"].to_numpy(), timeperiod=20)
    assert row["btc_ema_20h"] == pytest.approx(ema[-1], rel=1e-12)
    assert row["btc_price"] == btc["close"].iloc[-1]
    assert row["btc_ema_slope_pct_h"] == pytest.approx(100 * (ema[-1] / ema[-5] - 1) / 3, rel=1e-9)


def test_ticks_do_not_change_when_later_candles_are_cut_off(candles, status):
    minutes, hours, markets = candles
    for position in (0, 13, 29):
        as_of = status["as_of"].iloc[position]
        cut = _status(minutes[minutes["candle_start"] < as_of], hours, markets, pd.DatetimeIndex([as_of]))
        pd.testing.assert_frame_equal(cut, status.iloc[[position]].reset_index(drop=True))


def test_stored_hours_after_the_tick_change_nothing(candles, status):
    """Stored hours from the tick's hour on (tenfold prices) leave every tick as it is."""
    minutes, hours, markets = candles
    leaky = _status(minutes, with_future_bars(hours, HOUR, pit.HOUR, count=6), markets, pd.DatetimeIndex(status["as_of"]))
    pd.testing.assert_frame_equal(leaky, status)


def test_score_and_regime_follow_the_documented_rule(status):
    parts = status[["score_breadth", "score_trend", "score_momentum", "score_calm"]].to_numpy()
    np.testing.assert_allclose(status["score"], (parts @ [0.35, 0.25, 0.20, 0.20]).round(2))
    expected = np.where(status["score"] >= 60, "risk_on", np.where(status["score"] < 40, "risk_off", "neutral"))
    assert (status["regime"] == expected).all()


def test_each_tick_has_a_plain_language_summary_of_its_figures(status):
    for row in status.to_dict("records"):
        line = row["summary"]
        assert line.startswith(f"{row['regime'].replace('_', '-')} (score {row['score']:.0f}/100): ")
        assert f"{100 * row['breadth_1h']:.0f}% of {row['markets']} markets up over the hour" in line
        assert f"median {row['median_return_1h_pct']:+.2f}% in 1 h" in line
        side = "above" if row["btc_vs_ema_pct"] >= 0 else "below"
        assert f"BTC {abs(row['btc_vs_ema_pct']):.2f}% {side} its 20 h EMA" in line
        assert "nan" not in line


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: f.assign(score=f["score"] + 150), "in_range"),
        (lambda f: f.assign(breadth_1h=1.5), "in_range"),
        (lambda f: f.assign(as_of=f["as_of"] + pd.Timedelta(hours=1)), "partition end"),
        (lambda f: pd.concat([f, f.tail(1)], ignore_index=True), "unique"),
        (lambda f: f.assign(regime="euphoric"), "isin"),
        (lambda f: f.assign(summary=""), "str_length"),
    ],
)
def test_schema_check_names_what_is_wrong(status, change, message):
    result = pandera_check(market_status_schema(HOUR, HOUR + pit.HOUR), change(status.copy()))
    assert not result.passed
    assert message in result.description + str(result.metadata["failure_cases"].value)


def test_no_tick_yet_gives_an_empty_frame(candles):
    empty = _status(*candles, tick_times(HOUR, HOUR + pit.HOUR, 120, reached=HOUR - pd.Timedelta(seconds=1)))
    assert empty.empty and list(empty.columns) == COLUMNS
    assert pandera_check(market_status_schema(HOUR, HOUR + pit.HOUR), empty).passed


def test_materialise_over_postgres_and_redis_is_repeatable_and_a_failed_check_changes_nothing(
    candles, io_resources, snapshot_store, postgres_resource
):
    minutes, hours, markets = candles
    io_manager = io_resources["io_manager"]
    first_minute_hour = hourly_partitions.get_partition_key_for_timestamp(minutes["candle_start"].min().timestamp())
    store(io_manager, "candles_1m", minutes, partitions_def=hourly_partitions, first=first_minute_hour, last=PARTITION)
    store(io_manager, "candles_1h", hours, partitions_def=daily_partitions, first="2025-09-22", last="2025-09-27")
    store(io_manager, "upbit_markets", markets, partitions_def=daily_partitions, first="2025-09-26", last="2025-09-27")

    def run() -> pd.DataFrame:
        result = materialise([MARKET_STATUS.asset, MARKET_STATUS.publish], PARTITION, io_resources)
        assert result.success
        checks = result.get_asset_check_evaluations()
        assert [c.passed for c in checks] == [True]
        metadata = result.asset_materializations_for_node("market_status")[0].metadata
        assert metadata["ticks"].value == 30 and "| score |" in metadata["latest"].value
        published = result.asset_materializations_for_node("market_status_redis")[0].metadata
        assert (published["as_of"].value, published["rows"].value, published["ttl_seconds"].value) == ("2025-09-27T15:58:00Z", 1, 300)
        return postgres_resource.read_frame(f"SELECT * FROM {postgres_resource.table_name('market_status')} ORDER BY as_of")

    first = run()
    assert len(first) == 30
    snapshot = snapshot_store.cached("market_status")
    assert snapshot["as_of"] == "2025-09-27T15:58:00Z" and len(snapshot["rows"]) == 1
    second = run()
    pd.testing.assert_frame_equal(first, second)
    published = snapshot_store.cached("market_status")

    failing = dataclasses.replace(MARKET_STATUS, schema=always_failing_schema)
    failed = materialise([failing.asset, failing.publish], PARTITION, io_resources, raise_on_error=False)
    assert not failed.success and [c.passed for c in failed.get_asset_check_evaluations()] == [False]
    assert "schema check failed, nothing written (stored rows unchanged)" in failed.failure_data_for_node("market_status").error.to_string()
    stored = postgres_resource.read_frame(f"SELECT * FROM {postgres_resource.table_name('market_status')} ORDER BY as_of")
    pd.testing.assert_frame_equal(stored, first)
    assert failed.asset_materializations_for_node("market_status_redis") == []  # the publish step never ran
    assert snapshot_store.cached("market_status") == published


def test_a_tick_without_candles_fails_the_check_with_the_likely_cause(candles):
    minutes, hours, markets = candles
    ticks = tick_times(HOUR, HOUR + pit.HOUR, 120)
    empty = _status(minutes.iloc[:0], hours.iloc[:0], markets, ticks)
    result = pandera_check(market_status_schema(HOUR, HOUR + pit.HOUR), empty)
    assert not result.passed and "candles_1m" in str(result.metadata["failure_cases"].value) + result.description
