"""Offline Upbit quotation API: a loopback HTTP server replaying a simulated or recorded market.

``dantaro replay`` (or ``python -m dantaro_replay``) prints one line with its URL when ready; besides
Upbit's ``/v1`` endpoints it serves a control API under ``/_replay`` (clock, faults, statistics). The
stdlib ``ThreadingHTTPServer`` is used on purpose: a fault can cut a response or drop the socket,
which ASGI servers hide.
"""

from __future__ import annotations

import argparse
import json
import re
import signal
import socket
import sys
import threading
import time
from datetime import UTC, datetime
from email.utils import formatdate
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from dantaro_replay.core import DAY_MINUTES, MINUTE_UNITS, CandleSource
from dantaro_replay.faults import (
    BAD_BOOK_VARIANTS,
    BAD_CANDLE_VARIANTS,
    Fault,
    FaultBook,
    RateLimiter,
)
from dantaro_replay.payloads import (
    BOOK_UNITS,
    candle_entries,
    instrument_entry,
    market_entry,
    orderbook_entry,
    ticker_entry,
)
from dantaro_replay.websocket import (
    WEBSOCKET_PATH,
    WebSocketGate,
    serve_websocket,
)


def dumps_with_literals(value: object) -> bytes:
    """JSON with non-finite floats written as ``NaN`` / ``Infinity``, literals Python's json reads back (orjson writes null)."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode()


try:
    import orjson

    def dumps(value: object) -> bytes:
        return orjson.dumps(value)
except ImportError:  # pragma: no cover - orjson is optional
    dumps = dumps_with_literals


MAX_CANDLES = 200
_NAIVE_OFFSET = re.compile(r"^(.*[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?) (\d{2}:?\d{2})$")


class RequestError(Exception):
    """An Upbit-style error response: ``{"error": {"name": <name>, "message": <message>}}``."""

    def __init__(self, status: int, message: str, name: int | str | None = None):
        super().__init__(message)
        self.status = status
        self.body = {"error": {"name": status if name is None else name, "message": message}}


def parse_time(text: str) -> float:
    """Upbit's ``to``: ISO-8601 with ``T`` or a space, read as UTC unless it carries an offset.

    A ``+09:00`` that reached us unencoded arrives as `` 09:00`` (a query-string space); it is
    read as the offset it was meant to be.
    """
    raw = text.strip()
    unescaped = _NAIVE_OFFSET.match(raw)
    if unescaped:
        raw = f"{unescaped.group(1)}+{unescaped.group(2)}"
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    try:
        moment = datetime.fromisoformat(raw)
    except ValueError:
        raise RequestError(400, f"invalid time {text!r}: use e.g. 2025-09-01T00:00:00, ...Z or ...+09:00") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


class Clock:
    """The replay clock: the real time, or a set instant that stays frozen or runs on from there,
    ``speed`` replay seconds per real second (a recorded hour streams in a minute at speed 60)."""

    def __init__(self, start: float | None = None, running: bool = False, speed: float = 1.0):
        self._lock = threading.Lock()
        self.set(start, running, speed)

    def set(self, start: float | None, running: bool = False, speed: float = 1.0) -> None:
        if not speed > 0:
            raise ValueError(f"clock speed must be positive, got {speed!r}")
        with self._lock:
            self._start, self._running, self._speed, self._set_at = start, running, float(speed), time.time()

    def settings(self) -> tuple[float | None, bool, float]:
        """What was set: (start or None for real time, running, speed)."""
        with self._lock:
            return self._start, self._running, self._speed

    @property
    def speed(self) -> float:
        """Replay seconds per real second (1 for the real time and a frozen clock)."""
        with self._lock:
            return self._speed if self._start is not None and self._running else 1.0

    def now(self) -> float:
        with self._lock:
            if self._start is None:
                return time.time()
            return self._start + ((time.time() - self._set_at) * self._speed if self._running else 0.0)

    def describe(self) -> dict:
        now = self.now()
        start, running, speed = self.settings()
        mode = "real" if start is None else "running" if running else "frozen"
        described = {"now": datetime.fromtimestamp(now, tz=UTC).isoformat().replace("+00:00", "Z"), "mode": mode}
        if mode == "running":
            described["speed"] = speed
        return described


class ReplayState:
    """Everything the request threads share."""

    def __init__(self, source: CandleSource, clock: Clock, limiter: RateLimiter, description: str):
        self.source = source
        self.clock = clock
        self.initial_clock = clock.settings()
        self.limiter = limiter
        self.faults = FaultBook()
        self.websocket = WebSocketGate()
        self.description = description
        self.started = time.time()

    def reset(self) -> None:
        self.clock.set(*self.initial_clock)
        self.faults.clear()
        self.faults.reset_counts()
        self.limiter.reset()
        self.websocket.reset()

    def stats(self) -> dict:
        return {
            "groups": self.limiter.snapshot(),
            "websocket": self.websocket.snapshot(),
            "faults_fired": dict(self.faults.fired),
            "active_faults": self.faults.snapshot(),
            "clock": self.clock.describe(),
            "source": self.description,
            "uptime_seconds": round(time.time() - self.started, 3),
        }


def _group(path: str) -> str:
    if path == "/v1/market/all":
        return "market"
    if path.startswith("/v1/candles/"):
        return "candles"
    if path in ("/v1/ticker", "/v1/ticker/all"):
        return "ticker"
    if path.startswith("/v1/orderbook"):
        return "orderbook"
    return "default"


def _single(query: dict[str, list[str]], name: str, default: str | None = None) -> str | None:
    values = query.get(name)
    return values[-1] if values else default


class UpbitHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go out in separate writes: avoid the 40 ms delayed-ACK stall

    def version_string(self) -> str:
        return "dantaro-replay"

    def date_time_string(self, timestamp: float | None = None) -> str:
        """The ``Date`` header tells the replay clock, so clients judge forming candles by it."""
        return formatdate(self.state.clock.now() if timestamp is None else timestamp, usegmt=True)
    state: ReplayState  # set on the subclass built by make_server

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: a benchmark makes thousands of requests; /_replay/stats counts them instead."""

    # --- plumbing ---
    def _send(self, status: int, body: bytes, headers: dict[str, str] | None = None, declared_length: int | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json;charset=UTF-8")
        self.send_header("Content-Length", str(len(body) if declared_length is None else declared_length))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def _send_json(self, status: int, value: object, headers: dict[str, str] | None = None) -> None:
        self._send(status, dumps(value), headers)

    def _read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        if not raw.strip():
            return {}
        try:
            value = json.loads(raw)
        except json.JSONDecodeError as error:
            raise RequestError(400, f"body is not JSON: {error}") from None
        if not isinstance(value, dict):
            raise RequestError(400, "body must be a JSON object")
        return value

    # --- verbs ---
    def do_GET(self) -> None:
        url = urlsplit(self.path)
        if url.path.startswith("/_replay/"):
            self._control("GET", url.path)
        elif url.path == WEBSOCKET_PATH:
            self._websocket()
        else:
            self._upbit(url.path, parse_qs(url.query, keep_blank_values=True))

    def do_POST(self) -> None:
        self._control("POST", urlsplit(self.path).path)

    def do_DELETE(self) -> None:
        self._control("DELETE", urlsplit(self.path).path)

    # --- control API ---
    def _control(self, method: str, path: str) -> None:
        state = self.state
        try:
            if (method, path) == ("GET", "/_replay/health"):
                self._send_json(200, {"ok": True, "source": state.description})
            elif (method, path) == ("GET", "/_replay/stats"):
                self._send_json(200, state.stats())
            elif (method, path) == ("POST", "/_replay/stats/reset"):
                state.limiter.reset_stats()
                state.faults.reset_counts()
                state.websocket.reset()
                self._send_json(200, state.stats())
            elif (method, path) == ("POST", "/_replay/reset"):
                state.reset()
                self._send_json(200, state.stats())
            elif (method, path) == ("GET", "/_replay/faults"):
                self._send_json(200, state.faults.snapshot())
            elif (method, path) == ("POST", "/_replay/faults"):
                body = self._read_json()
                try:
                    specs = body.get("faults", [body])
                    added = [state.faults.add(spec) for spec in specs]
                except (ValueError, TypeError) as error:
                    raise RequestError(400, str(error)) from None
                self._send_json(200, [vars(f) for f in added])
            elif (method, path) == ("DELETE", "/_replay/faults"):
                state.faults.clear()
                self._send_json(200, [])
            elif (method, path) == ("GET", "/_replay/clock"):
                self._send_json(200, state.clock.describe())
            elif (method, path) == ("POST", "/_replay/clock"):
                body = self._read_json()
                now = body.get("now")
                speed = body.get("speed", 1.0)
                if isinstance(speed, bool) or not isinstance(speed, (int, float)) or not speed > 0:
                    raise RequestError(400, f"speed must be a positive number, got {speed!r}")
                state.clock.set(None if now is None else parse_time(str(now)), bool(body.get("running", False)), speed)
                self._send_json(200, state.clock.describe())
            else:
                raise RequestError(404, f"no control endpoint {method} {path}")
        except RequestError as error:
            self._send_json(error.status, error.body)

    # --- Upbit WebSocket ---
    def _websocket(self) -> None:
        """Hand the connection to the candle stream after an HTTP upgrade (426 without one)."""
        self.close_connection = True
        if (self.headers.get("Upgrade") or "").lower() != "websocket":
            self._send_json(426, {"error": {"name": 426, "message": "WebSocket upgrade required"}})
            return
        state = self.state
        serve_websocket(self.connection, self.client_address[0], self.path, list(self.headers.items()),
                        source=state.source, clock=state.clock, faults=state.faults, gate=state.websocket)

    # --- Upbit API ---
    def _upbit(self, path: str, query: dict[str, list[str]]) -> None:
        state = self.state
        group = _group(path)
        decision = state.limiter.admit(self.client_address[0], group, bool(self.headers.get("Origin")))
        headers = {"Remaining-Req": f"group={group}; min=600; sec={decision.remaining}", "Limit-By-Ip": "Yes"}
        if decision.status == 429:
            self._too_many(headers)
            return
        if decision.status == 418:
            self._blocked(decision.retry_after, headers)
            return
        markets = [m for value in query.get("market", []) + query.get("markets", []) for m in value.split(",") if m]
        fault = state.faults.take(path, markets)
        if fault is not None:
            state.limiter.count(group, "faults")
            if fault.kind == "latency":
                time.sleep(fault.seconds)
            elif self._fail(fault, headers):
                return
        try:
            body = self._answer(path, query)
        except RequestError as error:
            state.limiter.count(group, "other_errors")
            self._send_json(error.status, error.body, headers)
            return
        state.limiter.count(group, "ok")
        spoiled = fault is not None and ((fault.kind == "bad_candle" and path.startswith("/v1/candles/"))
                                         or (fault.kind == "bad_book" and path == "/v1/orderbook"))
        if spoiled and isinstance(body, list) and body:
            body = [dict(entry) for entry in body]  # the fault spoils the first entry of a copy
            if fault.kind == "bad_candle":
                _spoil_candles(body, fault.variant or BAD_CANDLE_VARIANTS[0])
            else:
                _spoil_book(body, fault.variant or BAD_BOOK_VARIANTS[0])
        payload = dumps_with_literals(body) if spoiled else dumps(body)
        if fault is None or fault.kind in ("latency", "bad_candle", "bad_book"):
            self._send(200, payload, headers)
        elif fault.kind == "malformed":
            middle = len(payload) // 2
            self._send(200, payload[:middle] + b'",}{' + payload[middle:], headers)
        elif fault.kind == "truncated":
            self._send(200, payload[: max(1, len(payload) // 2)], headers, declared_length=len(payload))
            self.close_connection = True
        elif fault.kind == "empty":
            self._send(200, b"[]" if fault.variant == "list" else b"", headers)

    def _too_many(self, headers: dict[str, str]) -> None:
        """Upbit documents only the status; no 429 body was ever recorded, so this one is modelled."""
        self._send_json(429, {"error": {"name": "too_many_requests", "message": "Too many API requests."}}, headers)

    def _blocked(self, seconds: float, headers: dict[str, str]) -> None:
        """418: Upbit says the block's duration in the message; the client reads "blocked for N seconds"."""
        message = f"Your IP has been blocked for {max(1, round(seconds))} seconds due to too many requests."
        self._send_json(418, {"error": {"name": 418, "message": message}}, headers)

    def _fail(self, fault: Fault, headers: dict[str, str]) -> bool:
        """Answer instead of the endpoint for status and connection faults; True when answered."""
        if fault.kind == "429":
            self._too_many(headers)
        elif fault.kind == "418":
            self.state.limiter.block(self.client_address[0], fault.seconds)
            self._blocked(fault.seconds, headers)
        elif fault.kind == "500":
            self._send_json(500, {"error": {"name": 500, "message": "Internal Server Error"}}, headers)
        elif fault.kind == "503":
            body = b"<html><body><h1>503 Service Temporarily Unavailable</h1></body></html>"
            self.send_response(503)
            self.send_header("Content-Type", "text/html")
            self.send_header("Content-Length", str(len(body)))
            for name, value in headers.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)
        elif fault.kind == "drop":
            self.close_connection = True
            try:
                self.connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        else:
            return False
        return True

    def _answer(self, path: str, query: dict[str, list[str]]) -> object:
        state = self.state
        source = state.source
        now = state.clock.now()
        if path == "/v1/market/all":
            details = (_single(query, "isDetails") or _single(query, "is_details") or "false").lower() == "true"
            return [market_entry(info, details) for info in source.markets(now)]
        if path == "/v1/ticker":
            codes = _codes(query, source)
            return [ticker_entry(source, code, now) for code in codes]
        if path == "/v1/ticker/all":
            quotes = [q.strip() for q in (_single(query, "quote_currencies") or "").split(",") if q.strip()]
            if not quotes:
                raise RequestError(400, "quote_currencies is required (e.g. quote_currencies=KRW)")
            return [ticker_entry(source, info.market, now) for info in source.markets(now) if info.market.split("-")[0] in quotes]
        if path == "/v1/orderbook":
            codes = _codes(query, source)
            if (_single(query, "level") or "0").strip() not in ("0", "0.0"):
                return []  # grouped levels are not modelled; Upbit answers an unsupported level with []
            count = _single(query, "count", "")
            units = int(count) if count.isdigit() and 1 <= int(count) <= BOOK_UNITS else BOOK_UNITS  # out of range: the default
            return [orderbook_entry(source, code, now, units) for code in codes]
        if path == "/v1/orderbook/instruments":
            codes = _codes(query, source)
            return [instrument_entry(source, code, now) for code in codes]
        if path == "/v1/candles/days":
            return self._candles(query, DAY_MINUTES, now)
        if path.startswith("/v1/candles/minutes/"):
            unit_text = path.rsplit("/", 1)[1]
            if not unit_text.isdigit() or int(unit_text) not in MINUTE_UNITS:
                raise RequestError(400, "specified unit is not valid.")
            return self._candles(query, int(unit_text), now)
        raise RequestError(404, "Not Found")

    def _candles(self, query: dict[str, list[str]], unit_minutes: int, now: float) -> list[dict]:
        source = self.state.source
        market = _single(query, "market")
        if not market:
            raise RequestError(400, "market is required")
        if not source.has_market(market):
            raise RequestError(404, "Code not found")
        count_text = _single(query, "count", "1")
        if not count_text.isdigit() or int(count_text) < 1:
            raise RequestError(400, f"count must be a positive integer, got {count_text!r}")
        count = min(int(count_text), MAX_CANDLES)
        to_text = _single(query, "to")
        end = parse_time(to_text) if to_text else now
        wanted = count + 1 if unit_minutes == DAY_MINUTES else count
        candles = source.candles(market, unit_minutes, end, wanted, now)
        prev_close = None
        if unit_minutes == DAY_MINUTES and len(candles) > count:
            prev_close = float(candles.close[0])
            candles = candles.take(slice(1, None))
        return candle_entries(market, candles, unit_minutes, prev_close)


def _codes(query: dict[str, list[str]], source: CandleSource) -> list[str]:
    """The ``markets`` list of ticker, orderbook and instruments requests: 400 without one, 404 if any code is unknown
    (one unknown code fails the whole request, as on Upbit)."""
    codes = [c.strip() for c in (_single(query, "markets") or "").split(",") if c.strip()]
    if not codes:
        raise RequestError(400, "markets is required (e.g. markets=KRW-BTC,KRW-ETH)")
    if not all(source.has_market(code) for code in codes):
        raise RequestError(404, "Code not found")
    return codes


def _spoil_candles(entries: list[dict], variant: str) -> None:
    """The bad_candle fault: one invalid candle in an otherwise normal page."""
    first = entries[0]
    if variant == "high_low":
        first["high_price"], first["low_price"] = first["low_price"] - 1, first["high_price"] + 1
    elif variant == "missing_field":
        del first["trade_price"]
    elif variant == "negative_price":
        first["low_price"] = -abs(first["low_price"])
    elif variant == "duplicate_timestamp":
        entries.insert(1, dict(first))
    elif variant == "infinite_price":
        first["trade_price"] = float("inf")
    elif variant == "nan_volume":
        first["candle_acc_trade_volume"] = float("nan")


def _spoil_book(entries: list[dict], variant: str) -> None:
    """The bad_book fault: the first book of the answer made unusable for a buyer."""
    first = entries[0]
    units = [dict(u) for u in first["orderbook_units"]]
    if variant == "crossed_book":
        units[0]["ask_price"], units[0]["bid_price"] = units[0]["bid_price"], units[0]["ask_price"]
    elif variant == "infinite_price":
        units[0]["ask_price"] = float("inf")
    elif variant == "no_units":
        units = []
    first["orderbook_units"] = units


class ReplayHTTPServer(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128  # the default backlog of 5 drops SYNs when many clients connect at once


def make_server(state: ReplayState, host: str, port: int) -> ReplayHTTPServer:
    handler = type("BoundUpbitHandler", (UpbitHandler,), {"state": state})
    return ReplayHTTPServer((host, port), handler)


def _build_source(args: argparse.Namespace) -> tuple[CandleSource, str]:
    if args.data:
        from dantaro_replay.recorded import RecordedMarket

        source = RecordedMarket(Path(args.data))
        return source, f"recorded {args.data} ({len(source.markets(0))} markets)"
    from dantaro_replay.simulated import SimulatedMarket

    return SimulatedMarket(args.simulated, args.seed), f"simulated {args.simulated} markets, seed {args.seed}"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dantaro replay", description="Offline Upbit quotation API (simulated or recorded market).")
    parser.add_argument("--host", default="127.0.0.1", help="interface to listen on (default 127.0.0.1)")
    parser.add_argument("--port", type=int, default=8765, help="port; 0 picks a free one (default 8765)")
    data = parser.add_mutually_exclusive_group()
    data.add_argument("--simulated", type=int, default=250, metavar="N", help="simulate N KRW markets (default 250)")
    data.add_argument("--data", metavar="DIR", help="replay recorded candles_1m/1h/1d.parquet from DIR instead")
    parser.add_argument("--seed", type=int, default=7, help="seed of the simulated market (default 7)")
    parser.add_argument("--clock", metavar="ISO", help="frozen replay clock (default: real time when simulated, end of the data when recorded)")
    parser.add_argument("--clock-running", action="store_true", help="let the clock set by --clock run on in real time")
    parser.add_argument("--clock-speed", type=float, default=1.0, metavar="X", help="replay seconds per real second of a running clock (default 1)")
    parser.add_argument("--rate-limit", type=int, default=10, metavar="N", help="requests per second per group and client IP; 0 = off (default 10)")
    parser.add_argument("--block-after", type=int, default=20, metavar="N", help="429s within 10 s that get the IP blocked with 418 (default 20)")
    parser.add_argument("--block-seconds", type=float, default=30.0, metavar="S", help="how long a block lasts (default 30)")
    parser.add_argument("--fault", action="append", default=[], metavar="JSON",
                        help='fault active from start-up, e.g. \'{"kind": "500", "path": "/v1/ticker", "count": 3}\' (repeatable)')
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.rate_limit < 0 or args.block_after < 0 or args.block_seconds < 0:
        parser.error("--rate-limit, --block-after and --block-seconds must not be negative")
    try:
        start = parse_time(args.clock) if args.clock else None
    except RequestError as error:
        parser.error(f"--clock: {error}")
    try:
        source, description = _build_source(args)
    except (OSError, ValueError) as error:
        parser.error(str(error))
    if not args.clock_speed > 0:
        parser.error("--clock-speed must be positive")
    clock = Clock(start if args.clock else source.default_clock(), running=args.clock_running and bool(args.clock), speed=args.clock_speed)
    state = ReplayState(source, clock, RateLimiter(args.rate_limit, args.block_after, args.block_seconds), description)
    for spec in args.fault:
        try:
            state.faults.add(json.loads(spec))
        except (ValueError, TypeError) as error:
            parser.error(f"--fault {spec!r}: {error}")
    try:
        server = make_server(state, args.host, args.port)
    except OSError as error:
        parser.error(f"cannot listen on {args.host}:{args.port}: {error}")
    host, port = server.server_address[:2]
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    print(f"Upbit replay listening on http://{host}:{port} ({description}; clock {clock.describe()['now']} {clock.describe()['mode']})", flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
