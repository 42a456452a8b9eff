"""The publish step of an analysis: a real run writes the analysis to Postgres, then its newest snapshot to Redis."""

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.definitions import defs
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.publishing import redis_publish_asset
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets_tests.lib.storage_data import HOUR_A, HOUR_B

ANALYSES = ["market_status", "support_levels", "recommendations"]


@dg.asset(partitions_def=hourly_partitions, metadata={"partition_expr": "as_of", "primary_key": ["as_of", "market"],
                                                      "write_mode": WriteMode.REPLACE.value})
def toy_levels(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """Two ticks of two markets in the run's hour; a run tagged ``outside`` returns a row the IO manager refuses."""
    start = pd.Timestamp(context.partition_time_window.start)
    ticks = [start + pd.Timedelta(minutes=15), start + pd.Timedelta(minutes=45)]
    if context.run.tags.get("outside"):
        ticks[-1] += pd.Timedelta(hours=1)
    return pd.DataFrame({"as_of": [t for t in ticks for _ in range(2)], "market": ["KRW-BTC", "KRW-ETH"] * 2, "level": [1.0, 2.0, 3.0, 4.0]})


toy_levels_redis = redis_publish_asset(toy_levels, per_market=True)


@pytest.fixture
def resources(io_resources, redis_resource, postgres_resource):
    return {**io_resources, "snapshots": SnapshotStore(redis=redis_resource, postgres=postgres_resource, ttls={"toy_levels": 90})}


def _run(resources, hour: str, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize([toy_levels, toy_levels_redis], partition_key=hour, resources=resources, **kwargs)


def test_the_publish_step_names_the_keys_it_wrote_and_writes_the_newest_tick(resources, redis_client):
    store: SnapshotStore = resources["snapshots"]
    result = _run(resources, HOUR_B)
    assert result.success
    metadata = {name: value.value for name, value in result.asset_materializations_for_node("toy_levels_redis")[0].metadata.items()}
    prefix = store.redis.prefix
    assert metadata == {
        "published": "pushed 3 key(s), 0 kept a newer snapshot", "keys": [f"{prefix}:toy_levels:latest", f"{prefix}:toy_levels:<MARKET>"],
        "keys_written": 3, "keys_kept_newer": 0, "as_of": "2025-09-01T01:45:00Z", "rows": 2, "ttl_seconds": 90, "markets": 2,
    }
    btc = store.cached("toy_levels", "KRW-BTC")
    assert (btc["run_id"], btc["partition"], btc["rows"]) == (result.run_id, HOUR_B, [{"as_of": "2025-09-01T01:45:00Z", "market": "KRW-BTC",
                                                                                        "level": 3.0}])
    assert 80 <= redis_client.ttl(store.key("toy_levels")) <= 90

    older = _run(resources, HOUR_A)  # an older hour re-materialised: stored, and refused by the high-water marks
    assert older.success
    metadata = older.asset_materializations_for_node("toy_levels_redis")[0].metadata
    assert (metadata["published"].value, metadata["keys_kept_newer"].value) == ("pushed 0 key(s), 3 kept a newer snapshot", 3)
    assert store.cached("toy_levels")["as_of"] == "2025-09-01T01:45:00Z"


def test_a_failed_postgres_write_publishes_nothing(resources):
    store: SnapshotStore = resources["snapshots"]
    assert _run(resources, HOUR_B).success
    published = store.cached("toy_levels")
    failed = _run(resources, HOUR_B, tags={"outside": "yes"}, raise_on_error=False)
    assert not failed.success
    assert "outside the partition window" in failed.failure_data_for_node("toy_levels").error.to_string()
    assert failed.asset_materializations_for_node("toy_levels_redis") == []  # the publish step never ran
    assert store.cached("toy_levels") == published


def test_redis_down_keeps_the_postgres_write_and_the_run_says_the_publish_failed(resources, postgres_resource):
    down = {**resources, "snapshots": SnapshotStore(redis=RedisResource(url="redis://127.0.0.1:1/0"), postgres=postgres_resource,
                                                    ttls={"toy_levels": 90})}
    result = _run(down, HOUR_A)
    assert result.success, "a cache outage never fails a committed write"
    assert result.asset_materializations_for_node("toy_levels_redis")[0].metadata["published"].value.startswith("failed: ConnectionError")
    stored = PostgresDataFrameIOManager(postgres=postgres_resource)
    assert len(postgres_resource.read_frame(f"SELECT * FROM {stored.postgres.table_name('toy_levels')} WHERE as_of < '2025-09-01T01:00Z'")) == 4


def test_every_analysis_publishes_through_a_redis_asset_in_its_own_job():
    repository = defs.get_repository_def()
    for analysis in ANALYSES:
        publisher = repository.assets_defs_by_key[dg.AssetKey(f"{analysis}_redis")]
        assert "redis" in publisher.specs_by_key[publisher.key].kinds
        assert publisher.dependency_keys == {dg.AssetKey(analysis)} and publisher.partitions_def == hourly_partitions
        assert "redis" not in repository.assets_defs_by_key[dg.AssetKey(analysis)].specs_by_key[dg.AssetKey(analysis)].kinds
        job = defs.resolve_job_def(f"{analysis}_job")
        assert {dg.AssetKey(analysis), dg.AssetKey(f"{analysis}_redis")} <= job.asset_layer.executable_asset_keys


def test_a_backfill_range_publishes_its_newest_tick_once(resources):
    store: SnapshotStore = resources["snapshots"]
    client = store.redis.client()
    client.delete(*client.scan_iter(f"{store.redis.prefix}:*toy_levels*"), "-")  # the other tests' snapshots, marks and floor
    ranged = {"dagster/asset_partition_range_start": HOUR_A, "dagster/asset_partition_range_end": HOUR_B}
    result = dg.materialize([toy_levels, toy_levels_redis], tags=ranged, resources=resources)
    assert result.success
    published = result.asset_materializations_for_node("toy_levels_redis")  # one per partition of the range, one push
    assert {m.partition for m in published} == {HOUR_A, HOUR_B} and {m.metadata["keys_written"].value for m in published} == {3}
    snapshot = store.cached("toy_levels")
    assert (snapshot["partition"], snapshot["as_of"]) == (f"{HOUR_A}...{HOUR_B}", published[0].metadata["as_of"].value)
