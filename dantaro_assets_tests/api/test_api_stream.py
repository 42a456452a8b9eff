"""``/worker/status`` shows ``dantaro stream``'s health as the stream records it in Postgres (the contract fields stay)."""

from __future__ import annotations

import time
import uuid

import psycopg

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.markets.seen import SeenStore, StreamHealth, Window
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets_tests.fixtures.servers import serve_http


def test_worker_status_reports_the_stream_s_lag_messages_reconnects_and_minutes(instance, settings, pg_url):
    own = f"api_{uuid.uuid4().hex[:6]}"
    redis_store = RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}")
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = SeenStore(postgres)
    with serve_http(create_app(lambda: instance, build_snapshot_store(settings, redis_store, postgres), 0, settings=settings)) as client:
        body = client.get("/worker/status").json()
        assert {"worker_active", "last_jobs", "uptime"} <= set(body)
        assert body["stream"] == {"state": "never ran", "healthy": False, "problem": "stream never ran"}

        store.publish(StreamHealth(time.time(), 0.0, 0.0, True, [], {"markets": 0}))  # before its first message
        stream = client.get("/worker/status").json()["stream"]
        assert (stream["state"], stream["healthy"], stream["covered_through"]) == ("starting", False, None)

        now = time.time()
        figures = {"markets": 250, "reconnects": 2, "no_trade_minutes": 7, "missed_minutes": 3, "minutes_written": 900,
                   "last_report": {"messages_per_s": 41.5}}
        store.publish(StreamHealth(now, 1_764_763_265.0, 1_764_763_260.0, True, [Window(1_764_760_000, 1_764_763_260, frozenset(["KRW-BTC"]), "stream")],
                                   figures))
        stream = client.get("/worker/status").json()["stream"]
        assert stream["state"] == "healthy" and stream["healthy"] is True and stream["problem"] is None
        assert 5 <= stream["lag_s"] < 10
        assert (stream["messages_per_s"], stream["reconnects"], stream["markets"]) == (41.5, 2, 250)
        assert (stream["no_trade_minutes"], stream["missed_minutes"]) == (7, 3)

        store.publish(StreamHealth(now - 120, 1_764_763_265.0, 1_764_763_260.0, True, [], figures))
        stream = client.get("/worker/status").json()["stream"]
        assert stream["state"] == "down" and stream["problem"].startswith("stream down: no heartbeat for 12")
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')
