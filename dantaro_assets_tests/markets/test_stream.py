"""``dantaro stream`` as a real process against the replay's WebSocket, writing to a schema of its own."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.upbit import MARKET_COLUMNS
from dantaro_assets.markets.seen import SeenStore, stream_status
from dantaro_assets.markets.stream import MinuteBook, websocket_url
from dantaro_replay.simulated import SimulatedMarket

pytestmark = pytest.mark.spread  # each test streams into a schema of its own from its worker's replay

VALUES = ["open", "high", "low", "close", "volume", "value"]
REST_NAMES = {"opening_price": "open", "high_price": "high", "low_price": "low", "trade_price": "close",
              "candle_acc_trade_volume": "volume", "candle_acc_trade_price": "value"}
_SCHEMAS = itertools.count()


def message(minute: str, volume: float, stamp: int, market: str = "KRW-BTC", price: float = 1.0) -> dict:
    return {"type": "candle.1m", "market": market, "candle_date_time_utc": minute, "opening_price": price, "high_price": price,
            "low_price": price, "trade_price": price, "candle_acc_trade_volume": volume, "candle_acc_trade_price": volume * price,
            "timestamp": stamp, "stream_type": "REALTIME"}


T_MS = int(pd.Timestamp("2025-09-03T12:00:00Z").timestamp() * 1000)


def test_minute_book_closes_on_the_next_minute_keeps_the_newest_state_and_rewrites_late_updates():
    book = MinuteBook(grace_seconds=3600)
    t = T_MS
    book.add(message("2025-09-03T12:00:00", 1.0, t + 1000))
    book.add(message("2025-09-03T12:00:00", 3.0, t + 3000))
    book.add(message("2025-09-03T12:00:00", 2.0, t + 2000))  # stale, out of order
    book.add(message("2025-09-03T12:00:00", 3.0, t + 3000))  # duplicate
    assert book.closed() == []  # forming: never closed while it is the newest minute
    book.add(message("2025-09-03T12:01:00", 0.5, t + 61_000))
    [closed] = book.closed()
    assert (closed.start, closed.message["candle_acc_trade_volume"], closed.rewrite, closed.doubt) == (t // 1000, 3.0, False, None)
    book.add(message("2025-09-03T12:00:00", 2.5, t + 2500))  # stale state of a written minute
    assert book.closed() == []
    book.add(message("2025-09-03T12:00:00", 4.0, t + 62_000))  # a late update of a written minute
    [late] = book.closed()
    assert (late.message["candle_acc_trade_volume"], late.rewrite, late.doubt) == (4.0, True, None)


def test_the_newest_state_by_upbit_s_time_wins_and_states_that_disagree_leave_the_minute_to_rest():
    """One wild state (price x100, volume x1000) before the true ones: the most-volume rule kept it for good.
    By message time the true state is the newest, and a minute whose volume fell or range shrank between
    two of its states is doubtful: quarantined (not written), so REST fetches it."""
    book = MinuteBook(grace_seconds=3600)
    t = T_MS
    book.add(message("2025-09-03T12:00:00", 1.0, t + 1000, price=100.0))
    book.add(message("2025-09-03T12:00:00", 1000.0, t + 2000, price=10_000.0))  # the outlier
    book.add(message("2025-09-03T12:00:00", 2.0, t + 3000, price=100.0))
    book.add(message("2025-09-03T12:01:00", 1.0, t + 61_000, price=100.0))
    [closed] = book.closed()
    assert closed.message["trade_price"] == 100.0 and closed.message["timestamp"] == t + 3000
    assert closed.doubt is not None and "within the minute" in closed.doubt
    book.add(message("2025-09-03T12:00:00", 3.0, t + 62_000, price=100.0))  # later states of a quarantined minute: REST's now
    book.add(message("2025-09-03T12:02:00", 1.0, t + 121_000, price=100.0))
    assert [(c.start, c.doubt) for c in book.closed()] == [(t // 1000 + 60, None)]


def test_a_minute_that_jumps_implausibly_from_its_neighbour_is_doubtful():
    book = MinuteBook(grace_seconds=3600)
    t = T_MS
    prices = {0: 100.0, 1: 100.0, 2: 10_000.0, 3: 101.0, 4: 102.0}  # 12:02 wrong in every update
    for minute, price in prices.items():
        book.add(message(f"2025-09-03T12:0{minute}:00", 1.0, t + minute * 60_000 + 1000, price=price))
        book.add(message(f"2025-09-03T12:0{minute}:00", 2.0, t + minute * 60_000 + 2000, price=price))
    doubts = {(c.start - t // 1000) // 60: c.doubt for c in book.closed()}
    assert "jump from 100 and 101" in doubts.pop(2)
    # 12:01 agrees with the minute before it, 12:03 with the one after it (and with 12:01, the last minute accepted)
    assert doubts == {0: None, 1: None, 3: None}


def test_minute_book_closes_a_quiet_minute_after_its_end_plus_grace():
    book = MinuteBook(grace_seconds=0)
    now_ms = int(time.time() * 1000)
    start = now_ms // 60_000 * 60_000 - 120_000
    book.add(message(pd.Timestamp(start, unit="ms").strftime("%Y-%m-%dT%H:%M:%S"), 1.0, now_ms))
    assert [c.start for c in book.closed()] == [start // 1000]


def test_a_dropped_connection_s_open_minutes_are_never_written_from_their_partial_state():
    book = MinuteBook(grace_seconds=0)
    now_ms = int(time.time() * 1000)
    start = now_ms // 60_000 * 60_000 - 120_000
    book.add(message(pd.Timestamp(start, unit="ms").strftime("%Y-%m-%dT%H:%M:%S"), 1.0, now_ms))
    assert book.drop_open({"KRW-OTHER"}) == 0
    assert book.drop_open({message("2025-09-03T12:00:00", 1.0, 0)["market"]}) == 1
    assert book.closed() == []  # past its end plus grace, yet not written: its close was not seen


def test_websocket_url_beside_the_rest_base_url():
    assert websocket_url("https://api.upbit.com") == "wss://api.upbit.com/websocket/v1"
    assert websocket_url("http://127.0.0.1:8765/") == "ws://127.0.0.1:8765/websocket/v1"


@pytest.fixture
def stream_schema(pg_url: str, settings) -> Iterator[str]:
    """A schema of the test's own: candles merge, so rows another test stored would count here."""
    schema = f"{settings.db_schema}_stream{next(_SCHEMAS)}"
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def store_universe(pg_url: str, schema: str, day: str, markets: list[str], redis_resource) -> None:
    frame = pd.DataFrame({"day": pd.Timestamp(day, tz="UTC"), "market": markets, "korean_name": markets, "english_name": markets})
    for column in MARKET_COLUMNS[3:]:
        frame[column] = False
    io = PostgresDataFrameIOManager(postgres=PostgresResource(url=pg_url, db_schema=schema))
    start = pd.Timestamp(day, tz="UTC")
    io.write("upbit_markets", frame, {"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": "replace"},
             dg.TimeWindow(start.to_pydatetime(), (start + pd.Timedelta(days=1)).to_pydatetime()))


@contextmanager
def streaming(replay, schema: str, dagster_home: Path, **settings: str) -> Iterator[subprocess.Popen]:
    """``dantaro stream`` as a process against ``replay``; stopped with SIGTERM at the end of the block."""
    dagster_home.mkdir(exist_ok=True)
    env = {**os.environ, "UPBIT_BASE_URL": replay.url, "DANTARO_SCHEMA": schema, "DAGSTER_HOME": str(dagster_home),
           "DANTARO_STREAM_GRACE_SECONDS": "2", "DANTARO_STREAM_STALL_SECONDS": "5", "DANTARO_STREAM_REPORT_SECONDS": "2", **settings}
    log = dagster_home / "stream.log"
    with log.open("w") as out:
        process = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "stream"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()[-3000:]
        finally:
            if process.poll() is None:
                process.kill()


def wait_subscribed(replay, requests: int = 1, timeout: float = 120) -> None:
    """Until the stream process has sent its subscription (it starts in a few seconds, longer under load)."""
    wait_until(lambda: replay.stats()["websocket"]["requests"] >= requests, "dantaro stream never subscribed", timeout)


def set_speed(replay, speed: float) -> None:
    """The running clock goes on from where it is at ``speed``. It steps back by the request's milliseconds at most:
    the replay may then repeat an older state of a minute, which the stream ignores as stale, as it would Upbit's."""
    replay.set_clock(replay.clock(), running=True, speed=speed)


def wait_until(condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"{what}: not within {timeout} s"
        time.sleep(0.2)


def wait_for_clock(replay, moment: datetime, timeout: float = 120) -> None:
    wait_until(lambda: replay.clock() >= moment, f"the replay clock never reached {moment}", timeout)


def stored(pg_url: str, schema: str) -> pd.DataFrame:
    with psycopg.connect(pg_url) as conn:
        exists = conn.execute("SELECT to_regclass(%s)", (f'"{schema}".candles_1m',)).fetchone()[0]
        if exists is None:
            return pd.DataFrame(columns=["market", "candle_start", *VALUES])
        rows = conn.execute(f'SELECT market, candle_start, {", ".join(VALUES)} FROM "{schema}".candles_1m ORDER BY market, candle_start').fetchall()
    frame = pd.DataFrame(rows, columns=["market", "candle_start", *VALUES])
    frame["candle_start"] = pd.to_datetime(frame["candle_start"], utc=True)
    return frame


def rest(replay, markets: list[str], start: datetime, end: datetime) -> pd.DataFrame:
    """The closed candles the replay's REST API serves for ``[start, end)``."""
    frames = []
    with httpx.Client(base_url=replay.url) as client:
        for market in markets:
            for _ in range(3):  # the replay limits 10 requests a second per IP: a run's requests just before may use them up
                answer = client.get("/v1/candles/minutes/1", params={"market": market, "to": end.isoformat(), "count": 200})
                if answer.status_code != 429:
                    break
                time.sleep(1.1)
            answer.raise_for_status()
            frame = pd.DataFrame(answer.json()).rename(columns=REST_NAMES)
            frame["candle_start"] = pd.to_datetime(frame["candle_date_time_utc"]).dt.tz_localize("UTC")
            frames.append(frame[frame["candle_start"] >= start][["market", "candle_start", *VALUES]])
    return pd.concat(frames).sort_values(["market", "candle_start"], ignore_index=True)


def in_range(frame: pd.DataFrame, start: datetime, end: datetime) -> pd.DataFrame:
    return frame[(frame["candle_start"] >= start) & (frame["candle_start"] < end)].reset_index(drop=True)


SIM_MARKETS = [spec.info.market for spec in SimulatedMarket(8, 7).specs]
T0 = datetime(2025, 9, 3, 12, 0, tzinfo=UTC)
STREAMED = 120  # replay seconds a second while the stream's minutes are checked: each minute is sent closed as the clock passes it
FAST = 240  # replay seconds a second where what the stream stores no longer matters (an audit follows)


@pytest.mark.parametrize("fault", ["duplicate", "out_of_order"])
def test_duplicated_and_out_of_order_messages_store_the_final_candles(small_replay, stream_schema, pg_url, redis_resource, tmp_path, fault):
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=False)
    small_replay.inject(fault, path="/websocket/v1", count=None)
    with streaming(small_replay, stream_schema, tmp_path / "dagster"):
        wait_subscribed(small_replay)
        small_replay.set_clock(T0, running=True, speed=60)
        wait_for_clock(small_replay, T0 + timedelta(minutes=8))  # two minutes past the checked ones: 2 s for the stream to keep up
    got = in_range(stored(pg_url, stream_schema), T0, T0 + timedelta(minutes=5))
    expected = rest(small_replay, SIM_MARKETS, T0, T0 + timedelta(minutes=5))
    pd.testing.assert_frame_equal(got, expected, check_dtype=False)
    assert small_replay.stats()["faults_fired"][fault] > 20


def test_a_forming_minute_is_never_stored_as_closed(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    start = T0 + timedelta(seconds=50)
    small_replay.set_clock(start, running=False)
    with streaming(small_replay, stream_schema, tmp_path / "dagster"):
        wait_subscribed(small_replay)
        small_replay.set_clock(start, running=True, speed=4)
        wait_for_clock(small_replay, T0 + timedelta(minutes=1, seconds=40))
        assert stored(pg_url, stream_schema)["candle_start"].max() == pd.Timestamp(T0)
    got = stored(pg_url, stream_schema)
    assert set(got["candle_start"]) == {pd.Timestamp(T0)}, "the forming 12:01 minute was stored"
    pd.testing.assert_frame_equal(got, rest(small_replay, SIM_MARKETS, T0, T0 + timedelta(minutes=1)), check_dtype=False)


def test_a_disconnect_mid_hour_reconnects_and_stores_the_rest(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=False)
    home = tmp_path / "dagster"
    with streaming(small_replay, stream_schema, home):
        wait_subscribed(small_replay)
        small_replay.set_clock(T0, running=True, speed=60)
        wait_for_clock(small_replay, T0 + timedelta(minutes=4))
        small_replay.inject("disconnect", path="/websocket/v1")
        wait_until(lambda: small_replay.stats()["websocket"]["dropped_disconnect"] == 1, "the disconnect never fired", 30)
        # The cut spans a whole minute: a reconnect inside the minute it dropped in sees that minute whole (its snapshot)
        small_replay.set_clock(max(small_replay.clock(), T0 + timedelta(minutes=5)), running=True, speed=60)
        wait_for_clock(small_replay, T0 + timedelta(minutes=12))  # two minutes past the checked ones: 2 s for the stream to keep up
    assert small_replay.stats()["websocket"]["dropped_disconnect"] == 1
    assert small_replay.stats()["websocket"]["connections"] >= 2
    assert small_replay.stats()["websocket"]["origin"] == 0  # no Origin header, on the first connection or a reconnect
    got = stored(pg_url, stream_schema)
    expected = rest(small_replay, SIM_MARKETS, T0, T0 + timedelta(minutes=12))
    merged = got.merge(expected, on=["market", "candle_start"], how="left", suffixes=("", "_rest"), indicator=True)
    assert (merged["_merge"] == "both").all()
    for column in VALUES:
        assert (merged[column] == merged[f"{column}_rest"]).all(), column
    before = in_range(expected, T0, T0 + timedelta(minutes=3))
    after = in_range(expected, T0 + timedelta(minutes=6), T0 + timedelta(minutes=9))
    pd.testing.assert_frame_equal(in_range(got, T0, T0 + timedelta(minutes=3)), before, check_dtype=False)
    pd.testing.assert_frame_equal(in_range(got, T0 + timedelta(minutes=6), T0 + timedelta(minutes=9)), after, check_dtype=False)
    assert "reconnecting in" in (home / "stream.log").read_text()
    keys = [dg.AssetCheckKey(dg.AssetKey("candles_1m"), name) for name in ("schema", "coverage")]
    with dg.DagsterInstance.from_config(str(home)) as instance:
        events = instance.fetch_materializations(dg.AssetKey("candles_1m"), limit=100).records
        latest = instance.event_log_storage.get_latest_asset_check_execution_by_key(keys)
    assert events and {e.asset_materialization.partition for e in events} == {"2025-09-03-12:00"}
    metadata = events[0].asset_materialization.metadata
    assert metadata["source"].value == "stream" and "lag_p50_s" in metadata and "reconnects" in metadata
    assert {"no_trade_minutes", "missed_minutes"} <= set(metadata)
    # the UI's candle_1m checks for the stream's materialisations: evaluated on what it wrote, runless like them
    assert set(latest) == set(keys) and {record.run_id for record in latest.values()} == {events[0].run_id} == {""}
    schema = latest[keys[0]].event.dagster_event.event_specific_data
    assert schema.passed and schema.metadata["source"].value == "stream" and schema.metadata["rows"].value > 0
    coverage = latest[keys[1]].event.dagster_event.event_specific_data
    assert coverage.metadata["partition"].value == "2025-09-03-12:00" and 0 < coverage.metadata["seen_share"].value <= 1
    figures = SeenStore(PostgresResource(url=pg_url, db_schema=stream_schema)).health().figures
    assert figures["missed_minutes"] > 0 and figures["no_trade_minutes"] >= 0  # the minutes of the cut were missed, not "no trade"


@pytest.mark.slow(minutes=1)
def test_a_recorded_hour_streamed_stores_exactly_the_recorded_candles(recorded_replay, upbit_data_dir, stream_schema, pg_url, redis_resource, tmp_path):
    hour = datetime(2025, 9, 20, 19, tzinfo=UTC)  # KRW-SOL did not trade in three of its minutes
    recorded = pd.read_parquet(upbit_data_dir / "candles_1m.parquet")
    markets = sorted(recorded["market"].unique())
    store_universe(pg_url, stream_schema, "2025-09-20", markets, redis_resource)
    recorded_replay.set_clock(hour, running=False)
    with streaming(recorded_replay, stream_schema, tmp_path / "dagster"):
        wait_subscribed(recorded_replay)
        recorded_replay.set_clock(hour, running=True, speed=STREAMED)
        wait_for_clock(recorded_replay, hour + timedelta(minutes=61))
        wait_until(lambda: len(in_range(stored(pg_url, stream_schema), hour, hour + timedelta(hours=1))) >= 4 * 60 - 3,
                   "the stream's commit of the hour's last minute", timeout=30)
    expected = recorded[(recorded["candle_start_utc"] >= hour) & (recorded["candle_start_utc"] < hour + timedelta(hours=1))]
    expected = expected.rename(columns={"candle_start_utc": "candle_start"}).sort_values(["market", "candle_start"], ignore_index=True)
    got = in_range(stored(pg_url, stream_schema), hour, hour + timedelta(hours=1))
    assert len(got) == len(expected) == 4 * 60 - 3  # the minutes without trades stay gaps
    assert got[["market", "candle_start"]].equals(expected[["market", "candle_start"]].astype({"candle_start": got["candle_start"].dtype}))
    for column in ["open", "high", "low", "close"]:
        assert got[column].tolist() == expected[column].tolist(), column
    assert got["volume"].tolist() == expected["volume"].round(8).tolist()
    typical = (expected["open"] + expected["high"] + expected["low"] + expected["close"]) / 4
    assert got["value"].tolist() == pytest.approx((expected["volume"] * typical).tolist(), rel=1e-12)
    # every minute from the subscription to the last commit was seen: the minutes without a candle are no-trade minutes
    health = SeenStore(PostgresResource(url=pg_url, db_schema=stream_schema)).health()
    committed = pd.date_range(hour, pd.Timestamp(health.covered_through, unit="s", tz="UTC").floor("min"), freq="min", inclusive="left")
    traded = recorded[recorded["candle_start_utc"].isin(committed)]
    assert health.figures["missed_minutes"] == 0
    assert health.figures["no_trade_minutes"] == len(markets) * len(committed) - len(traded) >= 3


def test_a_changed_universe_is_resubscribed(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS[:2], redis_resource)
    small_replay.set_clock(T0, running=False)
    with streaming(small_replay, stream_schema, tmp_path / "dagster"):
        wait_subscribed(small_replay)
        small_replay.set_clock(T0, running=True, speed=20)
        wait_for_clock(small_replay, T0 + timedelta(minutes=2))
        store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS[:3], redis_resource)
        wait_subscribed(small_replay, requests=2)
        resubscribed = small_replay.clock()
        wait_for_clock(small_replay, resubscribed + timedelta(minutes=3))
    got = stored(pg_url, stream_schema)
    assert set(got["market"]) == set(SIM_MARKETS[:3])
    assert got.loc[got["market"] == SIM_MARKETS[2], "candle_start"].min() > pd.Timestamp(T0 + timedelta(minutes=1))
    assert small_replay.stats()["websocket"]["connections"] == 1  # resubscribed on the open connection


def test_a_stalled_connection_is_replaced(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=True, speed=1)
    home = tmp_path / "dagster"
    with streaming(small_replay, stream_schema, home, DANTARO_STREAM_STALL_SECONDS="3"):
        wait_subscribed(small_replay)
        small_replay.inject("stall", path="/websocket/v1", seconds=8)
        wait_subscribed(small_replay, requests=2, timeout=60)
    assert small_replay.stats()["websocket"]["connections"] == 2
    assert "StreamStalled: no message for 3 s" in (home / "stream.log").read_text()


def candle_requests(replay) -> int:
    return replay.stats()["groups"].get("candles", {}).get("ok", 0)


def run_candles_1m(replay, schema: str, pg_url: str, redis_resource, partition: str, source: str = "stream", **tags: str) -> dg.ExecuteInProcessResult:
    """candles_1m of ``partition`` as an analysis job's step (its run config and tags; ``source="rest"``: as the history
    sensor's ``candles_1m_job`` runs it) against ``replay``, in ``schema``."""
    from dantaro_assets.lib.upbit import UpbitClient
    from dantaro_assets.markets import assets
    from dantaro_assets.operations.analyses import MINUTES_FROM_STREAM
    from dantaro_assets.resources import run_settings
    from dantaro_assets.settings import load_settings

    postgres = PostgresResource(url=pg_url, db_schema=schema)
    upbit = UpbitClient(base_url=replay.url, redis=redis_resource, backoff_seconds=0.05)
    resources = {"io_manager": PostgresDataFrameIOManager(postgres=postgres), "postgres": postgres,
                 "redis": redis_resource, "upbit": upbit, "run_settings": run_settings(load_settings())}
    try:
        return dg.materialize(dg.load_assets_from_modules([assets]), selection=[assets.candles_1m], partition_key=partition, resources=resources,
                              run_config=MINUTES_FROM_STREAM if source == "stream" else None, tags=tags)
    finally:
        upbit.close()


@pytest.mark.slow(minutes=1.5)
def test_a_disconnect_mid_hour_is_repaired_over_rest_by_the_hour_s_final_run_alone(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    """Done-when of issue 12: the stream's connection cut mid-hour loses no minute. The hour's final run compares
    the hour of every market with REST (one request per market; the minutes around the cut among them), the next
    final run of the hour (another analysis job) fetches nothing, and every minute of the hour is stored exactly
    as REST serves it."""
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=False)
    home = tmp_path / "dagster"
    with streaming(small_replay, stream_schema, home):
        wait_subscribed(small_replay)
        small_replay.set_clock(T0, running=True, speed=STREAMED)
        wait_for_clock(small_replay, T0 + timedelta(minutes=25))
        # the connection and its next seven are cut: at least 8 x 0.5 s of backoff, 8 replay minutes, are unseen
        small_replay.inject("disconnect", path="/websocket/v1", count=8)
        wait_until(lambda: small_replay.stats()["websocket"]["dropped_disconnect"] == 8, "the eight cuts")
        set_speed(small_replay, FAST)  # the rest of the hour: the final run's audit makes every minute REST's
        wait_for_clock(small_replay, T0 + timedelta(minutes=63))
    assert small_replay.stats()["websocket"]["dropped_disconnect"] == 8
    hour_end = T0 + timedelta(hours=1)
    expected = rest(small_replay, SIM_MARKETS, T0, hour_end)
    before = in_range(stored(pg_url, stream_schema), T0, hour_end)
    assert len(before) < len(expected)  # the stream alone missed minutes around the cut

    small_replay.reset_stats()
    final = {"dantaro/finalise": "true"}  # the schedules' tag on an hour's final run
    result = run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00", **final)
    assert result.success
    metadata = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert metadata["source"].value == "rest audit" and metadata["markets_fetched"].value == len(SIM_MARKETS)
    assert "with minutes the stream did not see" in metadata["why"].value
    assert metadata["minutes_fetched"].value == len(SIM_MARKETS) * 60
    assert candle_requests(small_replay) == metadata["requests"].value == len(SIM_MARKETS)  # one request per market
    assert (metadata["audit_added"].value, metadata["audit_corrected"].value, metadata["audit_stream_only"].value) == (len(expected) - len(before), 0, 0)
    pd.testing.assert_frame_equal(in_range(stored(pg_url, stream_schema), T0, hour_end), expected, check_dtype=False)

    small_replay.reset_stats()
    again = run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00", **final)
    assert again.success and candle_requests(small_replay) == 0
    assert again.asset_materializations_for_node("candles_1m")[0].metadata["source"].value == "stream"


def test_an_hour_fetched_whole_over_rest_is_not_fetched_again_by_its_final_run(small_replay, stream_schema, pg_url, redis_resource):
    """The history sensor's (or a backfill's) full fetch of a closed hour is REST's every minute: an audit already."""
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.reset_stats()
    assert run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00", source="rest").success
    assert candle_requests(small_replay) == len(SIM_MARKETS)
    small_replay.reset_stats()
    final = run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00",
                           **{"dantaro/job": "market_status", "dantaro/finalise": "true"})
    assert final.success and candle_requests(small_replay) == 0
    assert final.asset_materializations_for_node("candles_1m")[0].metadata["source"].value == "stream"


@pytest.mark.slow(minutes=1.5)
def test_altered_messages_end_equal_to_rest_after_the_hour_s_final_run(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    """Issue 22: the stream behind messages the replay alters. XRP 12:24 gets one wild state (prices x100, volume
    x1000) before its true ones, ETH 12:26 is 1 % high in every update, SOL 12:28 has a negative price in every
    update. The wild state is not kept (newest by Upbit's time wins; the minute whose states disagree is left to
    REST), the negative minute is quarantined and left unseen (the next tick fetches both over REST), the
    plausible wrong minute is stored until the hour's final run compares every minute with REST: then every
    minute of the hour equals REST."""
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=False)
    small_replay.inject("alter", path="/websocket/v1", market="KRW-ETH", minute="2025-09-03T12:26:00", count=None)
    small_replay.inject("alter", path="/websocket/v1", market="KRW-SOL", minute="2025-09-03T12:28:00", count=None, variant="negative_price")
    home = tmp_path / "dagster"
    hour_end = T0 + timedelta(hours=1)
    with streaming(small_replay, stream_schema, home):
        wait_subscribed(small_replay)
        small_replay.set_clock(T0, running=True, speed=STREAMED)
        wait_for_clock(small_replay, T0 + timedelta(minutes=23, seconds=30))
        set_speed(small_replay, 20)  # slower from here to the tick's run: the injection lands in its minute, the stream keeps up
        wait_for_clock(small_replay, T0 + timedelta(minutes=24, seconds=20))  # a third into the minute: the wild state outweighs the final one
        small_replay.inject("outlier", path="/websocket/v1", market="KRW-XRP", minute="2025-09-03T12:24:00")
        wait_for_clock(small_replay, T0 + timedelta(minutes=25))
        set_speed(small_replay, 60)  # the minutes checked below: a second each for the stream to store them
        wait_for_clock(small_replay, T0 + timedelta(minutes=29))
        set_speed(small_replay, 20)  # the tick's run below finds the stream within its 30 s lag (1.5 s of real time)
        wait_for_clock(small_replay, T0 + timedelta(minutes=30))
        assert small_replay.stats()["faults_fired"].get("outlier") == 1
        got = in_range(stored(pg_url, stream_schema), T0, T0 + timedelta(minutes=29))
        keys = set(zip(got["market"], got["candle_start"], strict=True))
        assert ("KRW-XRP", pd.Timestamp("2025-09-03T12:24Z")) not in keys and ("KRW-SOL", pd.Timestamp("2025-09-03T12:28Z")) not in keys
        eth = got[(got["market"] == "KRW-ETH") & (got["candle_start"] == pd.Timestamp("2025-09-03T12:26Z"))]
        true_eth = rest(small_replay, ["KRW-ETH"], T0 + timedelta(minutes=26), T0 + timedelta(minutes=27))
        assert eth["high"].item() == pytest.approx(1.01 * true_eth["high"].item())  # plausible, so stored for now

        small_replay.reset_stats()
        tick = run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00", **{"dantaro/job": "market_status"})
        metadata = tick.asset_materializations_for_node("candles_1m")[0].metadata
        assert tick.success and metadata["source"].value == "rest fallback" and "quarantined" in metadata["why"].value
        assert metadata["markets_fetched"].value == 2 and candle_requests(small_replay) == 2  # the two minutes left unseen
        set_speed(small_replay, FAST)  # the rest of the hour: the final run's audit compares every minute with REST
        wait_for_clock(small_replay, hour_end + timedelta(minutes=2))
    log = (home / "stream.log").read_text()
    assert "quarantined" in log and "within the minute" in log and "price not positive" in log

    small_replay.reset_stats()
    final = run_candles_1m(small_replay, stream_schema, pg_url, redis_resource, "2025-09-03-12:00",
                           **{"dantaro/job": "market_status", "dantaro/finalise": "true"})
    metadata = final.asset_materializations_for_node("candles_1m")[0].metadata
    assert final.success and metadata["source"].value == "rest audit" and candle_requests(small_replay) == len(SIM_MARKETS)
    assert metadata["audit_corrected"].value >= 1  # ETH 12:26
    pd.testing.assert_frame_equal(in_range(stored(pg_url, stream_schema), T0, hour_end), rest(small_replay, SIM_MARKETS, T0, hour_end),
                                  check_dtype=False)


def test_the_stream_is_starting_until_its_subscription_is_answered(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    """Issue 19: before it has subscribed (no universe yet) the stream is ``starting``, not healthy, with no 1970 dates."""
    small_replay.set_clock(T0, running=True, speed=1)
    store = SeenStore(PostgresResource(url=pg_url, db_schema=stream_schema))

    def status_when(condition, timeout: float = 120) -> dict:
        deadline = time.monotonic() + timeout
        while not condition(status := stream_status(store, max_lag=30)):
            assert time.monotonic() < deadline, status
            time.sleep(0.3)
        return status

    with streaming(small_replay, stream_schema, tmp_path / "dagster"):
        status = status_when(lambda s: s["state"] != "never ran")
        assert (status["state"], status["healthy"], status["markets"], status["covered_through"]) == ("starting", False, 0, None)
        store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
        status = status_when(lambda s: s["state"] != "starting")
        assert status["state"] == "healthy" and status["markets"] == len(SIM_MARKETS) and status["covered_through"] >= "2025-09-03T12:00:00Z"


def test_a_first_start_subscribes_once_the_universe_is_stored_and_sees_the_minute_it_subscribed_in(
        small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    """Issue 19: the stream looks for a universe every second (not at its report, 60 s here) and its window of seen minutes
    begins at the minute of the snapshot Upbit sends on subscribing, not a whole minute later: the open hour's REST
    history reaches it, so a first analysis run has nothing left to fetch."""
    small_replay.set_clock(T0 + timedelta(seconds=20), running=True, speed=1)
    store = SeenStore(PostgresResource(url=pg_url, db_schema=stream_schema))
    with streaming(small_replay, stream_schema, tmp_path / "dagster", DANTARO_STREAM_REPORT_SECONDS="60"):
        deadline = time.monotonic() + 120
        while (health := store.health()) is None:
            assert time.monotonic() < deadline, "the stream never published its health"
            time.sleep(0.2)
        store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
        stored_at = small_replay.clock()
        while not (health := store.health()).open_windows:
            assert time.monotonic() < deadline, "the stream never opened a window"
            time.sleep(0.2)
        [window] = health.open_windows
        assert window.markets == frozenset(SIM_MARKETS)
        assert window.start == int(T0.timestamp()) and stored_at < T0 + timedelta(seconds=50)  # the minute it subscribed in


def test_junk_frames_are_logged_once_per_report_with_their_count(small_replay, stream_schema, pg_url, redis_resource, tmp_path):
    """Issue 22: 3,465 lines in 15 s of junk frames. Now the first, then one line per report period with the count."""
    store_universe(pg_url, stream_schema, "2025-09-03", SIM_MARKETS, redis_resource)
    small_replay.set_clock(T0, running=True, speed=20)
    home = tmp_path / "dagster"
    with streaming(small_replay, stream_schema, home):
        wait_subscribed(small_replay)
        small_replay.inject("junk", path="/websocket/v1", count=100)  # 100 ticks, 5 s: a junk frame before every message
        deadline = time.monotonic() + 60
        while small_replay.stats()["faults_fired"].get("junk", 0) < 100:
            assert time.monotonic() < deadline
            time.sleep(0.2)
        time.sleep(1)
    sent = small_replay.stats()["websocket"]["junk"]
    lines = [line for line in (home / "stream.log").read_text().splitlines() if "not JSON" in line]
    summaries = [line for line in lines if "more like this" in line]
    counted = sum(int(line.split("stream: ")[1].split(" more like this")[0]) for line in summaries)
    assert sent > 300 and counted + len(lines) - len(summaries) == sent  # every frame counted
    assert len(lines) <= 10, lines  # about two a report (2 s) instead of one a frame
