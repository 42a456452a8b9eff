"""The webhook outbox: ``<schema>.webhook_deliveries``, one row per event and receiver, every attempt recorded.

Sensors ``enqueue`` and a delivery sensor sends what is due (``deliver_due``), so no run waits for a receiver;
the unique idempotency key makes queueing twice harmless and lets a receiver recognise a repeat. Statuses and
retries: docs/webhooks.md, "Delivery".
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass
from datetime import datetime, timedelta

from dantaro_assets.alerts.webhooks import Attempt, Event, body, client, delivery_key, post
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import advisory_lock
from dantaro_assets.redaction import redact_webhook_url
from dantaro_assets.settings import WebhookTarget

TABLE = "webhook_deliveries"
MAX_ATTEMPTS = 8
FIRST_RETRY_SECONDS = 30  # then 60, 120, ... : eight attempts span about an hour
MAX_RETRY_SECONDS = 3600
BATCH = 32  # deliveries per tick
SENDERS = 8  # at once: BATCH / SENDERS rounds of at most a few TIMEOUT_SECONDS keep a tick far inside Dagster's 60 s
TICK_BUDGET_SECONDS = 25.0  # a delivery still unanswered then is left to its lease: tried again after it
LEASE_SECONDS = 120  # a claimed delivery is not claimed again for this long (a tick that died mid-send)
_ensured: set[tuple[str, str]] = set()


def retry_delay(attempts: int, retry_after: float | None = None) -> float:
    """Seconds before the next attempt after ``attempts`` failed ones: 30 s doubling up to an hour, or longer
    when the receiver asked for it (Retry-After)."""
    backoff = min(FIRST_RETRY_SECONDS * 2 ** (attempts - 1), MAX_RETRY_SECONDS)
    return max(backoff, min(retry_after or 0.0, MAX_RETRY_SECONDS))


def ensure_table(postgres: PostgresResource) -> str:
    """Create the table (once per process and database); its quoted name."""
    table = postgres.table_name(TABLE)
    marker = (postgres.resolved_url(), postgres.db_schema)
    if marker in _ensured:
        return table
    with postgres.connect() as conn, conn.cursor() as cur:
        advisory_lock(conn, f"{postgres.db_schema}.{TABLE}")  # two sensors creating it at once would collide
        cur.execute(f'CREATE SCHEMA IF NOT EXISTS "{postgres.db_schema}"')
        cur.execute(f"""
            CREATE TABLE IF NOT EXISTS {table} (
                id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
                idempotency_key text NOT NULL UNIQUE,
                event text NOT NULL,
                event_id text NOT NULL,
                target text NOT NULL,
                url text NOT NULL,
                format text NOT NULL,
                body text NOT NULL,
                status text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'delivered', 'retrying', 'failed')),
                attempts integer NOT NULL DEFAULT 0,
                last_status_code integer,
                last_error text,
                next_attempt_at timestamptz,
                created_at timestamptz NOT NULL,
                delivered_at timestamptz,
                history jsonb NOT NULL DEFAULT '[]'
            )""")
        cur.execute(f"CREATE INDEX IF NOT EXISTS webhook_deliveries_due ON {table} (next_attempt_at) WHERE status IN ('pending', 'retrying')")
    _ensured.add(marker)
    return table


def enqueue(postgres: PostgresResource, targets: Sequence[WebhookTarget], events: Iterable[Event], now: datetime) -> list[str]:
    """Queue each event for each receiver subscribed to it, in one transaction; the event ids of the deliveries that were new."""
    rows = [(delivery_key(event, target), event, target) for event in events for target in targets if event.name in target.events]
    if not rows:
        return []
    table = ensure_table(postgres)
    added = []
    with postgres.connect() as conn, conn.cursor() as cur:
        for key, event, target in rows:
            cur.execute(
                f"INSERT INTO {table} (idempotency_key, event, event_id, target, url, format, body, next_attempt_at, created_at) "
                "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) ON CONFLICT (idempotency_key) DO NOTHING RETURNING event_id",
                [key, event.name, event.key, target.fingerprint, redact_webhook_url(target.url), target.format, body(event, target.format), now],
            )
            added += [row[0] for row in cur.fetchall()]
    return added


@dataclass(frozen=True)
class Due:
    """A claimed delivery."""

    id: int
    idempotency_key: str
    event: str
    target: str
    url: str  # redacted
    body: str
    attempts: int


@dataclass(frozen=True)
class Outcome:
    delivery: Due
    attempt: Attempt
    status: str


def claim_due(postgres: PostgresResource, now: datetime, limit: int = BATCH) -> list[Due]:
    """The deliveries due at ``now``, oldest first, leased for ``LEASE_SECONDS`` so no other tick sends them meanwhile."""
    table = ensure_table(postgres)
    sql = f"""
        UPDATE {table} SET next_attempt_at = $2
        WHERE id IN (SELECT id FROM {table} WHERE status IN ('pending', 'retrying') AND next_attempt_at <= $1
                     ORDER BY next_attempt_at, id LIMIT $3 FOR UPDATE SKIP LOCKED)
        RETURNING id, idempotency_key, event, target, url, body, attempts"""
    rows = postgres.read_arrow(sql, [now, now + timedelta(seconds=LEASE_SECONDS), limit]).to_pylist()
    return sorted((Due(**row) for row in rows), key=lambda due: due.id)


def record(postgres: PostgresResource, due: Due, attempt: Attempt, now: datetime, *, give_up: bool = False) -> str:
    """Store one attempt's outcome on its delivery; the delivery's new status (``give_up``: no retry whatever the outcome)."""
    attempts = due.attempts + 1
    if attempt.delivered:
        status, next_at = "delivered", None
    elif attempt.retryable and attempts < MAX_ATTEMPTS and not give_up:
        status, next_at = "retrying", now + timedelta(seconds=retry_delay(attempts, attempt.retry_after))
    else:
        status, next_at = "failed", None
    postgres.execute(
        f"""UPDATE {postgres.table_name(TABLE)} SET attempts = attempts + 1, status = $2, last_status_code = $3::integer,
                last_error = $4::text, next_attempt_at = $5::timestamptz, delivered_at = $6::timestamptz,
                history = history || jsonb_build_array(jsonb_build_object(
                    'at', $7::timestamptz, 'status_code', $3::integer, 'error', $4::text, 'ms', $8::integer))
            WHERE id = $1""",
        [due.id, status, attempt.status_code, attempt.error, next_at, now if attempt.delivered else None, now, attempt.milliseconds],
    )
    return status


def deliver_due(postgres: PostgresResource, targets: Sequence[WebhookTarget], now: datetime) -> list[Outcome]:
    """Send the due deliveries, ``SENDERS`` at once, and record each attempt, within ``TICK_BUDGET_SECONDS``."""
    due = claim_due(postgres, now)
    by_fingerprint = {target.fingerprint: target for target in targets}
    outcomes = []
    for delivery in [d for d in due if d.target not in by_fingerprint]:
        gone = Attempt(None, "its receiver is no longer in DANTARO_WEBHOOKS", 0)
        outcomes.append(Outcome(delivery, gone, record(postgres, delivery, gone, now, give_up=True)))
    sendable = [d for d in due if d.target in by_fingerprint]
    if not sendable:
        return outcomes
    pool = ThreadPoolExecutor(SENDERS, thread_name_prefix="webhook")
    with client() as http:
        try:
            sent = {pool.submit(post, http, by_fingerprint[d.target], event=d.event, key=d.idempotency_key, payload=d.body): d
                    for d in sendable}
            done, _ = wait(sent, timeout=TICK_BUDGET_SECONDS)
        finally:
            pool.shutdown(wait=False, cancel_futures=True)  # a send still hanging is abandoned; its lease brings it back
    for future in sorted(done, key=lambda f: sent[f].id):
        outcomes.append(Outcome(sent[future], future.result(), record(postgres, sent[future], future.result(), now)))
    return outcomes
