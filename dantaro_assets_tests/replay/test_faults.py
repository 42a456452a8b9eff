"""Fault injection over real HTTP: every kind, counts, path and market matching, clearing."""

from __future__ import annotations

import json
import time

import httpx
import pytest

CANDLES = "/v1/candles/minutes/1"


def _candles(replay, market: str = "KRW-BTC", count: int = 3) -> httpx.Response:
    return httpx.get(f"{replay.url}{CANDLES}", params={"market": market, "count": count}, timeout=10)


def test_latency(replay):
    replay.inject("latency", path=CANDLES, seconds=2.0)
    started = time.monotonic()
    delayed = _candles(replay)
    delayed_seconds = time.monotonic() - started
    started = time.monotonic()
    normal = _candles(replay)
    assert delayed.status_code == normal.status_code == 200
    assert delayed_seconds >= 2.0 > time.monotonic() - started  # wide margin: the undelayed request is slow on a loaded machine


@pytest.mark.parametrize("kind, status", [("429", 429), ("500", 500), ("503", 503)])
def test_status_faults_fire_count_times(replay, kind, status):
    replay.inject(kind, path=CANDLES, count=2)
    statuses = [_candles(replay).status_code for _ in range(3)]
    assert statuses == [status, status, 200]
    assert replay.stats()["faults_fired"] == {kind: 2}


def test_500_body_is_upbit_shaped_and_503_is_a_gateway_page(replay):
    replay.inject("500", path=CANDLES)
    assert _candles(replay).json() == {"error": {"name": 500, "message": "Internal Server Error"}}
    replay.inject("503", path=CANDLES)
    page = _candles(replay)
    assert page.headers["content-type"].startswith("text/html") and "503" in page.text
    assert page.headers["remaining-req"].startswith("group=candles;")


def test_418_blocks_the_ip_for_its_seconds(replay):
    replay.inject("418", path=CANDLES, seconds=0.5)
    first = _candles(replay)
    assert first.status_code == 418 and "blocked for 1 seconds" in first.json()["error"]["message"]
    assert httpx.get(f"{replay.url}/v1/market/all").status_code == 418
    time.sleep(0.6)
    assert _candles(replay).status_code == 200


def test_malformed_json(replay):
    replay.inject("malformed", path=CANDLES)
    response = _candles(replay)
    assert response.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(response.content)


def test_truncated_body_breaks_the_connection(replay):
    replay.inject("truncated", path=CANDLES)
    with pytest.raises(httpx.RemoteProtocolError):
        _candles(replay)
    assert _candles(replay).status_code == 200


def test_drop_closes_without_a_response(replay):
    replay.inject("drop", path=CANDLES)
    with pytest.raises(httpx.RemoteProtocolError):
        _candles(replay)
    assert _candles(replay).status_code == 200


@pytest.mark.parametrize("variant, body", [("list", b"[]"), ("body", b"")])
def test_empty(replay, variant, body):
    replay.inject("empty", path=CANDLES, variant=variant)
    response = _candles(replay)
    assert response.status_code == 200 and response.content == body


def test_bad_candle_variants(replay):
    def page(variant: str) -> list[dict]:
        replay.inject("bad_candle", path=CANDLES, variant=variant)
        return _candles(replay).json()

    high_low = page("high_low")[0]
    assert high_low["high_price"] < high_low["low_price"]
    assert "trade_price" not in page("missing_field")[0]
    assert page("negative_price")[0]["low_price"] < 0
    duplicated = page("duplicate_timestamp")
    assert len(duplicated) == 4 and duplicated[0] == duplicated[1]
    clean = _candles(replay).json()
    assert all(c["low_price"] <= c["trade_price"] <= c["high_price"] for c in clean)


def test_bad_book_variants_spoil_the_first_book_only(replay):
    def books(variant: str | None = None) -> list[dict]:
        if variant:
            replay.inject("bad_book", path="/v1/orderbook", variant=variant)
        return httpx.get(f"{replay.url}/v1/orderbook", params={"markets": "KRW-BTC,KRW-ETH", "count": 2}).json()

    crossed = books("crossed_book")
    assert crossed[0]["orderbook_units"][0]["ask_price"] < crossed[0]["orderbook_units"][0]["bid_price"]
    assert crossed[1]["orderbook_units"][0]["ask_price"] > crossed[1]["orderbook_units"][0]["bid_price"]
    assert books("infinite_price")[0]["orderbook_units"][0]["ask_price"] == float("inf")  # Python's json reads Infinity
    assert books("no_units")[0]["orderbook_units"] == []
    assert all(u["ask_price"] > u["bid_price"] for book in books() for u in book["orderbook_units"])


def test_matching_by_prefix_market_and_forever(replay):
    replay.inject("500", path="/v1/candles/*", market="KRW-XRP", count=None)
    assert _candles(replay, "KRW-XRP").status_code == 500
    assert httpx.get(f"{replay.url}/v1/candles/days", params={"market": "KRW-XRP"}).status_code == 500
    assert _candles(replay, "KRW-BTC").status_code == 200
    assert httpx.get(f"{replay.url}/v1/ticker", params={"markets": "KRW-XRP"}).status_code == 200
    assert _candles(replay, "KRW-XRP").status_code == 500  # still active
    replay.clear_faults()
    assert _candles(replay, "KRW-XRP").status_code == 200


def test_fault_without_path_hits_any_upbit_endpoint_not_the_control_api(replay):
    replay.inject("500")
    assert replay.stats()["active_faults"][0]["kind"] == "500"  # control API unaffected
    assert httpx.get(f"{replay.url}/v1/market/all").status_code == 500


@pytest.mark.parametrize(
    "spec",
    [{"kind": "explode"}, {"kind": "500", "count": 0}, {"kind": "bad_candle", "variant": "nope"},
     {"kind": "bad_book", "variant": "high_low"}, {"path": "/v1/ticker"},
     {"kind": "latency", "seconds": -1}, {"kind": "500", "colour": "red"}, {"kind": "alter", "variant": "nope"},
     {"kind": "disconnect", "minute": "2025-09-03T12:35:00"}, {"kind": "outlier", "minute": "yesterday"}],
)
def test_invalid_fault_specs_are_rejected(replay, spec):
    response = httpx.post(f"{replay.url}/_replay/faults", json=spec)
    assert response.status_code == 400 and response.json()["error"]["message"]
    assert replay.stats()["active_faults"] == []


def test_start_up_fault_flag(replay_server_factory):
    server = replay_server_factory("--simulated", "5", "--fault", json.dumps({"kind": "503", "path": "/v1/market/all", "count": 1}))
    assert httpx.get(f"{server.url}/v1/market/all").status_code == 503
    assert httpx.get(f"{server.url}/v1/market/all").status_code == 200
