"""Redis snapshots on the real test Redis: payload format, TTL, newer-wins (past a TTL too), served rows only,
an event for every stored snapshot; Postgres' snapshots since an as_of (what an event stream missed); on a private
Redis restarted empty: the marks rebuilt from Postgres, and the API never going back in time."""

import json
import time

import pandas as pd
import pytest

from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import MEMORY, MarksNotRebuiltError, SnapshotStore
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets_tests.lib.storage_data import HOUR_A, write


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


@pytest.fixture
def store(redis_resource, postgres_resource) -> SnapshotStore:
    ttls = {"fmt_levels": 120, "cas_levels": 300, "hwm_levels": 1, "named_rows": 60, "evt_levels": 60}
    return SnapshotStore(redis=redis_resource, postgres=postgres_resource, ttls=ttls, served_rows={"named_rows": {"market": "KRW-ETH"}})


def _publish(store: SnapshotStore, asset: str, rows: pd.DataFrame, per_market: bool = True) -> tuple[int, int]:
    published = store.publish(asset, rows, run_id="run-1", partition=HOUR_A, per_market=per_market)
    return published["keys_written"], published["keys_kept_newer"]


def test_payload_format_ttl_and_what_was_published(store, redis_client):
    published = store.publish("fmt_levels", pd.concat([_levels(10), _levels(15)]), run_id="run-1", partition=HOUR_A, per_market=True)
    assert published == {
        "published": "pushed 3 key(s), 0 kept a newer snapshot",
        "keys": [f"{store.redis.prefix}:fmt_levels:latest", f"{store.redis.prefix}:fmt_levels:<MARKET>"],
        "keys_written": 3, "keys_kept_newer": 0, "as_of": "2025-09-01T00:15:00Z", "rows": 3, "ttl_seconds": 120, "markets": 2,
    }

    latest = store.cached("fmt_levels")
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
    eth = store.cached("fmt_levels", "KRW-ETH")
    assert [row["market"] for row in eth["rows"]] == ["KRW-ETH"] and eth["as_of"] == latest["as_of"]
    assert store.key("fmt_levels") == f"{store.redis.prefix}:fmt_levels:latest"
    assert store.key("fmt_levels", "KRW-BTC") == f"{store.redis.prefix}:fmt_levels:KRW-BTC"
    for key in (store.key("fmt_levels"), store.key("fmt_levels", "KRW-BTC")):
        assert 110 <= redis_client.ttl(key) <= 120
    assert store.cached("fmt_levels", "KRW-XRP") is None


def test_an_older_snapshot_never_replaces_a_newer_one(store):
    _publish(store, "cas_levels", _levels(30, support=300.0))
    assert _publish(store, "cas_levels", _levels(15, support=150.0)) == (0, 3)
    assert store.cached("cas_levels")["rows"][0]["support"] == 300.0

    assert _publish(store, "cas_levels", _levels(30, support=301.0))[0] == 3  # same tick recomputed
    assert _publish(store, "cas_levels", _levels(45, support=450.0))[0] == 3
    assert store.cached("cas_levels", "KRW-BTC")["rows"][0]["support"] == 450.0


def test_an_older_snapshot_is_refused_after_the_newer_key_expired(store, redis_client):
    assert _publish(store, "hwm_levels", _levels(30, support=300.0))[0] == 3
    time.sleep(1.2)  # the newer snapshot's keys expire (TTL 1 s); their high-water marks stay
    assert store.cached("hwm_levels") is None and store.cached("hwm_levels", "KRW-BTC") is None

    assert _publish(store, "hwm_levels", _levels(15, support=150.0)) == (0, 3)
    assert store.cached("hwm_levels") is None and store.cached("hwm_levels", "KRW-ETH") is None
    for market in (None, "KRW-BTC", "KRW-ETH"):
        assert redis_client.get(store.high_water_key("hwm_levels", market)) == b"2025-09-01T00:30:00Z"
        assert redis_client.ttl(store.high_water_key("hwm_levels", market)) == -1, "the mark never expires"
    assert store.high_water_key("hwm_levels") == f"{store.redis.prefix}:high_water:hwm_levels:latest"

    longer = store.model_copy(update={"ttls": {"hwm_levels": 60}})
    assert _publish(longer, "hwm_levels", _levels(45, support=450.0))[0] == 3
    assert store.cached("hwm_levels", "KRW-BTC")["rows"][0]["support"] == 450.0
    assert redis_client.get(store.high_water_key("hwm_levels")) == b"2025-09-01T00:45:00Z"
    assert 50 <= redis_client.ttl(store.key("hwm_levels")) <= 60, "the snapshot keys keep their TTL"


def test_only_the_served_rows_are_published(store):
    assert store.publish("named_rows", _levels(2), run_id="r", partition=HOUR_A)["rows"] == 1
    snapshot = store.cached("named_rows")
    assert [row["market"] for row in snapshot["rows"]] == ["KRW-ETH"] and snapshot["as_of"] == "2025-09-01T00:02:00Z"
    nothing_served = _levels(4).query("market != 'KRW-ETH'")
    assert store.publish("named_rows", nothing_served, run_id="r", partition=HOUR_A) == {"published": "skipped: no rows", "ttl_seconds": 60}
    assert store.cached("named_rows")["as_of"] == "2025-09-01T00:02:00Z"


def test_an_asset_without_a_ttl_is_refused_before_redis_is_touched(postgres_resource):
    down = SnapshotStore(redis=RedisResource(url="redis://127.0.0.1:1/0"), postgres=postgres_resource, ttls={"market_status": 300})
    with pytest.raises(KeyError, match=r"unknown_levels: no snapshot TTL configured \(SnapshotStore.ttls has \['market_status'\]\)"):
        down.publish("unknown_levels", _levels(2), run_id="r", partition=HOUR_A)


# --- Redis restarted empty: the marks come back from Postgres; the API never goes back in time -------------

STATUS = {"partition_expr": "as_of", "primary_key": ["as_of"], "write_mode": "replace"}


def _status(hour: str, minute: int = 58) -> pd.DataFrame:
    as_of = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start) + pd.Timedelta(minutes=minute)
    return pd.DataFrame({"as_of": [as_of], "regime": ["risk_on"], "score": [61.0]})


def _stored_and_published(storage, store: SnapshotStore, hour: str) -> None:
    """What market_status_job does for ``hour``: the Postgres write, then the publish of its newest tick."""
    frame = _status(hour)
    window = hourly_partitions.time_window_for_partition_key(hour)
    PostgresDataFrameIOManager(postgres=storage.postgres_resource).write("restart_status", frame, STATUS, window)
    store.publish("restart_status", frame, run_id="run", partition=hour)


@pytest.fixture
def private_store(private_storage) -> SnapshotStore:
    return SnapshotStore(redis=private_storage.redis_resource, postgres=private_storage.postgres_resource,
                         ttls={"restart_status": 300, "restart_levels": 300})


def test_after_redis_restarts_empty_the_marks_are_rebuilt_from_postgres_before_the_next_publish(private_storage, private_store):
    """Per key: the asset's newest stored as_of for the latest key, each market's own for its key."""
    _stored_and_published(private_storage, private_store, "2025-09-15-12:00")
    private_storage.redis.kill()
    private_storage.redis.start()  # back and empty: no snapshot, no mark
    assert private_storage.redis_resource.client().dbsize() == 0

    late = _status("2025-09-15-10:00")  # a late run or a backfill of an older hour publishes
    published = private_store.publish("restart_status", late, run_id="late", partition="2025-09-15-10:00")

    assert (published["keys_written"], published["keys_kept_newer"]) == (0, 1)
    assert private_store.cached("restart_status") is None
    assert private_storage.redis_resource.client().get(private_store.high_water_key("restart_status")) == b"2025-09-15T12:58:00Z"
    newer = _status("2025-09-15-13:00")  # the next hour is published as ever
    assert private_store.publish("restart_status", newer, run_id="next", partition="2025-09-15-13:00")["keys_written"] == 1

    # one key per market: KRW-ETH was last stored at 10:58 (delisted since), KRW-BTC at 12:58
    levels = pd.concat([_status("2025-09-15-10:00").assign(market=m) for m in ("KRW-BTC", "KRW-ETH")] +
                       [_status("2025-09-15-12:00").assign(market="KRW-BTC")], ignore_index=True)
    window = hourly_partitions.time_window_for_partition_key("2025-09-15-10:00")
    window = type(window)(window.start, hourly_partitions.time_window_for_partition_key("2025-09-15-12:00").end)
    PostgresDataFrameIOManager(postgres=private_storage.postgres_resource).write(
        "restart_levels", levels, {**STATUS, "primary_key": ["as_of", "market"]}, window)
    late = levels[levels["as_of"] < pd.Timestamp("2025-09-15T11:00Z")]
    published = private_store.publish("restart_levels", late, run_id="late", partition="2025-09-15-10:00", per_market=True)
    assert (published["keys_written"], published["keys_kept_newer"]) == (1, 2)  # KRW-ETH's own newest; latest and BTC refused
    assert private_store.cached("restart_levels", "KRW-ETH")["as_of"] == "2025-09-15T10:58:00Z"
    assert private_store.cached("restart_levels", "KRW-BTC") is None


def test_marks_that_cannot_be_rebuilt_let_nothing_in(private_storage, private_store):
    _stored_and_published(private_storage, private_store, "2025-09-15-12:00")
    private_storage.redis.kill()
    private_storage.redis.start()
    private_storage.postgres.kill()  # Postgres cannot say how far the marks went

    with pytest.raises(MarksNotRebuiltError, match=r"restart_status: Redis has no high-water mark for 1 key\(s\).*nothing was pushed"):
        private_store.publish("restart_status", _status("2025-09-15-10:00"), run_id="late", partition="2025-09-15-10:00")
    assert private_storage.redis_resource.client().dbsize() == 0


def test_the_api_never_serves_an_older_as_of_than_it_served_before(private_storage, private_store):
    """Redis restarted empty and took an older snapshot (pushed by a release without marks); Postgres is down."""
    _stored_and_published(private_storage, private_store, "2025-09-15-12:00")
    assert private_store.latest("restart_status")["as_of"] == "2025-09-15T12:58:00Z"
    private_storage.redis.kill()
    private_storage.redis.start()
    older = {"asset": "restart_status", "as_of": "2025-09-15T10:58:00Z", "run_id": "late", "partition": "2025-09-15-10:00", "rows": []}
    private_storage.redis_resource.client().set(private_store.key("restart_status"), json.dumps(older))
    private_storage.postgres.kill()

    answer = private_store.latest("restart_status")

    assert (answer["as_of"], answer["source"]) == ("2025-09-15T12:58:00Z", MEMORY)
    private_storage.postgres.start()
    assert private_store.latest("restart_status")["source"] == "postgres"  # the record answers again


def _events(pubsub, wait: float = 1.0) -> list[dict]:
    """Every event the subscription received within ``wait`` seconds of the last one."""
    events = []
    while (message := pubsub.get_message(ignore_subscribe_messages=True, timeout=wait)) is not None:
        events.append(json.loads(message["data"]))
    return events


def test_every_stored_snapshot_is_published_and_a_refused_older_one_is_not(store, redis_client):
    pubsub = redis_client.pubsub()
    pubsub.subscribe(store.events_channel)
    try:
        assert pubsub.get_message(timeout=2)["type"] == "subscribe"
        assert store.events_channel == f"{store.redis.prefix}:events"
        _publish(store, "evt_levels", _levels(30))
        pointers = [(None, "latest"), ("KRW-BTC", "KRW-BTC"), ("KRW-ETH", "KRW-ETH")]
        assert _events(pubsub) == [
            {"asset": "evt_levels", "market": market, "as_of": "2025-09-01T00:30:00Z", "run_id": "run-1", "key": f"{store.redis.prefix}:evt_levels:{key}"}
            for market, key in pointers
        ]
        assert _publish(store, "evt_levels", _levels(15)) == (0, 3)
        assert _events(pubsub, wait=0.5) == [], "an older snapshot is refused silently"

        # one market newer, the other older than what is stored: only the stored one is announced
        mixed = pd.concat([_levels(45).query("market == 'KRW-BTC'"), _levels(20).query("market == 'KRW-ETH'")])
        store.publish("evt_levels", mixed.query("market == 'KRW-ETH'"), run_id="late", partition=HOUR_A, per_market=True)
        assert _events(pubsub, wait=0.5) == []
        store.publish("evt_levels", mixed.query("market == 'KRW-BTC'"), run_id="run-2", partition=HOUR_A, per_market=True)
        assert [(e["market"], e["as_of"]) for e in _events(pubsub)] == [(None, "2025-09-01T00:45:00Z"), ("KRW-BTC", "2025-09-01T00:45:00Z")]
    finally:
        pubsub.close()


SINCE_METADATA = {"partition_expr": "as_of", "primary_key": ["as_of", "market", "level"], "write_mode": WriteMode.REPLACE.value}


def test_since_reads_the_snapshots_after_an_as_of_oldest_first_the_newest_limit(store, postgres_resource):
    levels = pd.concat([_levels(minute) for minute in (5, 10, 15, 20)]).drop(columns="touched_at")
    write(PostgresDataFrameIOManager(postgres=postgres_resource), levels, "since_levels", partitions=(HOUR_A, HOUR_A), metadata=SINCE_METADATA)
    missed = store.since("since_levels", after="2025-09-01T00:05:00Z", limit=10)
    assert [s["as_of"] for s in missed] == ["2025-09-01T00:10:00Z", "2025-09-01T00:15:00Z", "2025-09-01T00:20:00Z"]
    assert [len(s["rows"]) for s in missed] == [3, 3, 3] and missed[0]["source"] == "postgres"
    eth = store.since("since_levels", "KRW-ETH", after="2025-09-01T00:05:00Z", limit=2)
    assert [(s["as_of"], [r["market"] for r in s["rows"]]) for s in eth] == [
        ("2025-09-01T00:15:00Z", ["KRW-ETH"]), ("2025-09-01T00:20:00Z", ["KRW-ETH"])]
    assert store.since("since_levels", after="2025-09-01T00:20:00Z", limit=10) == []
    assert store.since("never_written", after="2025-09-01T00:20:00Z", limit=10) == []
