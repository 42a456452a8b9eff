"""What a webhook receiver gets: the event, its body in the receiver's format, the signature, one HTTP attempt.

Headers, body formats and the signature scheme (:func:`verify_signature` is the receiver's check):
docs/webhooks.md, "Requests" and "Verifying a signature".
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import dagster as dg
import httpx

from dantaro_assets.lib.tls import tls_context
from dantaro_assets.redaction import redact_text
from dantaro_assets.settings import WebhookTarget, load_settings

TIMEOUT_SECONDS = 5.0  # per connect, read and write: a slow receiver costs a delivery tick seconds, never a run
SIGNATURE_TOLERANCE_SECONDS = 300
DISCORD_MAX_CHARS = 2000
_DELIVERY_NAMESPACE = uuid.UUID("0f6a4d4e-5b0e-4a57-9d55-6d616e746172")


@dataclass(frozen=True)
class Event:
    """Something a trader or an operator should hear about, once: ``key`` names the occurrence, so seeing it
    again (a sensor re-reading what it read before) queues nothing new."""

    name: str
    key: str
    occurred_at: datetime
    text: str  # one line a person understands at a glance
    data: dict[str, Any] = field(default_factory=dict)

    def as_json(self) -> dict[str, Any]:
        return {"event": self.name, "id": self.key, "occurred_at": iso(self.occurred_at), "text": self.text, "data": self.data}


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def clock(moment: datetime, *, since: datetime | None = None) -> str:
    """``12:58 UTC``, how the texts name a time; ``2026-01-06 12:58 UTC`` when it falls on another day than
    ``since`` (a 24 h plan's expiry read beside the time it was made)."""
    moment = moment.astimezone(UTC)
    if since is not None and moment.date() != since.astimezone(UTC).date():
        return moment.strftime("%Y-%m-%d %H:%M UTC")
    return moment.strftime("%H:%M UTC")


def delivery_key(event: Event, target: WebhookTarget) -> str:
    """The idempotency key of ``event`` to ``target``: derived, so it is the same whoever queues it and on every retry."""
    return str(uuid.uuid5(_DELIVERY_NAMESPACE, f"{event.key}|{target.fingerprint}"))


def body(event: Event, format: str) -> str:
    """The request body of ``event`` in a receiver's ``format``; fixed when queued, so every retry sends the same bytes."""
    if format == "slack":
        payload: dict[str, Any] = {"text": event.text}
    elif format == "discord":
        payload = {"content": event.text[:DISCORD_MAX_CHARS]}
    else:
        payload = event.as_json()
    return json.dumps(payload, ensure_ascii=False, separators=(",", ":"))


def sign(secret: str, timestamp: int, payload: str) -> str:
    """The ``X-Dantaro-Signature`` value of ``payload`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.{payload}".encode(), hashlib.sha256).hexdigest()
    return f"t={timestamp},v1={digest}"


def verify_signature(secret: str, header: str, payload: bytes | str, *, tolerance: float = SIGNATURE_TOLERANCE_SECONDS,
                     now: float | None = None) -> bool:
    """A receiver's check of ``X-Dantaro-Signature``: the HMAC matches the raw body and the timestamp is within
    ``tolerance`` seconds of ``now`` (a replayed old request fails). Compare in constant time."""
    payload = payload.decode() if isinstance(payload, bytes) else payload
    parts = [item.split("=", 1) for item in header.split(",") if "=" in item]
    timestamps = [value for key, value in parts if key == "t"]
    if len(timestamps) != 1 or not timestamps[0].isdigit():
        return False
    timestamp = int(timestamps[0])
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        return False
    expected = sign(secret, timestamp, payload).split("v1=", 1)[1]
    return any(key == "v1" and hmac.compare_digest(value, expected) for key, value in parts)


@dataclass(frozen=True)
class Attempt:
    """One POST: the receiver's status code (None when it never answered) and what went wrong, if anything."""

    status_code: int | None
    error: str | None
    milliseconds: int
    retry_after: float | None = None  # seconds the receiver asked for (429/503 Retry-After)

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    @property
    def retryable(self) -> bool:
        """Worth another attempt: no answer, a server error, a timeout or a rate limit; other 4xx are the receiver's refusal."""
        return self.status_code is None or self.status_code >= 500 or self.status_code in (408, 425, 429)


def post(client: httpx.Client, target: WebhookTarget, *, event: str, key: str, payload: str) -> Attempt:
    """POST ``payload`` to ``target`` once, signed now; a failure becomes an :class:`Attempt`, never an exception."""
    headers = {"Content-Type": "application/json", "User-Agent": "Dantaro-Webhooks/1", "X-Dantaro-Event": event, "X-Dantaro-Delivery": key}
    if target.secret is not None:
        headers["X-Dantaro-Signature"] = sign(target.secret.get_secret_value(), int(time.time()), payload)
    started = time.perf_counter()
    try:
        response = client.post(target.url, content=payload.encode(), headers=headers)
    except httpx.HTTPError as exc:
        # the exception text may hold the URL (a chat token, a password): only its kind and a redacted message
        return Attempt(None, f"{type(exc).__name__}: {redact_text(str(exc).replace(target.url, '<url>'))}"[:300], _since(started))
    error = None if response.is_success else f"HTTP {response.status_code}: {response.text[:200]}"
    retry_after = response.headers.get("Retry-After", "")
    return Attempt(response.status_code, error, _since(started), float(retry_after) if retry_after.isdigit() else None)


def _since(started: float) -> int:
    return round((time.perf_counter() - started) * 1000)


def client() -> httpx.Client:
    """A client with short timeouts that follows no redirect (a redirect is the receiver's misconfiguration)."""
    return httpx.Client(timeout=httpx.Timeout(TIMEOUT_SECONDS), follow_redirects=False, verify=tls_context())


class WebhookTargets(dg.ConfigurableResource):
    """``DANTARO_WEBHOOKS`` as sensors read it: through ``dg.EnvVar``, so the code location's snapshot and the UI's
    Resources page show the variable's name, never a receiver's URL or secret."""

    config: str = "[]"

    def targets(self) -> tuple[WebhookTarget, ...]:
        """The receivers, validated as the settings validate them (a bad value raises ``SettingsError``, secrets unshown)."""
        return load_settings({"DANTARO_WEBHOOKS": self.config}).webhooks
