"""Recorded replay: the real parquet candles served exactly, up to the replay clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import httpx
import pandas as pd
import pytest


@pytest.fixture(scope="module")
def minutes(upbit_data_dir) -> pd.DataFrame:
    return pd.read_parquet(upbit_data_dir / "candles_1m.parquet")


def _get(server, path: str, **params) -> list[dict]:
    response = httpx.get(f"{server.url}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _frame(entries: list[dict]) -> pd.DataFrame:
    frame = pd.DataFrame(entries)
    frame["candle_start_utc"] = pd.to_datetime(frame["candle_date_time_utc"]).dt.tz_localize("UTC")
    return frame.iloc[::-1].reset_index(drop=True)


def test_universe_is_the_recorded_markets_without_flags(recorded_replay):
    markets = _get(recorded_replay, "/v1/market/all", isDetails="true")
    assert [m["market"] for m in markets] == ["KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-XRP"]
    assert markets[0]["korean_name"] == "비트코인"
    assert not any(m["market_event"]["warning"] or any(m["market_event"]["caution"].values()) for m in markets)
    missing = httpx.get(f"{recorded_replay.url}/v1/candles/minutes/1", params={"market": "KRW-DOGE"})
    assert missing.status_code == 404 and missing.json() == {"error": {"name": 404, "message": "Code not found"}}


def test_default_clock_is_the_end_of_the_minute_data(recorded_replay, minutes):
    end = minutes["candle_start_utc"].max() + timedelta(minutes=1)
    assert recorded_replay.clock() == end.to_pydatetime()
    newest = _get(recorded_replay, "/v1/candles/minutes/1", market="KRW-BTC", to="2030-01-01T00:00:00Z")
    assert newest[0]["candle_date_time_utc"] == (end - timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%S")


def test_minute_candles_served_exactly_as_recorded_with_derived_turnover(recorded_replay, minutes):
    served = _frame(_get(recorded_replay, "/v1/candles/minutes/1", market="KRW-SOL", to="2025-09-10T00:00:00Z", count=200))
    recorded = minutes[(minutes.market == "KRW-SOL") & (minutes.candle_start_utc < "2025-09-10")].tail(200).reset_index(drop=True)
    assert served["candle_start_utc"].tolist() == recorded["candle_start_utc"].tolist()
    for served_col, recorded_col in [("opening_price", "open"), ("high_price", "high"), ("low_price", "low"),
                                     ("trade_price", "close"), ("candle_acc_trade_volume", "volume")]:
        assert served[served_col].tolist() == recorded[recorded_col].round(8).tolist()
    typical = (recorded.open + recorded.high + recorded.low + recorded.close) / 4
    assert served["candle_acc_trade_price"].tolist() == pytest.approx((recorded.volume * typical).tolist(), rel=1e-12)


def test_recorded_gaps_stay_gaps(recorded_replay, minutes):
    sol = minutes[minutes.market == "KRW-SOL"].set_index("candle_start_utc")
    full = pd.date_range(sol.index.min(), sol.index.max(), freq="1min")
    missing = full.difference(sol.index)
    assert len(missing) > 0
    gap = missing[0]
    served = _frame(_get(recorded_replay, "/v1/candles/minutes/1", market="KRW-SOL",
                         to=(gap + timedelta(minutes=5)).isoformat(), count=10))
    assert gap not in set(served["candle_start_utc"]) and len(served) == 10


def test_hour_and_day_candles_as_recorded(recorded_replay, upbit_data_dir):
    hours = pd.read_parquet(upbit_data_dir / "candles_1h.parquet")
    served = _frame(_get(recorded_replay, "/v1/candles/minutes/60", market="KRW-ETH", to="2024-03-01T00:00:00Z", count=200))
    recorded = hours[(hours.market == "KRW-ETH") & (hours.candle_start_utc < "2024-03-01")].tail(200).reset_index(drop=True)
    assert served["candle_start_utc"].tolist() == recorded["candle_start_utc"].tolist()
    assert served["trade_price"].tolist() == recorded["close"].tolist()
    days = pd.read_parquet(upbit_data_dir / "candles_1d.parquet")
    served = _frame(_get(recorded_replay, "/v1/candles/days", market="KRW-BTC", to="2025-09-01T00:00:00Z", count=30))
    recorded = days[(days.market == "KRW-BTC") & (days.candle_start_utc < "2025-09-01")].tail(30).reset_index(drop=True)
    assert served["candle_start_utc"].tolist() == recorded["candle_start_utc"].tolist()
    assert served["candle_acc_trade_price"].tolist() == recorded["value"].tolist()
    assert served["opening_price"].tolist() == recorded["open"].tolist()


def test_five_minute_candles_aggregate_the_recorded_minutes(recorded_replay, minutes):
    served = _frame(_get(recorded_replay, "/v1/candles/minutes/5", market="KRW-XRP", to="2025-09-20T00:00:00Z", count=50))
    xrp = minutes[(minutes.market == "KRW-XRP") & (minutes.candle_start_utc < "2025-09-20")].set_index("candle_start_utc")
    expected = xrp.resample("5min").agg({"open": "first", "high": "max", "low": "min", "close": "last", "volume": "sum"}).dropna().tail(50)
    assert served["opening_price"].tolist() == expected["open"].tolist()
    assert served["high_price"].tolist() == expected["high"].tolist()
    assert served["trade_price"].tolist() == expected["close"].tolist()
    assert served["candle_acc_trade_volume"].tolist() == pytest.approx(expected["volume"].tolist(), rel=1e-9)


def test_clock_hides_the_future_and_forms_the_current_candle(recorded_replay, minutes):
    clock = datetime(2025, 9, 10, 12, 30, 30, tzinfo=timezone.utc)
    recorded_replay.set_clock(clock)
    newest_minute = _get(recorded_replay, "/v1/candles/minutes/1", market="KRW-BTC", to="2026-01-01T00:00:00Z")[0]
    assert newest_minute["candle_date_time_utc"] == "2025-09-10T12:29:00"  # 12:30 has not closed
    hour = _get(recorded_replay, "/v1/candles/minutes/60", market="KRW-BTC")[0]
    window = minutes[(minutes.market == "KRW-BTC") & (minutes.candle_start_utc >= "2025-09-10 12:00")
                     & (minutes.candle_start_utc < "2025-09-10 12:30")]
    assert hour["candle_date_time_utc"] == "2025-09-10T12:00:00"
    assert hour["opening_price"] == window.open.iloc[0] and hour["trade_price"] == window.close.iloc[-1]
    assert hour["high_price"] == window.high.max() and hour["low_price"] == window.low.min()
    assert hour["candle_acc_trade_volume"] == pytest.approx(window.volume.sum(), rel=1e-9)
    day = _get(recorded_replay, "/v1/candles/days", market="KRW-BTC")[0]
    assert day["candle_date_time_utc"] == "2025-09-10T00:00:00" and day["trade_price"] == window.close.iloc[-1]


def test_ticker_from_recorded_data(recorded_replay):
    ticker = _get(recorded_replay, "/v1/ticker", markets="KRW-BTC,KRW-XRP")
    assert [t["market"] for t in ticker] == ["KRW-BTC", "KRW-XRP"]
    btc_minute = _get(recorded_replay, "/v1/candles/minutes/1", market="KRW-BTC")[0]
    assert ticker[0]["trade_price"] == btc_minute["trade_price"]
    assert ticker[0]["lowest_52_week_price"] <= ticker[0]["low_price"] <= ticker[0]["high_price"] <= ticker[0]["highest_52_week_price"]
