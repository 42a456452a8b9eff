"""The replay server's bodies have exactly the fields, order and JSON types of Upbit's recorded responses."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import pytest


def _captures(upbit_data_dir: Path) -> dict[str, dict]:
    document = json.loads((upbit_data_dir / "api_captures.json").read_text())
    return {capture["id"]: capture for capture in document["captures"]}


def _shape(entry: dict) -> list[tuple[str, str]]:
    """Field names in order with JSON types; Upbit writes whole numbers like change_price 0 as ints."""
    def kind(value: object) -> str:
        if isinstance(value, bool):
            return "bool"
        if isinstance(value, (int, float)):
            return "number"
        return type(value).__name__
    return [(key, kind(value)) for key, value in entry.items()]


def test_market_all_details_matches_capture(replay, upbit_data_dir):
    recorded = _captures(upbit_data_dir)["maxt_market_all_isdetails"]["body"][0]
    for flag in ("isDetails", "is_details"):
        response = httpx.get(f"{replay.url}/v1/market/all", params={flag: "true"})
        assert response.status_code == 200
        served = response.json()
        assert len(served) == 40 and served[0]["market"] == "KRW-BTC"
        assert list(served[0]) == list(recorded)
        assert list(served[0]["market_event"]["caution"]) == list(recorded["market_event"]["caution"])
        assert all(_shape(entry) == _shape(recorded) for entry in served)
    plain = httpx.get(f"{replay.url}/v1/market/all").json()
    assert list(plain[0]) == ["market", "korean_name", "english_name"]


def test_ticker_matches_capture(replay, upbit_data_dir):
    recorded = _captures(upbit_data_dir)["docs_ticker_btc_eth"]
    response = httpx.get(f"{replay.url}/v1/ticker", params={"markets": "KRW-BTC,KRW-ETH"})
    assert response.status_code == 200
    assert response.headers["remaining-req"].startswith("group=ticker; min=600; sec=")
    served = response.json()
    assert [e["market"] for e in served] == ["KRW-BTC", "KRW-ETH"]
    assert [_shape(e) for e in served] == [_shape(recorded["body"][0])] * 2
    assert all(isinstance(e["trade_timestamp"], int) and isinstance(e["timestamp"], int) for e in served)


def test_ticker_all_lists_every_krw_market(replay):
    served = httpx.get(f"{replay.url}/v1/ticker/all", params={"quote_currencies": "KRW"}).json()
    markets = [e["market"] for e in httpx.get(f"{replay.url}/v1/market/all").json()]
    assert [e["market"] for e in served] == markets


def test_day_candles_match_capture(replay, upbit_data_dir):
    recorded = _captures(upbit_data_dir)["docs_candles_days_btc"]
    response = httpx.get(f"{replay.url}/v1/candles/days",
                         params={"market": "KRW-BTC", "to": "2025-07-30T00:00:00+09:00", "count": 2})
    assert response.status_code == 200
    assert response.headers["remaining-req"].startswith("group=candles; min=600; sec=")
    served = response.json()
    assert [e["candle_date_time_utc"] for e in served] == [e["candle_date_time_utc"] for e in recorded["body"]]
    assert [e["candle_date_time_kst"] for e in served] == [e["candle_date_time_kst"] for e in recorded["body"]]
    assert [_shape(e) for e in served] == [_shape(e) for e in recorded["body"]]
    assert served[0]["prev_closing_price"] == served[1]["trade_price"]


def test_minute_candles_match_raw_recording(replay, upbit_data_dir):
    header = (upbit_data_dir / "raw_minute_candles_KRW-OM_60rows.csv").read_text().splitlines()[0].split(",")
    served = httpx.get(f"{replay.url}/v1/candles/minutes/1", params={"market": "KRW-BTC", "count": 5}).json()
    assert len(served) == 5
    assert all(list(e) == header for e in served)
    assert all(isinstance(e["unit"], int) and isinstance(e["timestamp"], int) for e in served)


@pytest.mark.parametrize(
    "path, params, status, body",
    [
        ("/v1/ticker", {"markets": "KRW-BTC,KRW-ZZZZ"}, 404, {"error": {"name": 404, "message": "Code not found"}}),
        ("/v1/candles/minutes/1", {"market": "KRW-ZZZZ"}, 404, {"error": {"name": 404, "message": "Code not found"}}),
        ("/v1/candles/days", {"market": "KRW-ZZZZ"}, 404, {"error": {"name": 404, "message": "Code not found"}}),
        ("/v1/candles/minutes/7", {"market": "KRW-BTC"}, 400, {"error": {"name": 400, "message": "specified unit is not valid."}}),
    ],
)
def test_error_bodies_match_recorded(replay, upbit_data_dir, path, params, status, body):
    recorded = {json.dumps(e["body"], sort_keys=True) for e in json.loads((upbit_data_dir / "api_captures.json").read_text())["error_bodies"]}
    response = httpx.get(f"{replay.url}{path}", params=params)
    assert response.status_code == status
    assert response.json() == body
    assert json.dumps(body, sort_keys=True) in recorded


def _instruments(server, markets: str) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/orderbook/instruments", params={"markets": markets})


@pytest.mark.parametrize("mode", ["simulated", "recorded"])
def test_orderbook_instruments_serve_the_tick_of_each_markets_price(request, mode):
    """docs.upbit.com's shape (market, quote_currency, tick_size as a decimal string, supported_levels), in the
    orderbook rate-limit group; the tick is the documented one at the market's last price."""
    from dantaro_assets.lib.tick_grid import krw_tick_size

    server = request.getfixturevalue("replay" if mode == "simulated" else "recorded_replay")
    markets = [e["market"] for e in httpx.get(f"{server.url}/v1/market/all").json()][:4]
    response = _instruments(server, ",".join(markets))
    assert response.status_code == 200
    assert response.headers["remaining-req"].startswith("group=orderbook; min=600; sec=")
    served = response.json()
    assert [e["market"] for e in served] == markets
    assert all(list(e) == ["market", "quote_currency", "tick_size", "supported_levels"] for e in served)
    assert all(e["quote_currency"] == "KRW" and isinstance(e["tick_size"], str) for e in served)
    tickers = {t["market"]: t["trade_price"] for t in httpx.get(f"{server.url}/v1/ticker", params={"markets": ",".join(markets)}).json()}
    for entry in served:
        price = tickers[entry["market"]]
        assert float(entry["tick_size"]) == krw_tick_size([price])[0], entry
        assert entry["supported_levels"][0] == entry["tick_size"]


def test_orderbook_instruments_errors(replay):
    assert _instruments(replay, "").status_code == 400
    missing = _instruments(replay, "KRW-BTC,KRW-NOPE")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Code not found"


def _books(server, markets: str, **params) -> httpx.Response:
    return httpx.get(f"{server.url}/v1/orderbook", params={"markets": markets, **params})


@pytest.mark.parametrize("mode", ["simulated", "recorded"])
def test_orderbook_serves_books_around_the_last_trade_on_the_grid(request, mode):
    """docs.upbit.com's shape (market, timestamp, total_ask_size, total_bid_size, orderbook_units, level), in the orderbook
    rate-limit group; 30 units by default, best first, every price on Upbit's grid; the last trade (the newest minute's
    close as /v1/candles shows it) is the best bid or the best ask; totals are the units' sums."""
    from dantaro_assets.lib.tick_grid import krw_tick_size, off_grid

    server = request.getfixturevalue("replay" if mode == "simulated" else "recorded_replay")
    if mode == "simulated":
        server.set_clock("2026-03-02T10:30:20Z")  # frozen, so the candle asked after the books is the same minute
    markets = [e["market"] for e in httpx.get(f"{server.url}/v1/market/all").json()][:4]
    response = _books(server, ",".join(markets))
    assert response.status_code == 200 and response.headers["remaining-req"].startswith("group=orderbook; min=600; sec=")
    clock_ms = int(server.clock().timestamp() * 1000)
    for book in response.json():
        assert list(book) == ["market", "timestamp", "total_ask_size", "total_bid_size", "orderbook_units", "level"]
        assert book["timestamp"] == clock_ms and book["level"] == 0
        units = book["orderbook_units"]
        assert len(units) == 30 and all(list(u) == ["ask_price", "bid_price", "ask_size", "bid_size"] for u in units)
        asks, bids = [u["ask_price"] for u in units], [u["bid_price"] for u in units]
        assert asks == sorted(set(asks)) and bids == sorted(set(bids), reverse=True) and bids[0] < asks[0]
        assert not off_grid(asks + bids, krw_tick_size(asks + bids)).any()
        assert all(u["ask_size"] > 0 and u["bid_size"] > 0 for u in units)
        assert book["total_ask_size"] == pytest.approx(sum(u["ask_size"] for u in units))
        assert book["total_bid_size"] == pytest.approx(sum(u["bid_size"] for u in units))
        [minute] = httpx.get(f"{server.url}/v1/candles/minutes/1", params={"market": book["market"]}).json()
        assert minute["trade_price"] in (asks[0], bids[0]), book["market"]


def test_orderbook_spreads_widen_as_turnover_thins(replay):
    """The 10 markets trading least over 24 h quote wider spreads (bps of the mid) than the 10 trading most."""
    markets = [e["market"] for e in httpx.get(f"{replay.url}/v1/market/all").json()]
    turnover = {t["market"]: t["acc_trade_price_24h"] for t in httpx.get(f"{replay.url}/v1/ticker", params={"markets": ",".join(markets)}).json()}
    spread = {}
    for book in _books(replay, ",".join(markets), count=1).json():
        top = book["orderbook_units"][0]
        spread[book["market"]] = 1e4 * (top["ask_price"] - top["bid_price"]) / ((top["ask_price"] + top["bid_price"]) / 2)
    ranked = sorted(markets, key=turnover.get)
    thin, busy = [spread[m] for m in ranked[:10]], [spread[m] for m in ranked[-10:]]
    assert sorted(thin)[5] > 2 * sorted(busy)[5], (thin, busy)


def test_orderbook_count_level_and_errors(replay):
    assert len(_books(replay, "KRW-BTC", count=1).json()[0]["orderbook_units"]) == 1
    assert len(_books(replay, "KRW-BTC", count=31).json()[0]["orderbook_units"]) == 30  # out of range: the default
    assert _books(replay, "KRW-BTC", level=10000).json() == []  # a grouping level the replay does not model
    assert _books(replay, "").status_code == 400
    missing = _books(replay, "KRW-BTC,KRW-NOPE")
    assert missing.status_code == 404 and missing.json()["error"]["message"] == "Code not found"
