"""Fault injection and Upbit-like rate limiting for the replay server.

Faults are rules matched in the order they were added, by path, market and (for WebSocket message
kinds) minute; the kinds and how they match: docs/replay.md.
"""

from __future__ import annotations

import collections
import threading
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime

WEBSOCKET_PATH = "/websocket/v1"
MESSAGE_FAULT_KINDS = ("alter", "outlier")
WEBSOCKET_FAULT_KINDS = ("disconnect", "stall", "duplicate", "out_of_order", "slow_consumer", "junk", *MESSAGE_FAULT_KINDS)
FAULT_KINDS = ("latency", "429", "418", "500", "503", "malformed", "truncated", "drop", "empty", "bad_candle", "bad_book",
               *WEBSOCKET_FAULT_KINDS)
BAD_CANDLE_VARIANTS = ("high_low", "missing_field", "negative_price", "duplicate_timestamp", "infinite_price", "nan_volume")
BAD_BOOK_VARIANTS = ("crossed_book", "infinite_price", "no_units")
EMPTY_VARIANTS = ("list", "body")
ALTER_VARIANTS = ("scale", "negative_price")


@dataclass
class Fault:
    kind: str
    path: str | None = None
    count: int | None = 1
    seconds: float = 1.0
    variant: str | None = None
    market: str | None = None
    minute: str | None = None  # message kinds: only messages of this candle minute (ISO, UTC)
    fired: int = 0
    minute_start: int | None = field(default=None, init=False)  # ``minute`` in epoch seconds

    def __post_init__(self) -> None:
        self.kind = str(self.kind)
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; one of {', '.join(FAULT_KINDS)}")
        if self.count is not None and (not isinstance(self.count, int) or self.count < 1):
            raise ValueError(f"count must be a positive integer or null (forever), got {self.count!r}")
        if not isinstance(self.seconds, (int, float)) or self.seconds < 0:
            raise ValueError(f"seconds must be a non-negative number, got {self.seconds!r}")
        allowed = {"bad_candle": BAD_CANDLE_VARIANTS, "bad_book": BAD_BOOK_VARIANTS, "empty": EMPTY_VARIANTS, "alter": ALTER_VARIANTS}.get(self.kind)
        if allowed:
            self.variant = self.variant or allowed[0]
            if self.variant not in allowed:
                raise ValueError(f"{self.kind} variant must be one of {', '.join(allowed)}, got {self.variant!r}")
        elif self.variant is not None:
            raise ValueError(f"fault kind {self.kind!r} takes no variant")
        if self.kind in WEBSOCKET_FAULT_KINDS and self.path not in (None, "", "*", WEBSOCKET_PATH):
            raise ValueError(f"fault kind {self.kind!r} applies to {WEBSOCKET_PATH} only, got path {self.path!r}")
        if self.kind not in WEBSOCKET_FAULT_KINDS and self.path == WEBSOCKET_PATH:
            raise ValueError(f"fault kind {self.kind!r} is an HTTP fault; {WEBSOCKET_PATH} takes {', '.join(WEBSOCKET_FAULT_KINDS)}")
        if self.minute is not None:
            if self.kind not in MESSAGE_FAULT_KINDS:
                raise ValueError(f"only the message kinds ({', '.join(MESSAGE_FAULT_KINDS)}) take a minute")
            try:
                moment = datetime.fromisoformat(str(self.minute))
                self.minute_start = int((moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp())
            except ValueError:
                raise ValueError(f"minute must be an ISO time such as 2025-09-03T12:24:00, got {self.minute!r}") from None

    def matches(self, path: str, markets: list[str], minute: int | None = None) -> bool:
        if (self.kind in WEBSOCKET_FAULT_KINDS) != (path == WEBSOCKET_PATH):
            return False
        if (self.kind in MESSAGE_FAULT_KINDS) != (minute is not None):
            return False
        if self.minute is not None and self.minute_start != minute:
            return False
        if self.path in (None, "", "*"):
            path_ok = path.startswith("/v1/") or path == WEBSOCKET_PATH
        elif self.path.endswith("*"):
            path_ok = path.startswith(self.path[:-1])
        else:
            path_ok = path == self.path
        return path_ok and (self.market is None or self.market in markets)


class FaultBook:
    """The active fault rules, shared by the request threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = []
        self.fired: collections.Counter[str] = collections.Counter()

    def add(self, spec: dict) -> Fault:
        unknown = set(spec) - {"kind", "path", "count", "seconds", "variant", "market", "minute"}
        if unknown:
            raise ValueError(f"unknown fault fields: {', '.join(sorted(unknown))}")
        if "kind" not in spec:
            raise ValueError("a fault needs a kind")
        fault = Fault(**spec)
        with self._lock:
            self._faults.append(fault)
        return fault

    def clear(self) -> None:
        with self._lock:
            self._faults.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.fired.clear()

    def take(self, path: str, markets: list[str], minute: int | None = None) -> Fault | None:
        """The first matching rule, counted as fired (and dropped once used up); ``minute`` (epoch s)
        asks for the message kinds that apply to one candle message of that minute."""
        with self._lock:
            for fault in self._faults:
                if fault.matches(path, markets, minute):
                    fault.fired += 1
                    self.fired[fault.kind] += 1
                    if fault.count is not None and fault.fired >= fault.count:
                        self._faults.remove(fault)
                    return fault
        return None

    def snapshot(self) -> list[dict]:
        with self._lock:
            return [asdict(f) for f in self._faults]


@dataclass
class GroupStats:
    requests: int = 0
    ok: int = 0
    too_many: int = 0  # 429 from the limiter
    blocked: int = 0  # 418 from the limiter
    origin: int = 0  # requests carrying an Origin header
    faults: int = 0
    other_errors: int = 0
    max_per_second: int = 0  # the most requests accepted in one sliding second


@dataclass
class Decision:
    status: int  # 200 (go on), 429 or 418
    remaining: int
    retry_after: float = 0.0


@dataclass
class _Window:
    accepted: collections.deque = field(default_factory=collections.deque)
    origin: collections.deque = field(default_factory=collections.deque)


class RateLimiter:
    """Upbit's quotation limits: per client IP and group, ``limit`` requests in any sliding second.

    Rejected requests get 429 and do not use the budget. An IP that keeps going past
    ``block_after`` 429s within 10 s is blocked (418 on every group) for ``block_seconds``.
    Requests with an ``Origin`` header are limited to one per 10 s per group, like Upbit's.
    ``limit`` 0 switches limiting off (headers still report the configured budget of 10).
    """

    def __init__(self, limit: int = 10, block_after: int = 20, block_seconds: float = 30.0):
        self.limit = limit
        self.block_after = block_after
        self.block_seconds = block_seconds
        self._lock = threading.Lock()
        self._windows: dict[tuple[str, str], _Window] = collections.defaultdict(_Window)
        self._rejections: dict[str, collections.deque] = collections.defaultdict(collections.deque)
        self._blocked_until: dict[str, float] = {}
        self.stats: dict[str, GroupStats] = collections.defaultdict(GroupStats)

    def reset(self) -> None:
        with self._lock:
            self._windows.clear()
            self._rejections.clear()
            self._blocked_until.clear()
            self.stats.clear()

    def reset_stats(self) -> None:
        with self._lock:
            self.stats.clear()

    def admit(self, ip: str, group: str, has_origin: bool) -> Decision:
        now = time.monotonic()
        with self._lock:
            stats = self.stats[group]
            stats.requests += 1
            stats.origin += has_origin
            budget = self.limit or 10
            blocked_until = self._blocked_until.get(ip, 0.0)
            if now < blocked_until:
                stats.blocked += 1
                return Decision(418, 0, blocked_until - now)
            window = self._windows[(ip, group)]
            while window.accepted and window.accepted[0] <= now - 1.0:
                window.accepted.popleft()
            while window.origin and window.origin[0] <= now - 10.0:
                window.origin.popleft()
            if self.limit and (len(window.accepted) >= self.limit or (has_origin and window.origin)):
                stats.too_many += 1
                rejections = self._rejections[ip]
                rejections.append(now)
                while rejections and rejections[0] <= now - 10.0:
                    rejections.popleft()
                if len(rejections) > self.block_after:
                    self._blocked_until[ip] = now + self.block_seconds
                    rejections.clear()
                oldest = window.origin[0] + 10.0 if has_origin and window.origin else window.accepted[0] + 1.0
                return Decision(429, 0, max(0.0, oldest - now))
            window.accepted.append(now)
            if has_origin:
                window.origin.append(now)
            stats.max_per_second = max(stats.max_per_second, len(window.accepted))
            remaining = 0 if has_origin else max(0, budget - len(window.accepted))
            return Decision(200, remaining)

    def block(self, ip: str, seconds: float) -> None:
        with self._lock:
            self._blocked_until[ip] = time.monotonic() + seconds

    def count(self, group: str, outcome: str) -> None:
        with self._lock:
            stats = self.stats[group]
            setattr(stats, outcome, getattr(stats, outcome) + 1)

    def snapshot(self) -> dict[str, dict]:
        with self._lock:
            return {group: asdict(stats) for group, stats in sorted(self.stats.items())}
