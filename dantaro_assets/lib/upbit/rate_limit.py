"""Upbit's per-IP request budget, shared by every process that fetches from this machine.

Upbit counts requests per IP and per group (market, candles, ticker, ...): 10 a second each; past
that it answers 429, and clients that keep going get the IP blocked (418). Runs, sensors and
benchmarks fetch at the same time from one IP, so the budget lives in Redis: a sliding window per
group (a sorted set of request stamps, trimmed and counted in one Lua script, stamped with Redis'
own clock so processes need no clock agreement), plus one key that says the IP is blocked.
Without Redis an in-process limiter with the same semantics keeps one process within the budget.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from collections import deque
from typing import Protocol

import redis

log = logging.getLogger(__name__)

# The window is a little longer than Upbit's second: a request stamped here reaches Upbit a few
# milliseconds later, and two requests' delays differ, so a 1.000 s window could let 11 requests
# land inside one of Upbit's seconds. Grants are also spaced window/limit apart: a burst of ten
# requests at once would queue at both ends and widen exactly those delay differences.
DEFAULT_WINDOW_SECONDS = 1.05
UPBIT_LIMIT_PER_SECOND = 10

_REMAINING_SEC = re.compile(r"(?:^|;)\s*sec\s*=\s*(\d+)")

# KEYS: window, blocked. ARGV: limit, window_us, member, spacing_us.
# Returns {0, 0} when a slot was taken, {1, wait_us} when the window is full, {2, ttl_ms} when blocked.
_ACQUIRE = """
local ttl = redis.call('PTTL', KEYS[2])
if ttl ~= -2 then return {2, ttl} end
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit = tonumber(ARGV[1])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local newest = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
if newest[2] and now - tonumber(newest[2]) < tonumber(ARGV[4]) then
  return {1, math.max(1, tonumber(newest[2]) + tonumber(ARGV[4]) - now)}
end
if redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], now, ARGV[3])
  redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) * 2)
  return {0, 0}
end
local oldest = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {1, math.max(1, tonumber(oldest[2]) + window - now)}
"""

# Upbit said the group's second is spent: fill the window with stamps so every process waits.
# KEYS: window. ARGV: limit, window_us, member prefix.
_EXHAUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local window = tonumber(ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local missing = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
for i = 1, missing do redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. i) end
redis.call('PEXPIRE', KEYS[1], math.ceil(window / 1000) * 2)
return missing
"""


class IPBlocked(Exception):
    """The IP is blocked (by a 418 seen here or in another process) for ``seconds`` more."""

    def __init__(self, seconds: float, reason: str) -> None:
        self.seconds = seconds
        self.reason = reason
        super().__init__(f"{reason}; {seconds:.0f} s left")


def parse_remaining_req(header: str | None) -> int | None:
    """``group=candles; min=600; sec=9`` -> 9; None when the header is absent or has no ``sec``."""
    if not header:
        return None
    match = _REMAINING_SEC.search(header)
    return int(match.group(1)) if match else None


class RateLimiter(Protocol):
    """What the client needs: wait for a slot, learn from Upbit's answers, stop everyone on 418."""

    def acquire(self, group: str) -> None: ...

    def exhaust(self, group: str) -> None: ...

    def block(self, seconds: float, reason: str) -> None: ...


class RedisRateLimiter:
    """The shared limiter: one sliding window per group in Redis, atomic through Lua."""

    def __init__(self, client: redis.Redis, prefix: str, limit: int, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> None:
        self._redis = client
        self._prefix = prefix
        self._limit = limit
        self._window_us = int(window_seconds * 1_000_000)
        self._acquire = client.register_script(_ACQUIRE)
        self._exhaust = client.register_script(_EXHAUST)
        self._blocked_key = f"{prefix}:ratelimit:blocked"

    def _key(self, group: str) -> str:
        return f"{self._prefix}:ratelimit:{group}"

    def acquire(self, group: str) -> None:
        while True:
            status, value = self._acquire(keys=[self._key(group), self._blocked_key], args=[self._limit, self._window_us, uuid.uuid4().hex, self._window_us // self._limit])
            if status == 0:
                return
            if status == 2:
                reason = self._redis.get(self._blocked_key)
                raise IPBlocked(max(value, 0) / 1000, reason.decode() if reason else "Upbit blocked this IP (HTTP 418)")
            time.sleep(value / 1_000_000)

    def exhaust(self, group: str) -> None:
        self._exhaust(keys=[self._key(group)], args=[self._limit, self._window_us, f"exhausted:{uuid.uuid4().hex}"])

    def block(self, seconds: float, reason: str) -> None:
        self._redis.set(self._blocked_key, reason, px=max(1, int(seconds * 1000)))


class LocalRateLimiter:
    """The same sliding window inside one process, for when no Redis is reachable."""

    def __init__(self, limit: int, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> None:
        self._limit = limit
        self._window = window_seconds
        self._stamps: dict[str, deque[float]] = {}
        self._blocked_until = 0.0
        self._blocked_reason = ""
        self._lock = threading.Lock()

    def _trimmed(self, group: str, now: float) -> deque[float]:
        stamps = self._stamps.setdefault(group, deque())
        while stamps and stamps[0] <= now - self._window:
            stamps.popleft()
        return stamps

    def acquire(self, group: str) -> None:
        while True:
            with self._lock:
                now = time.monotonic()
                if now < self._blocked_until:
                    raise IPBlocked(self._blocked_until - now, self._blocked_reason)
                stamps = self._trimmed(group, now)
                spacing = self._window / self._limit
                if stamps and now - stamps[-1] < spacing:
                    wait = stamps[-1] + spacing - now
                elif len(stamps) < self._limit:
                    stamps.append(now)
                    return
                else:
                    wait = stamps[0] + self._window - now
            time.sleep(wait)

    def exhaust(self, group: str) -> None:
        with self._lock:
            now = time.monotonic()
            stamps = self._trimmed(group, now)
            stamps.extend([now] * (self._limit - len(stamps)))

    def block(self, seconds: float, reason: str) -> None:
        with self._lock:
            self._blocked_until = time.monotonic() + seconds
            self._blocked_reason = reason


def make_rate_limiter(client: redis.Redis | None, prefix: str, limit: int, window_seconds: float = DEFAULT_WINDOW_SECONDS) -> RateLimiter:
    """The Redis limiter when ``client`` answers a PING; otherwise the in-process one, with a warning."""
    if client is not None:
        try:
            client.ping()
            return RedisRateLimiter(client, prefix, limit, window_seconds)
        except (redis.RedisError, OSError) as exc:
            log.warning("Redis unreachable (%s): Upbit rate limit enforced in this process only", exc)
    else:
        log.warning("no Redis configured: Upbit rate limit enforced in this process only, not across processes")
    return LocalRateLimiter(limit, window_seconds)
