"""The rate limit holds across processes: two processes fetch at once and the server sees no 429.

Each process is ``python -m dantaro_assets_tests.lib.test_upbit_rate_limit``, a real client with its
own connections and threads; only Redis is shared. The same run without Redis (each process
limiting itself) shows the test can fail: the server then answers 429s.
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

from dantaro_assets.lib.upbit.rate_limit import LocalRateLimiter, RedisRateLimiter

WINDOW = ("2026-03-02T09:00:00+00:00", "2026-03-02T10:00:00+00:00")


def _fetch_in_subprocess(url: str, redis_url: str | None, prefix: str, markets: list[str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "dantaro_assets_tests.lib.test_upbit_rate_limit", url, redis_url or "", prefix, ",".join(markets)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _run_two(replay, settings, redis_url: str | None) -> tuple[list[dict], float]:
    replay.set_clock("2026-03-02T10:30:00Z")
    markets = [m for m in sorted(_all_markets(replay)) if m != "KRW-BTC"][:30]
    prefix = f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"
    replay.reset_stats()
    began = time.monotonic()
    processes = [_fetch_in_subprocess(replay.url, redis_url, prefix, half) for half in (markets[:15], markets[15:])]
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
        limiter.release("candles", token)  # an instant answer
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
    limiter.release("candles", tokens[0])
    answered = time.monotonic()
    waiter.join(3)
    assert granted and granted[0][1] - answered >= 0.95, "the slot frees a window after its answer came back"


def test_exhaust_makes_every_limiter_on_the_key_wait(settings, redis_client):
    prefix = f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"
    RedisRateLimiter(redis_client, prefix, 10).exhaust("candles")  # Upbit said sec=0
    began = time.monotonic()
    RedisRateLimiter(redis_client, prefix, 10).acquire("candles")
    assert time.monotonic() - began >= 0.9


def _main(url: str, redis_url: str, prefix: str, markets: str) -> None:
    from dantaro_assets.lib.redis_store import RedisResource
    from dantaro_assets.lib.upbit import UpbitClient

    redis = RedisResource(url=redis_url, prefix=prefix) if redis_url else None
    client = UpbitClient(base_url=url, redis=redis, backoff_seconds=0.2, max_retries=10)
    _, stats = client.candles(markets.split(","), "minute1", pd.Timestamp(WINDOW[0]), pd.Timestamp(WINDOW[1]))
    print(json.dumps({"http_429": stats.http_429, "requests": stats.requests, "markets_returned": stats.markets_returned}))


if __name__ == "__main__":
    _main(*sys.argv[1:5])
