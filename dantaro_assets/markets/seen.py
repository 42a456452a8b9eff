"""What the stream (and REST) saw of ``candles_1m``: its health and its *seen windows*, kept in Redis.

A seen window is a time range and the markets in it for which every minute that traded is stored:
inside it a minute without a candle is a minute without trades, not a gap. ``dantaro stream`` opens
one per connection from the first whole minute after it subscribed, and ends it where a dropped
connection, a resubscription or a failed write leaves minutes unseen; an open window holds up to the
stream's ``covered_through`` (server time up to which every closed minute is committed). A REST
fetch of a closed range records it as a window too, so a range is fetched once. The analysis jobs'
``candles_1m`` step reads both and fetches over REST only what no window covers (see ``plan``).

Keys (per Redis prefix and Postgres schema, since the windows speak about one schema's table):
``<prefix>:candles_1m:<schema>:stream`` (the stream's health and open windows, JSON) and
``<prefix>:candles_1m:<schema>:seen`` (ended windows, a sorted set by end, kept ``KEEP_SECONDS``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import pandas as pd
import redis

KEEP_SECONDS = 48 * 3600
MINUTE = 60


def ceil_minute(epoch: float) -> int:
    return int(math.ceil(epoch / MINUTE) * MINUTE)


def floor_minute(epoch: float) -> int:
    return int(epoch // MINUTE * MINUTE)


@dataclass(frozen=True)
class Window:
    """Every traded minute of ``markets`` with ``start <= candle_start`` and ``candle_start + 60 <= end`` is stored."""

    start: int
    end: int
    markets: frozenset[str]
    source: str  # "stream" or "rest"

    def as_json(self) -> str:
        return json.dumps({"start": self.start, "end": self.end, "markets": sorted(self.markets), "source": self.source}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str | bytes) -> Window:
        item = json.loads(raw)
        return cls(int(item["start"]), int(item["end"]), frozenset(item["markets"]), item["source"])


@dataclass
class StreamHealth:
    """The stream's last heartbeat: wall and server clocks, what it has committed, its open windows and figures."""

    heartbeat: float  # wall clock (epoch s) when written
    server_now: float  # Upbit's clock then
    covered_through: float  # server time up to which every closed minute is committed
    running: bool
    open_windows: list[Window] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # lag, messages/s, reconnects, gaps, markets

    def as_json(self) -> str:
        return json.dumps({"heartbeat": self.heartbeat, "server_now": self.server_now, "covered_through": self.covered_through,
                           "running": self.running, "open_windows": [json.loads(w.as_json()) for w in self.open_windows],
                           "figures": self.figures})

    @classmethod
    def from_json(cls, raw: str | bytes) -> StreamHealth:
        item = json.loads(raw)
        windows = [Window.from_json(json.dumps(w)) for w in item.get("open_windows", [])]
        return cls(item["heartbeat"], item["server_now"], item["covered_through"], item["running"], windows, item.get("figures", {}))

    def server_time(self, wall_now: float) -> float:
        """Upbit's clock now, from the stream's last reading of it."""
        return self.server_now + max(0.0, wall_now - self.heartbeat)

    def lag(self, wall_now: float) -> float:
        """Seconds of Upbit time since the newest minute boundary the stream has committed through."""
        return self.server_time(wall_now) - self.covered_through

    def problem(self, wall_now: float, max_lag: float) -> str | None:
        """Why the stream is not to be trusted for the open minutes, or None when it is healthy."""
        if not self.running:
            return "stream stopped"
        if wall_now - self.heartbeat > max_lag:
            return f"stream down: no heartbeat for {wall_now - self.heartbeat:.0f} s"
        if self.lag(wall_now) > max_lag:
            return f"stream lagging: {self.lag(wall_now):.0f} s behind (max {max_lag:g} s)"
        return None


class SeenStore:
    """Reads and writes the stream's health and the seen windows of one schema's ``candles_1m``."""

    def __init__(self, client: redis.Redis, prefix: str, schema: str):
        self.client = client
        self.health_key = f"{prefix}:candles_1m:{schema}:stream"
        self.windows_key = f"{prefix}:candles_1m:{schema}:seen"

    def publish(self, health: StreamHealth, ended: Iterable[Window] = ()) -> None:
        pipe = self.client.pipeline(transaction=True)
        self._add(pipe, ended)
        pipe.set(self.health_key, health.as_json())
        pipe.execute()

    def record(self, windows: Iterable[Window]) -> None:
        pipe = self.client.pipeline(transaction=True)
        self._add(pipe, windows)
        pipe.execute()

    def _add(self, pipe, windows: Iterable[Window]) -> None:
        members = {w.as_json(): w.end for w in windows if w.end > w.start and w.markets}
        if members:
            pipe.zadd(self.windows_key, members)
            newest = max(members.values())
            pipe.zremrangebyscore(self.windows_key, "-inf", newest - KEEP_SECONDS)

    def health(self) -> StreamHealth | None:
        raw = self.client.get(self.health_key)
        return StreamHealth.from_json(raw) if raw else None

    def windows(self, start: float) -> list[Window]:
        """Ended windows that reach past ``start``."""
        return [Window.from_json(raw) for raw in self.client.zrangebyscore(self.windows_key, start, "+inf")]


Ranges = dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]


def missing(windows: Iterable[Window], markets: Iterable[str], start: pd.Timestamp, end: pd.Timestamp) -> Ranges:
    """Per market, the minute ranges of ``[start, end)`` no window covers (markets fully covered are left out)."""
    lo, hi = int(start.timestamp()), int(end.timestamp())
    by_market: dict[str, list[tuple[int, int]]] = {}
    for window in windows:
        s, e = max(ceil_minute(window.start), lo), min(floor_minute(window.end), hi)
        if s < e:
            for market in window.markets:
                by_market.setdefault(market, []).append((s, e))
    gaps: Ranges = {}
    for market in markets:
        cursor, holes = floor_minute(lo), []
        for s, e in sorted(by_market.get(market, [])):
            if s > cursor:
                holes.append((cursor, s))
            cursor = max(cursor, e)
        if cursor < hi:
            holes.append((cursor, ceil_minute(hi)))
        if holes:
            gaps[market] = [(pd.Timestamp(s, unit="s", tz="UTC"), pd.Timestamp(e, unit="s", tz="UTC")) for s, e in holes]
    return gaps


@dataclass
class Plan:
    """What a ``candles_1m`` step fetches over REST and why: ``source`` is ``stream``, ``rest fallback`` or ``rest``."""

    source: str
    fetch: Ranges
    why: str
    health: StreamHealth | None = None

    def metadata(self) -> dict[str, str | int | float]:
        meta: dict[str, str | int | float] = {
            "source": self.source,
            "markets_fetched": len(self.fetch),
            "minutes_fetched": sum(int((e - s).total_seconds()) // MINUTE for ranges in self.fetch.values() for s, e in ranges),
            "why": self.why,
        }
        if self.health is not None:
            meta["stream_lag_s"] = round(self.health.lag(time.time()), 1)
        return meta


def plan_fetch(store: SeenStore | None, markets: list[str], start: pd.Timestamp, end: pd.Timestamp, *, final: bool, max_lag: float,
               wall_now: float | None = None) -> Plan:
    """The REST fetch a run needs for ``[start, end)`` given what the stream and earlier fetches saw.

    ``final`` (the run closing an hour): every minute must be stored or known untraded, so open windows
    count only up to ``covered_through``, which a healthy stream is given up to ``max_lag`` seconds to
    carry past ``end`` (the hour's last minute is committed a grace after the hour). Otherwise (a tick)
    a healthy stream is trusted for the minutes it has not committed yet, and only minutes closed by
    Upbit's clock are needed.
    """
    if store is None:
        return Plan("rest", {m: [(start, end)] for m in markets}, "no Redis: the stream's record is unreadable")
    try:
        health = store.health()
        if final:
            health = wait_for_commit(store, health, end.timestamp(), max_lag)
        windows = store.windows(start.timestamp())
    except redis.RedisError as exc:
        return Plan("rest", {m: [(start, end)] for m in markets}, f"the stream's record is unreadable ({type(exc).__name__}: {exc})")
    wall_now = time.time() if wall_now is None else wall_now
    problem = "stream never ran" if health is None else health.problem(wall_now, max_lag)
    if health is not None:
        trusted_until = health.covered_through if (final or problem) else math.inf
        windows += [Window(w.start, int(min(trusted_until, end.timestamp())), w.markets, w.source) for w in health.open_windows]
    now = health.server_time(wall_now) if health is not None else wall_now
    need_end = end if final else min(end, pd.Timestamp(floor_minute(now), unit="s", tz="UTC"))
    fetch = missing(windows, markets, start, need_end) if need_end > start else {}
    if not fetch:
        if problem is None:
            return Plan("stream", {}, "the stream saw every closed minute", health)
        # a final run judges by what was seen (the stream, and REST repairs); a tick would have fallen back
        return Plan("stream" if final else "rest fallback", {}, f"{problem}; every minute is stored already or was seen untraded", health)
    subscribed = set().union(*(w.markets for w in windows if w.source == "stream"))
    unsubscribed = sorted(set(fetch) - subscribed)
    reasons = [problem] if problem else []
    if unsubscribed and health is not None:
        reasons.append(f"{len(unsubscribed)} market(s) the stream did not subscribe ({', '.join(unsubscribed[:5])}{', ...' if len(unsubscribed) > 5 else ''})")
    if len(unsubscribed) < len(fetch):
        reasons.append(f"{len(fetch) - len(unsubscribed)} subscribed market(s) with minutes the stream did not see (start-up, disconnects)")
    return Plan("rest fallback", fetch, "; ".join(reasons), health)


def wait_for_commit(store: SeenStore, health: StreamHealth | None, through: float, max_lag: float) -> StreamHealth | None:
    """The stream's health once it has committed through ``through``, or after ``max_lag`` seconds, or at once when it is unhealthy."""
    deadline = time.monotonic() + max_lag
    while health is not None and health.covered_through < through and health.problem(time.time(), max_lag) is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        health = store.health()
    return health


def rest_windows(fetched: Ranges, answered: set[str], closed_before: pd.Timestamp) -> list[Window]:
    """The REST ranges answered, ended at ``closed_before`` (the minutes Upbit's clock had closed), as windows."""
    grouped: dict[tuple[int, int], set[str]] = {}
    limit = int(closed_before.timestamp())
    for market, ranges in fetched.items():
        if market not in answered:
            continue
        for s, e in ranges:
            key = (int(s.timestamp()), min(int(e.timestamp()), floor_minute(limit)))
            if key[1] > key[0]:
                grouped.setdefault(key, set()).add(market)
    return [Window(s, e, frozenset(m), "rest") for (s, e), m in grouped.items()]


def stream_status(store: SeenStore, max_lag: float, wall_now: float | None = None) -> dict:
    """The stream as ``/worker/status`` shows it: state (healthy, down, lagging, stopped, never ran), lag,
    messages/s of its last report, reconnects and gaps since it started, markets subscribed."""
    wall_now = time.time() if wall_now is None else wall_now
    health = store.health()
    if health is None:
        return {"state": "never ran", "healthy": False, "problem": "stream never ran"}
    problem = health.problem(wall_now, max_lag)
    state = "healthy" if problem is None else problem.split(":")[0].removeprefix("stream ")
    figures = health.figures
    return {
        "state": state,
        "healthy": problem is None,
        "problem": problem,
        "lag_s": round(health.lag(wall_now), 1) if health.covered_through else None,
        "messages_per_s": figures.get("last_report", {}).get("messages_per_s"),
        "reconnects": figures.get("reconnects"),
        "gaps": figures.get("gaps"),
        "markets": figures.get("markets"),
        "minutes_written": figures.get("minutes_written"),
        "heartbeat": pd.Timestamp(health.heartbeat, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
        "covered_through": pd.Timestamp(health.covered_through, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
