"""The webhook sensors: one per source of events, which queue deliveries, and one that sends them.

Nothing here runs inside a run, so a slow or dead receiver never delays one; a failed tick keeps its cursor
and the outbox's idempotency keys make reading again harmless. No ``from __future__ import annotations``:
Dagster finds a sensor's resources by their annotations.
"""

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import dagster as dg

from dantaro_assets.alerts import events as detect
from dantaro_assets.alerts.outbox import deliver_due, enqueue
from dantaro_assets.alerts.webhooks import Event, WebhookTargets
from dantaro_assets.lib.dagster_internals import get_current_datetime
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.markets.seen import SeenStore
from dantaro_assets.operations.schedules import default_sensor_status
from dantaro_assets.settings import WebhookTarget

EVENT_INTERVAL = 30
DELIVERY_INTERVAL = 15


@dataclass(frozen=True)
class Sources:
    """What an event sensor's detector may read: the sensor's context (instance, definitions) and the stores."""

    context: dg.SensorEvaluationContext
    postgres: PostgresResource


Detector = Callable[[Sources, str | None, datetime], tuple[list[Event], str | None]]


def _subscribed(targets: Sequence[WebhookTarget], events: Sequence[str]) -> bool:
    return any(event in target.events for target in targets for event in events)


def _queued(added: list[str]) -> str:
    """The tick's message: the deliveries queued and their events (an event found again queues nothing)."""
    if not added:
        return "nothing new"
    events = list(dict.fromkeys(added))
    names = ", ".join(events[:5]) + (f" and {len(events) - 5} more" if len(events) > 5 else "")
    return f"{len(added)} delivery(ies) queued: {names}"


def event_sensor(name: str, events: Sequence[str], detector: Detector, enabled: bool, description: str) -> dg.SensorDefinition:
    """A sensor queueing ``events`` found by ``detector``; it reads nothing while no receiver subscribes to them."""

    @dg.sensor(name=name, minimum_interval_seconds=EVENT_INTERVAL, default_status=default_sensor_status(enabled), description=description)
    def _sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource, webhooks: WebhookTargets) -> dg.SensorResult:
        targets = webhooks.targets()
        if not _subscribed(targets, events):
            return dg.SensorResult(skip_reason=f"no receiver in DANTARO_WEBHOOKS subscribes to {' or '.join(events)}", cursor=context.cursor)
        now = get_current_datetime()
        found, cursor = detector(Sources(context, postgres), context.cursor, now)
        added = enqueue(postgres, targets, found, now)
        if added:
            context.log.info(_queued(added))
        return dg.SensorResult(skip_reason=_queued(added), cursor=cursor)

    return _sensor


def _iso(moment: datetime | None, cursor: str | None) -> str | None:
    return moment.isoformat() if moment is not None else cursor


def _regime_changes(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
    found, newest = detect.regime_changes(sources.postgres, detect.since(cursor, now))
    return found, _iso(newest, cursor)


def _new_top_picks(scorer: str) -> Detector:
    def _detect(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
        found, newest = detect.new_top_picks(sources.postgres, scorer, detect.since(cursor, now))
        return found, _iso(newest, cursor)
    return _detect


def _expired_picks(scorer: str) -> Detector:
    def _detect(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
        return detect.expired_picks(sources.postgres, scorer, detect.since(cursor, now), now), now.isoformat()
    return _detect


def _assets(context: dg.SensorEvaluationContext) -> list[dg.AssetsDefinition]:
    return list({id(assets): assets for assets in context.repository_def.assets_defs_by_key.values()}.values())


def _failed_checks(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
    context = sources.context
    keys = {key for assets in _assets(context) for key in assets.check_keys} | set(context.repository_def.asset_checks_defs_by_key)
    found, newest = detect.failed_checks(context.instance, sorted(keys, key=str), detect.since(cursor, now))
    return found, newest.isoformat()


def _freshness_failures(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
    context = sources.context
    keys = [spec.key for assets in _assets(context) for spec in assets.specs if spec.freshness_policy is not None]
    found, newest = detect.freshness_failures(context.instance, keys, detect.since(cursor, now))
    return found, newest.isoformat()


def _stream_changes(max_lag: float) -> Detector:
    def _detect(sources: Sources, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
        return detect.stream_changes(SeenStore(sources.postgres), max_lag, cursor, now)
    return _detect


def run_failed_sensor(enabled: bool) -> dg.SensorDefinition:
    """Dagster's run-failure sensor over this code location's jobs, queueing ``run_failed``."""

    @dg.run_failure_sensor(name="webhook_run_failed_sensor", minimum_interval_seconds=EVENT_INTERVAL,
                           default_status=default_sensor_status(enabled),
                           description="Queues run_failed webhooks for every failed run of this code location's jobs.")
    def webhook_run_failed_sensor(context: dg.RunFailureSensorContext, postgres: PostgresResource, webhooks: WebhookTargets) -> None:
        targets = webhooks.targets()
        if not _subscribed(targets, ["run_failed"]):
            return
        run = context.dagster_run
        record = context.instance.get_run_record_by_id(run.run_id)
        failed_at = datetime.fromtimestamp(record.end_time, UTC) if record and record.end_time else get_current_datetime()
        steps = [detect.step_error(event) for event in context.get_step_failure_events() if event.step_failure_data.error]
        event = detect.run_failed(run, failed_at, context.failure_event.message, steps)
        context.log.info(_queued(enqueue(postgres, targets, [event], get_current_datetime())))

    return webhook_run_failed_sensor


def delivery_sensor(enabled: bool) -> dg.SensorDefinition:
    @dg.sensor(name="webhook_delivery_sensor", minimum_interval_seconds=DELIVERY_INTERVAL, default_status=default_sensor_status(enabled),
               description="Sends the queued webhook deliveries that are due, signed, and records every attempt in webhook_deliveries; "
                           "failed ones are retried with exponential backoff.")
    def webhook_delivery_sensor(context: dg.SensorEvaluationContext, postgres: PostgresResource, webhooks: WebhookTargets) -> dg.SkipReason:
        targets = webhooks.targets()
        if not targets:
            return dg.SkipReason("no receiver in DANTARO_WEBHOOKS")
        outcomes = deliver_due(postgres, targets, get_current_datetime())
        for outcome in outcomes:
            if outcome.status != "delivered":
                context.log.warning(f"webhook {outcome.delivery.event} to {outcome.delivery.url} (delivery {outcome.delivery.idempotency_key}): "
                                    f"{outcome.attempt.error}; {outcome.status}")
        counts = {status: sum(o.status == status for o in outcomes) for status in ("delivered", "retrying", "failed")}
        return dg.SkipReason(json.dumps({"sent": len(outcomes), **counts}) if outcomes else "nothing due")

    return webhook_delivery_sensor


def build_sensors(scorer: str, stream_max_lag: float, enabled: bool) -> list[dg.SensorDefinition]:
    """Every webhook sensor; running unless ``enabled`` is false (WORKER_ENABLED)."""
    return [
        event_sensor("webhook_regime_change_sensor", ["regime_change"], _regime_changes, enabled,
                     "Queues regime_change webhooks: a market status snapshot whose regime differs from the one before."),
        event_sensor("webhook_new_top_pick_sensor", ["new_top_pick"], _new_top_picks(scorer), enabled,
                     f"Queues new_top_pick webhooks: a market entering the served ({scorer}) picks."),
        event_sensor("webhook_picks_expired_sensor", ["picks_expired"], _expired_picks(scorer), enabled,
                     "Queues picks_expired webhooks: a served pick whose expires_at passed (once recommendations carry expires_at)."),
        event_sensor("webhook_check_failed_sensor", ["check_failed"], _failed_checks, enabled,
                     "Queues check_failed webhooks: an asset check evaluation that failed."),
        event_sensor("webhook_freshness_failed_sensor", ["freshness_failed"], _freshness_failures, enabled,
                     "Queues freshness_failed webhooks: an asset whose freshness policy turned FAIL."),
        event_sensor("webhook_stream_sensor", ["stream_down", "stream_up"], _stream_changes(stream_max_lag), enabled,
                     "Queues stream_down / stream_up webhooks: the live candle stream's health record turning unhealthy or healthy."),
        run_failed_sensor(enabled),
        delivery_sensor(enabled),
    ]
