"""Parsing of real recorded Upbit responses and of every kind of bad candle (no HTTP needed)."""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dantaro_assets.lib.upbit import (
    CANDLE_COLUMNS,
    MARKET_COLUMNS,
    UpbitResponseError,
    interval,
    parsing,
)
from dantaro_assets.lib.upbit.rate_limit import parse_remaining_req

DAY = interval("day")
MINUTE = interval("minute1")


@pytest.fixture(scope="module")
def captures(upbit_data_dir) -> dict[str, dict]:
    data = json.loads((upbit_data_dir / "api_captures.json").read_text())
    return {c["id"]: c for c in data["captures"]} | {"_data": data}


def test_recorded_day_candles_parse_into_the_contract(captures):
    capture = captures["docs_candles_days_btc"]
    good, bad = parsing.parse_candle_page(
        json.loads(capture["body_raw"]), market="KRW-BTC", interval=DAY, to=pd.Timestamp("2025-07-29T15:00Z"), endpoint="/v1/candles/days"
    )
    assert bad.empty
    assert list(good.columns) == CANDLE_COLUMNS
    first = capture["body"][0]
    row = good.iloc[0]
    assert row["candle_start"] == pd.Timestamp(first["candle_date_time_utc"], tz="UTC")
    assert (row["open"], row["high"], row["low"], row["close"]) == (
        first["opening_price"], first["high_price"], first["low_price"], first["trade_price"]
    )
    assert row["volume"] == first["candle_acc_trade_volume"] and row["value"] == first["candle_acc_trade_price"]


def test_recorded_market_list_keeps_krw_markets_and_flags(captures):
    body = captures["maxt_market_all_isdetails"]["body"]
    frame = parsing.parse_markets(body, endpoint="/v1/market/all")
    assert list(frame.columns) == MARKET_COLUMNS
    assert frame["market"].str.startswith("KRW-").all()
    assert set(frame["market"]) == {m["market"] for m in body if m["market"].startswith("KRW-")}
    expected = {m["market"]: m["market_event"]["warning"] for m in body if m["market"].startswith("KRW-")}
    assert dict(zip(frame["market"], frame["warning"])) == expected


def test_market_list_without_details_is_an_error(captures):
    with pytest.raises(UpbitResponseError, match="market_event missing"):
        parsing.parse_markets([{"market": "KRW-BTC", "korean_name": "비트코인", "english_name": "Bitcoin"}], endpoint="/v1/market/all")


def test_recorded_raw_minute_candles_parse_without_quarantine(upbit_data_dir):
    raw = pd.read_csv(upbit_data_dir / "raw_minute_candles_KRW-OM_60rows.csv").to_dict("records")
    good, bad = parsing.parse_candle_page(raw, market="KRW-OM", interval=MINUTE, to=pd.Timestamp("2025-05-21T07:05Z"), endpoint="/v1/candles/minutes/1")
    assert bad.empty and len(good) == 60
    assert good["candle_start"].is_monotonic_increasing


def test_remaining_req_header_examples(captures):
    examples = captures["_data"]["remaining_req_header_examples"]
    assert [parse_remaining_req(e.split(" (")[0]) for e in examples] == [9, 9, 9, 9, 29, 29, 4]
    assert parse_remaining_req(None) is None and parse_remaining_req("group=candles") is None


def _candle(start: str, **fields) -> dict:
    base = {
        "market": "KRW-BTC", "candle_date_time_utc": start, "opening_price": 100.0, "high_price": 110.0, "low_price": 90.0,
        "trade_price": 105.0, "candle_acc_trade_volume": 1.5, "candle_acc_trade_price": 157.5,
    }
    return {k: v for k, v in (base | fields).items() if v is not ...}


@pytest.mark.parametrize(
    ("bad_row", "reason"),
    [
        (_candle("2025-09-15T10:01:00", opening_price=...), "missing or non-numeric opening_price"),
        (_candle("2025-09-15T10:01:00", trade_price="105"), "missing or non-numeric trade_price"),
        (_candle("2025-09-15T10:01:00", low_price=-1.0), "price not positive"),
        (_candle("2025-09-15T10:01:00", opening_price=0), "price not positive"),
        (_candle("2025-09-15T10:01:00", high_price=80.0, low_price=90.0, opening_price=85.0, trade_price=85.0), "high below low"),
        (_candle("2025-09-15T10:01:00", high_price=104.0), "high below open or close"),
        (_candle("2025-09-15T10:01:00", low_price=101.0), "low above open or close"),
        (_candle("2025-09-15T10:01:00", candle_acc_trade_volume=-2.0), "negative volume or value"),
        (_candle("2025-09-15T10:01:30"), "not on the minute1 grid"),
        (_candle("not a time"), "unparseable candle_date_time_utc"),
        (_candle("2025-09-15T11:00:00"), "at or after the exclusive to"),
        (_candle("2025-09-15T10:01:00", market="KRW-ETH"), "market is not KRW-BTC"),
    ],
)
def test_bad_candles_are_quarantined_with_a_reason(bad_row, reason):
    page = [_candle("2025-09-15T10:00:00"), bad_row]
    good, bad = parsing.parse_candle_page(page, market="KRW-BTC", interval=MINUTE, to=pd.Timestamp("2025-09-15T11:00Z"), endpoint="/v1/candles/minutes/1")
    assert good["candle_start"].tolist() == [pd.Timestamp("2025-09-15T10:00Z")]
    assert len(bad) == 1 and reason in bad["reason"].iloc[0]


@pytest.mark.parametrize("payload", [{"error": {"name": 500}}, "text", [1, 2], [{"market": "KRW-BTC"}]])
def test_wrong_shapes_are_typed_errors_naming_endpoint_and_market(payload):
    with pytest.raises(UpbitResponseError, match=r"/v1/candles/minutes/1 market=KRW-BTC"):
        parsing.parse_candle_page(payload, market="KRW-BTC", interval=MINUTE, to=pd.Timestamp("2025-09-15T11:00Z"), endpoint="/v1/candles/minutes/1")


def test_empty_array_is_an_empty_page():
    good, bad = parsing.parse_candle_page([], market="KRW-BTC", interval=MINUTE, to=pd.Timestamp("2025-09-15T11:00Z"), endpoint="/v1/candles/minutes/1")
    assert good.empty and bad.empty and list(good.columns) == CANDLE_COLUMNS


def test_duplicates_identical_kept_once_conflicting_quarantined():
    page = [_candle("2025-09-15T10:00:00"), _candle("2025-09-15T10:00:00"), _candle("2025-09-15T10:01:00"), _candle("2025-09-15T10:01:00", trade_price=101.0)]
    good, _ = parsing.parse_candle_page(page, market="KRW-BTC", interval=MINUTE, to=pd.Timestamp("2025-09-15T11:00Z"), endpoint="x")
    kept, quarantined = parsing.split_duplicates(good)
    assert kept["candle_start"].tolist() == [pd.Timestamp("2025-09-15T10:00Z")]
    assert sorted(quarantined["reason"]) == [
        "duplicate candle_start (identical copy dropped)",
        "duplicate candle_start with conflicting values",
        "duplicate candle_start with conflicting values",
    ]


def test_unknown_interval_names_the_known_ones():
    with pytest.raises(ValueError, match="minute1, minute3"):
        interval("minute2")


def test_instruments_parse_tick_strings_and_refuse_bad_ones():
    payload = [{"market": "KRW-BTC", "quote_currency": "KRW", "tick_size": "1000", "supported_levels": ["1000"]},
               {"market": "KRW-DOGE", "quote_currency": "KRW", "tick_size": "0.1", "supported_levels": ["0.1"]}]
    frame = parsing.parse_instruments(payload, endpoint="/v1/orderbook/instruments", markets=["KRW-BTC", "KRW-DOGE"])
    assert frame.to_dict("list") == {"market": ["KRW-BTC", "KRW-DOGE"], "tick_size": [1000.0, 0.1]}
    for bad, message in [
        ([{**payload[0], "tick_size": "0"}], "not a positive number for KRW-BTC"),
        ([{**payload[0], "tick_size": None}], "not a positive number for KRW-BTC"),
        ([{**payload[0], "tick_size": "abc"}], "not a positive number"),
        ([payload[0], payload[0]], "duplicate markets"),
        ([{**payload[0], "market": "KRW-ETH"}], "markets not asked for: KRW-ETH"),
        ({"error": {}}, "expected a JSON array"),
    ]:
        with pytest.raises(UpbitResponseError, match=message):
            parsing.parse_instruments(bad, endpoint="/v1/orderbook/instruments", markets=["KRW-BTC"])


def _book(market: str = "KRW-XRP", ask: float = 3985.0, bid: float = 3984.0, **unit) -> dict:
    units = [{"ask_price": ask, "bid_price": bid, "ask_size": 120.5, "bid_size": 80.25, **unit},
             {"ask_price": ask + 1, "bid_price": bid - 1, "ask_size": 10.0, "bid_size": 20.0}]
    return {"market": market, "timestamp": 1758362720123, "total_ask_size": 130.5, "total_bid_size": 100.25,
            "orderbook_units": units, "level": 0}


def test_orderbook_parses_the_top_of_each_book():
    frame = parsing.parse_orderbook([_book(), _book("KRW-BTC", 144967000.0, 144956000.0)], endpoint="/v1/orderbook",
                                    markets=["KRW-XRP", "KRW-BTC"])
    assert list(frame.columns) == parsing.BOOK_COLUMNS
    xrp = frame.iloc[0]
    assert (xrp["market"], xrp["best_ask"], xrp["best_bid"], xrp["ask_size"], xrp["bid_size"]) == ("KRW-XRP", 3985.0, 3984.0, 120.5, 80.25)
    assert (xrp["total_ask_size"], xrp["total_bid_size"]) == (130.5, 100.25)
    assert xrp["book_time"] == pd.Timestamp("2025-09-20T10:05:20.123Z")
    assert xrp["spread_bps"] == pytest.approx(1e4 * 1 / 3984.5)
    assert parsing.parse_orderbook([], endpoint="/v1/orderbook", markets=["KRW-XRP"]).empty  # a market left out is not an error


@pytest.mark.parametrize(("bad", "message"), [
    (_book(ask=3984.0, bid=3984.0), r"crossed book \(best ask at or below the best bid\): KRW-XRP \(ask 3984.0, bid 3984.0\)"),
    (_book(ask=3983.0, bid=3984.0), "crossed book.*KRW-XRP"),
    (_book(ask=float("inf")), "non-finite price or size.*KRW-XRP"),
    (_book(bid_size=float("nan")), "missing or non-numeric.*KRW-XRP"),
    (_book(ask_price="3985"), "missing or non-numeric.*KRW-XRP"),
    (_book(ask=-1.0, bid=-2.0), "price not positive.*KRW-XRP"),
    (_book(ask_size=-3.0), "negative size.*KRW-XRP"),
    ({**_book(), "orderbook_units": []}, "no orderbook_units.*KRW-XRP"),
    ({**_book(), "orderbook_units": [{"ask_price": 3990.0, "bid_price": 3984.0, "ask_size": 1.0, "bid_size": 1.0},
                                     {"ask_price": 3985.0, "bid_price": 3983.0, "ask_size": 1.0, "bid_size": 1.0}]},
     "first unit that is not the best.*KRW-XRP"),
    ({**_book(), "timestamp": None}, "missing or non-numeric.*timestamp"),
    ({key: value for key, value in _book().items() if key != "orderbook_units"}, "orderbook_units missing from every row"),
    (_book("KRW-ETH"), "markets not asked for: KRW-ETH"),
    ({"error": {"name": 404}}, "expected a JSON array"),
])
def test_orderbook_refuses_a_book_no_buyer_could_use_naming_the_market(bad, message):
    payload = bad if isinstance(bad, dict) and "error" in bad else [bad]
    with pytest.raises(UpbitResponseError, match=message) as raised:
        parsing.parse_orderbook(payload, endpoint="/v1/orderbook", markets=["KRW-XRP"])
    assert raised.value.endpoint == "/v1/orderbook" and raised.value.market == "KRW-XRP"


def test_orderbook_refuses_a_market_twice():
    with pytest.raises(UpbitResponseError, match="duplicate markets"):
        parsing.parse_orderbook([_book(), _book()], endpoint="/v1/orderbook", markets=["KRW-XRP"])
