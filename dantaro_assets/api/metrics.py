"""``GET /metrics`` for Prometheus: the API's own figures and what the other processes leave behind.

What runs, the stream and the daemon did is read where they record it, at scrape time; a source that does not
answer says so in ``dantaro_metrics_source_up`` instead of failing the scrape (docs/api.md, "Metrics").
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta

import adbc_driver_manager
import dagster as dg
import pandas as pd
from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from dantaro_assets.alerts.outbox import TABLE as OUTBOX
from dantaro_assets.api.events import EventHub
from dantaro_assets.api.job_log import CONTRACT_STATUS
from dantaro_assets.api.worker_status import WorkerStatusCache, stream_health
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.lib.upbit.rate_limit import answer_counts
from dantaro_assets.operations.limits import JOB_TAG
from dantaro_assets.redaction import redact_text

log = logging.getLogger(__name__)

WEBHOOK_STATUSES = ("pending", "retrying", "delivered", "failed")  # alerts/outbox.py
_FINISHED = [status for status in dg.DagsterRunStatus if CONTRACT_STATUS[status] in ("completed", "failed")]
_REMEMBERED_RUNS = 10_000  # run ids already counted, against a run updated again after it finished
_OVERLAP = timedelta(seconds=2)  # runs re-read before the last update seen: one committed late is not missed


class RunOutcomes:
    """Observes each run that finished after ``since`` into ``durations`` (by job and outcome), once."""

    def __init__(self, durations: Histogram, since: datetime) -> None:
        self.durations = durations
        self._after = since
        self._counted: OrderedDict[str, None] = OrderedDict()

    def update(self, instance: dg.DagsterInstance) -> None:
        while True:
            records = instance.get_run_records(dg.RunsFilter(statuses=_FINISHED, updated_after=self._after - _OVERLAP),
                                               limit=500, order_by="update_timestamp", ascending=True)
            fresh = [r for r in records if r.dagster_run.run_id not in self._counted]
            for record in fresh:
                run = record.dagster_run
                seconds = record.end_time - record.start_time if record.start_time and record.end_time else 0.0
                self.durations.labels(run.tags.get(JOB_TAG, run.job_name), CONTRACT_STATUS[run.status]).observe(seconds)
                self._counted[run.run_id] = None
            while len(self._counted) > _REMEMBERED_RUNS:
                self._counted.popitem(last=False)
            if records:
                self._after = max(self._after, max(r.update_timestamp for r in records).astimezone(UTC))
            if len(records) < 500 or not fresh:
                return


class _Scraped(Collector):
    """The figures read at scrape time from Redis, Postgres, the instance and the event hub."""

    def __init__(self, metrics: ApiMetrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        up = GaugeMetricFamily("dantaro_metrics_source_up", "1 when the source answered this scrape", labels=["source"])
        for source, read in (("redis", self._redis), ("postgres", self._postgres), ("dagster", self._dagster)):
            try:
                yield from read()
                up.add_metric([source], 1)
            except Exception as exc:  # noqa: BLE001 - any failure of one source: its figures are missing, the scrape stands
                log.warning("/metrics: %s unreadable: %s: %s", source, type(exc).__name__, redact_text(str(exc)))
                up.add_metric([source], 0)
        yield up
        ages = GaugeMetricFamily("dantaro_snapshot_age_seconds", "seconds since the as_of of the snapshot the API serves",
                                 labels=["product"])
        for product, age in self.m.ages.items():
            if age is not None:
                ages.add_metric([product], age)
        yield ages
        hub = self.m.hub
        yield GaugeMetricFamily("dantaro_event_clients", "clients connected to /events and /ws", value=hub.clients)
        yield CounterMetricFamily("dantaro_event_clients_dropped", "event clients dropped for falling behind", value=hub.dropped)
        yield CounterMetricFamily("dantaro_events_received", "snapshot events this API heard on Redis", value=hub.received)

    def _redis(self) -> Iterator[Metric]:
        snapshots = self.m.snapshots
        requests = CounterMetricFamily("dantaro_upbit_requests", "Upbit answers by endpoint and HTTP status (error: none came), "
                                       "every process", labels=["endpoint", "status"])
        for (endpoint, status), count in sorted(answer_counts(snapshots.redis.client(), snapshots.redis.prefix).items()):
            requests.add_metric([endpoint, status], count)
        yield requests

    def _postgres(self) -> Iterator[Metric]:
        yield from self._stream()
        postgres = self.m.snapshots.postgres
        sql = (f"SELECT event, status, count(*) AS deliveries, coalesce(sum(attempts), 0) AS attempts "
               f"FROM {postgres.table_name(OUTBOX)} GROUP BY event, status ORDER BY event, status")
        try:
            rows = postgres.read_frame(sql)
        except adbc_driver_manager.ProgrammingError as exc:
            if getattr(exc, "sqlstate", None) != "42P01":  # undefined_table: no webhook queued yet
                raise
            rows = pd.DataFrame(columns=["event", "status", "deliveries", "attempts"])
        totals = rows.groupby("status")["deliveries"].sum()
        deliveries = CounterMetricFamily("dantaro_webhook_deliveries", "webhook deliveries by status", labels=["status"])
        for status in WEBHOOK_STATUSES:
            deliveries.add_metric([status], int(totals.get(status, 0)))
        by_event = CounterMetricFamily("dantaro_webhook_event_deliveries", "webhook deliveries by event and status",
                                       labels=["event", "status"])
        attempts = CounterMetricFamily("dantaro_webhook_attempts", "webhook delivery attempts by event and status",
                                       labels=["event", "status"])
        for row in rows.itertuples():
            by_event.add_metric([row.event, row.status], int(row.deliveries))
            attempts.add_metric([row.event, row.status], int(row.attempts))
        yield from (deliveries, by_event, attempts)

    def _stream(self) -> Iterator[Metric]:
        """The stream's health record (kept beside the candles in Postgres)."""
        health = stream_health(self.m.snapshots, self.m.stream_max_lag_s)
        yield GaugeMetricFamily("dantaro_stream_healthy", "1 while dantaro stream is healthy", value=int(health["healthy"]))
        figures = {"lag_seconds": ("lag_s", "seconds the stream's stored candles trail Upbit's clock"),
                   "messages_per_second": ("messages_per_s", "messages a second in the stream's last report")}
        for name, (key, text) in figures.items():
            if health.get(key) is not None:
                yield GaugeMetricFamily(f"dantaro_stream_{name}", text, value=health[key])
        totals = {"reconnects": ("reconnects", "reconnects since the stream started"),
                  "missed_minutes": ("missed_minutes", "market-minutes the stream did not see (disconnected, not subscribed, quarantined) since it started"),
                  "no_trade_minutes": ("no_trade_minutes", "market-minutes without a trade inside what the stream saw, since it started"),
                  "written_minutes": ("minutes_written", "market-minutes the stream wrote since it started")}
        for name, (key, text) in totals.items():
            if health.get(key) is not None:
                yield CounterMetricFamily(f"dantaro_stream_{name}", text, value=health[key])

    def _dagster(self) -> Iterator[Metric]:
        status = self.m.worker.status(1)
        yield GaugeMetricFamily("dantaro_worker_active", "1 while the daemon's scheduler and run queue beat",
                                value=int(status["worker_active"]))
        daemons = GaugeMetricFamily("dantaro_daemon_healthy", "1 while the daemon beats", labels=["daemon"])
        for name, daemon in sorted(status["daemons"].items()):
            daemons.add_metric([name], int(daemon["healthy"]))
        yield daemons


class ApiMetrics:
    """The registry ``/metrics`` renders, and the API's own instruments in it."""

    def __init__(self, instance: Callable[[], dg.DagsterInstance], snapshots: SnapshotStore, hub: EventHub,
                 worker: WorkerStatusCache, stream_max_lag_s: float) -> None:
        self.instance, self.snapshots, self.hub, self.worker, self.stream_max_lag_s = instance, snapshots, hub, worker, stream_max_lag_s
        self.registry = CollectorRegistry()
        self.latency = Histogram("dantaro_api_request_duration_seconds", "time to answer a request, by route and status",
                                 ["route", "status"], registry=self.registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
        self.ages: dict[str, float | None] = {}  # by product, set by each scrape
        self.runs = RunOutcomes(Histogram("dantaro_run_duration_seconds", "finished runs by job and outcome (completed, failed), "
                                          "seen since the API started", ["job", "outcome"], registry=self.registry,
                                          buckets=(1, 2, 5, 10, 20, 30, 60, 120, 300, 600, 1800, 3600)), datetime.now(UTC))
        self.registry.register(_Scraped(self))

    def render(self, ages: dict[str, float | None]) -> bytes:
        """The exposition text, after counting the runs that finished since the last scrape (blocking reads)."""
        self.ages = ages
        try:
            self.runs.update(self.instance())
        except Exception as exc:  # noqa: BLE001 - counted at the next scrape; dantaro_metrics_source_up{source="dagster"} tells
            log.warning("/metrics: runs unreadable: %s: %s", type(exc).__name__, redact_text(str(exc)))
        return generate_latest(self.registry)


def age_seconds(as_of: str | None) -> float | None:
    return None if as_of is None else round(time.time() - pd.Timestamp(as_of).timestamp(), 3)


class RequestTimer:
    """ASGI middleware observing each HTTP request's time into ``latency`` by route template and status
    (the event stream, open for as long as its client stays, is not a request to time)."""

    def __init__(self, app: ASGIApp, latency: Histogram, untimed: tuple[str, ...]) -> None:
        self.app, self.latency, self.untimed = app, latency, untimed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = scope.get("route")
            path = getattr(route, "path", "unrouted")
            if path not in self.untimed:
                self.latency.labels(path, str(status)).observe(time.perf_counter() - started)
