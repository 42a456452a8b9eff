"""Candle endpoints: paging, ``to`` semantics, forming candle, gaps and interval consistency."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta, timezone

import httpx
import numpy as np
import pytest

from dantaro_assets_tests.replay.conftest import CLOCK


def _get(replay, path: str, **params) -> list[dict]:
    response = httpx.get(f"{replay.url}{path}", params=params)
    assert response.status_code == 200, response.text
    return response.json()


def _starts(entries: list[dict]) -> list[datetime]:
    return [datetime.fromisoformat(e["candle_date_time_utc"]).replace(tzinfo=timezone.utc) for e in entries]


@pytest.fixture
def clocked(replay):
    replay.set_clock(CLOCK)
    return replay


def test_newest_first_default_count_and_max_200(clocked):
    one = _get(clocked, "/v1/candles/minutes/1", market="KRW-BTC")
    assert len(one) == 1 and _starts(one) == [CLOCK.replace(second=0)]
    many = _get(clocked, "/v1/candles/minutes/1", market="KRW-BTC", count=500)
    assert len(many) == 200
    starts = _starts(many)
    assert starts == sorted(starts, reverse=True) and len(set(starts)) == 200


@pytest.mark.parametrize(
    "to",
    ["2025-09-02T10:00:00", "2025-09-02T10:00:00Z", "2025-09-02T19:00:00+09:00", "2025-09-02 10:00:00", "2025-09-02T10:00:00.000Z"],
)
def test_to_is_exclusive_and_read_as_utc_unless_offset(clocked, to):
    entries = _get(clocked, "/v1/candles/minutes/1", market="KRW-BTC", to=to, count=3)
    assert _starts(entries) == [datetime(2025, 9, 2, 9, 59 - i, tzinfo=timezone.utc) for i in range(3)]


def test_unencoded_plus_offset_is_still_an_offset(clocked):
    # A client that forgets to encode '+' sends a space; the server still reads the +09:00 offset.
    response = httpx.get(f"{clocked.url}/v1/candles/minutes/60?market=KRW-BTC&count=1&to=2025-09-02T19:00:00+09:00")
    assert _starts(response.json()) == [datetime(2025, 9, 2, 9, tzinfo=timezone.utc)]


def test_bad_to_and_count_are_400(clocked):
    for params in ({"to": "yesterday"}, {"count": "0"}, {"count": "-3"}, {"count": "x"}, {}):
        params = {"market": "KRW-BTC", **params} if params else {}
        response = httpx.get(f"{clocked.url}/v1/candles/minutes/1", params=params)
        assert response.status_code == 400 and response.json()["error"]["name"] == 400


def test_paging_with_to_walks_back_without_overlap_or_loss(clocked):
    first = _get(clocked, "/v1/candles/minutes/1", market="KRW-ETH", count=200)
    second = _get(clocked, "/v1/candles/minutes/1", market="KRW-ETH", count=200, to=first[-1]["candle_date_time_utc"])
    both = _get(clocked, "/v1/candles/minutes/5", market="KRW-ETH", count=80)
    starts = _starts(first) + _starts(second)
    assert starts == sorted(set(starts), reverse=True)
    assert starts[-1] == CLOCK.replace(second=0) - timedelta(minutes=399)
    assert _starts(both)[-1] == starts[-1].replace(minute=starts[-1].minute - starts[-1].minute % 5)


def test_nothing_after_the_clock(clocked):
    later = _get(clocked, "/v1/candles/minutes/1", market="KRW-BTC", to="2030-01-01T00:00:00Z", count=2)
    assert _starts(later) == [CLOCK.replace(second=0), CLOCK.replace(second=0) - timedelta(minutes=1)]
    days = _get(clocked, "/v1/candles/days", market="KRW-BTC", count=2)
    assert _starts(days)[0] == CLOCK.replace(hour=0, minute=0, second=0)


def test_date_header_tells_the_replay_clock(clocked):
    response = httpx.get(f"{clocked.url}/v1/candles/minutes/1", params={"market": "KRW-BTC"})
    assert response.headers["date"] == "Wed, 03 Sep 2025 12:34:30 GMT"


def test_newest_candle_is_forming_until_its_period_ends(replay):
    minute = datetime(2025, 9, 3, 12, 34, tzinfo=timezone.utc)
    seen = []
    for seconds in (10, 40, 60, 75):
        replay.set_clock(minute + timedelta(seconds=seconds))
        entries = _get(replay, "/v1/candles/minutes/1", market="KRW-BTC", to=(minute + timedelta(minutes=1)).isoformat(), count=1)
        seen.append(entries[0])
    early, late, closed, after = seen
    assert closed == after  # once the minute is over, its candle no longer changes
    assert early["opening_price"] == late["opening_price"] == closed["opening_price"]
    assert early["candle_acc_trade_volume"] < late["candle_acc_trade_volume"] < closed["candle_acc_trade_volume"]
    assert early["high_price"] <= late["high_price"] <= closed["high_price"]
    assert early["low_price"] >= late["low_price"] >= closed["low_price"]
    assert early["timestamp"] <= int((minute + timedelta(seconds=10)).timestamp() * 1000)


def test_forming_hour_and_day_aggregate_minutes_up_to_the_clock(clocked):
    minutes = _get(clocked, "/v1/candles/minutes/1", market="KRW-SOL", count=35)
    hour = _get(clocked, "/v1/candles/minutes/60", market="KRW-SOL")[0]
    this_hour = [m for m in minutes if m["candle_date_time_utc"] >= "2025-09-03T12:00:00"]
    assert hour["candle_date_time_utc"] == "2025-09-03T12:00:00"
    assert hour["opening_price"] == this_hour[-1]["opening_price"]
    assert hour["trade_price"] == this_hour[0]["trade_price"] == minutes[0]["trade_price"]
    assert hour["high_price"] == max(m["high_price"] for m in this_hour)
    assert hour["low_price"] == min(m["low_price"] for m in this_hour)
    assert hour["candle_acc_trade_volume"] == pytest.approx(sum(m["candle_acc_trade_volume"] for m in this_hour), rel=1e-9)
    assert hour["candle_acc_trade_price"] == pytest.approx(sum(m["candle_acc_trade_price"] for m in this_hour), rel=1e-9)


@pytest.mark.parametrize("unit", [3, 5, 10, 15, 30, 60, 240, "days"])
def test_every_interval_aggregates_the_closed_minutes(clocked, unit):
    path = "/v1/candles/days" if unit == "days" else f"/v1/candles/minutes/{unit}"
    width = timedelta(days=1) if unit == "days" else timedelta(minutes=unit)
    candle = _get(clocked, path, market="KRW-XRP", count=2, to="2025-09-03T00:00:00Z")[0]
    start = datetime.fromisoformat(candle["candle_date_time_utc"]).replace(tzinfo=timezone.utc)
    assert start + width <= datetime(2025, 9, 3, tzinfo=timezone.utc)
    minutes = []
    to = start + width
    while True:
        page = _get(clocked, "/v1/candles/minutes/1", market="KRW-XRP", count=200, to=to.isoformat())
        inside = [m for m in page if m["candle_date_time_utc"] >= start.strftime("%Y-%m-%dT%H:%M:%S")]
        minutes += inside
        if len(inside) < len(page) or not page:
            break
        to = _starts(page)[-1]
    assert candle["opening_price"] == minutes[-1]["opening_price"]
    assert candle["trade_price"] == minutes[0]["trade_price"]
    assert candle["high_price"] == max(m["high_price"] for m in minutes)
    assert candle["low_price"] == min(m["low_price"] for m in minutes)
    assert candle["candle_acc_trade_volume"] == pytest.approx(sum(m["candle_acc_trade_volume"] for m in minutes), rel=1e-9)
    assert candle["timestamp"] == minutes[0]["timestamp"]


def test_thin_market_has_gaps_and_only_traded_candles(clocked, simulated, thin_market):
    day_end = datetime(2025, 9, 3, tzinfo=timezone.utc).timestamp()
    model = simulated.candles(thin_market, 1, day_end, 1440, now=day_end).since(day_end - 86_400)
    after_gap = int(np.flatnonzero(np.diff(model.start) > 60)[0]) + 1
    to = datetime.fromtimestamp(int(model.start[after_gap]) + 60, tz=timezone.utc)
    entries = _get(clocked, "/v1/candles/minutes/1", market=thin_market, count=10, to=to.isoformat())
    starts = _starts(entries)
    assert len(entries) == 10 and (starts[0] - starts[-1]) > timedelta(minutes=9)  # count counts candles, not minutes
    assert datetime.fromtimestamp(int(model.start[after_gap]) - 60, tz=timezone.utc) not in starts
    assert all(e["candle_acc_trade_volume"] > 0 for e in entries)


def test_day_candles_chain_prev_close(clocked):
    days = _get(clocked, "/v1/candles/days", market="KRW-ETH", count=10)
    for newer, older in itertools.pairwise(days):
        assert newer["prev_closing_price"] == older["trade_price"]
        assert newer["change_price"] == pytest.approx(newer["trade_price"] - older["trade_price"])
        assert newer["change_rate"] == pytest.approx(newer["change_price"] / older["trade_price"], abs=1e-9)
    # the oldest candle of a page is still compared with its real previous day
    single = _get(clocked, "/v1/candles/days", market="KRW-ETH", count=1, to=days[0]["candle_date_time_utc"])
    assert single[0] == days[1] and single[0]["prev_closing_price"] == days[2]["trade_price"]
