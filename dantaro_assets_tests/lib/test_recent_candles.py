"""``recent_candles`` over candles stored through the IO manager, as the candle assets store them (merge)."""

from __future__ import annotations

import uuid

import numpy as np
import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.recent_candles import OHLCV, recent_candles
from dantaro_assets_tests.lib.storage_data import MERGE_METADATA, write

START = pd.Timestamp("2025-09-01 00:00", tz="UTC")


def minutes(market: str, offsets: list[int], base: float) -> pd.DataFrame:
    """1-minute candles of ``market`` at ``offsets`` minutes after START, each a distinct price."""
    price = base + np.arange(len(offsets), dtype=float)
    return pd.DataFrame({"market": market, "candle_start": START + pd.to_timedelta(offsets, unit="min"),
                         "open": price, "high": price + 2, "low": price - 2, "close": price + 1, "volume": 0.5, "value": price * 0.5})


@pytest.fixture
def postgres(pg_url, settings):
    resource = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_rc_{uuid.uuid4().hex[:6]}")
    yield resource
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{resource.db_schema}" CASCADE')


def store(postgres: PostgresResource, table: str, frame: pd.DataFrame) -> None:
    write(PostgresDataFrameIOManager(postgres=postgres), frame, table, metadata=MERGE_METADATA)


def test_the_newest_count_candles_of_the_market_before_the_bound_oldest_first(postgres):
    # KRW-BTC traded in 40 minutes with a gap; KRW-ETH every minute of two hours (interleaved in the key index)
    btc = minutes("KRW-BTC", [*range(0, 30), *range(50, 60)], 1000.0)
    store(postgres, "candles_1m", pd.concat([btc, minutes("KRW-ETH", list(range(120)), 5.0)]))

    newest = recent_candles(postgres, "KRW-BTC", "minute1", 12)
    assert list(newest.columns) == ["candle_start", *OHLCV]
    expected = btc.tail(12).drop(columns="market").reset_index(drop=True)
    pd.testing.assert_frame_equal(newest, expected, check_dtype=False)  # ten after the gap, two before it

    before = recent_candles(postgres, "KRW-BTC", "minute1", 3, before=(START + pd.Timedelta(minutes=50)).to_pydatetime())
    assert list(before["candle_start"]) == list(START + pd.to_timedelta([27, 28, 29], unit="min"))
    assert len(recent_candles(postgres, "KRW-BTC", "minute1", 500)) == 40  # all there is
    assert recent_candles(postgres, "KRW-NOPE", "minute1", 5).empty
    assert recent_candles(postgres, "KRW-BTC", "minute60", 5) is None  # candles_1h was never written


def test_five_and_fifteen_minute_candles_are_built_from_whole_buckets_as_upbit_builds_them(postgres):
    # 47 minutes from 00:03: the newest buckets are 00:45 (five minutes), 00:30, 00:15; 00:00 holds 00:03-00:14
    eth = minutes("KRW-ETH", list(range(3, 50)), 100.0)
    store(postgres, "candles_1m", eth)

    fifteen = recent_candles(postgres, "KRW-ETH", "minute15", 2)
    bucket = eth[(eth["candle_start"] >= START + pd.Timedelta(minutes=30)) & (eth["candle_start"] < START + pd.Timedelta(minutes=45))]
    first = fifteen.iloc[0]
    assert first["candle_start"] == START + pd.Timedelta(minutes=30)
    assert (first["open"], first["close"]) == (bucket["open"].iloc[0], bucket["close"].iloc[-1])
    assert (first["high"], first["low"]) == (bucket["high"].max(), bucket["low"].min())
    assert (first["volume"], first["value"]) == pytest.approx((bucket["volume"].sum(), bucket["value"].sum()))
    assert fifteen.iloc[1]["candle_start"] == START + pd.Timedelta(minutes=45)
    # the newest 2 x 15 rows begin at 00:20, inside the 00:15 bucket; that bucket is read short but never answered
    assert len(fifteen) == 2
    # when the read reaches the start of history, the oldest bucket is whole: all four are answered
    every = recent_candles(postgres, "KRW-ETH", "minute15", 10)
    assert list(every["candle_start"]) == list(START + pd.to_timedelta([0, 15, 30, 45], unit="min"))
    assert every.iloc[0]["open"] == eth["open"].iloc[0]
    assert list(recent_candles(postgres, "KRW-ETH", "minute5", 4)["candle_start"]) == list(START + pd.to_timedelta([30, 35, 40, 45], unit="min"))


def test_bad_arguments_are_refused_before_any_query(postgres):
    with pytest.raises(ValueError, match="minute3"):
        recent_candles(postgres, "KRW-BTC", "minute3", 5)
    with pytest.raises(ValueError, match="at least 1"):
        recent_candles(postgres, "KRW-BTC", "minute1", 0)
    with pytest.raises(ValueError, match="timezone"):
        recent_candles(postgres, "KRW-BTC", "minute1", 5, before=pd.Timestamp("2025-09-01").to_pydatetime())
