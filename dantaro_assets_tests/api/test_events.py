"""``GET /events`` (SSE) and ``/ws`` over a real uvicorn server, fed by real snapshot publishes to Redis.

Snapshots are stored as a run stores them: the rows to Postgres through the IO manager, then the
publish step's compare-and-set in Redis, whose event the API hears.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import dagster as dg
import httpx
import pandas as pd
import psycopg
import pytest
from fastapi import FastAPI
from websockets.sync.client import connect as ws_connect

from dantaro_assets.api.app import create_app
from dantaro_assets.api.models import EventMessage, MarketStatusSnapshot, SupportLevelsSnapshot
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets_tests.api import sse
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.lib.storage_data import HOUR_B, write

STATUS_METADATA = {"partition_expr": "as_of", "primary_key": ["as_of"], "write_mode": WriteMode.REPLACE.value}
LEVELS_METADATA = {"partition_expr": "as_of", "primary_key": ["as_of", "market", "side", "rank"], "write_mode": WriteMode.REPLACE.value}
HOUR_START = pd.Timestamp(hourly_partitions.time_window_for_partition_key(HOUR_B).start)


def as_of(minute: int) -> str:
    return (HOUR_START + pd.Timedelta(minutes=minute)).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclass
class Served:
    app: FastAPI
    client: httpx.Client
    store: SnapshotStore
    io_manager: PostgresDataFrameIOManager

    @property
    def port(self) -> int:
        return self.client.base_url.port

    def store_status(self, minutes: list[int], *, padding: int = 0) -> None:
        """What a market_status run does: the hour's ticks to Postgres, then the newest published."""
        frame = pd.DataFrame({"as_of": [HOUR_START + pd.Timedelta(minutes=m) for m in minutes], "score": [float(m) for m in minutes],
                              "regime": "neutral"})
        if padding:
            frame["summary"] = "x" * padding
        write(self.io_manager, frame, "market_status", partitions=(HOUR_B, HOUR_B), metadata=STATUS_METADATA)
        self.store.publish("market_status", frame, run_id=f"run-{max(minutes)}", partition=HOUR_B)

    def publish_status(self, minute: int, *, padding: int = 0) -> None:
        """Only the publish step (Redis), for the tests that need no history."""
        frame = pd.DataFrame({"as_of": [HOUR_START + pd.Timedelta(minutes=minute)], "score": [float(minute)], "regime": ["neutral"],
                              "summary": ["x" * padding]})
        self.store.publish("market_status", frame, run_id=f"run-{minute}", partition=HOUR_B)


def until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.02)


@pytest.fixture
def serve(settings, pg_url, redis_client) -> Iterator[Callable[..., contextmanager]]:
    """``serve(**create_app options)``: the API over a schema and key prefix of its own, subscribed to its events."""
    own = f"ev_{uuid.uuid4().hex[:6]}"
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"), postgres)

    @contextmanager
    def served(**options) -> Iterator[Served]:
        with dg.DagsterInstance.ephemeral() as instance:  # the job log is not read here
            app = create_app(lambda: instance, store, 0, settings=settings, **options)
            with serve_http(app) as client:
                until(app.state.hub.subscribed.is_set)
                yield Served(app, client, store, PostgresDataFrameIOManager(postgres=postgres))

    yield served
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


@contextmanager
def event_stream(client: httpx.Client, topics: str, last_event_id: str | None = None) -> Iterator[Iterator[sse.Message]]:
    headers = {"Last-Event-ID": last_event_id} if last_event_id else {}
    with client.stream("GET", "/events", params={"topics": topics}, headers=headers) as response:
        assert response.status_code == 200, response.read()
        assert response.headers["content-type"].startswith("text/event-stream")
        yield sse.events(response.iter_lines())


def test_every_stored_snapshot_is_pushed_with_its_as_of_as_id_and_an_older_one_never(serve):
    with serve() as api:
        api.store_status([10])
        with event_stream(api.client, "market_status") as events:
            first = next(events)  # on connecting: the current snapshot
            assert (first.id, first.event) == (as_of(10), "market_status")
            assert first.json() == api.client.get("/market-status/latest").json()
            MarketStatusSnapshot.model_validate(first.json())

            api.store_status([10, 20])
            pushed = next(events)
            assert (pushed.id, pushed.json()["rows"][0]["score"], pushed.json()["source"]) == (as_of(20), 20.0, "redis")

            api.publish_status(5)  # an older snapshot: refused by the store, never announced
            api.store_status([10, 20, 30])
            assert next(events).id == as_of(30)
            assert api.app.state.hub.received == 3  # minutes 10, 20, 30: not 5


def test_a_reconnect_with_last_event_id_replays_what_it_missed_from_postgres_then_goes_live(serve):
    with serve() as api:
        api.store_status([10, 20])
        with event_stream(api.client, "market_status") as events:
            last = next(events).id
        assert last == as_of(20)

        api.store_status([10, 20, 30])
        api.store_status([10, 20, 30, 40])  # Redis now holds only minute 40; minute 30 is in Postgres alone
        with event_stream(api.client, "market_status", last_event_id=last) as events:
            assert [next(events).id, next(events).id] == [as_of(30), as_of(40)]
            api.store_status([10, 20, 30, 40, 50])
            assert next(events).id == as_of(50)

        with event_stream(api.client, "market_status") as events:  # a new client: the current one only
            assert next(events).id == as_of(50)


def test_a_market_topic_gets_only_that_market_s_levels(serve):
    levels = pd.DataFrame({"as_of": pd.Timestamp(as_of(15)), "market": ["KRW-BTC", "KRW-ETH"], "side": "support", "rank": 1,
                           "price": [100.0, 50.0], "level": [90.0, 45.0], "tick_size": 1.0})
    with serve() as api:
        with event_stream(api.client, "support_levels:krw-btc,support_levels") as events:
            api.store.publish("support_levels", levels, run_id="r", partition=HOUR_B, per_market=True)
            got = {(m.event, m.id): [row["market"] for row in m.json()["rows"]] for m in (next(events), next(events))}
            assert got == {("support_levels:KRW-BTC", as_of(15)): ["KRW-BTC"], ("support_levels", as_of(15)): ["KRW-BTC", "KRW-ETH"]}
            api.store.publish("market_status", pd.DataFrame({"as_of": [pd.Timestamp(as_of(16))], "score": [1.0]}), run_id="r",
                              partition=HOUR_B)
            api.store.publish("support_levels", levels.assign(as_of=pd.Timestamp(as_of(30))).iloc[[1]], run_id="r", partition=HOUR_B,
                              per_market=True)  # ETH only: the BTC topic hears nothing
            message = next(events)
            assert (message.event, message.id) == ("support_levels", as_of(30))
            SupportLevelsSnapshot.model_validate(message.json())


def test_a_quiet_stream_sends_heartbeat_comments(serve):
    with serve(heartbeat_s=0.2) as api, api.client.stream("GET", "/events", params={"topics": "recommendations"}) as response:
        lines = sse.messages(response.iter_lines())
        assert next(lines).retry == 2000  # the browser reconnects 2 s after a drop
        assert [next(lines).comment for _ in range(3)] == ["heartbeat"] * 3  # nothing stored: only heartbeats


def _slow_client(port: int) -> socket.socket:
    """An SSE client that sends its request and never reads (a small receive buffer, so it fills soon)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /events?topics=market_status HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


def test_a_client_that_stops_reading_is_dropped_and_never_delays_the_others(serve):
    """Snapshots of 256 KB: a few MB fill the slow client's socket, then its queue of 4; meanwhile the other
    client receives every snapshot as it is stored. The slow client is then disconnected."""
    count, padding = 40, 256 * 1024
    with serve(queue_size=4) as api:
        received: list[str] = []

        def read_all() -> None:
            with httpx.Client(base_url=str(api.client.base_url), timeout=30) as own, event_stream(own, "market_status") as events:
                for message in events:
                    received.append(message.id)
                    if len(received) == count:
                        return

        reader = threading.Thread(target=read_all)
        reader.start()
        slow = _slow_client(api.port)
        try:
            until(lambda: api.app.state.hub.clients == 2)
            for minute in range(count):
                api.publish_status(minute, padding=padding)
                until(lambda n=minute + 1: len(received) == n)  # the reading client has it before the next is stored
            reader.join(timeout=30)
            assert received == [as_of(m) for m in range(count)]
            until(lambda: api.app.state.hub.dropped == 1)
            # the reader closed its connection once it had them all: the server sees that a moment later
            until(lambda: api.app.state.hub.clients == 0)

            slow.settimeout(10)
            data = b""
            while chunk := slow.recv(1 << 20):  # what was buffered, then the end: the server closed it
                data += chunk
            assert 0 < data.count(b"\nevent: market_status\n") < count
        finally:
            slow.close()


def test_the_websocket_carries_the_same_stream(serve):
    with serve() as api:
        api.store_status([10])
        with ws_connect(f"ws://127.0.0.1:{api.port}/ws?topics=market_status", open_timeout=10) as ws:
            first = EventMessage.model_validate_json(ws.recv(timeout=10))
            assert (first.id, first.topic) == (as_of(10), "market_status")
            api.store_status([10, 20])
            assert json.loads(ws.recv(timeout=10))["id"] == as_of(20)
        with ws_connect(f"ws://127.0.0.1:{api.port}/ws?topics=market_status&last_event_id={as_of(10)}", open_timeout=10) as ws:
            assert json.loads(ws.recv(timeout=10))["id"] == as_of(20)


BAD_REQUESTS = [
    ({"topics": "<script>alert(1)</script>"}, {}, "topics: unknown topic"),
    ({"topics": "support_levels:KRW-ſOL"}, {}, "topics: unknown topic"),  # ſ upper-cases to S
    ({"topics": "market_status:KRW-BTC"}, {}, "topics: unknown topic"),
    ({"topics": " , "}, {}, "topics: give 1 to 50 topics"),
    ({}, {"Last-Event-ID": "yesterday<img src=x>"}, "Last-Event-ID must be an event id"),
]


def test_a_bad_topic_or_event_id_is_refused_without_repeating_it(serve):
    with serve() as api:
        for params, headers, expected in BAD_REQUESTS:
            response = api.client.get("/events", params=params, headers=headers)
            assert response.status_code == 400
            assert response.json()["detail"].startswith(expected)
            for raw in [*params.values(), *headers.values()]:
                assert len(raw.strip()) < 5 or raw not in response.text


def test_the_hub_survives_a_stranger_s_message_and_a_redis_restart(settings, pg_url, private_redis):
    """A message that is no pointer is skipped; after Redis comes back the hub resubscribes and sends each topic's
    current snapshot, one stored while it was not listening included."""
    own = f"ev_{uuid.uuid4().hex[:6]}"
    store = build_snapshot_store(settings, RedisResource(url=private_redis.url, prefix=own),
                                 PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}"))
    instance = dg.DagsterInstance.ephemeral()
    api = Served(create_app(lambda: instance, store, 0, settings=settings), None, store, None)
    with instance, serve_http(api.app) as client, event_stream(client, "market_status") as events:
        until(api.app.state.hub.subscribed.is_set)
        store.redis.client().publish(store.events_channel, b"not a pointer")
        api.publish_status(10)
        assert next(events).id == as_of(10)

        private_redis.kill()
        until(lambda: not api.app.state.hub.subscribed.is_set())
        private_redis.start()
        store.redis.client().connection_pool.disconnect()  # the store's pooled connection died with the server
        api.publish_status(20)  # most likely before the hub is back: only the catch-up can bring it
        assert next(events).id == as_of(20)
        until(api.app.state.hub.subscribed.is_set)
        api.publish_status(30)
        assert next(events).id == as_of(30)
