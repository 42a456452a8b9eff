"""The fault matrix of README's "Reliability" section: each fault on real servers, with what is stored before and after.

Every row runs real Dagster runs (``matrix_job``) with the project's resources (``build_resources``) pointed
at a private Postgres and Redis that the test may kill (``fixtures.servers``) and at the replay server with
its faults. Runs that a fault must fail run without step retries (see ``matrix_job``).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import threading
import time

import pandas as pd
import psycopg
import pytest

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.lib.upbit.errors import (
    UpbitIPBlockedError,
    UpbitRateLimitError,
    UpbitResponseError,
    UpbitServerError,
    UpbitTransportError,
)
from dantaro_assets.market_status.analysis import LOOKBACK as STATUS_LOOKBACK
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.reliability.matrix_job import materialize, root_error, run_without_step_retries, throwaway_instance

pytestmark = pytest.mark.spread  # each test has a schema and key prefix of its own on the private servers

DAY, HOUR = "2025-09-15", "2025-09-15-10:00"  # a closed hour of the simulated market
WINDOW = hourly_partitions.time_window_for_partition_key(HOUR)
FAULTY = "KRW-ETH"
CANDLE_PATH = "/v1/candles/minutes/1"


@pytest.fixture(scope="module")
def dagster_instance():
    """Where the runs without step retries are recorded (``dg.execute_job`` needs a persistent instance)."""
    with throwaway_instance() as instance:
        yield instance


def _stored(storage, table: str, column: str, start, end) -> pd.DataFrame:
    """Every stored row of ``table`` with ``start <= column < end``, in key order."""
    postgres = storage.postgres_resource
    frame = postgres.read_frame(f"SELECT * FROM {postgres.table_name(table)} WHERE {column} >= $1 AND {column} < $2",
                                (pd.Timestamp(start), pd.Timestamp(end)))
    order = [column, "market"] if "market" in frame else [column]
    return frame.sort_values(order, ignore_index=True)


def _stored_hour(storage) -> pd.DataFrame:
    return _stored(storage, "candles_1m", "candle_start", WINDOW.start, WINDOW.end)


def _clean_hour(settings, storage) -> pd.DataFrame:
    """The day's universe and the closed hour of 1-minute candles, materialised without faults; the stored hour."""
    assert materialize(settings, "upbit_markets", DAY).success
    assert materialize(settings, "candles_1m", HOUR).success
    stored = _stored_hour(storage)
    assert stored["market"].nunique() == 8 and len(stored) > 400
    return stored


# --- Upbit answers badly: the run fails with a typed error naming the call, storage stays as it was ----------

SLOW = pytest.mark.slow  # the client's own retries (0.5, 1, 2 s backoff) or timeouts come first
UPBIT_FAULTS = [
    pytest.param({"kind": "429"}, UpbitRateLimitError, FAULTY, id="429-storm", marks=SLOW),
    pytest.param({"kind": "418", "seconds": 3}, UpbitIPBlockedError, None, id="418-ip-blocked"),
    pytest.param({"kind": "500"}, UpbitServerError, FAULTY, id="500", marks=SLOW),
    pytest.param({"kind": "503"}, UpbitServerError, FAULTY, id="503-html", marks=SLOW),
    pytest.param({"kind": "latency", "seconds": 2}, UpbitTransportError, FAULTY, id="timeout", marks=SLOW),
    pytest.param({"kind": "drop"}, UpbitTransportError, FAULTY, id="dropped-connection", marks=SLOW),
    pytest.param({"kind": "truncated"}, UpbitTransportError, FAULTY, id="truncated-body", marks=SLOW),
    pytest.param({"kind": "malformed"}, UpbitResponseError, FAULTY, id="malformed-body"),
    pytest.param({"kind": "empty", "variant": "body"}, UpbitResponseError, FAULTY, id="empty-body"),
]


@pytest.mark.parametrize(("fault", "error", "market"), UPBIT_FAULTS)
def test_upbit_fault_fails_the_run_with_a_typed_error_and_changes_nothing_stored(fault, error, market, private_storage, small_replay, dagster_instance):
    settings = private_storage.settings(small_replay.url, upbit_api_timeout=1.0)
    before = _clean_hour(settings, private_storage)

    # Every candle request for one market fails, whatever the retries (count null: until cleared).
    small_replay.inject(path="/v1/candles/*", market=FAULTY, count=None, **fault)
    result = run_without_step_retries(dagster_instance, settings, "candles_1m", HOUR)

    assert not result.success
    cls_name, message = root_error(result, "candles_1m")
    assert cls_name == error.__name__, message
    assert f"Upbit {CANDLE_PATH} market=" in message
    if market:  # a 418 blocks every request of the IP, so any market in flight may be the one named
        assert f"market={market}" in message
    pd.testing.assert_frame_equal(_stored_hour(private_storage), before)


# --- Upbit answers "nothing" or bad rows: a closed hour's stored candles survive ---------------------------

def test_empty_reply_for_one_market_keeps_its_stored_candles(private_storage, small_replay):
    settings = private_storage.settings(small_replay.url)
    before = _clean_hour(settings, private_storage)

    small_replay.inject("empty", path="/v1/candles/*", market="KRW-BTC", count=None, variant="list")
    materialize(settings, "candles_1m", HOUR)

    after = _stored_hour(private_storage)
    assert (after["market"] == "KRW-BTC").sum() == (before["market"] == "KRW-BTC").sum() == 60
    pd.testing.assert_frame_equal(after, before)


def test_empty_reply_for_every_market_fails_the_coverage_check_and_keeps_every_stored_candle(private_storage, small_replay):
    settings = private_storage.settings(small_replay.url)
    before = _clean_hour(settings, private_storage)

    small_replay.inject("empty", path="/v1/candles/*", count=None, variant="list")
    result = materialize(settings, "candles_1m", HOUR)

    assert not result.success
    assert not {c.check_name: c.passed for c in result.get_asset_check_evaluations()}["coverage"]
    pd.testing.assert_frame_equal(_stored_hour(private_storage), before)


def test_quarantined_rows_keep_the_stored_good_rows(private_storage, small_replay):
    settings = private_storage.settings(small_replay.url)
    before = _clean_hour(settings, private_storage)

    # The newest candle of every KRW-ETH page comes back with high below low: quarantined, not stored.
    small_replay.inject("bad_candle", path="/v1/candles/*", market=FAULTY, count=None, variant="high_low")
    result = materialize(settings, "candles_1m", HOUR)

    assert result.asset_materializations_for_node("candles_1m")[0].metadata["quarantined"].value == 1
    pd.testing.assert_frame_equal(_stored_hour(private_storage), before)


# --- Postgres dies mid-write ------------------------------------------------------------------------------

def _kill_when_blocked_by(server, blocker_pid: int, seen: dict, timeout: float = 120.0) -> None:
    """SIGKILL ``server`` as soon as a backend waits on ``blocker_pid``'s row lock, i.e. mid-write; note its query."""
    deadline = time.monotonic() + timeout
    with psycopg.connect(server.url, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "SELECT query FROM pg_stat_activity WHERE %s = ANY(pg_blocking_pids(pid))", (blocker_pid,)
            ).fetchone()
            if row:
                seen["query"] = row[0]
                server.kill()
                return
            time.sleep(0.02)


@pytest.mark.slow
def test_postgres_killed_mid_write_keeps_the_previous_rows_and_fails_the_run(private_storage, small_replay, dagster_instance):
    settings = private_storage.settings(small_replay.url)
    first, last = "2025-09-15-05:00", HOUR
    start = hourly_partitions.time_window_for_partition_key(first).start
    assert materialize(settings, "upbit_markets", DAY).success
    # First run while the last hour is still open (replay clock at 10:30): 5.5 hours of candles are stored.
    small_replay.set_clock("2025-09-15T10:30:00Z")
    assert materialize(settings, "candles_1m", first, last=last).success
    before = _stored(private_storage, "candles_1m", "candle_start", start, WINDOW.end)
    assert before["candle_start"].max() == pd.Timestamp("2025-09-15T10:29:00Z") and len(before) > 2000

    # The hour has closed; the run re-materialising the range would add 10:30-10:59. Another transaction holds
    # an uncommitted KRW-BTC 10:59 row, so the write stops on that key after streaming nearly all its rows;
    # Postgres is SIGKILLed right then, every backend with it.
    small_replay.set_clock(None)
    postgres = private_storage.postgres_resource
    blocker = psycopg.connect(private_storage.postgres.url)
    blocker.execute(f"INSERT INTO {postgres.table_name('candles_1m')} (market, candle_start, open, high, low, close, volume, value)"
                    " VALUES ('KRW-BTC', '2025-09-15T10:59:00Z', 1, 1, 1, 1, 0, 0)")
    seen: dict[str, str] = {}
    killer = threading.Thread(target=_kill_when_blocked_by, args=(private_storage.postgres, blocker.info.backend_pid, seen))
    killer.start()
    result = run_without_step_retries(dagster_instance, settings, "candles_1m", first, last=last)
    killer.join()
    blocker.close()

    assert "candles_1m" in seen.get("query", ""), "the run's write was never caught mid-way"
    assert not result.success
    cls_name, message = root_error(result, "candles_1m")
    # e.g. OperationalError: IO: [libpq] Failed to execute COPY statement: PGRES_FATAL_ERROR server closed the connection unexpectedly
    assert re.search(r"server closed the connection|terminat", message), (cls_name, message)

    private_storage.postgres.start()  # crash recovery
    pd.testing.assert_frame_equal(_stored(private_storage, "candles_1m", "candle_start", start, WINDOW.end), before)
    # and the next run completes the window
    assert materialize(settings, "candles_1m", first, last=last).success
    after = _stored(private_storage, "candles_1m", "candle_start", start, WINDOW.end)
    assert after["candle_start"].max() == pd.Timestamp("2025-09-15T10:59:00Z") and len(after) > len(before)


# --- Redis dies: during the fetch (the rate limiter's store) and during the publish ------------------------

_FETCH_IN_A_PROCESS = """
import json, sys
from dantaro_assets.settings import Settings
from dantaro_assets_tests.reliability.matrix_job import root_error, run_without_step_retries, throwaway_instance
settings = Settings.model_validate_json(sys.argv[1])
with throwaway_instance() as instance:
    print("ready", flush=True)
    sys.stdin.readline()
    result = run_without_step_retries(instance, settings, "candles_1m", sys.argv[2])
print(json.dumps({"success": result.success, "error": None if result.success else ": ".join(root_error(result, "candles_1m"))}))
"""


@pytest.mark.slow(minutes=1)
def test_redis_down_during_fetch_three_processes_get_no_429(private_storage, replay):
    """Three processes fetch 40 markets each while the limiter's Redis is down: Upbit must see no 429."""
    settings = private_storage.settings(replay.url)
    assert materialize(settings, "upbit_markets", DAY).success
    assert materialize(settings, "candles_1m", HOUR).success
    before = _stored_hour(private_storage)
    private_storage.redis.kill()
    replay.reset_stats()

    processes = [subprocess.Popen([sys.executable, "-c", _FETCH_IN_A_PROCESS, settings.model_dump_json(by_alias=True), HOUR],
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(3)]
    try:
        for process in processes:  # start the three fetches together, once every process has imported
            assert process.stdout.readline().strip() == "ready"
        for process in processes:
            process.stdin.write("go\n")
            process.stdin.flush()
        outcomes = [json.loads(process.communicate(timeout=300)[0].splitlines()[-1]) for process in processes]
    finally:
        for process in processes:
            process.kill()

    candles = replay.stats()["groups"].get("candles", {})
    assert (candles.get("too_many", 0), candles.get("blocked", 0)) == (0, 0), candles
    for outcome in outcomes:  # either a conservative budget (success) or a clear error naming Redis
        assert outcome["success"] or "redis" in outcome["error"].lower(), outcome
    pd.testing.assert_frame_equal(_stored_hour(private_storage), before)


def _market_status_inputs(settings) -> None:
    """Universe, hourly and 1-minute candles that market_status reads for HOUR and the hour before."""
    first_day = (pd.Timestamp(DAY) - pd.Timedelta(days=5)).strftime("%Y-%m-%d")
    first_hour = (WINDOW.start - pd.Timedelta(hours=STATUS_LOOKBACK.minute_hours + 1)).strftime("%Y-%m-%d-%H:00")
    assert materialize(settings, "upbit_markets", first_day, last=DAY).success
    assert materialize(settings, "candles_1h", first_day, last=DAY).success
    assert materialize(settings, "candles_1m", first_hour, last=HOUR).success


def _api_latest(storage) -> dict:
    """``GET /market-status/latest`` from the API over the private Redis and Postgres."""
    app = create_app(lambda: None, _snapshots(storage), settings=storage.base_settings)
    with serve_http(app) as client:
        response = client.get("/market-status/latest")
    assert response.status_code == 200, response.text
    return response.json()


def _snapshots(storage) -> SnapshotStore:
    return SnapshotStore(redis=storage.redis_resource, postgres=storage.postgres_resource, ttls={})


# market_status_job's analysis steps: the analysis, then its publish step
MARKET_STATUS_JOB = ["market_status", "market_status_redis"]
PREVIOUS_HOUR = (WINDOW.start - pd.Timedelta(hours=1)).strftime("%Y-%m-%d-%H:00")


@pytest.mark.slow
def test_redis_down_during_publish_keeps_the_postgres_write_and_says_the_snapshot_failed(private_storage, small_replay):
    settings = private_storage.settings(small_replay.url)
    _market_status_inputs(settings)
    assert materialize(settings, MARKET_STATUS_JOB, PREVIOUS_HOUR).success
    assert _snapshots(private_storage).cached("market_status")["as_of"] == "2025-09-15T09:58:00Z"
    before = _stored(private_storage, "market_status", "as_of", "2025-09-15T09:00Z", "2025-09-15T11:00Z")
    assert len(before) == 30

    private_storage.redis.kill()
    result = materialize(settings, MARKET_STATUS_JOB, HOUR)

    assert result.success, "a cache outage never fails a committed write"
    metadata = result.asset_materializations_for_node("market_status_redis")[0].metadata
    assert metadata["published"].value.startswith("failed: ConnectionError")
    after = _stored(private_storage, "market_status", "as_of", "2025-09-15T09:00Z", "2025-09-15T11:00Z")
    assert len(after) == 60
    pd.testing.assert_frame_equal(after.iloc[:30], before)
    latest = _api_latest(private_storage)  # Redis is still down: the API reads Postgres
    assert (latest["source"], latest["as_of"]) == ("postgres", "2025-09-15T10:58:00Z")


# --- "latest" never goes backwards ------------------------------------------------------------------------

@pytest.mark.slow
def test_rematerialising_an_old_hour_after_the_ttl_never_serves_it_as_latest(private_storage, small_replay):
    settings = private_storage.settings(small_replay.url)
    _market_status_inputs(settings)
    assert materialize(settings, MARKET_STATUS_JOB, HOUR).success
    newest = _stored(private_storage, "market_status", "as_of", WINDOW.start, WINDOW.end)

    # The snapshot's TTL runs out: every key that has a TTL expires now (a key without one stays).
    client = private_storage.redis_resource.client()
    for key in client.scan_iter(f"{private_storage.base_settings.redis_prefix}:*"):
        if client.ttl(key) > 0:
            client.pexpire(key, 1)
    time.sleep(0.05)
    older = materialize(settings, MARKET_STATUS_JOB, PREVIOUS_HOUR)
    assert older.success
    assert older.asset_materializations_for_node("market_status_redis")[0].metadata["keys_kept_newer"].value == 1  # the mark refused it

    latest = _api_latest(private_storage)
    assert latest["as_of"] == "2025-09-15T10:58:00Z", latest
    pd.testing.assert_frame_equal(_stored(private_storage, "market_status", "as_of", WINDOW.start, WINDOW.end), newest)


@pytest.mark.slow
def test_redis_restarted_empty_an_older_hour_never_becomes_latest(private_storage, small_replay):
    """The marks died with Redis: the next publish rebuilds them from Postgres first, so the older hour is refused."""
    settings = private_storage.settings(small_replay.url)
    _market_status_inputs(settings)
    assert materialize(settings, MARKET_STATUS_JOB, HOUR).success
    private_storage.redis.kill()
    private_storage.redis.start()  # no persistence: every snapshot and mark is gone

    older = materialize(settings, MARKET_STATUS_JOB, PREVIOUS_HOUR)

    assert older.success
    assert older.asset_materializations_for_node("market_status_redis")[0].metadata["keys_kept_newer"].value == 1
    assert _snapshots(private_storage).cached("market_status") is None
    private_storage.postgres.kill()  # and with Postgres down the API has nothing older to serve
    app = create_app(lambda: None, _snapshots(private_storage), settings=private_storage.base_settings)
    with serve_http(app) as client:
        assert client.get("/market-status/latest").status_code == 503
    private_storage.postgres.start()
    assert _api_latest(private_storage)["as_of"] == "2025-09-15T10:58:00Z"
