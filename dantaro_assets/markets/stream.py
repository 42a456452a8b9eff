"""``dantaro stream``: closed 1-minute candles from Upbit's WebSocket into ``candles_1m`` as each minute closes.

Dagster is not a stream processor, so the stream runs beside it as a service and records into it (runless
materialisations, its health and seen windows in Postgres). A minute is written once closed, through the
REST path's parsing, schema and merge; doubtful minutes are left to REST. How and why: docs/stream.md.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import signal
import time
import uuid
from dataclasses import dataclass, field
from statistics import median
from typing import NamedTuple

import adbc_driver_manager
import dagster as dg
import pandas as pd
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidHandshake, WebSocketException

from dantaro_assets.lib.checks import pandera_check, require_passed
from dantaro_assets.lib.log_throttle import ThrottledLog
from dantaro_assets.lib.postgres import PostgresUnavailableError
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, table_exists
from dantaro_assets.lib.upbit import UpbitError, interval
from dantaro_assets.lib.upbit.parsing import empty_candles, empty_quarantine, parse_candle_page
from dantaro_assets.markets.schemas import candles_schema
from dantaro_assets.markets.seen import RecordUnreadable, SeenStore, StreamHealth, Window, ceil_minute, floor_minute
from dantaro_assets.redaction import redact_text, redact_url

log = logging.getLogger("dantaro.stream")

ASSET = "candles_1m"
ENDPOINT = "/websocket/v1 candle.1m"
MINUTE = interval("minute1")
PING_SECONDS = 20.0
PUBLISH_SECONDS = 1.0
UNIVERSE_POLL_SECONDS = 1.0  # while no universe is stored yet (a first start): how often the stream looks for one
BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
KEEP_WRITTEN_SECONDS = 2 * 3600
# A minute whose high passes this many times the price next to it (or whose low falls below it divided
# by this) is doubtful: KRW markets move a few percent a minute; a listing's first minutes have no neighbour.
IMPLAUSIBLE_JUMP = 2.0
# SIMPLE -> DEFAULT field names (Upbit's candle WebSocket reference); "code" is REST's "market".
DEFAULT_NAMES = {
    "ty": "type", "cd": "code", "cdttmu": "candle_date_time_utc", "cdttmk": "candle_date_time_kst",
    "op": "opening_price", "hp": "high_price", "lp": "low_price", "tp": "trade_price",
    "catv": "candle_acc_trade_volume", "catp": "candle_acc_trade_price", "tms": "timestamp", "st": "stream_type",
}


def websocket_url(base_url: str) -> str:
    """Upbit's quotation WebSocket beside its REST base URL: ``https://api.upbit.com`` ->
    ``wss://api.upbit.com/websocket/v1`` (the replay server serves both on one port)."""
    scheme, rest = base_url.rstrip("/").split("://", 1)
    return f"{'wss' if scheme == 'https' else 'ws'}://{rest}/websocket/v1"


def subscription(codes: list[str]) -> str:
    return json.dumps([{"ticket": f"dantaro-{uuid.uuid4()}"}, {"type": "candle.1m", "codes": codes}, {"format": "SIMPLE"}])


def rest_fields(message: dict) -> dict | None:
    """A candle message in REST's field names (``market`` for ``code``); None for anything else."""
    named = {DEFAULT_NAMES.get(k, k): v for k, v in message.items()}
    if named.get("type") != "candle.1m" or "code" not in named:
        return None
    named["market"] = named.pop("code")
    return named


def _minute_start(message: dict) -> int | None:
    try:
        return int(pd.Timestamp(message["candle_date_time_utc"], tz="UTC").timestamp())
    except (KeyError, TypeError, ValueError):
        return None


def _number(value: object) -> float | None:
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None


class State(NamedTuple):
    """A minute's state as one message tells it; None fields when the message lacks them (the parser quarantines those)."""

    stamp: float | None
    volume: float | None
    open: float | None
    high: float | None
    low: float | None
    close: float | None
    value: float | None

    @classmethod
    def of(cls, message: dict) -> State:
        fields = ("timestamp", "candle_acc_trade_volume", "opening_price", "high_price", "low_price", "trade_price", "candle_acc_trade_price")
        return cls(*(_number(message.get(name)) for name in fields))

    def order(self) -> tuple[float, float]:
        """How new the state is: Upbit's message time, then (a tie) the traded volume, which only grows."""
        return (self.stamp if self.stamp is not None else -1.0, self.volume if self.volume is not None else -1.0)


def disagreement(older: State, newer: State) -> str | None:
    """Why two states cannot be one minute's, older then newer: a minute only accumulates trades."""
    if None in older or None in newer:
        return None  # the parser judges a state with missing fields
    tolerance = 1e-9
    if newer.open != older.open:
        return f"open changed from {older.open:g} to {newer.open:g} within the minute"
    if newer.high < older.high * (1 - tolerance) or newer.low > older.low * (1 + tolerance):
        return f"range shrank from {older.low:g}-{older.high:g} to {newer.low:g}-{newer.high:g} within the minute"
    if newer.volume < older.volume * (1 - tolerance) or newer.value < older.value * (1 - tolerance):
        return f"traded volume fell from {older.volume:g} to {newer.volume:g} within the minute"
    return None


def jump(state: State, references: list[float]) -> str | None:
    """Why a minute's prices are implausible: they jump from every price known next to it (the close of the minute
    before, the open of the one after). One agreeing neighbour clears it, so a wrong neighbour does not condemn
    the minutes after it."""
    known = [r for r in references if r > 0]
    if not known or state.high is None or state.low is None:
        return None
    if all(state.high > r * IMPLAUSIBLE_JUMP or 0 < state.low < r / IMPLAUSIBLE_JUMP for r in known):
        return f"prices {state.low:g}-{state.high:g} jump from {' and '.join(f'{r:g}' for r in known)} next to the minute"
    return None


@dataclass
class Forming:
    message: dict
    state: State
    doubt: str | None = None


@dataclass
class Closed:
    market: str
    start: int
    message: dict
    rewrite: bool  # a newer state of a minute already written
    doubt: str | None = None  # why the minute is quarantined instead of written


class MinuteBook:
    """The newest state of each market's open minutes, and which of them closed (no I/O here)."""

    def __init__(self, grace_seconds: float):
        self.grace = grace_seconds
        self.open: dict[tuple[str, int], Forming] = {}
        self.latest: dict[str, int] = {}  # market -> newest minute seen
        # minutes closed: their state as written, None when quarantined (left to REST: never written from here)
        self.written: dict[tuple[str, int], State | None] = {}
        self.last_close: dict[str, tuple[int, float]] = {}  # market -> (minute, close) of its newest minute accepted
        self.pending: dict[tuple[str, int], Closed] = {}
        self.server_ms = 0.0
        self._server_seen = time.monotonic()

    def server_now(self) -> float:
        """The server's clock: the newest message time plus the local time since it arrived."""
        return self.server_ms / 1000 + (time.monotonic() - self._server_seen)

    def add(self, message: dict) -> None:
        start = _minute_start(message)
        market = message.get("market")
        if start is None or not isinstance(market, str):
            return
        incoming = State.of(message)
        if incoming.stamp is not None and incoming.stamp > self.server_ms:
            self.server_ms, self._server_seen = incoming.stamp, time.monotonic()
        key = (market, start)
        if key in self.written:
            written = self.written[key]
            if written is None or incoming.order() <= written.order():
                return  # quarantined (REST's now), or a repeat or stale state
            self.written[key] = incoming
            self.pending[key] = Closed(market, start, message, rewrite=True, doubt=disagreement(written, incoming))
            return
        forming = self.open.get(key)
        if forming is None:
            self.open[key] = Forming(message, incoming)
        else:
            older, newer = (forming.state, incoming) if incoming.order() > forming.state.order() else (incoming, forming.state)
            doubt = forming.doubt or disagreement(older, newer)
            self.open[key] = Forming(message, incoming, doubt) if newer is incoming else Forming(forming.message, forming.state, doubt)
        self.latest[market] = max(self.latest.get(market, start), start)

    def closed(self) -> list[Closed]:
        """Minutes closed since the last call: superseded by a later minute, or past their end plus grace."""
        cutoff = self.server_now() - 60 - self.grace
        for key in sorted((k for k in self.open if k[1] < self.latest[k[0]] or k[1] <= cutoff), key=lambda k: k[1]):
            forming = self.open.pop(key)
            doubt = forming.doubt or jump(forming.state, self._neighbours(*key))
            self.written[key] = None if doubt else forming.state
            if doubt is None and forming.state.close is not None:
                self.last_close[key[0]] = (key[1], forming.state.close)
            self.pending[key] = Closed(key[0], key[1], forming.message, rewrite=False, doubt=doubt)
        ready, self.pending = list(self.pending.values()), {}
        oldest = self.server_now() - KEEP_WRITTEN_SECONDS
        for key in [k for k in self.written if k[1] < oldest]:
            del self.written[key]
        return ready

    def _neighbours(self, market: str, start: int) -> list[float]:
        """The prices next to a closing minute: the close of the market's newest accepted minute before it and the
        open of its next minute, when known."""
        prices = []
        before = self.last_close.get(market)
        if before is not None and before[0] < start:
            prices.append(before[1])
        later = [k[1] for k in self.open if k[0] == market and k[1] > start]
        if later and (opening := self.open[(market, min(later))].state.open) is not None:
            prices.append(opening)
        return prices

    def leave_to_rest(self, keys: set[tuple[str, int]]) -> None:
        """Minutes quarantined after closing (the parser refused them): never written from the stream again."""
        for key in keys:
            self.written[key] = None

    def drop_open(self, markets: set[str]) -> int:
        """Forget the open minutes of markets whose connection dropped: their close was not seen, so they are
        not written from a partial state (a later snapshot brings a still-forming minute back; REST repairs the rest)."""
        dropped = [key for key in self.open if key[0] in markets]
        for key in dropped:
            del self.open[key]
        return len(dropped)

    def forget_unwritten(self, closed: list[Closed]) -> None:
        """A write failed: these minutes may come again (a later state, or REST repair) and be written then."""
        for item in closed:
            if item.doubt is None:
                self.written.pop((item.market, item.start), None)


def candles_frame(closed: list[Closed], before: pd.Timestamp) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Closed minutes as ``candles_1m`` rows through the REST parser; the rows quarantined with reasons: the
    doubtful minutes, the rows the parser refused, and every minute of a market whose messages it could not read."""
    by_market: dict[str, list[Closed]] = {}
    quarantined = [empty_quarantine()]
    doubtful = [item for item in closed if item.doubt is not None]
    if doubtful:
        quarantined.append(pd.DataFrame({"market": [i.market for i in doubtful], "reason": [i.doubt for i in doubtful],
                                         "candle_start": pd.to_datetime([i.start for i in doubtful], unit="s", utc=True)}))
    for item in closed:
        if item.doubt is None:
            by_market.setdefault(item.market, []).append(item)
    frames = [empty_candles()]
    for market, items in by_market.items():
        try:
            good, bad = parse_candle_page([i.message for i in items], market=market, interval=MINUTE, to=before, endpoint=ENDPOINT)
        except UpbitError as exc:  # e.g. a field missing from a message: none of this batch is readable
            good = empty_candles()
            bad = pd.DataFrame({"market": market, "reason": str(exc), "candle_start": pd.to_datetime([i.start for i in items], unit="s", utc=True)})
        frames.append(good)
        quarantined.append(bad)
    candles = pd.concat([f for f in frames if len(f)] or frames, ignore_index=True)
    return (candles.sort_values(["candle_start", "market"], ignore_index=True),
            pd.concat([q for q in quarantined if len(q)] or quarantined, ignore_index=True))


@dataclass
class Metrics:
    """What happened since the last report."""

    messages: int = 0
    written: int = 0
    rewritten: int = 0
    quarantined: int = 0
    reconnects: int = 0
    no_trade: int = 0
    missed: int = 0
    lags: list[float] = field(default_factory=list)
    partitions: dict[str, int] = field(default_factory=dict)  # hour key -> rows written
    seen: dict[str, list[int]] = field(default_factory=dict)  # hour key -> [market-minutes seen, missed]
    refused: dict[str, int] = field(default_factory=dict)  # hour key -> rows quarantined
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float | int | None]:
        seconds = max(1e-9, time.monotonic() - self.started)
        return {
            "messages_per_s": round(self.messages / seconds, 2),
            "minutes_written": self.written,
            "minutes_rewritten": self.rewritten,
            "lag_p50_s": round(median(self.lags), 3) if self.lags else None,
            "lag_max_s": round(max(self.lags), 3) if self.lags else None,
            "reconnects": self.reconnects,
            "quarantined": self.quarantined,
            "no_trade_minutes": self.no_trade,
            "missed_minutes": self.missed,
        }


def hour_key(minute: int) -> str:
    return pd.Timestamp(minute, unit="s", tz="UTC").strftime("%Y-%m-%d-%H:00")


class Received(NamedTuple):
    """A candle message's server time (epoch s) and whether it is the ``SNAPSHOT`` sent on subscribing."""

    stamp: float
    snapshot: bool

    def window_start(self) -> int:
        """Where a subscription's window of seen minutes begins when this is its first message. A snapshot (each
        code's forming minute, or its newest one when it has not traded since) holds the minute it was taken in
        so far, and the updates after it complete that minute: the window begins there. Otherwise at the first
        whole minute after it."""
        return floor_minute(self.stamp) if self.snapshot else ceil_minute(self.stamp)


class StreamStalled(Exception):
    """No message for the stall timeout although the connection looked open."""


class CandleStream:
    """The service: connections, the minute book, the writer and the reports."""

    def __init__(self, *, url: str, io_manager: PostgresDataFrameIOManager, grace_seconds: float, stall_seconds: float,
                 report_seconds: float, codes_per_connection: int, seen: SeenStore, min_coverage: float = 0.9,
                 instance: dg.DagsterInstance | None = None):
        from dantaro_assets.markets.assets import candles_1m

        self.url = url
        self.io = io_manager
        self.metadata = dict(candles_1m.metadata_by_key[dg.AssetKey(ASSET)])
        self.book = MinuteBook(grace_seconds)
        self.stall_seconds = stall_seconds
        self.report_seconds = report_seconds
        self.codes_per_connection = codes_per_connection
        self.min_coverage = min_coverage
        self.instance = instance
        self.metrics = Metrics()
        self.universe: list[str] = []
        self.chunks: list[list[str]] = []
        self.version = 0
        self.stop = asyncio.Event()
        self.store = seen
        self.open_windows: dict[int, tuple[int, frozenset[str]]] = {}  # connection -> (first minute seen whole, markets)
        self.ended: list[Window] = []  # published once every minute in them is committed
        self.recent: list[Window] = []  # ended windows of the last two hours: which committed minutes were seen
        self.unseen: set[tuple[str, int]] = set()  # market-minutes quarantined in the last two hours
        self.accounting_from: int | None = None  # the first whole minute after the first subscription answered
        self.covered_through = 0.0
        self.totals = {"reconnects": 0, "minutes_written": 0, "no_trade_minutes": 0, "missed_minutes": 0, "quarantined": 0}
        self.last_figures: dict = {}
        self.say = ThrottledLog(log, report_seconds, prefix="stream: ")
        self._published = 0.0

    # --- universe ---
    def read_universe(self) -> list[str]:
        """Markets of the newest stored ``upbit_markets`` day up to today (UTC); none before the table exists."""
        table = self.io.postgres.table_name("upbit_markets")
        if not table_exists(self.io.postgres, "upbit_markets"):
            return []
        today = pd.Timestamp.now(tz="UTC").floor("D")
        frame = self.io.postgres.read_frame(
            f"SELECT DISTINCT market FROM {table} WHERE day = (SELECT max(day) FROM {table} WHERE day <= $1) ORDER BY market", (today,))
        return frame["market"].tolist()

    async def refresh_universe(self) -> None:
        try:
            markets = await asyncio.to_thread(self.read_universe)
        except (PostgresUnavailableError, adbc_driver_manager.Error) as exc:  # keep streaming the known universe
            self.say.log("universe", logging.WARNING, "stream: cannot read the universe from upbit_markets (%s); keeping %d markets",
                         redact_text(str(exc)), len(self.universe))
            return
        if markets != self.universe or self.version == 0:  # said once, not at every re-read
            if markets:
                log.info("stream: universe of %d markets (was %d): subscribing", len(markets), len(self.universe))
            else:
                log.warning("stream: upbit_markets holds no universe yet (dantaro dev's history sensor stores it first); "
                            "subscribing once it is stored")
            self.universe = markets
            size = self.codes_per_connection
            self.chunks = [markets[i : i + size] for i in range(0, len(markets), size)]
            self.version += 1

    # --- connections ---
    async def connection(self, index: int) -> None:
        attempt = 0
        await asyncio.sleep(0.25 * index)  # Upbit allows 5 connection requests a second per IP
        while not self.stop.is_set():
            version = self.version
            codes = self.chunks[index] if index < len(self.chunks) else []
            if not codes:
                return
            try:
                # No Origin header: Upbit allows requests carrying one once per 10 s.
                async with connect(self.url, ping_interval=PING_SECONDS, ping_timeout=PING_SECONDS, open_timeout=10,
                                   max_size=2**22, max_queue=None, user_agent_header="dantaro-stream") as ws:
                    await ws.send(subscription(codes))
                    self.open_windows.pop(index, None)  # opened by the first message on this subscription
                    log.info("stream: connection %d subscribed to %d markets", index, len(codes))
                    last_message = time.monotonic()
                    while not self.stop.is_set():
                        if self.version != version:
                            version = self.version
                            codes = self.chunks[index] if index < len(self.chunks) else []
                            if not codes:
                                return
                            self.end_window(index, floor_minute(self.book.server_now()))
                            await ws.send(subscription(codes))
                            log.info("stream: connection %d resubscribed to %d markets", index, len(codes))
                        try:
                            raw = await asyncio.wait_for(ws.recv(), timeout=1.0)
                        except TimeoutError:
                            if time.monotonic() - last_message > self.stall_seconds:
                                raise StreamStalled(f"no message for {self.stall_seconds:g} s") from None
                            continue
                        last_message = time.monotonic()
                        attempt = 0
                        received = self.receive(raw)
                        if received is not None and index not in self.open_windows:
                            self.open_windows[index] = (received.window_start(), frozenset(codes))
                            if self.accounting_from is None:
                                self.accounting_from = ceil_minute(received.stamp)
                    return
            except (OSError, TimeoutError, InvalidHandshake, WebSocketException, StreamStalled) as exc:
                if self.stop.is_set():
                    return
                self.metrics.reconnects += 1
                self.totals["reconnects"] += 1
                # Minutes from the earliest one left open were not seen to their end: the window stops there.
                unseen = [start for market, start in self.book.open if market in set(codes)]
                self.end_window(index, min([floor_minute(self.book.server_now()), *unseen]))
                dropped = self.book.drop_open(set(codes))
                delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt) * random.uniform(0.5, 1.5)
                attempt += 1
                log.warning("stream: connection %d lost (%s: %s); %d open minute(s) dropped unwritten; reconnecting in %.1f s",
                            index, type(exc).__name__, exc, dropped, delay)
                try:
                    await asyncio.wait_for(self.stop.wait(), timeout=delay)
                except TimeoutError:
                    pass

    def receive(self, raw: str | bytes) -> Received | None:
        """Take one message; a candle message's server time and kind, else None."""
        try:
            message = json.loads(raw)
        except ValueError:
            self.say.log("junk", logging.WARNING, "stream: a message that is not JSON: %r", raw[:200])
            return None
        if isinstance(message, dict) and "error" in message:
            self.say.log("refused", logging.ERROR, "stream: Upbit refused the request: %s", message["error"])
            return None
        candle = rest_fields(message) if isinstance(message, dict) else None
        if candle is None:
            return None
        self.metrics.messages += 1
        self.book.add(candle)
        stamp = candle.get("timestamp")
        return Received(stamp / 1000, candle.get("stream_type") == "SNAPSHOT") if isinstance(stamp, (int, float)) else None

    # --- seen windows ---
    def end_window(self, index: int, end: int) -> None:
        """The connection stops seeing its markets at ``end``; published once the minutes before it are committed."""
        opened = self.open_windows.pop(index, None)
        if opened is not None and end > opened[0]:
            self.ended.append(Window(opened[0], end, opened[1], "stream"))
            self.recent.append(self.ended[-1])

    def truncate_windows(self, first_unwritten: int, restart: int) -> None:
        """A write failed from ``first_unwritten`` on: no window claims those minutes; open ones resume at ``restart``."""
        self.ended = [Window(w.start, min(w.end, first_unwritten), w.markets, w.source) if w.source == "stream" else w for w in self.ended]
        self.recent = [Window(w.start, min(w.end, first_unwritten), w.markets, w.source) for w in self.recent]
        for index, (start, markets) in list(self.open_windows.items()):
            if first_unwritten > start:
                self.ended.append(Window(start, first_unwritten, markets, "stream"))
                self.recent.append(self.ended[-1])
            self.open_windows[index] = (max(start, restart), markets)

    def account(self, before: float, after: float) -> None:
        """Sort the universe's market-minutes committed between ``before`` and ``after`` that have no stored candle:
        inside a window the stream saw (no trade) or not (missed: disconnected, not subscribed, quarantined)."""
        first = floor_minute(max(before, self.accounting_from or after))
        windows = self.recent + [Window(start, int(after), markets, "stream") for start, markets in self.open_windows.values()]
        for minute in range(first, floor_minute(after), 60):
            seen: set[str] = set().union(*(w.markets for w in windows if w.start <= minute and minute + 60 <= w.end))
            counts = self.metrics.seen.setdefault(hour_key(minute), [0, 0])
            for market in self.universe:
                if (market, minute) in self.unseen or market not in seen:
                    self.metrics.missed += 1
                    counts[1] += 1
                    continue
                counts[0] += 1
                if self.book.written.get((market, minute)) is None:
                    self.metrics.no_trade += 1
        oldest = after - KEEP_WRITTEN_SECONDS
        self.recent = [w for w in self.recent if w.end >= oldest]
        self.unseen = {key for key in self.unseen if key[1] >= oldest}

    def health(self, running: bool = True) -> StreamHealth:
        server_now = self.book.server_now() if self.book.server_ms else 0.0
        lag = max(0.0, server_now - self.covered_through) if self.covered_through else None
        windows = [Window(start, int(self.covered_through), markets, "stream") for start, markets in self.open_windows.values()]
        figures = {"markets": len(self.universe), "connections": len(self.chunks), "lag_s": None if lag is None else round(lag, 1),
                   **self.totals, "last_report": self.last_figures}
        return StreamHealth(time.time(), server_now, self.covered_through, running, windows, figures)

    def publish(self, running: bool = True) -> None:
        """Health, open windows and the ended windows now committed, to Postgres (read by the analyses and the API)."""
        ready = [w for w in self.ended if w.end <= self.covered_through]
        try:
            self.store.publish(self.health(running), ready)
        except RecordUnreadable as exc:  # analyses then see the stream as down and fetch over REST
            self.say.log("publish", logging.WARNING, "stream: cannot record its health (%s: %s)", type(exc).__name__, redact_text(str(exc)))
            return
        self.ended = [w for w in self.ended if w not in ready]

    # --- writes ---
    async def writer(self) -> None:
        while not self.stop.is_set():
            await self.flush()
            self.say.flush()
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=0.5)
            except TimeoutError:
                pass
        await self.flush()

    async def flush(self) -> None:
        # Every minute that ended a grace before ``cut`` is closed by the call below (its cutoff is later).
        cut = self.book.server_now() if self.book.server_ms else None
        closed = self.book.closed()
        try:
            if closed:
                await asyncio.to_thread(self.write, closed)
        except Exception as exc:  # noqa: BLE001 - logged (traceback on the first), the minutes left to a later state or REST
            self.say.log("write", logging.ERROR, "stream: writing %d closed minutes failed (%s: %s); they are written again if they come again",
                         len(closed), type(exc).__name__, redact_text(str(exc)), exc_info=True)
            self.book.forget_unwritten(closed)
            if cut is not None:
                self.truncate_windows(min(item.start for item in closed), ceil_minute(cut))
        else:
            if cut is not None and cut - self.book.grace > self.covered_through:
                if self.covered_through or self.accounting_from is not None:
                    self.account(self.covered_through, cut - self.book.grace)
                self.covered_through = cut - self.book.grace
        if time.monotonic() - self._published >= PUBLISH_SECONDS:
            self._published = time.monotonic()
            await asyncio.to_thread(self.publish)

    def write(self, closed: list[Closed]) -> None:
        closed = self.not_audited(closed)
        before = pd.Timestamp(self.book.server_now(), unit="s", tz="UTC").floor("min")
        candles, quarantined = candles_frame(closed, before)
        if len(quarantined):
            keys = {(m, int(t.timestamp())) for m, t in zip(quarantined["market"], quarantined["candle_start"], strict=True)}
            self.book.leave_to_rest(keys)
            for market, minute in keys:  # the next run fetches these over REST
                self.unseen.add((market, minute))
                self.ended.append(Window(minute, minute + 60, frozenset([market]), "unseen"))
                self.metrics.refused[hour_key(minute)] = self.metrics.refused.get(hour_key(minute), 0) + 1
            self.say.log("quarantine", logging.WARNING, "stream: quarantined %d minute(s), left to REST: %s", len(quarantined),
                         quarantined.head(5).to_dict("records"))
            self.metrics.quarantined += len(quarantined)
            self.totals["quarantined"] += len(quarantined)
        if candles.empty:
            return
        start, end = candles["candle_start"].min().floor("h"), candles["candle_start"].max().floor("h") + pd.Timedelta(hours=1)
        require_passed(pandera_check(candles_schema(start, end), candles))
        self.io.write(ASSET, candles, self.metadata, dg.TimeWindow(start.to_pydatetime(), end.to_pydatetime()))
        now = self.book.server_now()
        rewrites = {(item.market, item.start) for item in closed if item.rewrite}
        for market, stamp in zip(candles["market"], candles["candle_start"], strict=True):
            minute = int(stamp.timestamp())
            if (market, minute) in rewrites:
                self.metrics.rewritten += 1
            else:
                self.metrics.written += 1
                self.totals["minutes_written"] += 1
                self.metrics.lags.append(now - minute - 60)
            key = hour_key(minute)
            self.metrics.partitions[key] = self.metrics.partitions.get(key, 0) + 1

    def not_audited(self, closed: list[Closed]) -> list[Closed]:
        """``closed`` less the minutes of hours an analysis's final run has compared with REST: REST's stand."""
        hour = floor_minute(self.book.server_now()) // 3600 * 3600
        older = [item for item in closed if item.start < hour]
        if not older:
            return closed
        audits = [w for w in self.store.windows(min(item.start for item in older)) if w.source == "audit"]
        done = {(i.market, i.start) for i in older for w in audits if i.market in w.markets and w.start <= i.start and i.start + 60 <= w.end}
        if done:
            self.say.log("audited", logging.INFO, "stream: %d late minute(s) of an audited hour left as REST stored them", len(done))
        return [item for item in closed if (item.market, item.start) not in done]

    async def await_universe(self) -> None:
        """Until a universe is stored, look for one every second (not at each report): every minute the stream
        sees from its first start is a minute the first analysis runs need not fetch over REST."""
        while not self.universe and not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=UNIVERSE_POLL_SECONDS)
            except TimeoutError:
                try:
                    await self.refresh_universe()
                except Exception as exc:  # noqa: BLE001 - the report's re-read stays; say why this one failed and go on
                    self.say.log("universe", logging.WARNING, "stream: looking for the universe failed (%s: %s)", type(exc).__name__,
                                 redact_text(str(exc)))

    # --- reports ---
    async def reporter(self) -> None:
        while not self.stop.is_set():
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=self.report_seconds)
            except TimeoutError:
                pass
            await self.report()
            await self.refresh_universe()

    async def report(self) -> None:
        metrics, self.metrics = self.metrics, Metrics()
        figures = metrics.as_dict()
        self.last_figures = figures
        self.totals["no_trade_minutes"] += metrics.no_trade
        self.totals["missed_minutes"] += metrics.missed
        log.info("stream: %s", ", ".join(f"{k} {v}" for k, v in figures.items()))
        if self.instance is not None and metrics.partitions:
            await asyncio.to_thread(self._record, metrics, figures)

    def _record(self, metrics: Metrics, figures: dict) -> None:
        """Runless materialisations of the partitions written, so Dagster sees candles_1m as fresh, each with the
        asset's two checks evaluated on what the stream wrote (the UI shows them beside the materialisation)."""
        for partition, rows in sorted(metrics.partitions.items()):
            metadata = {"source": "stream", "write_mode": "merge", "rows_written": rows, "markets": len(self.universe),
                        "dagster/table_name": f"{self.io.postgres.db_schema}.{ASSET}", **{k: v for k, v in figures.items() if v is not None}}
            self.instance.report_runless_asset_event(dg.AssetMaterialization(asset_key=ASSET, partition=partition, metadata=metadata))
            for check in self.checks(partition, rows, metrics):
                self.instance.report_runless_asset_event(check)

    def checks(self, partition: str, rows: int, metrics: Metrics) -> list[dg.AssetCheckEvaluation]:
        """``schema``: every row written passed the pandera schema before the write (a refused batch is not written);
        ``coverage``: the share of the universe's market-minutes committed in the period that the stream saw.

        Reported without a partition key (the partition is in the description and metadata): Dagster stores one
        runless evaluation per check and partition, and the stream reports an open hour at every report."""
        refused = metrics.refused.get(partition, 0)
        seen, missed = metrics.seen.get(partition, [0, 0])
        share = seen / (seen + missed) if seen + missed else 1.0
        passed = share >= self.min_coverage
        key = dg.AssetKey(ASSET)
        return [
            dg.AssetCheckEvaluation(asset_key=key, check_name="schema", passed=True,
                                    description=f"stream, {partition}: {rows} rows passed the schema before the write; {refused} quarantined",
                                    metadata={"partition": partition, "rows": rows, "quarantined": refused, "source": "stream"}),
            dg.AssetCheckEvaluation(
                asset_key=key, check_name="coverage", passed=passed, severity=dg.AssetCheckSeverity.ERROR,
                description=(f"stream, {partition}: saw {share:.1%} of the universe's market-minutes committed in the period"
                             + ("" if passed else f" (< {self.min_coverage:.0%}); the hour's final run fetches what it missed over REST")),
                metadata={"partition": partition, "seen_share": round(share, 4), "market_minutes_seen": seen, "market_minutes_missed": missed,
                          "source": "stream"}),
        ]

    # --- service ---
    async def run(self) -> None:
        await self.refresh_universe()
        tasks = [asyncio.create_task(self.writer()), asyncio.create_task(self.reporter()), asyncio.create_task(self.await_universe())]
        connections: dict[int, asyncio.Task] = {}
        while not self.stop.is_set():
            for index in range(len(self.chunks)):
                if index not in connections or connections[index].done():
                    connections[index] = asyncio.create_task(self.connection(index))
            try:
                await asyncio.wait_for(self.stop.wait(), timeout=1.0)
            except TimeoutError:
                pass
        await asyncio.gather(*connections.values(), return_exceptions=True)
        await asyncio.gather(*tasks)
        await self.report()
        self.say.flush(everything=True)
        for index in list(self.open_windows):  # what this process saw outlives it; the next one opens its own
            self.end_window(index, floor_minute(self.covered_through))
        await asyncio.to_thread(self.publish, False)


def run_stream(settings, instance: dg.DagsterInstance | None) -> int:
    """Run the service until SIGTERM or SIGINT; minutes closed by then are written, forming ones are not."""
    from dantaro_assets.resources import process_storage

    # as dantaro dev's console: the stream at WORKER_LOG_LEVEL, libraries (alembic opening the instance, websockets) only at DEBUG
    debug = settings.worker_log_level == "DEBUG"
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, format="%(asctime)s - %(name)s - %(levelname)s - %(message)s",
                        datefmt="%Y-%m-%d %H:%M:%S %z")
    log.setLevel(settings.worker_log_level)
    postgres = process_storage(settings).postgres  # the stream keeps its record beside the candles: no Redis
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    stream = CandleStream(
        url=websocket_url(settings.upbit_base_url), io_manager=io_manager, grace_seconds=settings.stream_grace_seconds,
        stall_seconds=settings.stream_stall_seconds, report_seconds=settings.stream_report_seconds,
        codes_per_connection=settings.stream_codes_per_connection, instance=instance,
        seen=SeenStore(postgres), min_coverage=settings.min_coverage,
    )

    async def main() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stream.stop.set)
        log.info("stream: %s, grace %g s, reports every %g s", redact_url(stream.url), settings.stream_grace_seconds, settings.stream_report_seconds)
        await stream.run()

    asyncio.run(main())
    return 0
