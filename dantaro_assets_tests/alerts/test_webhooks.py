"""Signatures as a receiver checks them: the package's check and the two in docs/webhooks.md, on a real delivery."""

from __future__ import annotations

import json
import re
import subprocess
import time
from datetime import UTC, datetime
from pathlib import Path

from dantaro_assets.alerts.outbox import enqueue
from dantaro_assets.alerts.webhooks import Event, WebhookTargets, clock, sign, verify_signature
from dantaro_assets_tests.alerts.conftest import alert_definitions, receivers, tick
from dantaro_assets_tests.alerts.receiver import Receiver

DOCS = Path(__file__).resolve().parents[2] / "docs" / "webhooks.md"
SECRET = "whsec-docs-0123"


def test_a_signature_checks_the_body_the_secret_and_the_age():
    body = '{"event":"run_failed"}'
    now = time.time()
    header = sign(SECRET, int(now), body)
    assert verify_signature(SECRET, header, body.encode(), now=now)
    assert not verify_signature(SECRET, header, body.replace("run", "fun"), now=now)  # tampered
    assert not verify_signature("whsec-other", header, body, now=now)
    assert not verify_signature(SECRET, header, body, now=now + 301)  # replayed after the tolerance
    assert not verify_signature(SECRET, "v1=" + header.split("v1=")[1], body, now=now)  # no timestamp
    rotated = f"{header},v1={sign('whsec-old', int(now), body).split('v1=')[1]}"
    assert verify_signature(SECRET, rotated, body, now=now) and verify_signature("whsec-old", rotated, body, now=now)


def _block(language: str, after: str) -> str:
    """The first ``language`` code block of docs/webhooks.md after the heading line ``after``."""
    text = DOCS.read_text()
    return re.search(rf"```{language}\n(.*?)```", text[text.index(after):], re.S).group(1)


def test_the_documented_checks_verify_a_real_delivery_and_refuse_a_tampered_one(postgres, redis_store, instance, tmp_path):
    with Receiver().running() as receiver:
        targets = receivers(receiver.url, ["check_failed"], secret=SECRET)
        event = Event("check_failed", "check_failed:prices:positive:1", datetime.now(UTC), "Check positive on prices failed", {"x": 1})
        enqueue(postgres, WebhookTargets(config=json.dumps(targets)).targets(), [event], datetime.now(UTC))
        tick(alert_definitions(postgres, redis_store, targets), instance, "webhook_delivery_sensor")
    [request] = receiver.requests
    signature, body = request.headers["X-Dantaro-Signature"], request.body

    namespace: dict = {}
    exec(_block("python", "## Verifying a signature"), namespace)  # noqa: S102 - the documented snippet, as a reader copies it
    assert namespace["verify"](SECRET, signature, body)
    assert not namespace["verify"](SECRET, signature, body.replace(b"prices", b"pricez"))
    assert not namespace["verify"]("whsec-wrong", signature, body)

    shell = _block("bash", "In a shell")
    (tmp_path / "body.json").write_bytes(body)
    env = {"PATH": "/usr/bin:/bin", "SIG": signature, "SECRET": SECRET}
    checked = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert checked.stdout.strip() == "valid"
    (tmp_path / "body.json").write_bytes(body.replace(b"prices", b"pricez"))
    refused = subprocess.run(["bash", "-c", shell], cwd=tmp_path, env=env, capture_output=True, text=True, check=True)
    assert refused.stdout.strip() == "INVALID"


def test_clock_names_the_day_when_a_moment_falls_on_another_one():
    """A 24 h plan made at 19:55 expires at 19:55 the next day: its text must not read "expires 19:55 UTC"."""
    made = datetime(2026, 12, 6, 19, 55, tzinfo=UTC)
    assert clock(made) == "19:55 UTC"
    assert clock(made.replace(hour=23), since=made) == "23:55 UTC"
    assert clock(datetime(2026, 12, 7, 19, 55, tzinfo=UTC), since=made) == "2026-12-07 19:55 UTC"
