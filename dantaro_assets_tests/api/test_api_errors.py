"""The API's answers when its storage is down or a request is bad: clear, and naming no host, port or password."""

from __future__ import annotations

import time
from collections.abc import Iterator

import dagster as dg
import httpx
import pytest

from dantaro_assets.api.app import create_app
from dantaro_assets.api.models import parse_market
from dantaro_assets.api.worker_status import worker_status
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.harness import free_port

SECRET = "s3cret"


@pytest.fixture(scope="module")
def unreachable_api(settings) -> Iterator[tuple[httpx.Client, int]]:
    """The API over a Postgres and a Redis nobody listens for (one closed port), both URLs carrying a password."""
    port = free_port()
    snapshots = SnapshotStore(redis=RedisResource(url=f"redis://:{SECRET}@127.0.0.1:{port}/0"),
                              postgres=PostgresResource(url=f"postgresql://user:{SECRET}@127.0.0.1:{port}/test"), ttls={})
    with dg.DagsterInstance.ephemeral() as instance, serve_http(create_app(lambda: instance, snapshots, settings=settings)) as client:
        yield client, port


@pytest.mark.parametrize("path", ["/market-status/latest", "/recommendations/latest", "/support-levels/KRW-BTC", "/support-levels/krw-btc",
                                  "/recommendations/scorecard", "/events?topics=market_status", "/candles/KRW-BTC", "/candles/krw-eth?interval=15m"])
def test_storage_down_answers_503_naming_no_host(unreachable_api, path):
    client, port = unreachable_api
    response = client.get(path)
    assert response.status_code == 503
    assert response.json() == {"detail": "snapshot storage is unavailable; try again later"}
    for detail in (SECRET, "127.0.0.1", str(port), "libpq", "refused", "postgresql://", "redis://"):
        assert detail not in response.text


@pytest.mark.parametrize("raw", ["KRW-BTC%0A", "KRW-BTC%0D", "%20KRW-BTC", "KRW-%C5%BFOL", "KRW-%EF%BC%A2TC", "KRW_BTC", "KRW-"])
def test_a_market_that_is_not_a_whole_code_is_refused_before_storage_is_touched(unreachable_api, raw):
    """A trailing newline, a non-ASCII letter that upper-cases to ASCII (ſ -> S) or a full-width one: 400, not a lookup."""
    client, _ = unreachable_api
    response = client.get(f"/support-levels/{raw}")
    assert response.status_code == 400, response.text
    assert response.json() == {"detail": "market must be a market code like KRW-BTC (ASCII letters and digits)"}


@pytest.mark.parametrize("raw", ["<script>alert(1)</script>", "0", "201", "2.5", "9" * 40])
def test_a_bad_limit_is_refused_naming_the_parameter_never_repeating_it(unreachable_api, raw):
    client, _ = unreachable_api
    response = client.get("/worker/status", params={"limit": raw})
    assert response.status_code == 400
    assert response.json() == {"detail": "limit must be an integer from 1 to 200"}


@pytest.mark.parametrize(("query", "detail"), [
    ({"limit": "0"}, "limit must be an integer from 1 to 1000"), ({"limit": "1001"}, "limit must be an integer from 1 to 1000"),
    ({"limit": "<b>9</b>"}, "limit must be an integer from 1 to 1000"), ({"interval": "<i>3m</i>"}, "interval must be one of 1m, 5m, 15m, 1h, 1d"),
    ({"interval": "minute1"}, "interval must be one of 1m, 5m, 15m, 1h, 1d"),
])
def test_bad_candle_parameters_are_refused_before_storage_is_touched(unreachable_api, query, detail):
    client, _ = unreachable_api
    response = client.get("/candles/KRW-BTC", params=query)
    assert response.status_code == 400 and response.json() == {"detail": detail}
    assert client.get("/candles/KRW-BTC%0A").json() == {"detail": "market must be a market code like KRW-BTC (ASCII letters and digits)"}


def test_parse_market_upper_cases_only_whole_ascii_codes():
    assert parse_market("krw-btc") == "KRW-BTC"
    assert parse_market("KRW-1INCH") == "KRW-1INCH"
    assert parse_market("KRW-BTC\n") is None
    assert parse_market("KRW-ſOL") is None and "KRW-ſOL".upper() == "KRW-SOL"


@dg.asset(name="market_status")
def leaky() -> None:
    raise ConnectionError(f"could not reach postgresql://user:{SECRET}@db.internal:5432/dantaro")


def test_worker_status_shows_run_errors_with_urls_redacted(instance, settings):
    dg.materialize([leaky], instance=instance, tags=MARKET_STATUS.job_type.tags(), raise_on_error=False)
    [job] = worker_status(instance, time.monotonic(), settings=settings)["last_jobs"]
    assert (job["status"], job["dagster_status"]) == ("failed", "FAILURE")
    assert "could not reach postgresql://user:***@db.internal:5432/dantaro" in job["error"]
    assert SECRET not in job["error"]


def test_worker_status_keeps_its_last_answer_while_dagster_storage_is_gone(instance, tmp_path, settings):
    """The run storage's SQLite file disappears under a running API: refreshes fail, the last answer stays and ages."""
    dg.materialize([leaky], instance=instance, tags=MARKET_STATUS.job_type.tags(), raise_on_error=False)
    snapshots = SnapshotStore(redis=RedisResource(url="redis://127.0.0.1:1/0"), postgres=PostgresResource(url="postgresql://127.0.0.1:1/none"), ttls={})
    with serve_http(create_app(lambda: instance, snapshots, status_refresh_s=0.2, settings=settings)) as client:
        before = client.get("/worker/status").json()
        assert [job["status"] for job in before["last_jobs"]] == ["failed"]
        runs_db = tmp_path / "history" / "runs.db"
        assert runs_db.exists()
        runs_db.rename(tmp_path / "runs.db.moved")
        time.sleep(1.0)  # several refreshes fail
        after = client.get("/worker/status").json()
        assert after["last_jobs"] == before["last_jobs"] and after["cache_age"] >= 0.8  # no refresh succeeded since
        assert after["uptime"] > before["uptime"]
