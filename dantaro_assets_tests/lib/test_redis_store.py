"""Redis snapshots on the real test Redis: payload format, TTL, newer-wins (past a TTL too), and outages that cost nothing."""

import time

import pandas as pd
import pytest

from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets_tests.lib.storage_data import HOUR_A, read, write

SNAPSHOT_METADATA = {
    "partition_expr": "as_of",
    "primary_key": ["as_of", "market", "level"],
    "write_mode": WriteMode.REPLACE,
    "snapshot": {"ttl": 300, "per_market": True},
}


def _levels(minute: int, support: float = 100.0) -> pd.DataFrame:
    as_of = pd.Timestamp("2025-09-01 00:00", tz="UTC") + pd.Timedelta(minutes=minute)
    return pd.DataFrame(
        {
            "as_of": [as_of] * 3,
            "market": ["KRW-BTC", "KRW-BTC", "KRW-ETH"],
            "level": [1, 2, 1],
            "support": [support, support - 5, float("nan")],
            "touched_at": pd.to_datetime(["2025-08-31 22:00", "2025-08-31 23:00", None], utc=True),
        }
    )


def _push(redis_resource: RedisResource, asset: str, rows: pd.DataFrame, ttl: int = 300) -> dict[str, int]:
    return redis_resource.push_snapshot(asset, rows, as_of=rows["as_of"].max(), run_id="run-1", partition=HOUR_A, ttl=ttl, per_market=True)


def test_payload_format_and_ttl(redis_resource, redis_client):
    assert _push(redis_resource, "fmt_levels", _levels(15), ttl=120) == {"written": 3, "skipped_newer": 0}

    latest = redis_resource.latest_snapshot("fmt_levels")
    assert latest == {
        "asset": "fmt_levels",
        "as_of": "2025-09-01T00:15:00Z",
        "run_id": "run-1",
        "partition": HOUR_A,
        "rows": [
            {"as_of": "2025-09-01T00:15:00Z", "market": "KRW-BTC", "level": 1, "support": 100.0, "touched_at": "2025-08-31T22:00:00Z"},
            {"as_of": "2025-09-01T00:15:00Z", "market": "KRW-BTC", "level": 2, "support": 95.0, "touched_at": "2025-08-31T23:00:00Z"},
            {"as_of": "2025-09-01T00:15:00Z", "market": "KRW-ETH", "level": 1, "support": None, "touched_at": None},
        ],
    }
    eth = redis_resource.latest_snapshot("fmt_levels", "KRW-ETH")
    assert [row["market"] for row in eth["rows"]] == ["KRW-ETH"] and eth["as_of"] == latest["as_of"]
    for key in (redis_resource.key("fmt_levels"), redis_resource.key("fmt_levels", "KRW-BTC")):
        assert 110 <= redis_client.ttl(key) <= 120
    assert redis_resource.latest_snapshot("fmt_levels", "KRW-XRP") is None


def test_an_older_snapshot_never_replaces_a_newer_one(redis_resource):
    _push(redis_resource, "cas_levels", _levels(30, support=300.0))
    assert _push(redis_resource, "cas_levels", _levels(15, support=150.0)) == {"written": 0, "skipped_newer": 3}
    assert redis_resource.latest_snapshot("cas_levels")["rows"][0]["support"] == 300.0

    assert _push(redis_resource, "cas_levels", _levels(30, support=301.0))["written"] == 3  # same tick recomputed
    assert _push(redis_resource, "cas_levels", _levels(45, support=450.0))["written"] == 3
    assert redis_resource.latest_snapshot("cas_levels", "KRW-BTC")["rows"][0]["support"] == 450.0


def test_an_older_snapshot_is_refused_after_the_newer_key_expired(redis_resource, redis_client):
    assert _push(redis_resource, "hwm_levels", _levels(30, support=300.0), ttl=1)["written"] == 3
    time.sleep(1.2)  # the newer snapshot's keys expire; their high-water marks stay
    assert redis_resource.latest_snapshot("hwm_levels") is None and redis_resource.latest_snapshot("hwm_levels", "KRW-BTC") is None

    assert _push(redis_resource, "hwm_levels", _levels(15, support=150.0)) == {"written": 0, "skipped_newer": 3}
    assert redis_resource.latest_snapshot("hwm_levels") is None and redis_resource.latest_snapshot("hwm_levels", "KRW-ETH") is None
    for market in (None, "KRW-BTC", "KRW-ETH"):
        assert redis_client.get(redis_resource.high_water_key("hwm_levels", market)) == b"2025-09-01T00:30:00Z"
        assert redis_client.ttl(redis_resource.high_water_key("hwm_levels", market)) == -1, "the mark never expires"

    assert _push(redis_resource, "hwm_levels", _levels(45, support=450.0), ttl=60)["written"] == 3
    assert redis_resource.latest_snapshot("hwm_levels", "KRW-BTC")["rows"][0]["support"] == 450.0
    assert redis_client.get(redis_resource.high_water_key("hwm_levels")) == b"2025-09-01T00:45:00Z"
    assert 50 <= redis_client.ttl(redis_resource.key("hwm_levels")) <= 60, "the snapshot keys keep their TTL"


def test_io_manager_pushes_after_commit_and_survives_redis_down(postgres_resource, redis_resource):
    up = PostgresDataFrameIOManager(postgres=postgres_resource, redis=redis_resource)
    metadata = write(up, _levels(2), "pushed_levels", partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT_METADATA)
    assert metadata["redis_snapshot"].value == "pushed 3 key(s), 0 kept a newer snapshot"
    assert redis_resource.latest_snapshot("pushed_levels")["as_of"] == "2025-09-01T00:02:00Z"

    down = PostgresDataFrameIOManager(postgres=postgres_resource, redis=RedisResource(url="redis://127.0.0.1:1/0", prefix=redis_resource.prefix))
    frame = pd.concat([_levels(2), _levels(4)], ignore_index=True)
    metadata = write(down, frame, "pushed_levels", partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT_METADATA)

    assert metadata["redis_snapshot"].value.startswith("failed: ConnectionError")
    pd.testing.assert_frame_equal(read(down, "pushed_levels", partitions=(HOUR_A, HOUR_A), metadata=SNAPSHOT_METADATA), frame.sort_values(["as_of", "market",
        "level"]).reset_index(drop=True))
    assert redis_resource.latest_snapshot("pushed_levels")["as_of"] == "2025-09-01T00:02:00Z"  # untouched, not erased


@pytest.mark.parametrize("rows", [0, 3])
def test_assets_without_snapshot_metadata_never_touch_redis(postgres_resource, rows):
    down = PostgresDataFrameIOManager(postgres=postgres_resource, redis=RedisResource(url="redis://127.0.0.1:1/0"))
    keyless = {"partition_expr": "as_of", "write_mode": WriteMode.REPLACE}
    metadata = write(down, _levels(2).head(rows), "quiet_levels", partitions=(HOUR_A, HOUR_A), metadata=keyless)
    assert "redis_snapshot" not in metadata
