"""The replay's candle.1m WebSocket over real connections to a real replay server process."""

from __future__ import annotations

import json
import socket
import time
from datetime import UTC, datetime, timedelta
from itertools import pairwise

import httpx
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import connect

from dantaro_replay.simulated import SimulatedMarket
from dantaro_replay.websocket import SIMPLE_NAMES

pytestmark = pytest.mark.spread  # each test resets its worker's replay and opens its own connections

START = datetime(2025, 9, 3, 12, 34, 30, tzinfo=UTC)
DEFAULT_FIELDS = set(SIMPLE_NAMES)


def request(codes: list[str], fmt: str = "DEFAULT", **flags) -> str:
    return json.dumps([{"ticket": "test"}, {"type": "candle.1m", "codes": codes, **flags}, {"format": fmt}])


def receive(ws, seconds: float, until=None) -> list[dict]:
    """Messages for ``seconds`` (or until ``until(message)``), decoded."""
    messages, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            raw = ws.recv(timeout=max(0.01, deadline - time.monotonic()))
        except TimeoutError:
            break
        messages.append(json.loads(raw))
        if until is not None and until(messages[-1]):
            break
    return messages


def rest_candles(server, market: str, end: datetime, count: int) -> dict[str, dict]:
    answer = httpx.get(f"{server.url}/v1/candles/minutes/1", params={"market": market, "to": end.isoformat(), "count": count})
    answer.raise_for_status()
    return {c["candle_date_time_utc"]: c for c in answer.json()}


def test_snapshot_then_realtime_with_repeated_minutes_and_rest_final_values(small_replay):
    small_replay.set_clock(START, running=True, speed=6)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC", "KRW-ETH"]))
        messages = receive(ws, 30, until=lambda m: m["code"] == "KRW-BTC" and m["candle_date_time_utc"] == "2025-09-03T12:36:00")
    assert [m["stream_type"] for m in messages[:2]] == ["SNAPSHOT", "SNAPSHOT"]
    assert {m["code"] for m in messages[:2]} == {"KRW-BTC", "KRW-ETH"}
    assert all(set(m) == DEFAULT_FIELDS and m["type"] == "candle.1m" for m in messages)
    assert {m["stream_type"] for m in messages[2:]} == {"REALTIME"}
    btc = [m for m in messages if m["code"] == "KRW-BTC"]
    minute = [m for m in btc if m["candle_date_time_utc"] == "2025-09-03T12:35:00"]
    assert len(minute) > 10  # the forming minute is sent again every (replay) second while it trades
    volumes = [m["candle_acc_trade_volume"] for m in minute]
    assert volumes == sorted(volumes)
    closed = rest_candles(small_replay, "KRW-BTC", START + timedelta(minutes=2), 2)["2025-09-03T12:35:00"]
    fields = ["opening_price", "high_price", "low_price", "trade_price", "candle_acc_trade_volume", "candle_acc_trade_price"]
    assert {f: minute[-1][f] for f in fields} == {f: closed[f] for f in fields}
    assert minute[-1]["candle_date_time_kst"] == "2025-09-03T21:35:00"


def test_simple_format_and_snapshot_only(small_replay):
    small_replay.set_clock(START, running=True, speed=6)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-XRP"], "SIMPLE", is_only_snapshot=True))
        messages = receive(ws, 2)
    assert len(messages) == 1
    assert set(messages[0]) == set(SIMPLE_NAMES.values()) and messages[0]["st"] == "SNAPSHOT" and messages[0]["cd"] == "KRW-XRP"


def test_no_message_for_a_minute_without_trades(small_replay):
    simulated = SimulatedMarket(8, 7)
    thin = min(simulated.specs, key=lambda spec: spec.liquidity).info.market
    small_replay.set_clock(START, running=True, speed=60)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request([thin], is_only_realtime=True))
        messages = receive(ws, 12)
    end = START.replace(second=0) + timedelta(minutes=10)
    streamed = {m["candle_date_time_utc"] for m in messages if m["candle_date_time_utc"] < end.strftime("%Y-%m-%dT%H:%M:%S")}
    traded = {k for k in rest_candles(small_replay, thin, end, 10) if k >= "2025-09-03T12:35:00"}
    assert streamed - {"2025-09-03T12:34:00"} == traded
    assert len(traded) < 10, f"{thin} traded every minute; the test needs no-trade minutes"


@pytest.mark.parametrize(
    ("payload", "name"),
    [
        ("not json", "WRONG_FORMAT"),
        (json.dumps([{"type": "candle.1m", "codes": ["KRW-BTC"]}]), "NO_TICKET"),
        (json.dumps([{"ticket": "t"}]), "NO_TYPE"),
        (json.dumps([{"ticket": "t"}, {"type": "candle.1m"}]), "NO_CODES"),
        (json.dumps([{"ticket": "t"}, {"type": "ticker", "codes": ["KRW-BTC"]}]), "INVALID_PARAM"),
        (json.dumps([{"ticket": "t"}, {"type": "candle.1m", "codes": ["KRW-BTC"]}, {"format": "SIMPLE_LIST"}]), "INVALID_PARAM"),
    ],
)
def test_request_errors_use_upbits_names(small_replay, payload, name):
    with connect(small_replay.websocket_url) as ws:
        ws.send(payload)
        assert json.loads(ws.recv(timeout=5))["error"]["name"] == name


def test_limits_on_data_requests_and_origin(small_replay):
    with connect(small_replay.websocket_url) as ws:
        for _ in range(6):
            ws.send(request(["KRW-BTC"], is_only_realtime=True))
        errors = [m for m in receive(ws, 1) if "error" in m]
    assert [e["error"]["name"] for e in errors] == ["TOO_MANY_REQ"]
    with connect(small_replay.websocket_url, origin="https://example.com"):
        pass
    with pytest.raises(InvalidStatus) as refused:
        connect(small_replay.websocket_url, origin="https://example.com")
    assert refused.value.response.status_code == 429
    stats = small_replay.stats()["websocket"]
    assert stats["origin"] == 2 and stats["rejected_connections"] == 1
    assert httpx.get(f"{small_replay.url}/websocket/v1").status_code == 426


def test_disconnect_fault_drops_the_connection_without_a_close_frame(small_replay):
    small_replay.set_clock(START, running=True, speed=6)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC"]))
        receive(ws, 1)
        small_replay.inject("disconnect", path="/websocket/v1")
        with pytest.raises(ConnectionClosed) as closed:
            receive(ws, 5)
    assert closed.value.rcvd is None  # no close frame: the TCP connection was cut
    assert small_replay.stats()["websocket"]["dropped_disconnect"] == 1


def test_stall_fault_sends_nothing_and_answers_no_ping(small_replay):
    small_replay.set_clock(START, running=True, speed=1)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC"]))
        receive(ws, 1.5)
        stalled = small_replay.stats()["faults_fired"].get("stall", 0)
        small_replay.inject("stall", path="/websocket/v1", seconds=5)
        deadline = time.monotonic() + 5
        while small_replay.stats()["faults_fired"].get("stall", 0) == stalled:  # the connection's next tick takes it
            assert time.monotonic() < deadline, "the stall fault never fired"
            time.sleep(0.05)
        pong = ws.ping()
        assert not pong.wait(2)
        assert receive(ws, 0.5) == []
        assert pong.wait(5)  # answered once the stall ends
        assert receive(ws, 2)


def test_duplicate_and_out_of_order_faults(small_replay):
    small_replay.set_clock(START.replace(second=58), running=True, speed=1)
    small_replay.inject("duplicate", path="/websocket/v1", count=1)  # before subscribing: the first tick's message is the one sent twice
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC"], is_only_realtime=True))
        first = receive(ws, 1.5)
        small_replay.inject("out_of_order", path="/websocket/v1", count=None)
        later = receive(ws, 3)
    assert first[0] == first[1]
    minutes = [m["candle_date_time_utc"] for m in later]
    assert "2025-09-03T12:35:00" in minutes
    assert minutes.index("2025-09-03T12:35:00") < len(minutes) - 1 - minutes[::-1].index("2025-09-03T12:34:00")
    volumes = [(m["candle_date_time_utc"], m["candle_acc_trade_volume"]) for m in later]
    assert any(b < a for a, b in pairwise(volumes))  # a stale state after a newer one


def test_slow_consumer_is_dropped(small_replay):
    small_replay.set_clock(START, running=True, speed=20)
    small_replay.inject("slow_consumer", path="/websocket/v1", seconds=1)
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    host, port = small_replay.url.removeprefix("http://").split(":")
    sock.connect((host, int(port)))
    markets = [spec.info.market for spec in SimulatedMarket(8, 7).specs]
    with connect(small_replay.websocket_url, sock=sock, max_queue=1) as ws:
        ws.send(request(markets))
        deadline = time.monotonic() + 30
        while small_replay.stats()["websocket"]["dropped_slow_consumer"] == 0:  # this client never reads
            assert time.monotonic() < deadline, small_replay.stats()["websocket"]
            time.sleep(0.5)


def test_message_faults_alter_one_market_s_minute_and_rest_keeps_the_true_candle(small_replay):
    minute = "2025-09-03T12:35:00"
    small_replay.set_clock(START + timedelta(seconds=50), running=True, speed=6)  # a third into the minute: the wild state outweighs the final one
    small_replay.inject("outlier", path="/websocket/v1", market="KRW-BTC", minute=minute)
    small_replay.inject("alter", path="/websocket/v1", market="KRW-ETH", minute=minute, count=None)
    small_replay.inject("alter", path="/websocket/v1", market="KRW-XRP", minute=minute, count=None, variant="negative_price")
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC", "KRW-ETH", "KRW-XRP"], is_only_realtime=True))
        messages = receive(ws, 40, until=lambda m: m["code"] == "KRW-BTC" and m["candle_date_time_utc"] == "2025-09-03T12:36:00")
    of = {code: [m for m in messages if m["code"] == code and m["candle_date_time_utc"] == minute] for code in ("KRW-BTC", "KRW-ETH", "KRW-XRP")}
    true = {code: rest_candles(small_replay, code, START + timedelta(minutes=2), 2)[minute] for code in of}
    assert all(len(states) > 3 for states in of.values())
    btc = of["KRW-BTC"]
    assert len(btc) > 3 and btc[-1]["trade_price"] == true["KRW-BTC"]["trade_price"]
    assert btc[0]["high_price"] == pytest.approx(100 * btc[1]["high_price"], rel=0.05)  # one wild state, then the true ones
    assert btc[0]["candle_acc_trade_volume"] > btc[-1]["candle_acc_trade_volume"]  # it outweighs the final state
    assert all(m["trade_price"] > 0 for m in btc[1:])
    assert of["KRW-ETH"] and all(m["high_price"] != true["KRW-ETH"]["high_price"] for m in of["KRW-ETH"])
    assert of["KRW-ETH"][-1]["high_price"] == pytest.approx(1.01 * true["KRW-ETH"]["high_price"])
    assert of["KRW-XRP"] and all(m["trade_price"] < 0 for m in of["KRW-XRP"])
    assert all(m["trade_price"] > 0 for m in messages if m["candle_date_time_utc"] != minute)


def test_junk_fault_sends_frames_that_are_not_json(small_replay):
    small_replay.set_clock(START, running=True, speed=6)
    small_replay.inject("junk", path="/websocket/v1", count=3)
    with connect(small_replay.websocket_url) as ws:
        ws.send(request(["KRW-BTC"], is_only_realtime=True))
        frames = []
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(frames) < 8:
            frames.append(ws.recv(timeout=5))
    junk = [f for f in frames if not f.startswith(b"{")]
    assert len(junk) == 3 and all(f.startswith(b"\x00") for f in junk)
