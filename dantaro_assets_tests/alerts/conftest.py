"""The alerts tests' stores: a Postgres schema and a Redis prefix of each test's own (the outbox must start empty)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator, Sequence

import dagster as dg
import psycopg
import pytest
import redis

from dantaro_assets.alerts.sensors import build_sensors
from dantaro_assets.alerts.webhooks import WebhookTargets
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.settings import Settings


@pytest.fixture
def postgres(pg_url: str, settings: Settings) -> Iterator[PostgresResource]:
    schema = f"{settings.db_schema}_alerts_{uuid.uuid4().hex[:6]}"
    yield PostgresResource(url=pg_url, db_schema=schema)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


@pytest.fixture
def redis_store(redis_client: redis.Redis, settings: Settings) -> RedisResource:
    """A Redis prefix under the run's (its keys go with the run's at the end of the session)."""
    return RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:alerts{uuid.uuid4().hex[:6]}")


def receivers(url: str, events: Sequence[str], format: str = "json", secret: str | None = "whsec-test-0123") -> list[dict]:
    return [{"url": url, "events": list(events), "format": format, **({"secret": secret} if secret else {})}]


def alert_definitions(postgres: PostgresResource, redis_store: RedisResource, targets: list[dict], *,
                      assets: Sequence[dg.AssetsDefinition] = (), stream_max_lag: float = 30.0) -> dg.Definitions:
    """The webhook sensors over the test's stores and receivers (and ``assets``, whose checks and freshness they watch)."""
    return dg.Definitions(
        assets=list(assets),
        sensors=build_sensors("reversal", stream_max_lag, enabled=True),
        resources={"postgres": postgres, "redis": redis_store, "webhooks": WebhookTargets(config=json.dumps(targets))},
    )


def tick(definitions: dg.Definitions, instance: dg.DagsterInstance, sensor: str, cursor: str | None = None):
    """One evaluation of ``sensor`` as the code server makes it for the daemon (the definitions' resources built
    for it): its skip message, cursor and run requests."""
    context = dg.build_sensor_context(instance=instance, cursor=cursor, definitions=definitions, resources=definitions.resources)
    return definitions.get_repository_def().get_sensor_def(sensor).evaluate_tick(context)


def deliveries(postgres: PostgresResource) -> list[dict]:
    """Every row of the outbox, oldest first."""
    return postgres.read_arrow(f"SELECT * FROM {postgres.table_name('webhook_deliveries')} ORDER BY id").to_pylist()
