"""``GET /metrics`` scraped over real HTTP after real activity, parsed with prometheus_client's own parser.

The activity is what the other processes do: runs in the Dagster instance, Upbit fetches through the
replay server (with 429s), the stream's health record, a snapshot published, webhook deliveries in Postgres.
"""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime

import dagster as dg
import httpx
import pandas as pd
import psycopg
from prometheus_client.parser import text_string_to_metric_families

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import UpbitClient
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets.seen import SeenStore, StreamHealth
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets_tests.api.test_api import broken, counted_markets
from dantaro_assets_tests.fixtures.servers import serve_http

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(client: httpx.Client) -> Samples:
    response = client.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return {(sample.name, frozenset(sample.labels.items())): sample.value
            for family in text_string_to_metric_families(response.text) for sample in family.samples}


def value(samples: Samples, name: str, **labels: str) -> float | None:
    return samples.get((name, frozenset(labels.items())))


def test_metrics_after_real_activity(instance, settings, pg_url, replay, redis_client):
    own = f"met_{uuid.uuid4().hex[:6]}"
    redis_resource = RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}")
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, redis_resource, postgres)
    try:
        app = create_app(lambda: instance, store, 0, settings=settings)
        with serve_http(app) as client:
            while not app.state.hub.subscribed.is_set():  # the snapshot below must be heard
                time.sleep(0.02)
            before = scrape(client)
            for status in ("pending", "retrying", "delivered", "failed"):  # no webhook_deliveries table yet: zero
                assert value(before, "dantaro_webhook_deliveries_total", status=status) == 0
            assert value(before, "dantaro_metrics_source_up", source="postgres") == 1
            assert value(before, "dantaro_stream_healthy") == 0  # never ran
            assert ("dantaro_snapshot_age_seconds", frozenset({("product", "market_status")})) not in before

            # runs (each a process of its own in production: here the same instance)
            dg.materialize([counted_markets], instance=instance, tags=MARKET_STATUS.job_type.tags())
            dg.materialize([broken], instance=instance, tags=RECOMMENDATIONS.job_type.tags(), raise_on_error=False)
            # Upbit fetches sharing this prefix' limiter: 3 markets, the first two answers 429 then retried
            replay.set_clock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
            replay.inject("429", path="/v1/candles/*", count=2)
            upbit = UpbitClient(base_url=replay.url, backoff_seconds=0.05, redis=redis_resource)
            upbit.candles(["KRW-BTC", "KRW-ETH", "KRW-XRP"], "minute1", pd.Timestamp("2026-03-02T09:00Z"), pd.Timestamp("2026-03-02T10:00Z"))
            upbit.close()
            # the stream's health record, as `dantaro stream` writes it
            now = time.time()
            figures = {"markets": 250, "reconnects": 2, "missed_minutes": 7, "no_trade_minutes": 3, "minutes_written": 900,
                       "last_report": {"messages_per_s": 41.5}}
            SeenStore(postgres).publish(StreamHealth(now, now, now - 6, True, [], figures))
            # a market status snapshot 90 s old, and requests to the API
            as_of = pd.Timestamp(now - 90, unit="s", tz="UTC").floor("s")
            store.publish("market_status", pd.DataFrame({"as_of": [as_of], "score": [50.0]}), run_id="r", partition=None)
            for _ in range(3):
                assert client.get("/market-status/latest").status_code == 200
            assert client.get("/support-levels/KRW-BTC").status_code == 404
            # webhook deliveries, as the webhook sensors record them
            with psycopg.connect(pg_url, autocommit=True) as conn:
                conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{postgres.db_schema}"')
                conn.execute(f'CREATE TABLE "{postgres.db_schema}".webhook_deliveries (event text, status text, attempts int)')
                conn.execute(f'INSERT INTO "{postgres.db_schema}".webhook_deliveries VALUES '
                             "('regime_change', 'delivered', 1), ('regime_change', 'delivered', 3), ('run_failed', 'failed', 5)")

            with client.stream("GET", "/events", params={"topics": "market_status"}) as events:
                lines = events.iter_lines()  # kept: a dropped line iterator closes the stream
                assert next(lines) == "retry: 2000"
                after = scrape(client)

            assert value(after, "dantaro_run_duration_seconds_count", job="market_status", outcome="completed") == 1
            assert value(after, "dantaro_run_duration_seconds_count", job="recommendations", outcome="failed") == 1
            assert value(after, "dantaro_run_duration_seconds_sum", job="market_status", outcome="completed") > 0
            endpoint = "/v1/candles/minutes/1"
            assert value(after, "dantaro_upbit_requests_total", endpoint=endpoint, status="200") == 3
            assert value(after, "dantaro_upbit_requests_total", endpoint=endpoint, status="429") == 2
            assert 5 <= value(after, "dantaro_stream_lag_seconds") < 30 and value(after, "dantaro_stream_healthy") == 1
            assert value(after, "dantaro_stream_messages_per_second") == 41.5
            assert (value(after, "dantaro_stream_reconnects_total"), value(after, "dantaro_stream_missed_minutes_total")) == (2, 7)
            assert value(after, "dantaro_stream_no_trade_minutes_total") == 3
            assert 89 <= value(after, "dantaro_snapshot_age_seconds", product="market_status") < 120
            assert value(after, "dantaro_api_request_duration_seconds_count", route="/market-status/latest", status="200") == 3
            assert value(after, "dantaro_api_request_duration_seconds_count", route="/support-levels/{market}", status="404") == 1
            assert value(after, "dantaro_webhook_deliveries_total", status="delivered") == 2
            assert value(after, "dantaro_webhook_deliveries_total", status="failed") == 1
            assert value(after, "dantaro_webhook_deliveries_total", status="retrying") == 0
            assert value(after, "dantaro_webhook_attempts_total", event="regime_change", status="delivered") == 4
            assert value(after, "dantaro_event_clients") == 1 and value(after, "dantaro_events_received_total") == 1
            assert value(after, "dantaro_worker_active") == 0  # no daemon beats here
            assert {value(after, "dantaro_metrics_source_up", source=s) for s in ("redis", "postgres", "dagster")} == {1}
            assert value(scrape(client), "dantaro_run_duration_seconds_count", job="market_status", outcome="completed") == 1, \
                "a run is counted once"
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


def test_a_source_that_does_not_answer_is_reported_not_fatal(instance, settings):
    down = build_snapshot_store(settings, RedisResource(url="redis://127.0.0.1:1/0", prefix="x"),
                                PostgresResource(url="postgresql://127.0.0.1:1/none", db_schema="x"))
    with serve_http(create_app(lambda: instance, down, 0, settings=settings)) as client:
        samples = scrape(client)
    assert value(samples, "dantaro_metrics_source_up", source="redis") == 0
    assert value(samples, "dantaro_metrics_source_up", source="postgres") == 0
    assert value(samples, "dantaro_metrics_source_up", source="dagster") == 1
