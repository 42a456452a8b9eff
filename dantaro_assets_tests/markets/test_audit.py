"""The final run's audit: what differs between the stored minutes and REST's, and an audit put off while the limiter is down."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import UpbitClient, UpbitLimiterUnavailableError
from dantaro_assets.markets.assets import candles_1m
from dantaro_assets.markets.audit import differences, fetch_planned
from dantaro_assets.markets.seen import AUDIT, Plan
from dantaro_assets_tests.lib.candle_data import synthetic_minutes

H12 = pd.Timestamp("2025-09-03T12:00Z")
H13 = H12 + pd.Timedelta(hours=1)
_SCHEMAS = itertools.count()


@pytest.fixture
def postgres(pg_url, settings) -> Iterator[PostgresResource]:
    schema = f"{settings.db_schema}_audit{next(_SCHEMAS)}"
    yield PostgresResource(url=pg_url, db_schema=schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_differences_count_what_rest_adds_and_corrects_and_what_only_the_stream_has(postgres):
    rest = synthetic_minutes(3, "2025-09-03T12:00Z", "2025-09-03T13:00Z", gap_share=0.0)
    ranges = {m: [(H12, H13)] for m in rest["market"].unique()}
    assert differences(postgres, rest, ranges) == {"audit_compared": 180, "audit_added": 180, "audit_corrected": 0, "audit_stream_only": 0}

    stream = rest.drop(index=[0, 1]).reset_index(drop=True)  # two minutes the stream missed
    stream.loc[5, "high"] *= 1.01  # one plausible wrong minute
    phantom = stream.iloc[[10]].assign(candle_start=H12 + pd.Timedelta(minutes=90))  # outside the hour: not compared
    only_stream = stream.iloc[[11]].copy()
    rest_without = rest.drop(index=rest.index[(rest["market"] == only_stream["market"].item())
                                               & (rest["candle_start"] == only_stream["candle_start"].item())])
    io = PostgresDataFrameIOManager(postgres=postgres)
    metadata = dict(candles_1m.metadata_by_key[dg.AssetKey("candles_1m")])
    io.write("candles_1m", pd.concat([stream, phantom]), metadata, dg.TimeWindow(H12.to_pydatetime(), (H13 + pd.Timedelta(hours=1)).to_pydatetime()))
    assert differences(postgres, rest_without, ranges) == {"audit_compared": 179, "audit_added": 2, "audit_corrected": 1, "audit_stream_only": 1}


def test_a_final_run_s_audit_waits_for_the_limiter_but_a_fetch_of_unseen_minutes_does_not(replay):
    down = RedisResource(url="redis://127.0.0.1:1/0", prefix="audit")
    upbit = UpbitClient(base_url=replay.url, redis=down, store_wait_seconds=0.5)
    try:
        audit = Plan(AUDIT, {"KRW-BTC": [(H12, H13)]}, "final run", None, unseen={})
        candles, stats = fetch_planned(upbit, audit, "minute1")
        assert candles.empty and stats.requests == 0 and stats.server_time is None  # nothing recorded as audited
        assert audit.metadata()["audit_deferred"].startswith("no request sent")
        needed = Plan(AUDIT, {"KRW-BTC": [(H12, H13)]}, "final run", None, unseen={"KRW-BTC": [(H12, H12 + pd.Timedelta(minutes=1))]})
        with pytest.raises(UpbitLimiterUnavailableError):
            fetch_planned(upbit, needed, "minute1")
    finally:
        upbit.close()
    assert replay.stats()["groups"].get("candles", {}).get("requests", 0) == 0
