"""The HTTP API served by uvicorn over a real Dagster instance, real Redis and real Postgres."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime

import dagster as dg
import httpx
import pandas as pd
import psycopg
import pytest

from dantaro_assets.api.app import create_app
from dantaro_assets.api.job_log import CONTRACT_STATUS
from dantaro_assets.api.models import (
    MarketStatusSnapshot,
    RecommendationsSnapshot,
    Scorecard,
    SupportLevelsSnapshot,
    WorkerStatus,
)
from dantaro_assets.lib.migrations import migrate
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.recommendations.assets import RECOMMENDATIONS, recommendation_outcomes
from dantaro_assets.recommendations.outcomes import HORIZONS
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.lib.storage_data import HOUR_A, HOUR_B, HOUR_C, write
from dantaro_assets_tests.operations.daemon import DaemonHeartbeat


@dg.asset(name="market_status")
def counted_markets() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"markets": 250})


@dg.asset(name="recommendations")
def broken() -> None:
    raise ValueError("Upbit answered 418: IP blocked")


STATUS_REFRESH_S = 0.2  # the served status refreshes fast enough for a test to wait for its next refresh


@dg.op
def idle() -> None:
    pass


@dg.job
def waiting_job() -> None:
    """A job whose run the test only queues."""
    idle()


@pytest.fixture
def api(instance, settings, pg_url, redis_client) -> Iterator[tuple[httpx.Client, SnapshotStore, PostgresResource]]:
    """The API over a schema and key prefix of its own: other tests' snapshots must not answer for it."""
    own = f"api_{uuid.uuid4().hex[:6]}"
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"), postgres)
    # answers read afresh for every request: these tests change storage behind the API's back
    with serve_http(create_app(lambda: instance, store, STATUS_REFRESH_S, settings=settings, snapshot_cache_s=0)) as client:
        yield client, store, postgres
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


def _heartbeat(instance: dg.DagsterInstance, daemon_type: str, at: float) -> None:
    instance.add_daemon_heartbeat(DaemonHeartbeat(timestamp=at, daemon_type=daemon_type, daemon_id="test-daemon", errors=[]))


def status_once(client: httpx.Client, until: Callable[[dict], bool], timeout: float = 10.0, **params) -> dict:
    """The first /worker/status answer for which ``until`` holds (the background refresh catches up)."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get("/worker/status", params=params).json()
        if until(body) or time.monotonic() > deadline:
            return body
        time.sleep(0.05)


SEED_JOB_FIELDS = {"job_id", "job_type", "status", "duration", "symbols_processed", "error", "timestamp"}


def test_worker_status_keeps_the_seed_contract(api, instance):
    client, _, _ = api
    dg.materialize([counted_markets], instance=instance, tags=MARKET_STATUS.job_type.tags())
    dg.materialize([broken], instance=instance, tags=RECOMMENDATIONS.job_type.tags(), raise_on_error=False)
    # NOT_STARTED: a QUEUED run needs a code location's origin; both read "queued" (CONTRACT_STATUS covers every status)
    queued = instance.create_run_for_job(waiting_job, status=dg.DagsterRunStatus.NOT_STARTED, tags=MARKET_STATUS.job_type.tags())

    body = status_once(client, lambda b: len(b["last_jobs"]) == 3)
    assert {"worker_active", "last_jobs", "uptime"} <= set(body)
    WorkerStatus.model_validate(body)
    spec = client.get("/openapi.json").json()["components"]["schemas"]
    assert set(body) == set(spec["WorkerStatus"]["properties"]) and set(body["last_jobs"][0]) == set(spec["Job"]["properties"])
    assert body["worker_active"] is False  # no daemon has ever beaten
    assert body["config_problems"] == []
    assert body["uptime"] >= 0 and body["uptime_s"] == body["uptime"]
    waiting, failed, succeeded = body["last_jobs"]  # newest first
    for job in body["last_jobs"]:
        assert SEED_JOB_FIELDS <= set(job)
    assert succeeded["job_type"] == "market_status" and succeeded["status"] == "completed" and succeeded["dagster_status"] == "SUCCESS"
    assert succeeded["symbols_processed"] == 250 == succeeded["markets_processed"] and succeeded["error"] is None
    assert succeeded["duration"] > 0 and succeeded["duration"] == succeeded["duration_s"] and succeeded["timestamp"].endswith("Z")
    assert failed["job_type"] == "recommendations" and (failed["status"], failed["dagster_status"]) == ("failed", "FAILURE")
    assert "ValueError: Upbit answered 418: IP blocked" in failed["error"] and failed["symbols_processed"] is None
    assert waiting["job_id"] == queued.run_id and waiting["status"] == "queued" and waiting["duration"] is None
    assert set(CONTRACT_STATUS) == set(dg.DagsterRunStatus) and set(CONTRACT_STATUS.values()) == {"completed", "failed", "running", "queued"}

    now = time.time()
    _heartbeat(instance, "SCHEDULER", now - 600)  # a daemon silent for 10 minutes is dead
    _heartbeat(instance, "QUEUED_RUN_COORDINATOR", now)
    body = status_once(client, lambda b: b["daemons"]["QUEUED_RUN_COORDINATOR"]["healthy"])
    assert body["worker_active"] is False and body["daemons"]["QUEUED_RUN_COORDINATOR"]["healthy"] is True
    _heartbeat(instance, "SCHEDULER", now)
    body = status_once(client, lambda b: b["worker_active"], limit=1)
    assert body["worker_active"] is True and len(body["last_jobs"]) == 1
    assert client.get("/worker/status", params={"limit": "x"}).status_code == 400
    assert client.get("/worker/status", params={"limit": 201}).status_code == 400


def test_worker_status_is_served_from_a_background_refresh_that_says_its_age(instance, settings, pg_url):
    snapshots = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
                                     PostgresResource(url=pg_url, db_schema=settings.db_schema))
    with serve_http(create_app(lambda: instance, snapshots, status_refresh_s=1.0, settings=settings)) as client:
        first = client.get("/worker/status").json()
        assert first["last_jobs"] == [] and first["cache_age"] < 1.5 and first["cached_at"].endswith("Z")
        dg.materialize([counted_markets], instance=instance, tags=MARKET_STATUS.job_type.tags())
        stale = client.get("/worker/status").json()
        fresh = status_once(client, lambda b: b["cached_at"] != stale["cached_at"] and b["last_jobs"], timeout=5)
        [job] = fresh["last_jobs"]
        assert job["status"] == "completed" and fresh["cache_age"] < 1.5
        if stale["cached_at"] == first["cached_at"]:  # asked within the same refresh: the same answer, older
            assert stale["last_jobs"] == [] and stale["cache_age"] >= first["cache_age"]

    with serve_http(create_app(lambda: instance, snapshots, status_refresh_s=0, settings=settings)) as client:
        body = client.get("/worker/status").json()  # computed for the request
        assert body["cache_age"] < 0.5 and [job["status"] for job in body["last_jobs"]] == ["completed"]


def test_snapshots_come_from_redis_then_postgres(api, pg_url):
    client, store, postgres = api
    as_of = pd.Timestamp("2026-03-10T10:58:00Z")
    assert client.get("/market-status/latest").status_code == 404  # nothing written anywhere yet

    store.publish("market_status", pd.DataFrame({"as_of": [as_of], "score": [0.4], "regime": ["risk-on"]}), run_id="run-1", partition="2026-03-10-10:00")
    body = client.get("/market-status/latest").json()
    assert body["source"] == "redis" and body["run_id"] == "run-1" and body["as_of"] == "2026-03-10T10:58:00Z"
    assert body["rows"] == [{"as_of": "2026-03-10T10:58:00Z", "score": 0.4, "regime": "risk-on"}]

    # support levels only in Postgres (the Redis key expired): the newest as_of of that market is served
    schema = postgres.db_schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'CREATE TABLE "{schema}".support_levels (as_of timestamptz, market text, level double precision, side text, rank bigint)')
        conn.execute(
            f'INSERT INTO "{schema}".support_levels VALUES (%s, %s, 1.0, %s, 1), (%s, %s, 2.0, %s, 1), (%s, %s, 9.0, %s, 1)',
            (datetime(2026, 3, 10, 10, 45, tzinfo=UTC), "KRW-BTC", "support",
             datetime(2026, 3, 10, 11, 0, tzinfo=UTC), "KRW-BTC", "support",
             datetime(2026, 3, 10, 11, 15, tzinfo=UTC), "KRW-ETH", "resistance"),
        )
    try:
        body = client.get("/support-levels/krw-btc").json()
        assert body["source"] == "postgres" and body["as_of"] == "2026-03-10T11:00:00Z"
        assert body["rows"] == [{"as_of": "2026-03-10T11:00:00Z", "market": "KRW-BTC", "level": 2.0, "side": "support", "rank": 1}]
        assert client.get("/support-levels/KRW-XRP").status_code == 404
        assert client.get("/support-levels/not a market").status_code == 400
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP TABLE "{schema}".support_levels')


STATUS_METADATA = {"partition_expr": "as_of", "primary_key": ["as_of"], "write_mode": WriteMode.REPLACE.value}
LEVELS_METADATA = {"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.REPLACE.value}


def _status(hour: str, minute: int) -> pd.DataFrame:
    as_of = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start) + pd.Timedelta(minutes=minute)
    return pd.DataFrame({"as_of": [as_of], "score": [float(minute)], "regime": ["neutral"]})


def test_latest_never_goes_back_when_an_older_hour_is_rematerialised_after_the_ttl(api):
    client, store, postgres = api
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    store = store.model_copy(update={"ttls": {"market_status": 1}})

    def publish(hour: str, minute: int) -> str:
        """What a run of market_status_job does: the write, then the publish step."""
        frame = _status(hour, minute)
        write(io_manager, frame, "market_status", partitions=(hour, hour), metadata=STATUS_METADATA)
        return store.publish("market_status", frame, run_id="test-run", partition=hour)["published"]

    assert publish(HOUR_B, 58) == "pushed 1 key(s), 0 kept a newer snapshot"
    time.sleep(1.2)  # the newer snapshot's key expires
    assert publish(HOUR_A, 58) == "pushed 0 key(s), 1 kept a newer snapshot"
    assert store.cached("market_status") is None
    body = client.get("/market-status/latest").json()
    assert (body["source"], body["as_of"], body["rows"][0]["score"]) == ("postgres", "2025-09-01T01:58:00Z", 58.0)

    assert publish(HOUR_C, 2) == "pushed 1 key(s), 0 kept a newer snapshot"
    body = client.get("/market-status/latest").json()
    assert (body["source"], body["as_of"]) == ("redis", "2025-09-01T02:02:00Z")


def test_a_newer_postgres_snapshot_beats_an_older_live_redis_key(api):
    client, store, postgres = api
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    write(io_manager, _status(HOUR_B, 30), "market_status", partitions=(HOUR_B, HOUR_B), metadata=STATUS_METADATA)  # no snapshot pushed
    store.publish("market_status", _status(HOUR_A, 30), run_id="late", partition=HOUR_A)
    body = client.get("/market-status/latest").json()
    assert (body["source"], body["as_of"]) == ("postgres", "2025-09-01T01:30:00Z")

    # per market: the table's newest snapshot lacks KRW-BTC, so BTC's Redis key (newer than BTC's stored rows) wins
    as_of = [pd.Timestamp(f"2025-09-01T0{h}:15Z") for h in (0, 1, 2)]
    levels = pd.DataFrame({"as_of": as_of, "market": ["KRW-BTC", "KRW-BTC", "KRW-ETH"], "side": "support", "rank": 1, "level": [1.0, 2.0, 3.0]})
    write(io_manager, levels, "support_levels", partitions=(HOUR_A, HOUR_C), metadata=LEVELS_METADATA)
    btc = levels.iloc[[1]].assign(level=2.5)
    store.publish("support_levels", btc, run_id="r", partition=HOUR_B, per_market=True)
    body = client.get("/support-levels/KRW-BTC").json()
    assert (body["source"], body["as_of"], body["rows"][0]["level"]) == ("redis", "2025-09-01T01:15:00Z", 2.5)
    body = client.get("/support-levels/KRW-ETH").json()
    assert (body["source"], body["as_of"]) == ("postgres", "2025-09-01T02:15:00Z")


def test_redis_outage_falls_back_to_postgres(api, settings):
    _, store, postgres = api
    down = store.model_copy(update={"redis": RedisResource(url="redis://127.0.0.1:1/0", prefix=settings.redis_prefix)})
    assert down.latest("recommendations") is None  # Redis refused, the table does not exist: no snapshot, no error
    write(PostgresDataFrameIOManager(postgres=postgres), _status(HOUR_A, 5), "market_status", partitions=(HOUR_A, HOUR_A), metadata=STATUS_METADATA)
    latest = down.latest("market_status")
    assert (latest["source"], latest["as_of"], latest["rows"][0]["score"]) == ("postgres", "2025-09-01T00:05:00Z", 5.0)


def test_postgres_outage_serves_redis(api, settings):
    _, store, _ = api
    store.publish("market_status", _status(HOUR_A, 7), run_id="r", partition=HOUR_A)
    down = store.model_copy(update={"postgres": PostgresResource(url="postgresql://127.0.0.1:1/none", db_schema=settings.db_schema)})
    latest = down.latest("market_status")
    assert (latest["source"], latest["as_of"]) == ("redis", "2025-09-01T00:07:00Z")




def test_openapi_is_generated_from_the_models_and_requires_the_worker_contract(api):
    client, _, _ = api
    spec = client.get("/openapi.json").json()
    assert set(spec["paths"]) == {"/health", "/worker/status", "/market-status/latest", "/recommendations/latest",
                                  "/recommendations/scorecard", "/support-levels/{market}", "/candles/{market}", "/events", "/metrics"}
    schemas = spec["components"]["schemas"]
    assert {"worker_active", "last_jobs", "uptime"} <= set(schemas["WorkerStatus"]["required"])
    assert SEED_JOB_FIELDS <= set(schemas["Job"]["required"])
    assert schemas["Job"]["properties"]["duration"]["anyOf"] == [{"type": "number"}, {"type": "null"}]  # required, may be null
    assert schemas["WorkerStatus"]["properties"]["last_jobs"]["items"] == {"$ref": "#/components/schemas/Job"}
    pick = schemas["RecommendationRow"]["properties"]  # where each entry comes from, and its book's spread
    assert "best_ask" in pick["entry_from"]["description"] and pick["spread_bps"]["anyOf"] == [{"type": "number"}, {"type": "null"}]
    [limit] = spec["paths"]["/worker/status"]["get"]["parameters"]
    assert (limit["schema"]["minimum"], limit["schema"]["maximum"], limit["schema"]["default"]) == (1, 200, 20)
    operations = [op for path in spec["paths"].values() for op in path.values()]
    assert all("422" not in op["responses"] for op in operations), "refused parameters answer 400"
    assert spec["paths"]["/support-levels/{market}"]["get"]["responses"]["400"]["content"]["application/json"]["schema"] == {
        "$ref": "#/components/schemas/Problem"}
    assert "security" not in spec, "no token configured: the endpoints are open"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger-ui" in docs.text and "/openapi.json" in docs.text


def test_a_stored_snapshot_is_served_at_once_though_answers_are_kept(instance, settings, pg_url):
    """Answers kept 60 s: the publish's event drops the kept one; a snapshot that only Postgres holds waits out the keep."""
    own = f"api_{uuid.uuid4().hex[:6]}"
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"), postgres)
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    app = create_app(lambda: instance, store, 0, settings=settings, snapshot_cache_s=60)
    try:
        with serve_http(app) as client:
            assert client.get("/market-status/latest").status_code == 404  # kept as "none yet"
            while not app.state.hub.subscribed.is_set():
                time.sleep(0.02)
            store.publish("market_status", _status(HOUR_A, 10), run_id="r", partition=HOUR_A)
            assert _served_as_of(client, "2025-09-01T00:10:00Z")
            write(io_manager, _status(HOUR_A, 20), "market_status", partitions=(HOUR_A, HOUR_A), metadata=STATUS_METADATA)
            time.sleep(0.5)
            assert client.get("/market-status/latest").json()["as_of"] == "2025-09-01T00:10:00Z", "kept: nothing announced it"
            store.publish("market_status", _status(HOUR_A, 30), run_id="r", partition=HOUR_A)
            assert _served_as_of(client, "2025-09-01T00:30:00Z")

        with serve_http(create_app(lambda: instance, store, 0, settings=settings, snapshot_cache_s=0.3)) as client:
            assert client.get("/market-status/latest").json()["as_of"] == "2025-09-01T00:30:00Z"
            write(io_manager, _status(HOUR_B, 0), "market_status", partitions=(HOUR_B, HOUR_B), metadata=STATUS_METADATA)
            assert _served_as_of(client, "2025-09-01T01:00:00Z")  # Postgres' newer snapshot, once the keep ran out
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


def _served_as_of(client: httpx.Client, as_of: str, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        response = client.get("/market-status/latest")
        if response.status_code == 200 and response.json()["as_of"] == as_of:
            return True
        time.sleep(0.05)
    return False


def _graded(hour: str, picks: list[tuple[str, str, float]], *, scorer: bool = True) -> pd.DataFrame:
    """Outcome rows at minute 5 of ``hour``: (scorer, market, excess) each, the return = the excess, target first."""
    as_of = pd.Timestamp(hourly_partitions.time_window_for_partition_key(hour).start) + pd.Timedelta(minutes=5)
    frame = pd.DataFrame([{"as_of": as_of, "scorer": name, "market": market, "score": 50.0, "first_hit": "target",
                           **{f"{kind}_{h}": excess for h in HORIZONS for kind in ("return", "excess")}}
                          for name, market, excess in picks])
    return frame if scorer else frame.drop(columns="scorer")


def test_scorecard_grades_every_scorer_and_latest_serves_only_the_served_one(api, settings):
    client, store, postgres = api
    body = client.get("/recommendations/scorecard").json()  # nothing graded yet: an empty card, not an error
    assert (body["rows"], body["until"], body["served"]) == ([], None, settings.scorer)
    assert set(body["scorers"]) == set(SCORERS)

    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    # a table stored before picks carried a scorer (key as_of, market): its rows were v1's
    legacy = {"partition_expr": "as_of", "primary_key": ["as_of", "market"], "write_mode": WriteMode.REPLACE.value}
    write(io_manager, _graded(HOUR_A, [("v1", "KRW-BTC", 0.01), ("v1", "KRW-ETH", 0.03)], scorer=False),
          "recommendation_outcomes", partitions=(HOUR_A, HOUR_A), metadata=legacy)
    # `dantaro migrate` puts the scorer in the key (the legacy rows become v1's); now two scorers pick KRW-BTC at one tick
    migrate(postgres)
    graded = {**legacy, "primary_key": recommendation_outcomes.metadata_by_key[recommendation_outcomes.key]["primary_key"]}
    write(io_manager, _graded(HOUR_B, [("v1", "KRW-BTC", -0.02), ("reversal", "KRW-BTC", -0.02), ("reversal", "KRW-XRP", 0.04)]),
          "recommendation_outcomes", partitions=(HOUR_B, HOUR_B), metadata=graded)

    body = client.get("/recommendations/scorecard").json()
    Scorecard.model_validate(body)
    assert body["until"] == "2025-09-01T01:05:00Z" and body["windows"] == ["7d", "30d"]
    rows = {(r["window"], r["scorer"], r["horizon"]): r for r in body["rows"]}
    assert set(rows) == {(w, s, h) for w in ("7d", "30d") for s in ("v1", "reversal") for h in HORIZONS}
    v1, reversal = rows[("7d", "v1", "1h")], rows[("30d", "reversal", "4h")]
    assert (v1["picks"], v1["ticks"], v1["target_before_stop"]) == (3, 2, 1.0) and v1["hit_rate"] == pytest.approx(2 / 3, abs=1e-6)
    assert v1["mean_excess"] == pytest.approx((0.01 + 0.03 - 0.02) / 3, abs=1e-6)  # figures rounded to 6 decimals
    assert (reversal["picks"], reversal["hit_rate"]) == (2, 0.5) and reversal["mean_excess"] == pytest.approx(0.01)

    # the served list: Postgres holds every scorer's picks of the newest tick, the API serves the served scorer's
    as_of = pd.Timestamp("2025-09-01T01:05:00Z")
    picks = pd.DataFrame({"as_of": as_of, "scorer": ["v1", "reversal", "rs_btc"], "rank": 1, "market": ["KRW-BTC", "KRW-XRP", "KRW-SOL"]})
    write(io_manager, picks, "recommendations", partitions=(HOUR_B, HOUR_B), metadata=graded)
    assert store.publish("recommendations", picks, run_id="r", partition=HOUR_B)["rows"] == 1  # what recommendations_redis does
    served = picks.loc[picks["scorer"] == settings.scorer, "market"].tolist()
    for source in ("redis", "postgres"):
        body = client.get("/recommendations/latest").json()
        assert body["source"] == source and [r["market"] for r in body["rows"]] == served
        store.redis.client().delete(store.key("recommendations"))  # the key expired: Postgres answers


def test_rows_are_rounded_for_people_while_storage_keeps_full_precision(api):
    """Prices to the row's tick (levels and zone bottoms down, zone tops up), percentages and scores to 2 decimals."""
    client, store, _ = api
    as_of = pd.Timestamp("2026-03-10T11:00:00Z")
    levels = pd.DataFrame({
        "as_of": [as_of], "market": ["KRW-XRP"], "side": ["support"], "rank": [1], "price": [3044.0],
        "level": [3012.7712345], "zone_low": [3001.2345], "zone_high": [3020.00001], "strength": [61.23456],
        "distance_pct": [-1.027555], "tick_size": [1.0], "reasons": [{"volume_share": 0.1234}],
    })
    picks = pd.DataFrame({
        "as_of": [as_of], "rank": [1], "market": ["KRW-XRP"], "score": [72.123456], "entry": [3045.0], "target": [3120.0],
        "stop": [2995.0], "reward_risk": [1.5], "tick_size": [1.0], "caution": [[]],
        "reasons": [{"trend": {"price": 3044.2, "ema20": 3031.98765}, "support_distance": {"support": 3020.4, "pct_above": 0.79123},
                     "plan": {"target_level": 3121.6, "target_pct": 2.4630541, "stop_pct": -1.6420361}}],
    })
    status = pd.DataFrame({"as_of": [as_of], "regime": ["neutral"], "score": [51.2345], "btc_price": [150_012_345.6],
                           "median_return_1h_pct": [-0.123456], "btc_ema_slope_pct_h": [0.0123456], "breadth_1h": [0.4567]})
    picks["scorer"] = store.served_rows["recommendations"]["scorer"]
    for asset, frame in (("support_levels", levels), ("recommendations", picks), ("market_status", status)):
        store.publish(asset, frame, run_id="r", partition="2026-03-10-11:00", per_market=asset == "support_levels")

    level = client.get("/support-levels/KRW-XRP").json()
    SupportLevelsSnapshot.model_validate(level)
    RecommendationsSnapshot.model_validate(client.get("/recommendations/latest").json())
    MarketStatusSnapshot.model_validate(client.get("/market-status/latest").json())
    assert "nearest the price" in level["ranking"]
    row = level["rows"][0]
    assert (row["level"], row["zone_low"], row["zone_high"]) == (3012.0, 3001.0, 3021.0)
    assert (row["strength"], row["distance_pct"], row["reasons"]) == (61.23, -1.03, {"volume_share": 0.1234})
    pick = client.get("/recommendations/latest").json()["rows"][0]
    assert (pick["entry"], pick["target"], pick["stop"], pick["score"], pick["caution"]) == (3045.0, 3120.0, 2995.0, 72.12, [])
    assert pick["reasons"]["trend"]["ema20"] == 3031.0 and pick["reasons"]["support_distance"] == {"support": 3020.0, "pct_above": 0.79}
    assert pick["reasons"]["plan"] == {"target_level": 3121.0, "target_pct": 2.46, "stop_pct": -1.64}
    market = client.get("/market-status/latest").json()["rows"][0]
    assert (market["btc_price"], market["score"], market["median_return_1h_pct"], market["btc_ema_slope_pct_h"]) == (
        150_012_000.0, 51.23, -0.12, 0.01)
    assert market["breadth_1h"] == 0.4567  # a share, not a percentage
    assert store.cached("support_levels", "KRW-XRP")["rows"][0]["level"] == 3012.7712345  # storage untouched


def test_picks_past_their_horizon_are_not_served(api):
    """A snapshot whose pick's horizon has ended (the pipeline stopped): the API leaves it out and says how many."""
    client, store, _ = api
    as_of = pd.Timestamp("2026-03-10T12:00:00Z")
    picks = pd.DataFrame({"as_of": as_of, "rank": [1, 2], "market": ["KRW-XRP", "KRW-ETH"],
                          "scorer": store.served_rows["recommendations"]["scorer"],
                          "expires_at": [as_of + pd.Timedelta(hours=24), pd.Timestamp("2100-01-01T00:00:00Z")]})
    store.publish("recommendations", picks, run_id="r", partition="2026-03-10-12:00")
    body = client.get("/recommendations/latest").json()
    assert [r["market"] for r in body["rows"]] == ["KRW-ETH"] and body["expired"] == 1
