"""``dantaro_assets.reader``: pyupbit's ``get_ohlcv`` frame over candles stored through the IO manager.

The shape is checked against pyupbit's own construction (its lines, as in sharebook-kr/pyupbit's
quotation_api.get_ohlcv) applied to a recorded Upbit answer, and the values against recorded candles.
"""

from __future__ import annotations

import datetime
import json
import uuid

import numpy as np
import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.upbit import interval
from dantaro_assets.lib.upbit.parsing import parse_candle_page
from dantaro_assets.reader import Reader
from dantaro_assets_tests.lib.storage_data import MERGE_METADATA, write

PYUPBIT_COLUMNS = ["open", "high", "low", "close", "volume", "value"]


@pytest.fixture
def reader(settings, pg_url) -> Reader:
    own = settings.model_copy(update={"db_schema": f"{settings.db_schema}_reader_{uuid.uuid4().hex[:6]}"})
    yield Reader(own)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{own.db_schema}" CASCADE')


def store(reader: Reader, table: str, candles: pd.DataFrame) -> None:
    """As the candle assets store them: merged by (market, candle_start) through the IO manager."""
    write(PostgresDataFrameIOManager(postgres=reader.postgres), candles, table, metadata=MERGE_METADATA)


def pyupbit_get_ohlcv_frame(contents: list[dict]) -> pd.DataFrame:
    """What pyupbit's get_ohlcv builds from one Upbit candles answer (its code, network left out)."""
    dt_list = [datetime.datetime.strptime(x["candle_date_time_kst"], "%Y-%m-%dT%H:%M:%S") for x in contents]
    df = pd.DataFrame(contents, columns=["opening_price", "high_price", "low_price", "trade_price", "candle_acc_trade_volume",
                                         "candle_acc_trade_price"], index=dt_list)
    df = df.sort_index()
    df = pd.concat([df]).sort_index()
    return df.rename(columns={"opening_price": "open", "high_price": "high", "low_price": "low", "trade_price": "close",
                              "candle_acc_trade_volume": "volume", "candle_acc_trade_price": "value"})


def test_the_frame_is_the_one_pyupbit_builds_from_upbit_s_answer(reader, upbit_data_dir):
    capture = next(c for c in json.loads((upbit_data_dir / "api_captures.json").read_text())["captures"] if c["id"] == "docs_candles_days_btc")
    body = json.loads(capture["body_raw"])  # GET /v1/candles/days?market=KRW-BTC&to=2025-07-30T00:00:00+09:00&count=2
    parsed, quarantined = parse_candle_page(body, market="KRW-BTC", interval=interval("day"), to=pd.Timestamp("2025-07-30", tz="Asia/Seoul"),
                                            endpoint="/v1/candles/days")
    assert quarantined.empty
    store(reader, "candles_1d", parsed)

    ours = reader.get_ohlcv("KRW-BTC", interval="day", count=2, to="2025-07-29 15:00:00")  # naive: UTC, as Upbit reads pyupbit's to
    pd.testing.assert_frame_equal(ours, pyupbit_get_ohlcv_frame(body), check_exact=True)
    assert list(ours.index.strftime("%Y-%m-%d %H:%M")) == ["2025-07-28 09:00", "2025-07-29 09:00"]  # KST labels of UTC days
    pd.testing.assert_frame_equal(reader.get_ohlcv("KRW-BTC", "days", 2, pd.Timestamp("2025-07-30 00:00", tz="Asia/Seoul")), ours)


def test_count_to_and_the_five_minute_candles_built_from_one_minute_candles(reader):
    start = pd.Timestamp("2025-09-01 00:00", tz="UTC")
    price = 3_000_000.0 + 1000 * np.arange(30)
    minutes = pd.DataFrame({"market": "KRW-ETH", "candle_start": pd.date_range(start, periods=30, freq="1min"), "open": price,
                            "high": price + 2000, "low": price - 1000, "close": price + 1000, "volume": 0.5, "value": price * 0.5})
    store(reader, "candles_1m", minutes)

    newest = reader.get_ohlcv("KRW-ETH", "minute1", count=3)
    assert list(newest.index) == [datetime.datetime(2025, 9, 1, 9, m) for m in (27, 28, 29)] and list(newest.columns) == PYUPBIT_COLUMNS
    assert newest["close"].iloc[-1] == minutes["close"].iloc[-1] and newest.dtypes.eq(float).all()
    before = reader.get_ohlcv("KRW-ETH", "minutes1", count=2, to=datetime.datetime(2025, 9, 1, 0, 10))  # pyupbit's alias; to exclusive
    assert list(before.index) == [datetime.datetime(2025, 9, 1, 9, 8), datetime.datetime(2025, 9, 1, 9, 9)]
    assert len(reader.get_ohlcv("KRW-ETH", "minute1", count=0)) == 1  # pyupbit asks for at least one

    five = reader.get_ohlcv("KRW-ETH", "minute5", count=2)
    assert list(five.index) == [datetime.datetime(2025, 9, 1, 9, 20), datetime.datetime(2025, 9, 1, 9, 25)]
    last = minutes.iloc[25:]
    assert five.iloc[-1].to_dict() == {"open": last["open"].iloc[0], "high": last["high"].max(), "low": last["low"].min(),
                                       "close": last["close"].iloc[-1], "volume": last["volume"].sum(), "value": last["value"].sum()}

    nothing = reader.get_ohlcv("KRW-NOPE", "minute1")
    assert nothing.empty and list(nothing.columns) == PYUPBIT_COLUMNS and isinstance(nothing.index, pd.DatetimeIndex)
    with pytest.raises(ValueError, match="minute3"):
        reader.get_ohlcv("KRW-ETH", "minute3")
    with pytest.raises(LookupError, match="candles_1h"):
        reader.get_ohlcv("KRW-ETH", "minute60")


def test_a_recorded_window_reads_back_as_recorded(reader, upbit_data_dir):
    """Two hours of real 1-minute KRW-SOL and KRW-XRP candles (the file has no KRW value: derived as close x volume), read back in pyupbit's shape."""
    recorded = pd.read_parquet(upbit_data_dir / "candles_1m.parquet")
    window = recorded[(recorded["market"].isin(["KRW-SOL", "KRW-XRP"]))
                      & (recorded["candle_start_utc"] >= pd.Timestamp("2025-09-15 03:00", tz="UTC"))
                      & (recorded["candle_start_utc"] < pd.Timestamp("2025-09-15 05:00", tz="UTC"))]
    stored = window.rename(columns={"candle_start_utc": "candle_start"}).assign(value=lambda f: f["close"] * f["volume"])
    store(reader, "candles_1m", stored[["market", "candle_start", "open", "high", "low", "close", "volume", "value"]])

    sol = stored[stored["market"] == "KRW-SOL"].sort_values("candle_start")
    ours = reader.get_ohlcv("KRW-SOL", "minute1", count=60, to="2025-09-15 05:00:00")
    expected = sol.tail(60)
    assert len(ours) == 60
    assert list(ours.index) == list((expected["candle_start"] + pd.Timedelta(hours=9)).dt.tz_localize(None))
    np.testing.assert_array_equal(ours[["open", "high", "low", "close", "volume"]].to_numpy(), expected[["open", "high", "low", "close", "volume"]].to_numpy())
