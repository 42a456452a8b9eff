"""The API's bearer token (``DANTARO_API_TOKEN``) and CORS origins (``DANTARO_API_CORS_ORIGINS``) over real HTTP."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest
from pydantic import SecretStr
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets.settings import Settings
from dantaro_assets_tests.fixtures.servers import serve_http

TOKEN = "t0ken-" + uuid.uuid4().hex
ORIGIN = "https://dashboard.example"
PROTECTED = ["/worker/status", "/market-status/latest", "/recommendations/latest", "/recommendations/scorecard",
             "/support-levels/KRW-BTC", "/candles/KRW-BTC", "/events", "/metrics", "/openapi.json", "/docs", "/no-such-page", "/static"]


@pytest.fixture
def guarded(instance: dg.DagsterInstance, settings: Settings, pg_url: str) -> Iterator[httpx.Client]:
    """The API with a token and one allowed origin (settings as ``dantaro api`` reads them)."""
    guarded_settings = settings.model_copy(update={"api_token": SecretStr(TOKEN), "api_cors_origins": (ORIGIN,)})
    own = f"sec_{uuid.uuid4().hex[:6]}"
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"),
                                 PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}"))
    with serve_http(create_app(lambda: instance, store, 0, settings=guarded_settings)) as client:
        yield client


def test_with_a_token_every_endpoint_but_health_requires_it(guarded, caplog):
    caplog.set_level(logging.DEBUG)
    assert guarded.get("/health").json() == {"status": "ok"}
    for path in PROTECTED:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Bearer {TOKEN}x"}, {"Authorization": TOKEN}):
            response = guarded.get(path, headers=headers)
            assert response.status_code == 401, (path, headers)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json() == {"detail": "this API requires a bearer token: Authorization: Bearer <DANTARO_API_TOKEN>"}
    authorized = {"Authorization": f"Bearer {TOKEN}"}
    assert guarded.get("/worker/status", headers=authorized).status_code == 200
    assert guarded.get("/market-status/latest", headers=authorized).status_code == 404  # through the door: nothing stored
    spec = guarded.get("/openapi.json", headers=authorized).json()
    assert spec["security"] == [{"bearer": []}] and spec["paths"]["/health"]["get"]["security"] == []
    assert spec["components"]["securitySchemes"] == {"bearer": {"type": "http", "scheme": "bearer"}}
    assert TOKEN not in caplog.text and TOKEN[6:] not in caplog.text


def test_the_page_and_its_files_are_open_and_the_page_s_cookie_carries_the_token(guarded):
    """The page holds no data (its data comes from the endpoints above), so it loads without the token and asks for it;
    the token then travels in the page's same-site cookie, since EventSource cannot send an Authorization header."""
    page = guarded.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html") and 'id="token-form"' in page.text
    for static in ("/static/page.js", "/static/page.css", "/static/vendor/lightweight-charts.standalone.production.js", "/static/vendor/LICENSE"):
        assert guarded.get(static).status_code == 200, static
    assert guarded.get("/static/%2e%2e/app.py").status_code == 404  # StaticFiles serves nothing outside static/
    for cookie in ("wrong", f"{TOKEN}x", f"Bearer%20{TOKEN}", ""):
        assert guarded.get("/market-status/latest", headers={"Cookie": f"dantaro_token={cookie}"}).status_code == 401, cookie
    assert guarded.get("/market-status/latest", headers={"Cookie": f"theme=dark; dantaro_token={TOKEN}"}).status_code == 404  # through the door
    with guarded.stream("GET", "/events", params={"topics": "market_status"}, headers={"Cookie": f"dantaro_token={TOKEN}"}) as events:
        assert events.status_code == 200


def test_the_websocket_requires_the_token_too(guarded):
    url = f"ws://127.0.0.1:{guarded.base_url.port}/ws?topics=market_status"
    with pytest.raises(InvalidStatus) as refused:
        ws_connect(url, open_timeout=10)
    assert refused.value.response.status_code == 403
    with ws_connect(url, open_timeout=10, additional_headers={"Authorization": f"Bearer {TOKEN}"}):
        pass


def test_only_the_configured_origins_get_cors_headers(guarded, instance, settings, pg_url):
    preflight = guarded.options("/market-status/latest", headers={
        "Origin": ORIGIN, "Access-Control-Request-Method": "GET", "Access-Control-Request-Headers": "authorization"})
    assert preflight.status_code == 200 and preflight.headers["access-control-allow-origin"] == ORIGIN  # no token needed to ask
    assert "authorization" in preflight.headers["access-control-allow-headers"].lower()
    answer = guarded.get("/health", headers={"Origin": ORIGIN})
    assert answer.headers["access-control-allow-origin"] == ORIGIN
    stranger = guarded.options("/market-status/latest", headers={"Origin": "https://evil.example", "Access-Control-Request-Method": "GET"})
    assert stranger.status_code == 400 and "access-control-allow-origin" not in stranger.headers
    assert "access-control-allow-origin" not in guarded.get("/health", headers={"Origin": "https://evil.example"}).headers

    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=settings.redis_prefix),
                                 PostgresResource(url=pg_url, db_schema=settings.db_schema))
    with serve_http(create_app(lambda: instance, store, 0, settings=settings)) as open_api:  # the defaults
        assert open_api.get("/worker/status").status_code == 200, "no token set: the endpoints are open"
        assert "access-control-allow-origin" not in open_api.get("/health", headers={"Origin": ORIGIN}).headers
