"""The worker's HTTP API (FastAPI on uvicorn): health, the latest snapshots, their events, and metrics.

An answer is the newer of Redis and Postgres, rounded for people, encoded once and dropped when its event
arrives; every shape is a model in ``models.py``, which ``/openapi.json`` is generated from. Endpoints, token
and the live page: docs/api.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hmac
import ipaddress
import json
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated, Any
from urllib.parse import unquote

import adbc_driver_manager
import dagster as dg
import redis
import uvicorn
from fastapi import FastAPI, Header, Path, Query, Request, WebSocket
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import FileResponse, JSONResponse, Response
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4  # the classic text format every Prometheus reads
from pydantic import SecretStr
from starlette.concurrency import run_in_threadpool
from starlette.middleware.cors import CORSMiddleware
from starlette.requests import cookie_parser
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

from dantaro_assets.api.answers import Answer, SnapshotAnswers, encode
from dantaro_assets.api.events import (
    DEFAULT_TOPICS,
    HEARTBEAT_S,
    QUEUE_SIZE,
    TOPICS_HELP,
    EventHub,
    EventStream,
    Topic,
    parse_topics,
    serve_websocket,
)
from dantaro_assets.api.metrics import ApiMetrics, RequestTimer, age_seconds
from dantaro_assets.api.models import (
    MARKET_PATTERN,
    CandleInterval,
    Candles,
    Health,
    MarketStatusSnapshot,
    Problem,
    RecommendationsSnapshot,
    Scorecard,
    SupportLevelsSnapshot,
    WorkerStatus,
)
from dantaro_assets.api.worker_status import MAX_JOBS, STATUS_REFRESH_S, WorkerStatusCache, stream
from dantaro_assets.lib.recent_candles import recent_candles
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.recommendations.scorecard import recent_outcomes, scorecard_report
from dantaro_assets.redaction import redact_text
from dantaro_assets.resources import snapshot_store
from dantaro_assets.settings import Settings

log = logging.getLogger(__name__)

SNAPSHOT_CACHE_S = 1.0
HEALTH = "/health"  # the one endpoint open without the token: a probe of the process, touching no storage
PAGE, STATIC_PREFIX = "/", "/static"  # the live page and its files: open too, they hold no data
STATIC = FilePath(__file__).with_name("static")
TOKEN_COOKIE = "dantaro_token"  # the page's way to send the token: EventSource cannot set a header
MAX_CANDLES = 1000
CANDLE_INTERVALS = {"1m": "minute1", "5m": "minute5", "15m": "minute15", "1h": "minute60", "1d": "day"}  # -> lib/recent_candles
UNAVAILABLE = "snapshot storage is unavailable; try again later"
STORAGE_ERRORS = (adbc_driver_manager.Error, redis.RedisError, OSError)
# What a refused parameter must be (by name, or by route and name); the input itself is never repeated.
_EXPECTED: dict[str | tuple[str, str], str] = {
    "market": "must be a market code like KRW-BTC (ASCII letters and digits)",
    "interval": f"must be one of {', '.join(CANDLE_INTERVALS)}",
    "Last-Event-ID": "must be an event id (an as_of such as 2026-03-10T11:00:00Z)",
    ("/worker/status", "limit"): f"must be an integer from 1 to {MAX_JOBS}",
    ("/candles/{market}", "limit"): f"must be an integer from 1 to {MAX_CANDLES}",
}
_EVENT_ID = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$"

def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": detail}, status_code=status, headers=headers)


class BearerToken:
    """ASGI middleware: every request but ``open_paths`` (and paths under ``open_prefixes``) must carry
    ``Authorization: Bearer <token>`` or the page's ``dantaro_token`` cookie (same-site, set by the page from
    what its user typed), compared in constant time; the token is never logged nor echoed."""

    def __init__(self, app: ASGIApp, token: SecretStr, open_paths: tuple[str, ...], open_prefixes: tuple[str, ...] = ()) -> None:
        self.app, self.open_paths, self.open_prefixes = app, open_paths, open_prefixes
        self._expected = b"Bearer " + token.get_secret_value().encode()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket") or self._open(scope["path"]) or self._authorized(scope):
            await self.app(scope, receive, send)
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008})  # before the handshake: uvicorn answers 403
        else:
            await _problem(401, "this API requires a bearer token: Authorization: Bearer <DANTARO_API_TOKEN>",
                           {"www-authenticate": "Bearer"})(scope, receive, send)

    def _open(self, path: str) -> bool:
        return path in self.open_paths or path.startswith(self.open_prefixes)

    def _authorized(self, scope: Scope) -> bool:
        given = next((value for name, value in scope["headers"] if name == b"authorization"), b"")
        if hmac.compare_digest(given, self._expected):
            return True
        cookies = next((value for name, value in scope["headers"] if name == b"cookie"), None)
        token = cookie_parser(cookies.decode("latin-1")).get(TOKEN_COOKIE) if cookies else None
        return token is not None and hmac.compare_digest(b"Bearer " + unquote(token).encode(), self._expected)


def create_app(
    instance: Callable[[], dg.DagsterInstance],
    snapshots: SnapshotStore,
    status_refresh_s: float = STATUS_REFRESH_S,
    *,
    settings: Settings,
    snapshot_cache_s: float = SNAPSHOT_CACHE_S,
    heartbeat_s: float = HEARTBEAT_S,
    queue_size: int = QUEUE_SIZE,
) -> FastAPI:
    """The API over an instance and the snapshots, under ``settings`` (``dantaro api`` passes the ones it read).

    Answers are kept ``snapshot_cache_s`` seconds (0: read for every request); an event client is dropped
    ``queue_size`` events behind and sent a heartbeat after ``heartbeat_s`` seconds of silence. Handlers
    that block on Dagster's storage run in Starlette's thread pool; the snapshot handlers read the cache.
    """
    worker = WorkerStatusCache(instance, time.monotonic(), status_refresh_s, settings=settings)
    answers = SnapshotAnswers(snapshots, snapshot_cache_s)
    hub = EventHub(answers, queue_size)
    metrics = ApiMetrics(instance, snapshots, hub, worker, settings.stream_max_lag_seconds)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        worker.start()
        events = asyncio.create_task(hub.run(), name="snapshot-events")
        try:
            yield
        finally:
            events.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await events
            worker.stop()

    app = FastAPI(
        title="Dantaro API", version="2.0.0", lifespan=lifespan, redoc_url=None,
        # /metrics is the API's telemetry; FastAPI's OpenTelemetry hooks would cost every request a provider lookup
        telemetry={"tracing": False, "metrics": False, "logs": False},
        description="Worker health, the latest Dantaro snapshots (market status, recommendations, support levels), "
        "their events as they are stored (`/events`, `/ws`) and Prometheus metrics (`/metrics`).",
    )

    def problem(description: str) -> dict[str, Any]:
        return {"description": description, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}

    snapshot_errors: dict[int | str, dict[str, Any]] = {404: problem("no snapshot yet"), 503: problem(UNAVAILABLE)}
    bad_request: dict[int | str, dict[str, Any]] = {400: problem("a parameter is not what it must be")}

    async def snapshot(asset: str, market: str | None = None) -> Response:
        answer = await answers.snapshot(asset, market)
        if answer.body is None:
            return _problem(404, f"no {asset} snapshot{' for ' + market if market else ''} yet")
        return Response(answer.body, media_type="application/json")

    # the busiest routes first: a request is matched against the routes in order
    @app.get("/market-status/latest", response_model=MarketStatusSnapshot, responses=snapshot_errors,
             summary="The newest market status snapshot")
    async def market_status() -> Response:
        return await snapshot("market_status")

    @app.get("/recommendations/latest", response_model=RecommendationsSnapshot, responses=snapshot_errors,
             summary="The newest ranked recommendations of the served scorer")
    async def recommendations() -> Response:
        return await snapshot("recommendations")

    @app.get("/recommendations/scorecard", response_model=Scorecard, responses={503: snapshot_errors[503]},
             summary="How every scorer's picks did (served and shadow) over the last 7 and 30 days, per horizon")
    async def scorecard() -> Response:
        answer = await answers.get("scorecard", lambda: Answer(encode(scorecard_report(recent_outcomes(snapshots.postgres), settings.scorer))))
        return Response(answer.body, media_type="application/json")

    @app.get("/support-levels/{market}", response_model=SupportLevelsSnapshot, responses={**snapshot_errors, **bad_request},
             summary="The newest support/resistance levels of one market")
    async def support_levels(market: Annotated[str, Path(pattern=MARKET_PATTERN, examples=["KRW-BTC"])]) -> Response:
        return await snapshot("support_levels", market.upper())

    @app.get("/candles/{market}", response_model=Candles, responses={
                 404: problem("no stored candles of the market at that interval"), **bad_request, 503: snapshot_errors[503]},
             summary="The newest stored candles of one market (5m and 15m built from the 1m candles), oldest first")
    async def candles(
        market: Annotated[str, Path(pattern=MARKET_PATTERN, examples=["KRW-BTC"])],
        interval: Annotated[CandleInterval, Query(description="candle width")] = "1h",
        limit: Annotated[int, Query(ge=1, le=MAX_CANDLES, description="how many of the newest candles")] = 200,
    ) -> Response:
        code = market.upper()
        frame = await run_in_threadpool(recent_candles, snapshots.postgres, code, CANDLE_INTERVALS[interval], limit)
        if frame is None or frame.empty:
            return _problem(404, f"no stored {interval} candles of {code}")
        rows = frame.rename(columns={"candle_start": "start"}).to_json(orient="records", date_format="iso", date_unit="s")
        return Response(encode({"market": code, "interval": interval, "candles": json.loads(rows)}), media_type="application/json")

    @app.get(PAGE, include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get(HEALTH, response_model=Health, summary="The API process answers (no storage is touched; open without the token)")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/worker/status", response_model=WorkerStatus, response_model_exclude_unset=True, responses=bad_request,
             summary="Worker health in the contract's fields (worker_active, last_jobs, uptime), refreshed in the background")
    def worker_status(limit: Annotated[int, Query(ge=1, le=MAX_JOBS, description="jobs in last_jobs")] = 20) -> dict[str, Any]:
        return {**worker.status(limit), "stream": stream(snapshots, settings.stream_max_lag_seconds)}

    @app.get("/events", response_class=EventStream, status_code=200, responses={200: {"content": {"text/event-stream": {}}, "description": (
                 "Server-Sent Events: `id` (the snapshot's as_of), `event` (the topic), `data` (the snapshot, as the "
                 "endpoints above answer it); a `: heartbeat` comment after 15 s of silence")}, **bad_request, 503: snapshot_errors[503]},
             summary="Every stored snapshot of the topics as it is stored; with Last-Event-ID, what was missed first")
    async def events(
        topics: Annotated[str, Query(description=TOPICS_HELP, max_length=2000)] = DEFAULT_TOPICS,
        last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", pattern=_EVENT_ID)] = None,
    ) -> EventStream:
        chosen = _topics(topics)
        subscriber = hub.subscribe(chosen)
        try:
            first = await hub.first_events(chosen, last_event_id)
        except BaseException:
            hub.unsubscribe(subscriber)
            raise
        return EventStream(hub, subscriber, first, heartbeat_s)

    @app.websocket("/ws")
    async def websocket(
        socket: WebSocket,
        topics: Annotated[str, Query(max_length=2000)] = DEFAULT_TOPICS,
        last_event_id: Annotated[str | None, Query(pattern=_EVENT_ID)] = None,
    ) -> None:
        try:
            chosen = parse_topics(topics)
        except ValueError:
            await socket.close(code=1008, reason="unknown topic")
            return
        await serve_websocket(socket, hub, chosen, last_event_id)

    @app.get("/metrics", response_class=Response, responses={200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {}},
             "description": "Prometheus text exposition"}}, summary="Prometheus metrics of the API and the pipeline")
    async def prometheus() -> Response:
        ages: dict[str, float | None] = {}
        for product in ("market_status", "recommendations", "support_levels"):
            try:
                ages[product] = age_seconds((await answers.snapshot(product)).as_of)
            except STORAGE_ERRORS:
                ages[product] = None
        return Response(await run_in_threadpool(metrics.render, ages), media_type=CONTENT_TYPE_PLAIN_0_0_4)

    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """A refused parameter: which one and what it must be, never the value sent."""
        problems = []
        route = getattr(request.scope.get("route"), "path", "")
        for error in exc.errors():
            name = str(error["loc"][-1]) if error["loc"] else "request"
            expected = _EXPECTED.get((route, name)) or _EXPECTED.get(name)
            problems.append(f"{name} {expected}" if expected else f"{name}: {error['msg']}")
        return _problem(400, "; ".join(problems))

    async def storage_unavailable(request: Request, exc: Exception) -> JSONResponse:
        """Postgres (or, behind it, Redis) failed: the log says why; the answer names no host, port or driver."""
        log.error("%s %s: snapshot storage unavailable: %s: %s", request.method, request.url.path, type(exc).__name__,
                  redact_text(str(exc)))
        return _problem(503, UNAVAILABLE)

    app.add_exception_handler(RequestValidationError, invalid)
    for error in STORAGE_ERRORS:
        app.add_exception_handler(error, storage_unavailable)

    def openapi() -> dict[str, Any]:
        """The generated document, refused parameters answered 400 (``invalid``) rather than FastAPI's 422, plus the
        bearer scheme when a token is required."""
        if app.openapi_schema is None:
            schema = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            for operation in (op for path in schema["paths"].values() for op in path.values()):
                operation["responses"].pop("422", None)
            for unused in ("HTTPValidationError", "ValidationError"):
                schema["components"]["schemas"].pop(unused, None)
            schema["components"]["schemas"]["Problem"] = Problem.model_json_schema()
            if settings.api_token is not None:
                schema.setdefault("components", {})["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
                schema["security"] = [{"bearer": []}]
                schema["paths"][HEALTH]["get"]["security"] = []
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    app.mount(STATIC_PREFIX, StaticFiles(directory=STATIC), name="static")
    # outermost last: CORS answers preflights (which carry no token), the timer sees refusals too
    if settings.api_token is not None:
        app.add_middleware(BearerToken, token=settings.api_token, open_paths=(HEALTH, PAGE), open_prefixes=(STATIC_PREFIX + "/",))
    app.add_middleware(RequestTimer, latency=metrics.latency, untimed=("/events",))
    if settings.api_cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(settings.api_cors_origins), allow_methods=["GET"],
                           allow_headers=["Authorization", "Last-Event-ID"])
    app.state.hub, app.state.answers = hub, answers  # for tests and benchmarks that wait on the subscription
    return app


def _topics(raw: str) -> tuple[Topic, ...]:
    try:
        return parse_topics(raw)
    except ValueError as exc:
        raise RequestValidationError([{"loc": ("query", "topics"), "msg": str(exc), "type": "value_error"}]) from None


def main(argv: list[str], settings: Settings) -> int:
    """``dantaro api [--host H] [--port N]``: serve the API against $DAGSTER_HOME's instance (``cli.py`` reads ``settings``)."""
    parser = argparse.ArgumentParser(prog="dantaro api", description="Serve /worker/status, the latest Dantaro snapshots, their events and metrics.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--status-refresh", type=float, default=STATUS_REFRESH_S, metavar="SECONDS",
        help=f"how often /worker/status is recomputed in the background (default {STATUS_REFRESH_S:g}; 0: on every request)",
    )
    parser.add_argument(
        "--snapshot-cache", type=float, default=SNAPSHOT_CACHE_S, metavar="SECONDS",
        help=f"how long an answer is kept unless its snapshot's event drops it first (default {SNAPSHOT_CACHE_S:g}; 0: read every request)",
    )
    parser.add_argument("--access-log", action="store_true",
                        help="log a line per request (off: at a thousand requests a second it is noise; /metrics times every request)")
    args = parser.parse_args(argv)
    if settings.api_token is None and not _loopback(args.host):
        log.warning("dantaro api: serving on %s without DANTARO_API_TOKEN: anyone who reaches it reads every endpoint", args.host)
    instance = dg.DagsterInstance.get()
    snapshots = snapshot_store(settings)
    app = create_app(lambda: instance, snapshots, args.status_refresh, settings=settings, snapshot_cache_s=args.snapshot_cache)
    # event streams never end by themselves: on shutdown they get 3 s, then their clients reconnect elsewhere
    uvicorn.run(app, host=args.host, port=args.port, log_level=settings.worker_log_level.lower(), access_log=args.access_log,
                timeout_graceful_shutdown=3)
    return 0


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
