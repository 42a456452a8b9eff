"""The rate limit holds across processes: two processes fetch at once and the server sees no 429.

Each process is ``python -m dantaro_assets_tests.lib.test_upbit_rate_limit``, a real client with its
own connections and threads; only Redis is shared. The same run without Redis (each process
limiting itself) shows the test can fail: the server then answers 429s. With the shared Redis
unreachable (a private redis-server killed mid-fetch, or never started) the processes send nothing
until it answers again, then share its window: still no 429.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
import uuid

import pandas as pd
import pytest
import redis

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import UpbitClient, UpbitLimiterUnavailableError
from dantaro_assets.lib.upbit.rate_limit import IPBlocked, LimiterUnavailable, LocalRateLimiter, RedisRateLimiter
from dantaro_assets_tests.fixtures.redis_server import PrivateRedis

pytestmark = pytest.mark.spread  # each test has its own limiter key, processes and Redis

WINDOW = ("2026-03-02T09:00:00+00:00", "2026-03-02T10:00:00+00:00")
ANSWER = "/v1/candles/minutes/1 200"  # what a released slot tallies
TEN_HOURS = ("2026-03-02T00:00:00+00:00", "2026-03-02T10:00:00+00:00")  # 600 candles: 3 requests a market


def _fetch_in_subprocess(
    url: str, redis_url: str | None, prefix: str, markets: list[str], window: tuple[str, str] = WINDOW, store_wait: float = 30.0
) -> subprocess.Popen:
    args = [sys.executable, "-m", "dantaro_assets_tests.lib.test_upbit_rate_limit", url, redis_url or "", prefix, ",".join(markets),
            *window, str(store_wait)]
    return subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _start_together(processes: list[subprocess.Popen]) -> list[subprocess.Popen]:
    """Once every process has its client (its imports took 1-5 s, more under load), all of them fetch at once."""
    for process in processes:
        ready = process.stdout.readline()
        assert ready.strip() == "ready", ready + process.stderr.read()[-2000:]
    for process in processes:
        process.stdin.write("go\n")
        process.stdin.flush()
    return processes


def _run_two(replay, settings, redis_url: str | None) -> tuple[list[dict], float]:
    replay.set_clock("2026-03-02T10:30:00Z")
    markets = [m for m in sorted(_all_markets(replay)) if m != "KRW-BTC"][:30]
    prefix = f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"
    replay.reset_stats()
    began = time.monotonic()
    processes = _start_together([_fetch_in_subprocess(replay.url, redis_url, prefix, half) for half in (markets[:15], markets[15:])])
    outputs = [p.communicate(timeout=120) for p in processes]
    elapsed = time.monotonic() - began
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs], elapsed


def _all_markets(replay) -> list[str]:
    import httpx

    return [m["market"] for m in httpx.get(f"{replay.url}/v1/market/all", timeout=10).json()]


@pytest.mark.slow
def test_two_processes_share_10_per_second_without_a_429(replay, settings, redis_client):
    results, elapsed = _run_two(replay, settings, settings.redis_url)
    candles = replay.stats()["groups"]["candles"]
    assert candles["too_many"] == 0 and candles["max_per_second"] <= 10
    assert sum(r["http_429"] for r in results) == 0 and sum(r["markets_returned"] for r in results) == 30
    assert elapsed >= 2.5, "30 requests at 10/s take at least ~3 s: the limiter really paced them"


@pytest.mark.slow
def test_without_a_shared_limiter_two_processes_get_429s(replay, settings):
    results, _ = _run_two(replay, settings, None)
    assert replay.stats()["groups"]["candles"]["too_many"] > 0
    assert sum(r["http_429"] for r in results) > 0


@pytest.mark.parametrize(
    "make", [lambda prefix, r: RedisRateLimiter(r, prefix, 10), lambda prefix, r: LocalRateLimiter(10)], ids=["redis", "in_process"]
)
def test_limiter_grants_at_most_limit_per_window_and_saturates_it(make, settings, redis_client):
    limiter = make(f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}", redis_client)
    stamps = []
    for _ in range(25):
        token = limiter.acquire("candles")
        stamps.append(time.monotonic())
        limiter.release("candles", token, ANSWER)  # an instant answer
    stamps = pd.Series(stamps)
    in_any_second = max(((stamps >= t) & (stamps < t + 1.0)).sum() for t in stamps)
    assert in_any_second <= 10
    assert stamps.iloc[-1] - stamps.iloc[0] < 24 * 0.101 + 0.3, "paced evenly, no idle seconds"


@pytest.mark.parametrize(
    "make", [lambda prefix, r: RedisRateLimiter(r, prefix, 10), lambda prefix, r: LocalRateLimiter(10)], ids=["redis", "in_process"]
)
def test_a_slot_is_held_while_in_flight_and_a_window_after_the_answer(make, settings, redis_client):
    limiter = make(f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}", redis_client)
    tokens = [limiter.acquire("candles") for _ in range(10)]  # ten requests in flight
    time.sleep(1.2)  # longer than a window: in-flight slots must not expire
    granted = []
    waiter = threading.Thread(target=lambda: granted.append((limiter.acquire("candles"), time.monotonic())))
    waiter.start()
    waiter.join(0.5)
    assert not granted, "an eleventh request waits while ten are in flight"
    limiter.release("candles", tokens[0], ANSWER)
    answered = time.monotonic()
    waiter.join(3)
    assert granted and granted[0][1] - answered >= 0.95, "the slot frees a window after its answer came back"


def test_exhaust_makes_every_limiter_on_the_key_wait(settings, redis_client):
    prefix = f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"
    RedisRateLimiter(redis_client, prefix, 10).exhaust("candles")  # Upbit said sec=0
    began = time.monotonic()
    RedisRateLimiter(redis_client, prefix, 10).acquire("candles")
    assert time.monotonic() - began >= 0.9


@pytest.fixture
def private_redis():
    server = PrivateRedis()
    yield server
    server.kill()


def _candle_requests(replay) -> int:
    return replay.stats()["groups"].get("candles", {}).get("requests", 0)


def _start_three(replay, redis_url: str, store_wait: float) -> list[subprocess.Popen]:
    replay.set_clock("2026-03-02T10:30:00Z")
    markets = sorted(_all_markets(replay))[:39]
    replay.reset_stats()
    prefix = f"dantaro_test_{uuid.uuid4().hex[:6]}"
    return _start_together([_fetch_in_subprocess(replay.url, redis_url, prefix, markets[i::3], TEN_HOURS, store_wait) for i in range(3)])


def _results(processes: list[subprocess.Popen]) -> list[dict]:
    outputs = [p.communicate(timeout=180) for p in processes]
    for process, (_, err) in zip(processes, outputs):
        assert process.returncode == 0, err[-2000:]
    return [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]


def _wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, what
        time.sleep(0.05)


@pytest.mark.slow
def test_redis_killed_mid_fetch_three_processes_pause_then_share_again_without_a_429(replay, private_redis):
    private_redis.start()
    processes = _start_three(replay, private_redis.url, store_wait=60)
    _wait_for(lambda: _candle_requests(replay) >= 20, 60, "the three processes never started fetching")
    private_redis.kill()
    time.sleep(0.5)  # requests granted before the kill arrive
    sent_before_outage = _candle_requests(replay)
    time.sleep(3)
    assert _candle_requests(replay) == sent_before_outage, "no request is sent while the shared limiter is unreachable"
    assert all(p.poll() is None for p in processes), "the processes wait for Redis rather than failing at once"

    private_redis.start()  # back, and empty (no persistence), as after a crash
    results = _results(processes)

    candles = replay.stats()["groups"]["candles"]
    assert candles["too_many"] == 0 and candles["blocked"] == 0 and candles["max_per_second"] <= 10
    assert sum(r["http_429"] for r in results) == 0
    assert [r["markets_returned"] for r in results] == [13, 13, 13] and candles["requests"] == 39 * 3
    assert candles["requests"] > sent_before_outage, "the fetch went on under the restored shared limiter"


@pytest.mark.slow
def test_redis_restarted_empty_at_once_mid_fetch_three_processes_get_no_429(replay, private_redis):
    """A restart quicker than a request: threads whose request was in flight never see the outage, and must
    not take the emptied window while the requests granted just before it still count at Upbit."""
    private_redis.start()
    processes = _start_three(replay, private_redis.url, store_wait=60)
    replay.inject("latency", path="/v1/candles/*", count=None, seconds=0.4)  # Upbit's answers take a while: many in flight
    _wait_for(lambda: _candle_requests(replay) >= 20, 60, "the three processes never started fetching")
    for _ in range(5):  # killed and started again at once, five times, mid-fetch
        private_redis.kill()
        private_redis.start()
        time.sleep(1.5)
    results = _results(processes)

    candles = replay.stats()["groups"]["candles"]
    assert (candles["too_many"], candles["blocked"]) == (0, 0) and candles["max_per_second"] <= 10, candles
    assert sum(r["http_429"] for r in results) == 0
    assert [r["markets_returned"] for r in results] == [13, 13, 13]


@pytest.mark.slow
def test_three_processes_started_during_an_outage_send_nothing_until_redis_answers(replay, private_redis):
    processes = _start_three(replay, private_redis.url, store_wait=60)  # Redis not started: its port is closed
    time.sleep(4)
    assert _candle_requests(replay) == 0 and all(p.poll() is None for p in processes)

    private_redis.start()
    results = _results(processes)
    candles = replay.stats()["groups"]["candles"]
    assert candles["too_many"] == 0 and candles["max_per_second"] <= 10 and sum(r["http_429"] for r in results) == 0
    assert [r["markets_returned"] for r in results] == [13, 13, 13]


def test_with_redis_unreachable_a_fetch_fails_typed_and_sends_nothing(replay, settings):
    replay.set_clock("2026-03-02T10:30:00Z")
    unreachable = RedisResource(url="redis://127.0.0.1:1/0", prefix=settings.redis_prefix)
    client = UpbitClient(base_url=replay.url, redis=unreachable, store_wait_seconds=1)
    began = time.monotonic()
    expected = r"/v1/candles/minutes/1 market=KRW-(BTC|ETH): rate-limit store \(Redis\) unreachable"
    with pytest.raises(UpbitLimiterUnavailableError, match=expected):
        client.candles(["KRW-BTC", "KRW-ETH"], "minute1", pd.Timestamp(WINDOW[0]), pd.Timestamp(WINDOW[1]))
    client.close()
    assert time.monotonic() - began >= 1, "it waited for the store before giving up"
    assert _candle_requests(replay) == 0


def test_limiter_waits_at_most_store_wait_then_raises(settings):
    limiter = RedisRateLimiter(redis.Redis(port=1, socket_connect_timeout=1), settings.redis_prefix, 10, store_wait_seconds=0.5)
    with pytest.raises(LimiterUnavailable) as raised:
        limiter.acquire("candles")
    assert raised.value.seconds >= 0.5
    limiter.release("candles", "token", ANSWER)  # the answer of a request granted before the outage: no error
    limiter.exhaust("candles")


def test_a_418_seen_while_redis_is_down_stops_this_process_and_reaches_redis_when_it_is_back(private_redis):
    private_redis.start()
    prefix = f"dantaro_test_{uuid.uuid4().hex[:6]}"
    here = RedisRateLimiter(redis.Redis.from_url(private_redis.url, socket_connect_timeout=1), prefix, 10, store_wait_seconds=0.5)
    elsewhere = RedisRateLimiter(redis.Redis.from_url(private_redis.url, socket_connect_timeout=1), prefix, 10, store_wait_seconds=0.5)
    here.release("candles", here.acquire("candles"), ANSWER)
    private_redis.kill()

    here.block(30, "Upbit blocked this IP (HTTP 418 on /v1/candles/minutes/1)")  # Redis down: no error
    with pytest.raises(IPBlocked):
        here.acquire("candles")
    with pytest.raises(LimiterUnavailable):
        elsewhere.acquire("candles")  # another process sends nothing either

    private_redis.start()
    with pytest.raises(IPBlocked):
        here.acquire("candles")  # the block is written to Redis now
    with pytest.raises(IPBlocked, match="HTTP 418 on /v1/candles/minutes/1") as raised:
        elsewhere.acquire("candles")
    assert 20 < raised.value.seconds <= 30


def test_a_redis_restarted_empty_grants_nothing_for_a_window_and_gets_the_in_flight_requests_back(private_redis):
    """Ten requests granted just before the restart still count at Upbit: an emptied window must not grant at once."""
    private_redis.start()
    prefix = f"dantaro_test_{uuid.uuid4().hex[:6]}"
    here = RedisRateLimiter(redis.Redis.from_url(private_redis.url, socket_connect_timeout=1), prefix, 10)
    elsewhere = RedisRateLimiter(redis.Redis.from_url(private_redis.url, socket_connect_timeout=1), prefix, 10)
    tokens = [here.acquire("candles") for _ in range(9)]  # nine in flight
    here.release("candles", here.acquire("candles"), ANSWER)  # and one answered: the window is full
    private_redis.kill()
    private_redis.start()  # back, empty, before either limiter noticed

    began = time.monotonic()
    elsewhere.acquire("candles")
    assert time.monotonic() - began >= 0.95, "an emptied window waits a window before granting"
    granted = []
    waiter = threading.Thread(target=lambda: granted.append(here.acquire("candles")))  # here puts its nine back first
    waiter.start()
    waiter.join(2.5)
    assert not granted, "nine in flight here and one granted elsewhere: the window is full again"
    here.release("candles", tokens[0], ANSWER)
    waiter.join(3)
    assert granted


def _main(url: str, redis_url: str, prefix: str, markets: str, start: str = WINDOW[0], end: str = WINDOW[1],
          store_wait: str = "30") -> None:
    redis_store = RedisResource(url=redis_url, prefix=prefix) if redis_url else None
    client = UpbitClient(base_url=url, redis=redis_store, backoff_seconds=0.2, max_retries=10, store_wait_seconds=float(store_wait))
    print("ready", flush=True)
    sys.stdin.readline()  # the test's go, sent once every process is ready
    _, stats = client.candles(markets.split(","), "minute1", pd.Timestamp(start), pd.Timestamp(end))
    print(json.dumps({"http_429": stats.http_429, "requests": stats.requests, "markets_returned": stats.markets_returned}))


if __name__ == "__main__":
    _main(*sys.argv[1:])
