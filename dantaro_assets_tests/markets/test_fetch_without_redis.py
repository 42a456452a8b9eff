"""Candle runs while the rate limiter's Redis is down: nothing is sent, nothing stored is touched.

A private redis-server stands for the limiter's store (the machine's Redis must never be stopped); the
IO manager keeps the test Redis. Real materialisations against the recorded replay server.
"""

from __future__ import annotations

import threading
import time

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import UpbitClient, UpbitLimiterUnavailableError
from dantaro_assets.markets import assets
from dantaro_assets.markets.assets import candles_1m, upbit_markets
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets_tests.fixtures.redis_server import PrivateRedis


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    yield server
    server.kill()


def _materialize(selection, partition: str, upbit: UpbitClient, io_resources, **kwargs) -> dg.ExecuteInProcessResult:
    try:
        return dg.materialize(dg.load_assets_from_modules([assets]), selection=selection, partition_key=partition,
                              resources={**io_resources, "upbit": upbit}, **kwargs)
    finally:
        upbit.close()


def _stored(postgres_resource, hour: str) -> pd.DataFrame:
    start = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start)
    sql = f"SELECT * FROM {postgres_resource.table_name('candles_1m')} WHERE candle_start >= $1 AND candle_start < $2 ORDER BY 1, 2"
    return postgres_resource.read_arrow(sql, (start, start + pd.Timedelta(hours=1))).to_pandas()


def _candle_requests(replay) -> int:
    return replay.stats()["groups"].get("candles", {}).get("requests", 0)


def test_a_candle_run_waits_out_a_limiter_outage_then_fetches(
    recorded_replay, io_resources, redis_resource, postgres_resource, private_redis
):
    shared = UpbitClient(base_url=recorded_replay.url, redis=redis_resource, backoff_seconds=0.05)
    assert _materialize([upbit_markets], "2025-09-15", shared, io_resources).success
    recorded_replay.reset_stats()
    sent_while_down: list[int] = []

    def redis_comes_back() -> None:
        time.sleep(2.5)
        sent_while_down.append(_candle_requests(recorded_replay))
        private_redis.start()

    restart = threading.Thread(target=redis_comes_back)
    restart.start()
    limiter_store = RedisResource(url=private_redis.url, prefix=redis_resource.prefix)
    limited = UpbitClient(base_url=recorded_replay.url, redis=limiter_store, backoff_seconds=0.05)
    result = _materialize([candles_1m], "2025-09-15-18:00", limited, io_resources)
    restart.join()

    assert result.success and sent_while_down == [0]
    assert len(_stored(postgres_resource, "2025-09-15-18:00")) == 240
    assert recorded_replay.stats()["groups"]["candles"]["too_many"] == 0


@pytest.mark.slow
def test_a_candle_run_with_the_limiter_down_fails_typed_and_keeps_the_stored_hour(
    recorded_replay, io_resources, redis_resource, postgres_resource
):
    shared = UpbitClient(base_url=recorded_replay.url, redis=redis_resource, backoff_seconds=0.05)
    assert _materialize([upbit_markets], "2025-09-15", shared, io_resources).success
    shared = UpbitClient(base_url=recorded_replay.url, redis=redis_resource, backoff_seconds=0.05)
    assert _materialize([candles_1m], "2025-09-15-19:00", shared, io_resources).success
    before = _stored(postgres_resource, "2025-09-15-19:00")
    assert len(before) == 240
    recorded_replay.reset_stats()

    unreachable = RedisResource(url="redis://127.0.0.1:1/0", prefix=redis_resource.prefix)
    down = UpbitClient(base_url=recorded_replay.url, redis=unreachable, store_wait_seconds=1)
    result = _materialize([candles_1m], "2025-09-15-19:00", down, io_resources, raise_on_error=False)

    assert not result.success
    failure = result.failure_data_for_node("candles_1m").error
    assert UpbitLimiterUnavailableError.__name__ in failure.to_string() and "no request sent" in failure.to_string()
    assert _candle_requests(recorded_replay) == 0
    pd.testing.assert_frame_equal(_stored(postgres_resource, "2025-09-15-19:00"), before)
