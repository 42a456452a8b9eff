"""What the stream (and REST) saw of ``candles_1m``: its health and its *seen windows*, kept in Postgres.

Inside a seen window a minute without a candle is a minute without trades, not a gap, so the analysis
jobs fetch over REST only what no window covers. The record lives beside the candles, as durable as
they are and readable while Redis is down (docs/stream.md, "Seen windows").
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field

import adbc_driver_manager
import numpy as np
import pandas as pd
import pyarrow as pa

from dantaro_assets.lib.postgres import PostgresResource, PostgresUnavailableError, quote_ident
from dantaro_assets.lib.postgres_io import advisory_lock, table_exists
from dantaro_assets.lib.upbit import FetchStats

KEEP_SECONDS = 48 * 3600
MINUTE = 60
WINDOWS_TABLE = "candles_1m_seen"
HEALTH_TABLE = "candles_1m_stream"
RecordUnreadable = (PostgresUnavailableError, adbc_driver_manager.Error)


def ceil_minute(epoch: float) -> int:
    return int(math.ceil(epoch / MINUTE) * MINUTE)


def floor_minute(epoch: float) -> int:
    return int(epoch // MINUTE * MINUTE)


@dataclass(frozen=True)
class Window:
    """Every traded minute of ``markets`` with ``start <= candle_start`` and ``candle_start + 60 <= end`` is stored
    (``source`` ``stream`` or ``rest``), or, for ``unseen``, those minutes of the stream's are not to be trusted."""

    start: int
    end: int
    markets: frozenset[str]
    source: str  # "stream", "rest" or "unseen"

    def as_dict(self) -> dict:
        return {"start": self.start, "end": self.end, "markets": sorted(self.markets), "source": self.source}

    @classmethod
    def from_dict(cls, item: dict) -> Window:
        return cls(int(item["start"]), int(item["end"]), frozenset(item["markets"]), item["source"])


@dataclass
class StreamHealth:
    """The stream's last heartbeat: wall and server clocks, what it has committed, its open windows and figures."""

    heartbeat: float  # wall clock (epoch s) when written
    server_now: float  # Upbit's clock then (0 before the first message)
    covered_through: float  # server time up to which every closed minute is committed (0 before the first commit)
    running: bool
    open_windows: list[Window] = field(default_factory=list)
    figures: dict = field(default_factory=dict)  # lag, messages/s, reconnects, no-trade and missed minutes, markets

    def as_json(self) -> str:
        return json.dumps({"heartbeat": self.heartbeat, "server_now": self.server_now, "covered_through": self.covered_through,
                           "running": self.running, "open_windows": [w.as_dict() for w in self.open_windows],
                           "figures": self.figures})

    @classmethod
    def from_json(cls, raw: str | bytes) -> StreamHealth:
        item = json.loads(raw)
        windows = [Window.from_dict(w) for w in item.get("open_windows", [])]
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
        if not self.covered_through:
            return "stream starting: no market subscribed and answered yet"
        if self.lag(wall_now) > max_lag:
            return f"stream lagging: {self.lag(wall_now):.0f} s behind (max {max_lag:g} s)"
        return None


class SeenStore:
    """Reads and writes the stream's health and the seen windows of one schema's ``candles_1m`` (see the module)."""

    def __init__(self, postgres: PostgresResource):
        self.postgres = postgres
        self.windows_table = postgres.table_name(WINDOWS_TABLE)
        self.health_table = postgres.table_name(HEALTH_TABLE)
        self._exists = False

    def _create(self, conn) -> None:
        if self._exists:
            return
        statements = [
            f"CREATE SCHEMA IF NOT EXISTS {quote_ident(self.postgres.db_schema)}",
            f"CREATE TABLE IF NOT EXISTS {self.windows_table} (start_at timestamptz NOT NULL, end_at timestamptz NOT NULL,"
            " source text NOT NULL, markets text NOT NULL, recorded_at timestamptz NOT NULL DEFAULT now())",
            f"CREATE INDEX IF NOT EXISTS {quote_ident(WINDOWS_TABLE + '_end_at')} ON {self.windows_table} (end_at)",
            f"CREATE TABLE IF NOT EXISTS {self.health_table} (id smallint PRIMARY KEY CHECK (id = 1), health text NOT NULL,"
            " updated_at timestamptz NOT NULL DEFAULT now())",
        ]
        advisory_lock(conn, self.postgres.db_schema)  # as the IO manager creates tables: one creator per schema at a time
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def _present(self) -> bool:
        if not self._exists:
            self._exists = table_exists(self.postgres, HEALTH_TABLE)
        return self._exists

    def publish(self, health: StreamHealth, ended: Iterable[Window] = ()) -> None:
        """The stream's heartbeat and the windows it ended, in one transaction."""
        with self.postgres.connect() as conn:
            self._create(conn)
            self._add(conn, ended)
            with conn.cursor() as cur:
                cur.execute(f"INSERT INTO {self.health_table} (id, health, updated_at) VALUES (1, $1, now())"
                            " ON CONFLICT (id) DO UPDATE SET health = EXCLUDED.health, updated_at = now()", (health.as_json(),))
        self._exists = True  # committed: the tables are there

    def record(self, windows: Iterable[Window]) -> None:
        with self.postgres.connect() as conn:
            self._create(conn)
            self._add(conn, windows)
        self._exists = True

    def _add(self, conn, windows: Iterable[Window]) -> None:
        rows = [w for w in windows if w.end > w.start and w.markets]
        if not rows:
            return
        stamp = pa.timestamp("us", tz="UTC")
        table = pa.table({
            "start_at": pa.array([w.start * 1_000_000 for w in rows], pa.int64()).cast(stamp),
            "end_at": pa.array([w.end * 1_000_000 for w in rows], pa.int64()).cast(stamp),
            "source": pa.array([w.source for w in rows], pa.string()),
            "markets": pa.array([json.dumps(sorted(w.markets)) for w in rows], pa.string()),
        })
        self.postgres.ingest(conn, WINDOWS_TABLE, table)
        newest = max(w.end for w in rows)
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.windows_table} WHERE end_at < $1", (pd.Timestamp(newest - KEEP_SECONDS, unit="s", tz="UTC"),))

    def health(self) -> StreamHealth | None:
        if not self._present():
            return None
        rows = self.postgres.read_arrow(f"SELECT health FROM {self.health_table} WHERE id = 1")
        return StreamHealth.from_json(rows["health"][0].as_py()) if rows.num_rows else None

    def windows(self, start: float) -> list[Window]:
        """Ended windows that reach past ``start``."""
        if not self._present():
            return []
        rows = self.postgres.read_arrow(
            f"SELECT extract(epoch FROM start_at)::bigint AS start, extract(epoch FROM end_at)::bigint AS end, source, markets"
            f" FROM {self.windows_table} WHERE end_at >= $1", (pd.Timestamp(start, unit="s", tz="UTC"),)).to_pylist()
        return [Window(row["start"], row["end"], frozenset(json.loads(row["markets"])), row["source"]) for row in rows]

    def clear(self) -> None:
        """Forget the record (benchmarks: every run then fetches as if the stream never ran)."""
        if self._present():
            self.postgres.execute(f"TRUNCATE {self.windows_table}, {self.health_table}")


Ranges = dict[str, list[tuple[pd.Timestamp, pd.Timestamp]]]
AUDIT = "rest audit"  # the plan of an hour's final run: every minute compared with REST


def missing(windows: Iterable[Window], markets: Iterable[str], start: pd.Timestamp, end: pd.Timestamp) -> Ranges:
    """Per market, the minute ranges of ``[start, end)`` no window covers (markets fully covered are left out).

    REST windows (``rest``, ``audit``) cover their minutes; the stream's cover theirs except the minutes
    an ``unseen`` window names (states the stream quarantined)."""
    lo, hi = floor_minute(start.timestamp()), ceil_minute(end.timestamp())
    slots = (hi - lo) // MINUTE
    masks: dict[str, dict[str, np.ndarray]] = {"rest": {}, "stream": {}, "unseen": {}}
    for window in windows:
        s, e = max(ceil_minute(window.start), lo), min(floor_minute(window.end), hi)
        if s >= e:
            continue
        kind = "rest" if window.source in ("rest", "audit") else window.source
        for market in window.markets:
            masks[kind].setdefault(market, np.zeros(slots, bool))[(s - lo) // MINUTE : (e - lo) // MINUTE] = True
    none = np.zeros(slots, bool)
    gaps: Ranges = {}
    for market in markets:
        covered = masks["rest"].get(market, none) | (masks["stream"].get(market, none) & ~masks["unseen"].get(market, none))
        if covered.all():
            continue
        edges = np.diff(np.concatenate([[0], (~covered).astype(np.int8), [0]]))
        starts, ends = np.flatnonzero(edges == 1), np.flatnonzero(edges == -1)
        gaps[market] = [(pd.Timestamp(lo + a * MINUTE, unit="s", tz="UTC"), pd.Timestamp(lo + b * MINUTE, unit="s", tz="UTC"))
                        for a, b in zip(starts, ends, strict=True)]
    return gaps


def one_range(ranges: Ranges) -> Ranges:
    """Each market's ranges as the one range spanning them: a request brings up to 200 minutes, so an hour's
    scattered minutes cost one request instead of one each (minutes already stored come back equal)."""
    return {market: [(spans[0][0], spans[-1][1])] for market, spans in ranges.items()}


@dataclass
class Plan:
    """What a ``candles_1m`` step fetches over REST and why: ``source`` is ``stream``, ``rest fallback``,
    ``rest audit`` (an hour's final run) or ``rest`` (no record)."""

    source: str
    fetch: Ranges
    why: str
    health: StreamHealth | None = None
    unseen: Ranges = field(default_factory=dict)  # what no window covers: a final run cannot do without these
    deferred: str | None = None  # why a final run's audit was put off

    @property
    def window_source(self) -> str:
        """How the ranges fetched are recorded: a final run's are ``audit`` (compared with REST), a tick's ``rest``."""
        return "audit" if self.source == AUDIT else "rest"

    def metadata(self) -> dict[str, str | int | float]:
        meta: dict[str, str | int | float] = {
            "source": self.source,
            "markets_fetched": len(self.fetch),
            "minutes_fetched": sum(int((e - s).total_seconds()) // MINUTE for ranges in self.fetch.values() for s, e in ranges),
            "why": self.why,
        }
        if self.health is not None and self.health.covered_through:
            meta["stream_lag_s"] = round(self.health.lag(time.time()), 1)
        if self.deferred is not None:
            meta["audit_deferred"] = self.deferred
        return meta


def plan_fetch(store: SeenStore, markets: list[str], start: pd.Timestamp, end: pd.Timestamp, *, final: bool, max_lag: float,
               wall_now: float | None = None) -> Plan:
    """The REST fetch a run needs for ``[start, end)`` given what the stream and earlier fetches saw.

    ``final`` (the run closing an hour): every minute the stream stored is compared with REST, once an
    hour: the first final run fetches the hour of every market not audited yet (one request
    each), after giving a healthy stream up to ``max_lag`` seconds to commit past ``end``, so the audit
    comes after the stream's last write of the hour. Otherwise (a tick) a healthy stream is trusted for
    the minutes it has not committed yet, and only closed minutes no window covers are fetched.
    """
    try:
        health = store.health()
        if final:
            health = wait_for_commit(store, health, end.timestamp(), max_lag)
        windows = store.windows(start.timestamp())
    except RecordUnreadable as exc:
        return Plan("rest", {m: [(start, end)] for m in markets}, f"the stream's record is unreadable ({type(exc).__name__}: {exc})")
    wall_now = time.time() if wall_now is None else wall_now
    problem = "stream never ran" if health is None else health.problem(wall_now, max_lag)
    if health is not None:
        trusted_until = health.covered_through if (final or problem) else math.inf
        windows += [Window(w.start, int(min(trusted_until, end.timestamp())), w.markets, w.source) for w in health.open_windows]
    if final:
        unseen = missing(windows, markets, start, end)
        audit = one_range(missing([w for w in windows if w.source == "audit"], markets, start, end))
        if not audit:
            return Plan("stream", {}, "every minute of the hour was compared with REST already (an earlier final run, or a full fetch)", health)
        reasons = [problem] if problem else []
        if unseen:
            reasons.append(f"{len(unseen)} market(s) with minutes the stream did not see or quarantined")
        return Plan(AUDIT, audit, "final run: every stored minute of the hour compared with REST" + (f" ({'; '.join(reasons)})" if reasons else ""),
                    health, unseen)
    now = health.server_time(wall_now) if health is not None else wall_now
    need_end = min(end, pd.Timestamp(floor_minute(now), unit="s", tz="UTC"))
    fetch = one_range(missing(windows, markets, start, need_end)) if need_end > start else {}
    if not fetch:
        if problem is None:
            return Plan("stream", {}, "the stream saw every closed minute", health)
        return Plan("rest fallback", {}, f"{problem}; every minute is stored already or was seen untraded", health)
    subscribed = set().union(*(w.markets for w in windows if w.source == "stream"))
    unsubscribed = sorted(set(fetch) - subscribed)
    reasons = [problem] if problem else []
    if unsubscribed and health is not None:
        reasons.append(f"{len(unsubscribed)} market(s) the stream did not subscribe ({', '.join(unsubscribed[:5])}{', ...' if len(unsubscribed) > 5 else ''})")
    if len(unsubscribed) < len(fetch):
        reasons.append(f"{len(fetch) - len(unsubscribed)} subscribed market(s) with minutes the stream did not see (start-up, disconnects, quarantined states)")
    return Plan("rest fallback", fetch, "; ".join(reasons), health, fetch)


def wait_for_commit(store: SeenStore, health: StreamHealth | None, through: float, max_lag: float) -> StreamHealth | None:
    """The stream's health once it has committed through ``through``, or after ``max_lag`` seconds, or at once when it is unhealthy."""
    deadline = time.monotonic() + max_lag
    while health is not None and health.covered_through < through and health.problem(time.time(), max_lag) is None:
        if time.monotonic() > deadline:
            break
        time.sleep(0.5)
        health = store.health()
    return health


def rest_windows(fetched: Ranges, answered: set[str], closed_before: pd.Timestamp, source: str) -> list[Window]:
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
    return [Window(s, e, frozenset(m), source) for (s, e), m in grouped.items()]


def fetched_windows(plan: Plan | None, markets: list[str], start: pd.Timestamp, end: pd.Timestamp, stats: FetchStats,
                    grace_seconds: float) -> list[Window]:
    """What a ``candles_1m`` run's REST fetch covered, as windows: a plan's ranges (a tick's ``rest``, a final
    run's ``audit``), or the whole window of a full fetch (history, backfills: every minute in it is REST's,
    so it is an ``audit`` too and no final run fetches it again)."""
    if stats.server_time is None:
        return []
    ranges = plan.fetch if plan is not None else {market: [(start, end)] for market in markets}
    answered = set(ranges) - set(stats.skipped_markets)
    closed_before = stats.server_time - pd.Timedelta(seconds=grace_seconds)
    return rest_windows(ranges, answered, closed_before, plan.window_source if plan is not None else "audit")


def stream_status(store: SeenStore, max_lag: float, wall_now: float | None = None) -> dict:
    """The stream as ``/worker/status`` shows it: state (healthy, starting, down, lagging, stopped, never ran),
    lag, messages/s of its last report, and since it started: reconnects, minutes written, minutes without
    trades inside what it saw, and minutes it missed (disconnected, or quarantined states)."""
    wall_now = time.time() if wall_now is None else wall_now
    health = store.health()
    if health is None:
        return {"state": "never ran", "healthy": False, "problem": "stream never ran"}
    problem = health.problem(wall_now, max_lag)
    state = "healthy" if problem is None else problem.split(":")[0].removeprefix("stream ")
    figures = health.figures

    def utc(epoch: float) -> str | None:
        return pd.Timestamp(epoch, unit="s", tz="UTC").strftime("%Y-%m-%dT%H:%M:%SZ") if epoch else None

    return {
        "state": state,
        "healthy": problem is None,
        "problem": problem,
        "lag_s": round(health.lag(wall_now), 1) if health.covered_through else None,
        "messages_per_s": figures.get("last_report", {}).get("messages_per_s"),
        "reconnects": figures.get("reconnects"),
        "markets": figures.get("markets"),
        "minutes_written": figures.get("minutes_written"),
        "no_trade_minutes": figures.get("no_trade_minutes"),
        "missed_minutes": figures.get("missed_minutes"),
        "quarantined": figures.get("quarantined"),
        "heartbeat": utc(health.heartbeat),
        "covered_through": utc(health.covered_through),
    }
