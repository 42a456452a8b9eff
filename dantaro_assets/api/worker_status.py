"""``GET /worker/status``: is the worker alive and what did it do, in the worker contract's fields.

worker_active comes from the Dagster daemon's heartbeats (scheduler and run queue both healthy), last_jobs
from the job log, uptime from the API process. A background thread recomputes it every ``--status-refresh``
seconds and requests read the last answer, which says its age (``cached_at``, ``cache_age``); the stream's
health is read from Redis per request.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

import dagster as dg

from dantaro_assets.api.job_log import JobLog
from dantaro_assets.lib.dagster_internals import InstigatorStatus, InstigatorType, get_daemon_statuses
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.markets.seen import RecordUnreadable, SeenStore, stream_status
from dantaro_assets.operations.limits import instance_limit_problems
from dantaro_assets.redaction import redact_text
from dantaro_assets.settings import Settings

log = logging.getLogger(__name__)

WORKER_DAEMONS = ("SCHEDULER", "QUEUED_RUN_COORDINATOR")
# daemons beat every 30 s; Dagster's own UI tolerates 30 minutes of silence, a health check should not
HEARTBEAT_TOLERANCE_S = 60
STATUS_REFRESH_S = 2.0
MAX_JOBS = 200  # the largest ?limit= the endpoint serves


def stream_health(snapshots: SnapshotStore, max_lag_seconds: float) -> dict[str, Any]:
    """``dantaro stream``'s health as it records it beside the candles (one row); raises when Postgres does not answer."""
    return stream_status(SeenStore(snapshots.postgres), max_lag_seconds)


def stream(snapshots: SnapshotStore, max_lag_seconds: float) -> dict[str, Any]:
    """``stream_health``, read per request; unknown when Postgres is down."""
    try:
        return stream_health(snapshots, max_lag_seconds)
    except RecordUnreadable as exc:
        log.warning("stream status unreadable: %s", redact_text(str(exc)))
        return {"state": "unknown", "healthy": False, "problem": "Postgres unavailable"}


def worker_status(
    instance: dg.DagsterInstance, started: float, last_jobs: int = 20, jobs: JobLog | None = None, *, settings: Settings
) -> dict[str, Any]:
    """Health of the worker (daemon heartbeats), its recent jobs (from ``jobs``, which remembers finished
    runs' details, when given), and the API's uptime in seconds; ``settings`` say whether schedules run by
    default and what the instance's run queue should allow."""
    statuses = get_daemon_statuses(instance, WORKER_DAEMONS, ignore_errors=True, heartbeat_tolerance_seconds=HEARTBEAT_TOLERANCE_S)
    daemons = {
        name: {
            "healthy": bool(status.healthy),
            "last_heartbeat": None if status.last_heartbeat is None else iso_utc_from_ts(status.last_heartbeat.timestamp),
        }
        for name, status in statuses.items()
    }
    # Schedules default to RUNNING in code (unless WORKER_ENABLED=false), which the instance stores as
    # DECLARED_IN_CODE until an operator starts or stops one in the UI.
    running_states = {InstigatorStatus.RUNNING, InstigatorStatus.AUTOMATICALLY_RUNNING}
    if settings.worker_enabled:
        running_states.add(InstigatorStatus.DECLARED_IN_CODE)
    running = sorted(
        state.instigator_name
        for state in instance.all_instigator_state(instigator_type=InstigatorType.SCHEDULE)
        if state.status in running_states
    )
    uptime = round(time.monotonic() - started, 1)
    return {
        "worker_active": all(d["healthy"] for d in daemons.values()),
        "last_jobs": (jobs or JobLog(instance)).entries(last_jobs),
        "uptime": uptime,
        "uptime_s": uptime,
        "daemons": daemons,
        "running_schedules": running,
        "config_problems": instance_limit_problems(instance, settings),
    }


class WorkerStatusCache:
    """``worker_status`` recomputed every ``refresh_s`` seconds by a background thread; requests read the last answer.

    Heartbeats, schedule states, the instance's config and the job log are a dozen storage queries: tens of
    milliseconds on a quiet instance, seconds on a loaded one. A request then costs a copy of the last answer,
    which carries when it was computed (``cached_at``) and how old it is (``cache_age``, seconds); if a refresh
    fails the last answer stays, its age growing. ``refresh_s=0`` computes every request afresh (no thread).
    """

    def __init__(
        self, instance: Callable[[], dg.DagsterInstance], started: float, refresh_s: float = STATUS_REFRESH_S, *, settings: Settings
    ) -> None:
        self._instance = instance
        self._settings = settings
        self._started = started
        self.refresh_s = refresh_s
        self._jobs: JobLog | None = None
        self._latest: tuple[dict[str, Any], float] | None = None  # the answer and when it was computed
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def _compute(self, limit: int) -> tuple[dict[str, Any], float]:
        instance = self._instance()
        if self._jobs is None or self._jobs.instance is not instance:
            self._jobs = JobLog(instance)
        return worker_status(instance, self._started, limit, self._jobs, settings=self._settings), time.time()

    def _refresh(self) -> None:
        with self._lock:
            self._latest = self._compute(MAX_JOBS)

    def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                self._refresh()
            except Exception as exc:  # noqa: BLE001 - any storage error: the thread lives on, the last answer stays (cache_age tells)
                log.warning("worker status refresh failed: %s: %s", type(exc).__name__, redact_text(str(exc)))
            self._stopping.wait(self.refresh_s)

    def start(self) -> None:
        if self.refresh_s > 0 and self._thread is None:
            self._thread = threading.Thread(target=self._run, name="worker-status-refresh", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stopping.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    def status(self, limit: int) -> dict[str, Any]:
        """The last answer cut to ``limit`` jobs, with the uptime of now (computed here when there is none yet)."""
        if self.refresh_s <= 0:
            payload, computed = worker_status(self._instance(), self._started, limit, settings=self._settings), time.time()
        else:
            if self._latest is None:
                with self._lock:
                    if self._latest is None:
                        self._latest = self._compute(MAX_JOBS)
            payload, computed = self._latest
        uptime = round(time.monotonic() - self._started, 1)
        return {
            **payload,
            "last_jobs": payload["last_jobs"][:limit],
            "uptime": uptime,
            "uptime_s": uptime,
            "cached_at": iso_utc_from_ts(computed),
            "cache_age": round(max(0.0, time.time() - computed), 3),
        }


def iso_utc_from_ts(timestamp: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))
