"""Delivery: the real delivery sensor sending queued events to a real local receiver, every attempt in real Postgres."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

from dantaro_assets.alerts.outbox import MAX_ATTEMPTS, enqueue
from dantaro_assets.alerts.webhooks import Event, WebhookTargets, verify_signature
from dantaro_assets.maintenance.cleanup import purge_tables, table_cutoffs
from dantaro_assets.resources import run_settings
from dantaro_assets_tests.alerts.conftest import alert_definitions, deliveries, receivers, tick
from dantaro_assets_tests.alerts.receiver import Receiver
from dantaro_assets_tests.harness import free_port
from dantaro_assets_tests.operations.daemon import freeze_time

SECRET = "whsec-test-0123"
DELIVERY = "webhook_delivery_sensor"


def _event(key: str = "regime_change:2026-01-05T12:58:00Z") -> Event:
    at = datetime(2026, 1, 5, 12, 58, tzinfo=UTC)
    return Event("regime_change", key, at, "KRW market turned risk-off (score 34/100, was neutral at 52) at 12:58 UTC", {"score": 34.0})


def _queue(targets: list[dict], postgres, now: datetime, *events: Event) -> list[str]:
    return enqueue(postgres, WebhookTargets(config=json.dumps(targets)).targets(), events or [_event()], now)


def test_a_receiver_failing_twice_gets_the_delivery_on_the_third_attempt_under_one_key(postgres, redis_store, instance):
    with Receiver(500, 500).running() as receiver:
        targets = receivers(receiver.url + "/hooks/dantaro", ["regime_change"], secret=SECRET)
        definitions = alert_definitions(postgres, redis_store, targets)
        start = datetime.now(UTC).replace(microsecond=0)
        assert len(_queue(targets, postgres, start)) == 1
        [queued] = deliveries(postgres)
        assert (queued["status"], queued["attempts"], queued["next_attempt_at"]) == ("pending", 0, start)

        with freeze_time(start):
            first = tick(definitions, instance, DELIVERY)
        [row] = deliveries(postgres)
        assert (row["status"], row["attempts"], row["last_status_code"]) == ("retrying", 1, 500)
        assert row["next_attempt_at"] == start + timedelta(seconds=30)  # backoff: 30 s, then 60 s
        assert json.loads(first.skip_message) == {"sent": 1, "delivered": 0, "retrying": 1, "failed": 0}

        with freeze_time(start + timedelta(seconds=29)):
            assert tick(definitions, instance, DELIVERY).skip_message == "nothing due"
        assert len(receiver.requests) == 1

        with freeze_time(start + timedelta(seconds=30)):
            tick(definitions, instance, DELIVERY)
        [row] = deliveries(postgres)
        assert (row["status"], row["attempts"], row["next_attempt_at"]) == ("retrying", 2, start + timedelta(seconds=90))

        with freeze_time(start + timedelta(seconds=90)):
            third = tick(definitions, instance, DELIVERY)
        with freeze_time(start + timedelta(hours=2)):
            assert tick(definitions, instance, DELIVERY).skip_message == "nothing due"

    assert json.loads(third.skip_message)["delivered"] == 1
    [row] = deliveries(postgres)
    assert (row["status"], row["attempts"], row["last_status_code"], row["last_error"]) == ("delivered", 3, 200, None)
    assert row["delivered_at"] == start + timedelta(seconds=90) and row["next_attempt_at"] is None
    assert [attempt["status_code"] for attempt in json.loads(row["history"])] == [500, 500, 200]
    assert len(receiver.requests) == 3  # delivered once: nothing after the 200
    keys = {request.headers["X-Dantaro-Delivery"] for request in receiver.requests}
    assert keys == {row["idempotency_key"]}
    assert {request.body for request in receiver.requests} == {row["body"].encode()}
    for request in receiver.requests:
        assert request.path == "/hooks/dantaro" and request.headers["X-Dantaro-Event"] == "regime_change"
        assert verify_signature(SECRET, request.headers["X-Dantaro-Signature"], request.body)
        assert not verify_signature("another-secret", request.headers["X-Dantaro-Signature"], request.body)
    payload = json.loads(receiver.requests[-1].body)
    assert payload == {"event": "regime_change", "id": "regime_change:2026-01-05T12:58:00Z", "occurred_at": "2026-01-05T12:58:00Z",
                       "text": "KRW market turned risk-off (score 34/100, was neutral at 52) at 12:58 UTC", "data": {"score": 34.0}}


def test_an_event_queued_again_adds_nothing_and_each_receiver_gets_its_own_key_and_format(postgres):
    now = datetime.now(UTC)
    targets = [*receivers("http://127.0.0.1:9/a", ["regime_change"]), *receivers("http://127.0.0.1:9/b", ["regime_change"], "slack", None),
               *receivers("http://127.0.0.1:9/c", ["run_failed"], "discord")]
    assert len(_queue(targets, postgres, now)) == 2  # the discord receiver does not subscribe to regime_change
    assert _queue(targets, postgres, now) == []  # a sensor reading the same rows again
    rows = deliveries(postgres)
    assert len(rows) == 2 and rows[0]["idempotency_key"] != rows[1]["idempotency_key"]
    assert json.loads(rows[1]["body"]) == {"text": _event().text}
    discord = Event("run_failed", "run_failed:x", now, "x" * 2500)
    _queue(targets, postgres, now, discord)
    assert json.loads(deliveries(postgres)[-1]["body"]) == {"content": "x" * 2000}  # Discord's limit


def test_a_refusing_receiver_fails_at_once_and_a_dead_one_after_the_last_attempt(postgres, redis_store, instance):
    dead = f"http://127.0.0.1:{free_port()}/gone"
    with Receiver(404).running() as refusing:
        targets = receivers(refusing.url, ["regime_change"]) + receivers(dead, ["regime_change"])
        definitions = alert_definitions(postgres, redis_store, targets)
        now = datetime.now(UTC).replace(microsecond=0)
        _queue(targets, postgres, now)
        for _ in range(MAX_ATTEMPTS):
            with freeze_time(now):
                tick(definitions, instance, DELIVERY)
            waiting = [row["next_attempt_at"] for row in deliveries(postgres) if row["next_attempt_at"] is not None]
            now = max(waiting) if waiting else now
    refused, unreachable = deliveries(postgres)
    assert (refused["status"], refused["attempts"], refused["last_status_code"]) == ("failed", 1, 404)
    assert refused["last_error"].startswith("HTTP 404: receiver says no")
    assert (unreachable["status"], unreachable["attempts"], unreachable["last_status_code"]) == ("failed", MAX_ATTEMPTS, None)
    assert unreachable["last_error"].startswith("ConnectError")
    history = json.loads(unreachable["history"])
    gaps = [(datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds() for a, b in zip(history, history[1:], strict=False)]
    assert gaps == [30, 60, 120, 240, 480, 960, 1920]  # exponential backoff, about an hour in all


def test_a_slow_receiver_is_cut_off_by_the_timeout_and_retried(postgres, redis_store, instance):
    with Receiver(delay=8).running() as slow:
        targets = receivers(slow.url, ["regime_change"])
        _queue(targets, postgres, datetime.now(UTC))
        tick(alert_definitions(postgres, redis_store, targets), instance, DELIVERY)
    [row] = deliveries(postgres)
    assert (row["status"], row["attempts"], row["last_status_code"]) == ("retrying", 1, None)
    assert row["last_error"].startswith("ReadTimeout")


def test_a_receiver_dropped_from_the_settings_fails_its_deliveries(postgres, redis_store, instance):
    _queue(receivers("http://127.0.0.1:9/old", ["regime_change"]), postgres, datetime.now(UTC))
    tick(alert_definitions(postgres, redis_store, receivers("http://127.0.0.1:9/new", ["regime_change"])), instance, DELIVERY)
    [row] = deliveries(postgres)
    assert (row["status"], row["attempts"], row["last_error"]) == ("failed", 1, "its receiver is no longer in DANTARO_WEBHOOKS")


def test_the_outbox_keeps_no_secret_and_shows_a_chat_url_redacted(postgres, redis_store, instance):
    token = "abcdEFGHijklMNOPqrstUVWX"
    with Receiver().running() as chat:
        url = chat.url.replace("http://", f"http://bot:{SECRET}@") + f"/services/T000/B000/{token}"
        targets = receivers(url, ["regime_change"], "slack", SECRET)
        _queue(targets, postgres, datetime.now(UTC))
        tick(alert_definitions(postgres, redis_store, targets), instance, DELIVERY)
    [row] = deliveries(postgres)
    assert row["status"] == "delivered" and chat.requests[0].path == f"/services/T000/B000/{token}"
    assert row["url"] == chat.url.replace("http://", "http://bot:***@") + "/services/T000/B000/***"
    stored = json.dumps(row, default=str)
    assert SECRET not in stored and token not in stored


def test_deliveries_are_kept_as_long_as_the_run_history(postgres, settings):
    now = datetime.now(UTC)
    targets = receivers("http://127.0.0.1:9/", ["regime_change"])
    _queue(targets, postgres, now - timedelta(days=settings.retention_runs_days + 1), _event("regime_change:old"))
    _queue(targets, postgres, now - timedelta(days=1), _event("regime_change:recent"))
    assert purge_tables(postgres, table_cutoffs(now, run_settings(settings))) == {"webhook_deliveries": 1}
    assert [row["event_id"] for row in deliveries(postgres)] == ["regime_change:recent"]
