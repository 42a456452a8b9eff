"""Upbit's quotation WebSocket (``/websocket/v1``) on the replay server: the ``candle.1m`` stream.

Served as Upbit documents it (request format, SNAPSHOT then REALTIME messages, DEFAULT/SIMPLE fields,
limits, idle timeout) so ``dantaro stream`` can be tested offline, with faults a live socket shows only
rarely; what it serves and each fault: docs/replay.md.
"""

from __future__ import annotations

import collections
import json
import math
import select
import socket
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np
from websockets.datastructures import Headers
from websockets.frames import Opcode
from websockets.http11 import Response
from websockets.protocol import State
from websockets.server import ServerProtocol

from dantaro_replay.core import Candles, CandleSource, iso_seconds
from dantaro_replay.faults import WEBSOCKET_PATH, Fault, FaultBook
from dantaro_replay.simulated import with_forming_last

CANDLE_TYPE = "candle.1m"
FORMATS = ("DEFAULT", "SIMPLE")
SIMPLE_NAMES = {
    "type": "ty",
    "code": "cd",
    "candle_date_time_utc": "cdttmu",
    "candle_date_time_kst": "cdttmk",
    "opening_price": "op",
    "high_price": "hp",
    "low_price": "lp",
    "trade_price": "tp",
    "candle_acc_trade_volume": "catv",
    "candle_acc_trade_price": "catp",
    "timestamp": "tms",
    "stream_type": "st",
}
CONNECTS_PER_SECOND = 5
REQUESTS_PER_SECOND = 5
REQUESTS_PER_MINUTE = 100
ORIGIN_SECONDS = 10.0
IDLE_TIMEOUT_SECONDS = 120.0
SLOW_CONSUMER_SECONDS = 10.0
MAX_CATCH_UP_MINUTES = 200
JUNK_FRAME = b"\x00not json"


@dataclass
class WebSocketStats:
    connections: int = 0
    rejected_connections: int = 0  # 429 on the handshake (connection rate or Origin)
    origin: int = 0
    requests: int = 0  # subscription messages received
    request_errors: int = 0
    messages: int = 0  # candle messages sent
    junk: int = 0  # frames that are not JSON (the junk fault)
    dropped_disconnect: int = 0
    dropped_slow_consumer: int = 0
    closed_idle: int = 0
    open: int = 0


class WebSocketGate:
    """Per-IP connection limits and the stream's counters, shared by the connection threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._connects: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._origin: dict[str, float] = {}
        self.stats = WebSocketStats()

    def admit(self, ip: str, has_origin: bool) -> bool:
        now = time.monotonic()
        with self._lock:
            self.stats.origin += has_origin
            window = self._connects[ip]
            while window and window[0] <= now - 1.0:
                window.popleft()
            if len(window) >= CONNECTS_PER_SECOND or (has_origin and now - self._origin.get(ip, -math.inf) < ORIGIN_SECONDS):
                self.stats.rejected_connections += 1
                return False
            window.append(now)
            if has_origin:
                self._origin[ip] = now
            self.stats.connections += 1
            self.stats.open += 1
            return True

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            setattr(self.stats, name, getattr(self.stats, name) + n)

    def reset(self) -> None:
        with self._lock:
            self._connects.clear()
            self._origin.clear()
            self.stats = WebSocketStats(open=self.stats.open)

    def snapshot(self) -> dict:
        with self._lock:
            return asdict(self.stats)


class SubscriptionError(ValueError):
    def __init__(self, name: str, message: str):
        super().__init__(message)
        self.body = {"error": {"name": name, "message": message}}


@dataclass(frozen=True)
class Subscription:
    codes: tuple[str, ...]
    simple: bool
    snapshot: bool
    realtime: bool


def parse_request(raw: str | bytes) -> Subscription:
    """One data request -> the candle subscription it asks for, or a SubscriptionError (Upbit's names)."""
    try:
        request = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        raise SubscriptionError("WRONG_FORMAT", "the request is not JSON") from None
    if not isinstance(request, list) or not all(isinstance(part, dict) for part in request):
        raise SubscriptionError("WRONG_FORMAT", "the request must be a JSON list of objects")
    if not any("ticket" in part for part in request):
        raise SubscriptionError("NO_TICKET", "the request has no ticket field")
    types = [part for part in request if "type" in part]
    if not types:
        raise SubscriptionError("NO_TYPE", "the request has no type field")
    formats = [part["format"] for part in request if "format" in part]
    fmt = formats[-1] if formats else "DEFAULT"
    if fmt not in FORMATS:
        raise SubscriptionError("INVALID_PARAM", f"format {fmt!r}: the replay serves {', '.join(FORMATS)}")
    codes: list[str] = []
    snapshot = realtime = True
    for part in types:
        if part["type"] != CANDLE_TYPE:
            raise SubscriptionError("INVALID_PARAM", f"type {part['type']!r}: the replay serves {CANDLE_TYPE} only")
        if not part.get("codes"):
            raise SubscriptionError("NO_CODES", "the type field has no codes")
        if not isinstance(part["codes"], list) or not all(isinstance(c, str) for c in part["codes"]):
            raise SubscriptionError("WRONG_FORMAT", "codes must be a list of strings")
        codes += part["codes"]
        snapshot = not part.get("is_only_realtime", False)
        realtime = not part.get("is_only_snapshot", False)
    return Subscription(tuple(dict.fromkeys(codes)), fmt == "SIMPLE", snapshot, realtime)


def candle_message(code: str, candle: Candles, stream_type: str, now: float, simple: bool) -> dict:
    """One candle message (the first candle of ``candle``) in DEFAULT or SIMPLE field names."""
    start = candle.start[:1]
    message = {
        "type": CANDLE_TYPE,
        "code": code,
        "candle_date_time_utc": str(iso_seconds(start)[0]),
        "candle_date_time_kst": str(iso_seconds(start + 9 * 3600)[0]),
        "opening_price": float(candle.open[0]),
        "high_price": float(candle.high[0]),
        "low_price": float(candle.low[0]),
        "trade_price": float(candle.close[0]),
        "candle_acc_trade_volume": float(np.round(candle.volume[:1], 8)[0]),  # as the REST candles round it
        "candle_acc_trade_price": float(candle.value[0]),
        "timestamp": int(now * 1000),
        "stream_type": stream_type,
    }
    return {SIMPLE_NAMES[k]: v for k, v in message.items()} if simple else message


class MinuteStates:
    """A market's minute candles as the stream tells them: forming at the clock, final once closed."""

    def __init__(self, source: CandleSource):
        self.source = source
        self._full: dict[tuple[str, int], Candles] = {}

    def full(self, code: str, minute: int) -> Candles:
        """The minute's complete candle (empty when nothing traded in it)."""
        key = (code, minute)
        if key not in self._full:
            if len(self._full) > 4096:
                self._full.clear()
            candles = self.source.candles(code, 1, minute + 60, 1, minute + 60)
            self._full[key] = candles if len(candles) and int(candles.start[-1]) == minute else Candles.empty()
        return self._full[key]

    def at(self, code: str, minute: int, now: float) -> Candles:
        """The minute as known at ``now``: forming before its end, complete after."""
        full = self.full(code, minute)
        if not len(full) or now >= minute + 60:
            return full
        return with_forming_last(full, (now - minute) / 60.0, now)

    def closed_since(self, code: str, first: int, minute: int) -> Candles:
        """Traded minutes with ``first <= start < minute``, complete."""
        count = min(MAX_CATCH_UP_MINUTES, max(1, (minute - first) // 60))
        return self.source.candles(code, 1, minute, count, minute).since(first)


def altered(candle: Candles, fault: Fault) -> Candles:
    """The first candle of ``candle`` as a message fault sends it (see the module's fault list)."""
    one = candle.take(slice(0, 1))
    prices = {name: getattr(one, name).copy() for name in ("open", "high", "low", "close")}
    volume, value = one.volume.copy(), one.value.copy()
    if fault.kind == "outlier":
        prices = {name: array * 100 for name, array in prices.items()}
        volume, value = volume * 1000, value * 1000
    elif fault.variant == "scale":
        prices = {name: array * 1.01 for name, array in prices.items()}
        value = value * 1.01
    else:  # negative_price
        prices["close"] = -prices["close"]
    return Candles(one.start, prices["open"], prices["high"], prices["low"], prices["close"], volume, value, one.last_trade_ms)


def _values(candle: Candles) -> tuple:
    return (int(candle.start[0]), float(candle.open[0]), float(candle.high[0]), float(candle.low[0]),
            float(candle.close[0]), float(candle.volume[0]), float(candle.value[0]))


class CandleStreamConnection:
    """One client connection: handshake done by the caller, then subscriptions, ticks and faults."""

    def __init__(self, sock: socket.socket, protocol: ServerProtocol, *, source: CandleSource, clock, faults: FaultBook,
                 gate: WebSocketGate):
        self.sock = sock
        self.protocol = protocol
        self.states = MinuteStates(source)
        self.clock = clock
        self.faults = faults
        self.gate = gate
        self.subscription: Subscription | None = None
        self.known = source.has_market
        self.handled: dict[str, int] = {}  # code -> the minute last ticked
        self.sent: dict[str, tuple] = {}  # code -> values of the last message sent
        self.previous: dict[str, bytes] = {}  # code -> the last message sent (for out_of_order)
        self.outbox = bytearray()
        self.outbox_since: float | None = None
        self.slow_seconds = SLOW_CONSUMER_SECONDS
        self.requests: collections.deque = collections.deque()
        self.last_activity = time.monotonic()

    # --- loop ---
    def serve(self) -> None:
        self.sock.setblocking(False)
        next_tick = time.monotonic()
        try:
            while self.protocol.state is not State.CLOSED:
                timeout = max(0.0, next_tick - time.monotonic())
                readable, _, _ = select.select([self.sock], [self.sock] if self.outbox else [], [], timeout)
                if readable and not self._receive():
                    break
                if not self._flush():  # a subscription's answer leaves before the next tick, whose fault may cut the connection
                    return
                if time.monotonic() >= next_tick:
                    if not self._tick():
                        return
                    next_tick = max(next_tick + self._tick_seconds(), time.monotonic())
                if not self._flush():
                    return
                if time.monotonic() - self.last_activity > IDLE_TIMEOUT_SECONDS:
                    self.gate.count("closed_idle")
                    self.protocol.send_close(1000, "idle timeout")
                    self._flush()
                    break
        except OSError:
            pass
        finally:
            self.gate.count("open", -1)
            self._drop()

    def _tick_seconds(self) -> float:
        """One stream tick per second of the replay clock, at most 20 a real second."""
        return max(0.05, 1.0 / self.clock.speed)

    def _receive(self) -> bool:
        try:
            data = self.sock.recv(65536)
        except BlockingIOError:
            return True
        if not data:
            self.protocol.receive_eof()
            return False
        self.last_activity = time.monotonic()
        self.protocol.receive_data(data)
        for frame in self.protocol.events_received():
            if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                self._request(frame.data)
        return True

    def _request(self, raw: bytes) -> None:
        now = time.monotonic()
        self.gate.count("requests")
        while self.requests and self.requests[0] <= now - 60.0:
            self.requests.popleft()
        last_second = sum(1 for t in self.requests if t > now - 1.0)
        self.requests.append(now)
        try:
            if last_second >= REQUESTS_PER_SECOND or len(self.requests) > REQUESTS_PER_MINUTE:
                raise SubscriptionError("TOO_MANY_REQ", "too many requests on this connection (5 a second, 100 a minute)")
            subscription = parse_request(raw)
        except SubscriptionError as error:
            self.gate.count("request_errors")
            self.protocol.send_binary(json.dumps(error.body).encode())
            return
        self.subscription = replace(subscription, codes=tuple(c for c in subscription.codes if self.known(c)))
        self.handled.clear()
        self.sent.clear()
        if self.subscription.snapshot:
            self._snapshot()

    def _snapshot(self) -> None:
        now = self.clock.now()
        minute = int(now // 60 * 60)
        for code in self.subscription.codes:
            candle = self.states.at(code, minute, now)
            if not len(candle):
                candle = self.states.closed_since(code, minute - 60 * MAX_CATCH_UP_MINUTES, minute)
                candle = candle.take(slice(-1, None))
            if len(candle):
                self._send(code, candle, "SNAPSHOT", now)
            self.handled[code] = minute

    # --- ticks ---
    def _tick(self) -> bool:
        sub = self.subscription
        if sub is None:
            return True
        fault = self.faults.take(WEBSOCKET_PATH, list(sub.codes))
        if fault is not None:
            if fault.kind == "disconnect":
                self.gate.count("dropped_disconnect")
                self._drop()
                return False
            if fault.kind == "stall":
                time.sleep(fault.seconds)
                return True
            if fault.kind == "slow_consumer":
                self.slow_seconds = fault.seconds
                self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        if not sub.realtime:
            return True
        now = self.clock.now()
        minute = int(now // 60 * 60)
        messages: list[tuple[str, bytes]] = []
        for code in sub.codes:
            first = self.handled.get(code, minute)
            if first < minute:
                closed = self.states.closed_since(code, first, minute)
                for i in range(len(closed)):
                    messages += self._message(code, closed.take(slice(i, i + 1)), now)
            candle = self.states.at(code, minute, now)
            if len(candle):
                messages += self._message(code, candle, now)
            self.handled[code] = minute
        if fault is not None and fault.kind == "out_of_order":
            stale = [(code, self.previous[code]) for code, _ in messages if code in self.previous]
            messages = messages[::-1] + stale
        for code, payload in messages:
            if fault is not None and fault.kind == "junk":
                self.protocol.send_binary(JUNK_FRAME)
                self.gate.count("junk")
            self._send_payload(code, payload, twice=fault is not None and fault.kind == "duplicate")
        return True

    def _message(self, code: str, candle: Candles, now: float) -> list[tuple[str, bytes]]:
        values = _values(candle)
        if self.sent.get(code) == values:
            return []
        self.sent[code] = values
        return [(code, self._encode(code, candle, "REALTIME", now))]

    def _send(self, code: str, candle: Candles, stream_type: str, now: float) -> None:
        self.sent[code] = _values(candle)
        self._send_payload(code, self._encode(code, candle, stream_type, now))

    def _encode(self, code: str, candle: Candles, stream_type: str, now: float) -> bytes:
        """One candle message, altered when a message fault matches its market and minute."""
        fault = self.faults.take(WEBSOCKET_PATH, [code], minute=int(candle.start[0]))
        if fault is not None:
            candle = altered(candle, fault)
        return json.dumps(candle_message(code, candle, stream_type, now, self.subscription.simple)).encode()

    def _send_payload(self, code: str, payload: bytes, twice: bool = False) -> None:
        for _ in range(2 if twice else 1):
            self.protocol.send_binary(payload)
            self.gate.count("messages")
        self.previous[code] = payload
        self.last_activity = time.monotonic()

    # --- socket ---
    def _flush(self) -> bool:
        """Send what the socket takes; False once the consumer is dropped as too slow."""
        for data in self.protocol.data_to_send():
            if data:
                self.outbox += data
            else:  # the protocol asks for the write side to be closed
                self.sock.shutdown(socket.SHUT_WR)
        if self.outbox:
            try:
                sent = self.sock.send(self.outbox)
                del self.outbox[:sent]
            except (BlockingIOError, InterruptedError):
                pass
        if not self.outbox:
            self.outbox_since = None
            return True
        self.outbox_since = self.outbox_since or time.monotonic()
        if time.monotonic() - self.outbox_since > self.slow_seconds:
            self.gate.count("dropped_slow_consumer")
            self._drop()
            return False
        return True

    def _drop(self) -> None:
        try:
            self.sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass


def handshake(sock: socket.socket, path: str, headers: list[tuple[str, str]]) -> ServerProtocol | None:
    """Answer the HTTP upgrade already read by the HTTP server; the open protocol, or None if refused."""
    protocol = ServerProtocol()
    # The protocol parses the request itself (its parser then reads frames): replay what the HTTP server read.
    raw = f"GET {path} HTTP/1.1\r\n" + "".join(f"{name}: {value}\r\n" for name, value in headers) + "\r\n"
    protocol.receive_data(raw.encode("latin-1"))
    [request] = protocol.events_received()
    response = protocol.accept(request)
    protocol.send_response(response)
    sock.sendall(b"".join(protocol.data_to_send()))
    return protocol if response.status_code == 101 else None


def reject(sock: socket.socket, status: int, message: str) -> None:
    body = json.dumps({"error": {"name": status, "message": message}}).encode()
    response = Response(status, "Too Many Requests" if status == 429 else "Bad Request",
                        Headers([("Content-Type", "application/json"), ("Content-Length", str(len(body))), ("Connection", "close")]), body)
    sock.sendall(response.serialize())


def serve_websocket(sock: socket.socket, client_ip: str, path: str, headers: list[tuple[str, str]], *, source: CandleSource,
                    clock, faults: FaultBook, gate: WebSocketGate) -> None:
    """Serve one WebSocket connection on ``sock`` until it closes."""
    names = {name.lower() for name, _ in headers}
    if not gate.admit(client_ip, "origin" in names):
        reject(sock, 429, "Too many connection requests (5 a second; 1 per 10 s with an Origin header).")
        return
    protocol = handshake(sock, path, headers)
    if protocol is None:
        gate.count("open", -1)
        return
    CandleStreamConnection(sock, protocol, source=source, clock=clock, faults=faults, gate=gate).serve()
