"""Upbit's per-IP request budget, shared by every process that fetches from this machine.

Runs, sensors and benchmarks fetch from one IP at once, so the budget lives in Redis (a sliding window
per group in one Lua script on Redis' clock) and fails closed when Redis does not answer;
``LocalRateLimiter`` is only for a client configured without any Redis. Semantics: docs/upbit.md.
"""

from __future__ import annotations

import logging
import re
import threading
import time
import uuid
from typing import Protocol

import redis

log = logging.getLogger(__name__)

DEFAULT_WINDOW_SECONDS = 1.01  # Upbit's second plus a little for Redis' and Upbit's clock ticks
DEFAULT_FLIGHT_SECONDS = 60.0
DEFAULT_STORE_WAIT_SECONDS = 30.0
_STORE_ERRORS = (redis.RedisError, OSError)
_REMAINING_SEC = re.compile(r"(?:^|;)\s*sec\s*=\s*(\d+)")

# KEYS: window, blocked, last grant, alive. ARGV: limit, window_us, member, spacing_us, flight_us (how far
# ahead an in-flight request's score lies, so it cannot expire mid-flight; a crashed process's slot
# comes free after it), the epoch the caller knows, a new epoch in case the store is found empty.
# Returns {0, 0} when a slot was taken, {1, wait_us} to wait and ask again, {2, ttl_ms} when blocked,
# {3, wait_us, epoch} when the caller's epoch is not the store's: Redis restarted empty since the caller
# last asked (or it never asked): put back what is in flight, remember the epoch, ask again.
# ``alive`` holds "<time grants resume>:<epoch>", written when the store is found empty; no TTL.
_ACQUIRE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local limit, window, spacing = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[4])
local alive = redis.call('GET', KEYS[4])
if not alive then
  alive = (now + window) .. ':' .. ARGV[7]
  redis.call('SET', KEYS[4], alive)
end
local sep = string.find(alive, ':', 1, true)
local resume, epoch = tonumber(string.sub(alive, 1, sep - 1)), string.sub(alive, sep + 1)
if epoch ~= ARGV[6] then return {3, math.max(resume - now, 0), epoch} end
if resume > now then return {1, resume - now} end
local ttl = redis.call('PTTL', KEYS[2])
if ttl ~= -2 then return {2, ttl} end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local last = tonumber(redis.call('GET', KEYS[3]) or '0')
if now - last < spacing then return {1, last + spacing - now} end
if redis.call('ZCARD', KEYS[1]) >= limit then
  local oldest = tonumber(redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')[2])
  return {1, math.max(1, math.min(oldest + window - now, spacing))}
end
local flight = tonumber(ARGV[5])
redis.call('ZADD', KEYS[1], now + flight, ARGV[3])
redis.call('SET', KEYS[3], now, 'PX', math.ceil(window / 1000) + 1)
redis.call('PEXPIRE', KEYS[1], math.ceil((flight + window) / 1000))
return {0, 0}
"""

# The answer came back: the slot now expires a window after this moment (added again if a Redis that
# restarted empty lost it), and the answer is tallied. KEYS: window, answer tallies. ARGV: member, tally
# field, window_ms.
_RELEASE = """
local t = redis.call('TIME')
redis.call('HINCRBY', KEYS[2], ARGV[2], 1)
redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000000 + tonumber(t[2]), ARGV[1])
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[3])) end
return 1
"""

# Requests of this process still in flight, back into a window an emptied Redis lost. KEYS: window.
# ARGV: flight_us, members...
_RESTORE = """
local t = redis.call('TIME')
local until_us = tonumber(t[1]) * 1000000 + tonumber(t[2]) + tonumber(ARGV[1])
for i = 2, #ARGV do redis.call('ZADD', KEYS[1], until_us, ARGV[i]) end
if redis.call('PTTL', KEYS[1]) == -1 then redis.call('PEXPIRE', KEYS[1], math.ceil(tonumber(ARGV[1]) / 1000) + 1000) end
return #ARGV - 1
"""

# Upbit said the group's second is spent: fill the window so every process waits a window.
# KEYS: window. ARGV: limit, window_us, member prefix.
_EXHAUST = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[2]))
local missing = tonumber(ARGV[1]) - redis.call('ZCARD', KEYS[1])
for i = 1, missing do redis.call('ZADD', KEYS[1], now, ARGV[3] .. ':' .. i) end
return missing
"""


class IPBlocked(Exception):
    """The IP is blocked (by a 418 seen here or in another process) for ``seconds`` more."""

    def __init__(self, seconds: float, reason: str) -> None:
        self.seconds = seconds
        self.reason = reason
        super().__init__(f"{reason}; {seconds:.0f} s left")


class LimiterUnavailable(Exception):
    """The shared limiter's store (Redis) did not answer for ``seconds``; no request was sent meanwhile."""

    def __init__(self, seconds: float, cause: str) -> None:
        self.seconds = seconds
        super().__init__(f"rate-limit store (Redis) unreachable for {seconds:.0f} s, no request sent: {cause}")


def parse_remaining_req(header: str | None) -> int | None:
    """``group=candles; min=600; sec=9`` -> 9; None when the header is absent or has no ``sec``."""
    if not header:
        return None
    match = _REMAINING_SEC.search(header)
    return int(match.group(1)) if match else None


class RateLimiter(Protocol):
    """What the client needs: hold a slot per request, learn from Upbit's answers, stop everyone on 418."""

    def acquire(self, group: str) -> str:
        """Wait for a slot; the returned token is handed back to ``release`` when the answer is in."""

    def release(self, group: str, token: str, answer: str) -> None:
        """The request's answer came back (``answer``: ``endpoint status``, tallied where processes share it)."""

    def exhaust(self, group: str) -> None: ...

    def block(self, seconds: float, reason: str) -> None: ...


class RedisRateLimiter:
    """The shared limiter: one sliding window per group in Redis, atomic through Lua; no Redis, no request."""

    def __init__(
        self,
        client: redis.Redis,
        prefix: str,
        limit: int,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        flight_seconds: float = DEFAULT_FLIGHT_SECONDS,
        store_wait_seconds: float = DEFAULT_STORE_WAIT_SECONDS,
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._limit = limit
        self._window_us = int(window_seconds * 1_000_000)
        self._flight_us = int(flight_seconds * 1_000_000)
        self._store_wait = store_wait_seconds
        self._acquire = client.register_script(_ACQUIRE)
        self._release = client.register_script(_RELEASE)
        self._restore = client.register_script(_RESTORE)
        self._exhaust = client.register_script(_EXHAUST)
        self._blocked_key = f"{prefix}:ratelimit:blocked"
        self._answers_key = answers_key(prefix)
        self._alive_key = f"{prefix}:ratelimit:alive"
        self._in_flight: dict[str, str] = {}  # token -> group: granted here, answer not back yet
        self._in_flight_lock = threading.Lock()
        self._epoch = ""  # the store's epoch when this process last asked; a new one means Redis restarted empty
        self._block: tuple[float, str] | None = None  # a 418 seen here: (monotonic end, reason)
        self._block_shared = True
        self._store_down = False

    def _key(self, group: str) -> str:
        return f"{self._prefix}:ratelimit:{group}"

    def acquire(self, group: str) -> str:
        token = uuid.uuid4().hex
        key = self._key(group)
        failing_since: float | None = None
        while True:
            self._raise_if_blocked_here()
            try:
                status, value, *epoch = self._acquire(
                    keys=[key, self._blocked_key, f"{key}:last", self._alive_key],
                    args=[self._limit, self._window_us, token, self._window_us // self._limit, self._flight_us, self._epoch,
                          uuid.uuid4().hex],
                )
                if status == 3:
                    self._store_was_emptied(epoch[0].decode())
            except _STORE_ERRORS as exc:
                failing_since = failing_since or time.monotonic()
                waited = time.monotonic() - failing_since
                self._store_failed(exc)
                if waited >= self._store_wait:
                    raise LimiterUnavailable(waited, f"{type(exc).__name__}: {exc}") from None
                # At least a window between attempts: a Redis that restarts empty has forgotten the last
                # window's grants, which must have left Upbit's window before anyone is granted again.
                time.sleep(self._window_us / 1_000_000)
                continue
            self._store_answered()
            if status == 0:
                with self._in_flight_lock:
                    self._in_flight[token] = group
                return token
            if status == 2:
                raise IPBlocked(max(value, 0) / 1000, self._block_reason())
            time.sleep(value / 1_000_000)

    def release(self, group: str, token: str, answer: str) -> None:
        with self._in_flight_lock:
            self._in_flight.pop(token, None)
        try:
            self._release(keys=[self._key(group), self._answers_key], args=[token, answer, self._window_us // 1000 + 1])
        except _STORE_ERRORS as exc:  # the slot stays held until its flight time ends: later, never earlier
            self._store_failed(exc)

    def _store_was_emptied(self, epoch: str) -> None:
        """A new epoch (Redis restarted empty, or this process's first request): this process's requests in flight
        and a 418 it saw go back into the store (before the resume time, when anyone is granted again)."""
        with self._in_flight_lock:
            by_group: dict[str, list[str]] = {}
            for token, group in self._in_flight.items():
                by_group.setdefault(group, []).append(token)
        for group, tokens in by_group.items():
            self._restore(keys=[self._key(group)], args=[self._flight_us, *tokens])
        self._block_shared = False
        self._share_block()
        self._epoch = epoch

    def exhaust(self, group: str) -> None:
        try:
            self._exhaust(keys=[self._key(group)], args=[self._limit, self._window_us, f"exhausted:{uuid.uuid4().hex}"])
        except _STORE_ERRORS as exc:  # the next grant needs the store anyway
            self._store_failed(exc)

    def block(self, seconds: float, reason: str) -> None:
        """Stop this process at once and every other one through Redis (as soon as Redis takes the key)."""
        self._block = (time.monotonic() + seconds, reason)
        self._block_shared = False
        self._share_block()

    def _raise_if_blocked_here(self) -> None:
        if self._block is None:
            return
        until, reason = self._block
        left = until - time.monotonic()
        if left > 0:
            self._share_block()
            raise IPBlocked(left, reason)

    def _share_block(self) -> None:
        if self._block_shared or self._block is None:
            return
        until, reason = self._block
        left_ms = int((until - time.monotonic()) * 1000)
        try:
            if left_ms > 0:
                self._redis.set(self._blocked_key, reason, px=left_ms)
            self._block_shared = True
        except _STORE_ERRORS as exc:
            log.error("Upbit blocked this IP but Redis is unreachable (%s): the block holds in this process; "
                      "other processes send nothing until Redis answers, and it is written there then", exc)

    def _block_reason(self) -> str:
        try:
            reason = self._redis.get(self._blocked_key)
        except _STORE_ERRORS:
            reason = None
        return reason.decode() if reason else "Upbit blocked this IP (HTTP 418)"

    def _store_failed(self, exc: BaseException) -> None:
        if not self._store_down:
            self._store_down = True
            log.warning("Redis unreachable (%s: %s): no Upbit request is sent until the shared rate limiter answers again",
                        type(exc).__name__, exc)

    def _store_answered(self) -> None:
        if self._store_down:
            self._store_down = False
            log.warning("Redis answers again: Upbit requests resume under the shared rate limiter")


class LocalRateLimiter:
    """The same sliding window inside one process, for a client configured without Redis (one process only)."""

    def __init__(self, limit: int, window_seconds: float = DEFAULT_WINDOW_SECONDS, flight_seconds: float = DEFAULT_FLIGHT_SECONDS) -> None:
        self._limit = limit
        self._window = window_seconds
        self._flight = flight_seconds
        self._slots: dict[str, dict[str, float]] = {}
        self._last: dict[str, float] = {}
        self._blocked_until = 0.0
        self._blocked_reason = ""
        self._lock = threading.Lock()

    def _trimmed(self, group: str, now: float) -> dict[str, float]:
        slots = self._slots.setdefault(group, {})
        for token in [t for t, at in slots.items() if at <= now - self._window]:
            del slots[token]
        return slots

    def acquire(self, group: str) -> str:
        spacing = self._window / self._limit
        while True:
            with self._lock:
                now = time.monotonic()
                if now < self._blocked_until:
                    raise IPBlocked(self._blocked_until - now, self._blocked_reason)
                slots = self._trimmed(group, now)
                last = self._last.get(group, float("-inf"))
                if now - last < spacing:
                    wait = last + spacing - now
                elif len(slots) >= self._limit:
                    wait = min(min(slots.values()) + self._window - now, spacing)
                else:
                    token = uuid.uuid4().hex
                    slots[token] = now + self._flight
                    self._last[group] = now
                    return token
            time.sleep(max(wait, 0.001))

    def release(self, group: str, token: str, answer: str) -> None:
        """Frees the slot; the answer is not tallied (one process, nothing to share it with)."""
        with self._lock:
            slots = self._slots.setdefault(group, {})
            if token in slots:
                slots[token] = time.monotonic()

    def exhaust(self, group: str) -> None:
        with self._lock:
            now = time.monotonic()
            slots = self._trimmed(group, now)
            for _ in range(self._limit - len(slots)):
                slots[uuid.uuid4().hex] = now

    def block(self, seconds: float, reason: str) -> None:
        with self._lock:
            self._blocked_until = time.monotonic() + seconds
            self._blocked_reason = reason


def answers_key(prefix: str) -> str:
    """The Redis hash of Upbit answers by ``endpoint status``, written by every process's limiter."""
    return f"{prefix}:upbit:answers"


def answer_counts(client: redis.Redis, prefix: str) -> dict[tuple[str, str], int]:
    """Upbit answers so far by (endpoint, status), across every process sharing this Redis."""
    counts = {}
    for field, count in client.hgetall(answers_key(prefix)).items():
        endpoint, _, status = field.decode().rpartition(" ")
        counts[(endpoint, status)] = int(count)
    return counts
