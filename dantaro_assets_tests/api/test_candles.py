"""``GET /candles/{market}`` over candles stored through the IO manager (as the candle assets store them), served by uvicorn."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest

from dantaro_assets.api.app import create_app
from dantaro_assets.api.models import Candles
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.lib.storage_data import MERGE_METADATA, write

START = pd.Timestamp("2025-09-01 00:00", tz="UTC")


def candles(market: str, starts: pd.DatetimeIndex, base: float) -> pd.DataFrame:
    price = base + np.arange(len(starts), dtype=float) * 1000
    return pd.DataFrame({"market": market, "candle_start": starts, "open": price, "high": price + 3000, "low": price - 2000,
                         "close": price + 1000, "volume": 0.25, "value": price * 0.25})


@pytest.fixture
def served(settings, pg_url, redis_client) -> Iterator[tuple[httpx.Client, PostgresDataFrameIOManager]]:
    own = f"candles_{uuid.uuid4().hex[:6]}"
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"), postgres)
    with dg.DagsterInstance.ephemeral() as instance, serve_http(create_app(lambda: instance, store, 0, settings=settings)) as client:
        yield client, PostgresDataFrameIOManager(postgres=postgres)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


def test_candles_answer_the_newest_stored_candles_oldest_first_in_the_model(served):
    client, io_manager = served
    minutes = candles("KRW-BTC", pd.date_range(START, periods=30, freq="1min"), 95_000_000.0)
    write(io_manager, pd.concat([minutes, candles("KRW-ETH", pd.date_range(START, periods=30, freq="1min"), 3_000_000.0)]), "candles_1m",
          metadata=MERGE_METADATA)
    write(io_manager, candles("KRW-BTC", pd.date_range(START, periods=48, freq="1h"), 94_000_000.0), "candles_1h", metadata=MERGE_METADATA)

    answer = client.get("/candles/krw-btc", params={"interval": "1m", "limit": 3})
    assert answer.status_code == 200 and answer.headers["content-type"] == "application/json"
    body = Candles.model_validate(answer.json())
    assert (body.market, body.interval) == ("KRW-BTC", "1m")
    assert [c.start for c in body.candles] == ["2025-09-01T00:27:00Z", "2025-09-01T00:28:00Z", "2025-09-01T00:29:00Z"]
    newest = minutes.iloc[-1]
    assert body.candles[-1].model_dump() == {"start": "2025-09-01T00:29:00Z", **{k: newest[k] for k in ("open", "high", "low", "close", "volume", "value")}}

    five = client.get("/candles/KRW-BTC", params={"interval": "5m", "limit": 2}).json()["candles"]
    bucket = minutes.iloc[25:30]
    assert [c["start"] for c in five] == ["2025-09-01T00:20:00Z", "2025-09-01T00:25:00Z"]
    assert (five[1]["open"], five[1]["high"], five[1]["low"], five[1]["close"]) == (
        bucket["open"].iloc[0], bucket["high"].max(), bucket["low"].min(), bucket["close"].iloc[-1])
    assert five[1]["volume"] == pytest.approx(bucket["volume"].sum()) and five[1]["value"] == pytest.approx(bucket["value"].sum())

    hourly = client.get("/candles/KRW-BTC").json()  # the defaults: 1h, 200 (all 48 stored)
    assert (hourly["interval"], len(hourly["candles"]), hourly["candles"][0]["start"]) == ("1h", 48, "2025-09-01T00:00:00Z")
    assert client.get("/openapi.json").json()["paths"]["/candles/{market}"]["get"]["responses"]["200"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Candles"}


def test_a_market_or_interval_without_stored_candles_is_404(served):
    client, io_manager = served
    write(io_manager, candles("KRW-BTC", pd.date_range(START, periods=3, freq="1min"), 95_000_000.0), "candles_1m", metadata=MERGE_METADATA)
    unknown = client.get("/candles/KRW-NOPE", params={"interval": "1m"})
    assert unknown.status_code == 404 and unknown.json() == {"detail": "no stored 1m candles of KRW-NOPE"}
    assert client.get("/candles/KRW-BTC", params={"interval": "1d"}).json() == {"detail": "no stored 1d candles of KRW-BTC"}  # never written
