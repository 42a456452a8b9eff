"""The worker's HTTP API: health from Dagster, latest snapshots from Redis with Postgres behind it.

``GET /worker/status`` answers "is the worker alive and what did it do" in the worker contract's fields: worker_active
comes from the Dagster daemon's heartbeats (scheduler and run queue both healthy), last_jobs from the job
log, uptime from the API process. A background thread recomputes it every ``--status-refresh`` seconds and
requests read the last answer, which says its age (``cached_at``, ``cache_age``).
The snapshot endpoints serve the newer of the Redis key that each analysis's publish step writes and the
newest ``as_of`` in Postgres, the record (``SnapshotStore.latest``): one query on the key index returns
rows only when Postgres holds a newer snapshot than Redis (or Redis has none, or is down), so an answer
never depends on the cache and never goes back in time. Rows are answered rounded for people (prices to
the tick, percentages to 2 decimals: operations.for_people); storage keeps full precision.
``dantaro api --port N`` serves it with uvicorn.
"""

from __future__ import annotations

import argparse
import logging
import re
import threading
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

import adbc_driver_manager
import dagster as dg
import redis
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from dantaro_assets.api.for_people import for_people
from dantaro_assets.api.job_log import JobLog
from dantaro_assets.lib.dagster_internals import InstigatorStatus, InstigatorType, get_daemon_statuses
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.markets.seen import RecordUnreadable, SeenStore, stream_status
from dantaro_assets.operations.limits import instance_limit_problems
from dantaro_assets.recommendations.scorecard import recent_outcomes, scorecard_report
from dantaro_assets.redaction import redact_text
from dantaro_assets.resources import snapshot_store
from dantaro_assets.settings import Settings

log = logging.getLogger(__name__)

WORKER_DAEMONS = ("SCHEDULER", "QUEUED_RUN_COORDINATOR")
# daemons beat every 30 s; Dagster's own UI tolerates 30 minutes of silence, a health check should not
HEARTBEAT_TOLERANCE_S = 60
# ASCII only and matched whole: `$` would accept a trailing newline, and str.upper maps some non-ASCII
# letters to ASCII ones ("ſ" -> "S"), so the raw value is checked before it is upper-cased.
_MARKET = re.compile(r"[A-Za-z]{2,5}-[A-Za-z0-9]{1,15}")
STATUS_REFRESH_S = 2.0
MAX_JOBS = 200  # the largest ?limit= the endpoint serves


def parse_market(raw: str) -> str | None:
    """An Upbit market code from a request (``krw-btc`` is read as ``KRW-BTC``), or None if ``raw`` is not one."""
    return raw.upper() if _MARKET.fullmatch(raw) else None


def stream(snapshots: SnapshotStore, max_lag_seconds: float) -> dict[str, Any]:
    """``dantaro stream``'s health as it records it beside the candles, read per request (one row); unknown when Postgres is down."""
    try:
        return stream_status(SeenStore(snapshots.postgres), max_lag_seconds)
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


OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "info": {"title": "Dantaro API", "version": "1.0.0", "description": "Worker health and the latest Dantaro snapshots."},
    "paths": {
        "/worker/status": {
            "get": {
                "summary": "Worker health in the contract's fields (worker_active, last_jobs, uptime), refreshed in the background; cache_age says how old",
                "parameters": [{"name": "limit", "in": "query", "schema": {"type": "integer", "minimum": 1, "maximum": 200, "default": 20}}],
                "responses": {"200": {"description": "status", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/WorkerStatus"}}}}},
            }
        },
        "/market-status/latest": {
            "get": {
                "summary": "The newest market status snapshot",
                "responses": {
                    "200": {"description": "snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Snapshot"}}}},
                    "404": {"description": "no snapshot yet"},
                    "503": {"description": "snapshot storage unavailable"},
                },
            }
        },
        "/recommendations/latest": {
            "get": {
                "summary": "The newest ranked recommendations",
                "responses": {
                    "200": {"description": "snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Snapshot"}}}},
                    "404": {"description": "no snapshot yet"},
                    "503": {"description": "snapshot storage unavailable"},
                },
            }
        },
        "/recommendations/scorecard": {
            "get": {
                "summary": "How every scorer's picks did (served and shadow) over the last 7 and 30 days, per horizon",
                "responses": {
                    "200": {"description": "scorecard", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Scorecard"}}}},
                    "503": {"description": "storage unavailable"},
                },
            }
        },
        "/support-levels/{market}": {
            "get": {
                "summary": "The newest support/resistance levels of one market",
                "parameters": [{"name": "market", "in": "path", "required": True, "schema": {"type": "string", "example": "KRW-BTC"}}],
                "responses": {
                    "200": {"description": "snapshot", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Snapshot"}}}},
                    "400": {"description": "not a market code"},
                    "404": {"description": "no levels for this market"},
                    "503": {"description": "snapshot storage unavailable"},
                },
            }
        },
    },
    "components": {
        "schemas": {
            "Snapshot": {
                "type": "object",
                "required": ["asset", "as_of", "rows", "source"],
                "properties": {
                    "asset": {"type": "string"},
                    "as_of": {"type": "string", "format": "date-time"},
                    "run_id": {"type": ["string", "null"]},
                    "partition": {"type": ["string", "null"]},
                    "rows": {"type": "array", "items": {"type": "object"},
                             "description": "prices rounded to the tick, percentages to 2 decimals (storage keeps full precision)"},
                    "source": {"type": "string", "enum": ["redis", "postgres"]},
                    "ranking": {"type": "string", "description": "support levels only: how rank orders the levels"},
                },
            },
            "Scorecard": {
                "type": "object",
                "required": ["until", "served", "rows"],
                "properties": {
                    "until": {"type": ["string", "null"], "format": "date-time", "description": "the newest graded tick: the windows end here"},
                    "served": {"type": "string", "description": "the scorer whose picks /recommendations/latest serves"},
                    "scorers": {"type": "object", "additionalProperties": {"type": "string"}},
                    "windows": {"type": "array", "items": {"type": "string"}},
                    "horizons": {"type": "array", "items": {"type": "string"}},
                    "rows": {"type": "array", "items": {"type": "object", "properties": {
                        "window": {"type": "string"}, "scorer": {"type": "string"}, "horizon": {"type": "string"},
                        "picks": {"type": "integer"}, "ticks": {"type": "integer"},
                        "hit_rate": {"type": ["number", "null"]}, "mean_excess": {"type": ["number", "null"]},
                        "excess_ci_low": {"type": ["number", "null"]}, "excess_ci_high": {"type": ["number", "null"]},
                        "rank_ic": {"type": ["number", "null"]}, "target_before_stop": {"type": ["number", "null"]},
                    }}},
                },
            },
            "Job": {
                "type": "object",
                "required": ["job_id", "job_type", "status", "duration", "symbols_processed", "error", "timestamp"],
                "properties": {
                    "job_id": {"type": "string", "description": "the Dagster run id"},
                    "job_type": {"type": "string"},
                    "status": {"type": "string", "enum": ["completed", "failed", "running", "queued"]},
                    "duration": {"type": ["number", "null"], "description": "seconds from start to end (or to now while running)"},
                    "symbols_processed": {"type": ["integer", "null"]},
                    "error": {"type": ["string", "null"]},
                    "timestamp": {"type": "string", "format": "date-time", "description": "when the run was created"},
                    "dagster_status": {"type": "string", "description": "Dagster's run status, e.g. SUCCESS, CANCELED"},
                    "job_name": {"type": "string"},
                    "partition": {"type": ["string", "null"]},
                    "duration_s": {"type": ["number", "null"], "description": "same as duration"},
                    "markets_processed": {"type": ["integer", "null"], "description": "same as symbols_processed"},
                    "started_at": {"type": ["string", "null"], "format": "date-time"},
                    "ended_at": {"type": ["string", "null"], "format": "date-time"},
                },
            },
            "WorkerStatus": {
                "type": "object",
                "required": ["worker_active", "last_jobs", "uptime"],
                "properties": {
                    "worker_active": {"type": "boolean"},
                    "last_jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                    "uptime": {"type": "number", "description": "seconds since the API started"},
                    "uptime_s": {"type": "number", "description": "same as uptime"},
                    "daemons": {"type": "object"},
                    "running_schedules": {"type": "array", "items": {"type": "string"}},
                    "config_problems": {"type": "array", "items": {"type": "string"}},
                    "cached_at": {"type": "string", "format": "date-time", "description": "when this answer was computed"},
                    "cache_age": {"type": "number", "description": "seconds since cached_at"},
                    "stream": {"type": "object", "description": "dantaro stream: state, healthy, problem, lag_s, messages_per_s, reconnects, "
                               "markets, minutes_written, no_trade_minutes, missed_minutes, quarantined, heartbeat, covered_through "
                               "(read per request from its record in Postgres)"},
                },
            },
        }
    },
}


def create_app(
    instance: Callable[[], dg.DagsterInstance], snapshots: SnapshotStore, status_refresh_s: float = STATUS_REFRESH_S, *, settings: Settings
) -> Starlette:
    """The API over an instance and the snapshots, under ``settings`` (``dantaro api`` passes the ones it read);
    the handlers are plain functions, which Starlette runs in its thread pool, since Dagster's storage, Redis
    and Postgres clients all block."""
    worker = WorkerStatusCache(instance, time.monotonic(), status_refresh_s, settings=settings)

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        worker.start()
        try:
            yield
        finally:
            worker.stop()

    def snapshot_response(asset: str, market: str | None = None) -> JSONResponse:
        payload = snapshots.latest(asset, market)
        if payload is None:
            return JSONResponse({"detail": f"no {asset} snapshot{' for ' + market if market else ''} yet"}, status_code=404)
        return JSONResponse(for_people(asset, payload))

    def status(request: Request) -> JSONResponse:
        try:
            limit = int(request.query_params.get("limit", 20))
        except ValueError:
            limit = 0
        if not 1 <= limit <= MAX_JOBS:
            return JSONResponse({"detail": f"limit must be an integer from 1 to {MAX_JOBS}"}, status_code=400)
        return JSONResponse({**worker.status(limit), "stream": stream(snapshots, settings.stream_max_lag_seconds)})

    def market_status(_: Request) -> JSONResponse:
        return snapshot_response("market_status")

    def recommendations(_: Request) -> JSONResponse:
        return snapshot_response("recommendations")

    def scorecard(_: Request) -> JSONResponse:
        return JSONResponse(scorecard_report(recent_outcomes(snapshots.postgres), settings.scorer))

    def support_levels(request: Request) -> JSONResponse:
        market = parse_market(request.path_params["market"])
        if market is None:
            return JSONResponse({"detail": f"{request.path_params['market']!r} is not a market code like KRW-BTC"}, status_code=400)
        return snapshot_response("support_levels", market)

    async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """Postgres (or, behind it, Redis) failed: the log says why; the answer names no host, port or driver."""
        log.error("%s %s: snapshot storage unavailable: %s: %s", request.method, request.url.path, type(exc).__name__,
                  redact_text(str(exc)))
        return JSONResponse({"detail": "snapshot storage is unavailable; try again later"}, status_code=503)

    async def openapi(_: Request) -> JSONResponse:
        return JSONResponse(OPENAPI)

    return Starlette(
        routes=[
            Route("/worker/status", status),
            Route("/market-status/latest", market_status),
            Route("/recommendations/latest", recommendations),
            Route("/recommendations/scorecard", scorecard),
            Route("/support-levels/{market}", support_levels),
            Route("/openapi.json", openapi),
        ],
        exception_handlers={error: storage_unavailable for error in (adbc_driver_manager.Error, redis.RedisError, OSError)},
        lifespan=lifespan,
    )


def main(argv: list[str], settings: Settings) -> int:
    """``dantaro api [--host H] [--port N]``: serve the API against $DAGSTER_HOME's instance (``cli.py`` reads ``settings``)."""
    parser = argparse.ArgumentParser(prog="dantaro api", description="Serve /worker/status and the latest Dantaro snapshots.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--status-refresh", type=float, default=STATUS_REFRESH_S, metavar="SECONDS",
        help=f"how often /worker/status is recomputed in the background (default {STATUS_REFRESH_S:g}; 0: on every request)",
    )
    args = parser.parse_args(argv)
    instance = dg.DagsterInstance.get()
    snapshots = snapshot_store(settings)
    app = create_app(lambda: instance, snapshots, args.status_refresh, settings=settings)
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.worker_log_level.lower())
    return 0
