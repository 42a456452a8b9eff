"""Upbit-like rate limiting: per IP and group over a sliding second, Remaining-Req, 429, 418, Origin."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

CANDLES = "/v1/candles/minutes/1"


def _remaining(response: httpx.Response) -> tuple[str, int]:
    parts = dict(part.strip().split("=") for part in response.headers["remaining-req"].split(";"))
    assert parts["min"] == "600"
    return parts["group"], int(parts["sec"])


def test_remaining_req_counts_down_then_429(replay):
    with httpx.Client(base_url=replay.url) as client:
        responses = [client.get(CANDLES, params={"market": "KRW-BTC"}) for _ in range(11)]
    assert [r.status_code for r in responses] == [200] * 10 + [429]
    assert [_remaining(r) for r in responses] == [("candles", n) for n in range(9, -1, -1)] + [("candles", 0)]
    assert responses[-1].json()["error"]["name"] == "too_many_requests"


def test_window_slides_and_groups_are_separate(replay):
    with httpx.Client(base_url=replay.url) as client:
        for _ in range(10):
            client.get(CANDLES, params={"market": "KRW-BTC"})
        assert client.get(CANDLES, params={"market": "KRW-BTC"}).status_code == 429
        ticker = client.get("/v1/ticker", params={"markets": "KRW-BTC"})
        assert ticker.status_code == 200 and _remaining(ticker) == ("ticker", 9)
        markets = client.get("/v1/market/all")
        assert markets.status_code == 200 and _remaining(markets) == ("market", 9)
        time.sleep(1.05)
        again = client.get(CANDLES, params={"market": "KRW-BTC"})
        assert again.status_code == 200 and _remaining(again) == ("candles", 9)


def test_parallel_burst_gets_exactly_the_budget(replay):
    def call(_: int) -> int:
        return httpx.get(f"{replay.url}{CANDLES}", params={"market": "KRW-ETH"}).status_code

    with ThreadPoolExecutor(max_workers=8) as pool:
        started = time.monotonic()
        statuses = list(pool.map(call, range(30)))
        elapsed = time.monotonic() - started
    stats = replay.stats()["groups"]["candles"]
    assert stats["requests"] == 30 and stats["ok"] == statuses.count(200) and stats["too_many"] == statuses.count(429)
    assert stats["max_per_second"] <= 10
    if elapsed < 1.0:  # the whole burst fell in one window (a loaded machine may spread it out)
        assert statuses.count(200) == 10 and statuses.count(429) == 20 and stats["max_per_second"] == 10


def test_stats_reset(replay):
    httpx.get(f"{replay.url}/v1/market/all")
    assert replay.stats()["groups"]["market"]["requests"] == 1
    replay.reset_stats()
    assert replay.stats()["groups"] == {}


def test_origin_header_gets_one_request_per_ten_seconds(replay):
    headers = {"Origin": "https://example.com"}
    with httpx.Client(base_url=replay.url, headers=headers) as client:
        first = client.get("/v1/ticker", params={"markets": "KRW-BTC"})
        second = client.get("/v1/ticker", params={"markets": "KRW-BTC"})
    assert first.status_code == 200 and _remaining(first) == ("ticker", 0)
    assert second.status_code == 429
    assert replay.stats()["groups"]["ticker"]["origin"] == 2


@pytest.fixture(scope="module")
def strict_server(replay_server_factory):
    return replay_server_factory("--simulated", "5", "--block-after", "3", "--block-seconds", "1")


def test_hammering_after_429s_gets_418_then_recovers(strict_server):
    strict_server.reset()
    with httpx.Client(base_url=strict_server.url) as client:
        statuses = [client.get(CANDLES, params={"market": "KRW-BTC"}).status_code for _ in range(16)]
        assert statuses[:10] == [200] * 10 and statuses[10:14] == [429] * 4
        assert statuses[14:] == [418, 418]
        blocked_elsewhere = client.get("/v1/market/all")  # the block is per IP, every group
        assert blocked_elsewhere.status_code == 418
        assert "blocked for 1 seconds" in blocked_elsewhere.json()["error"]["message"]
        time.sleep(1.1)
        assert client.get(CANDLES, params={"market": "KRW-BTC"}).status_code == 200
    groups = strict_server.stats()["groups"]
    assert groups["candles"]["too_many"] == 4 and groups["candles"]["blocked"] == 2 and groups["market"]["blocked"] == 1


def test_rate_limit_zero_switches_limiting_off(replay_server_factory):
    server = replay_server_factory("--simulated", "5", "--rate-limit", "0")
    with httpx.Client(base_url=server.url) as client:
        statuses = {client.get(CANDLES, params={"market": "KRW-BTC"}).status_code for _ in range(25)}
    assert statuses == {200}


def test_budgets_are_per_client_ip(replay):
    other_ip = httpx.HTTPTransport(local_address="127.0.0.2")
    with httpx.Client(base_url=replay.url) as first, httpx.Client(base_url=replay.url, transport=other_ip) as second:
        for _ in range(10):
            first.get(CANDLES, params={"market": "KRW-BTC"})
        assert first.get(CANDLES, params={"market": "KRW-BTC"}).status_code == 429
        other = second.get(CANDLES, params={"market": "KRW-BTC"})
        assert other.status_code == 200 and _remaining(other) == ("candles", 9)
