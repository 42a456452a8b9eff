"""Benchmark: refresh one hour of candles_1m for 250 simulated markets through the replay server.

Starts ``python -m dantaro_replay --simulated 250`` (Upbit's real limit: 10 requests/s per
group, 429 past it) and fetches the last closed hour of 1-minute candles of every market twice:

- ``UpbitClient``: concurrent requests under the shared Redis limiter (in-process without Redis);
- naive: one market after another with a fixed 0.1 s sleep, as pyupbit paces its pages.

The lower bound is requests / 10 per second. Each scenario can add network latency to every
answer (the replay server's latency fault) because that is where pacing by sleeps loses most.

    python bench/fetch.py [--markets 250] [--latencies 0,0.05] [--redis-url redis://127.0.0.1:6379/0]
"""

from __future__ import annotations

import argparse
import json
import os
import time
import uuid

import httpx
import pandas as pd
from tabulate import tabulate

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import UpbitClient, interval
from dantaro_assets.lib.upbit.parsing import parse_candle_page
from dantaro_assets.redaction import redact_url
from dantaro_replay.process import start_replay_server

RATE = 10
MINUTE = interval("minute1")


def control(url: str, method: str, path: str, body: object = None) -> dict:
    response = httpx.request(method, url + path, json=body, timeout=10)
    response.raise_for_status()
    return response.json()


def server_429s(url: str) -> int:
    return control(url, "GET", "/_replay/stats")["groups"].get("candles", {}).get("too_many", 0)


def naive(url: str, markets: list[str], start: pd.Timestamp, end: pd.Timestamp) -> tuple[int, int]:
    """One market after another, a fixed 0.1 s sleep after each request (pyupbit's pacing)."""
    candles = requests = 0
    with httpx.Client(base_url=url, timeout=30) as http:
        for market in markets:
            params = {"market": market, "to": end.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": 60}
            response = http.get("/v1/candles/minutes/1", params=params)
            requests += 1
            response.raise_for_status()
            good, _ = parse_candle_page(response.json(), market=market, interval=MINUTE, to=end, endpoint="naive")
            candles += int((good["candle_start"] >= start).sum())
            time.sleep(0.1)
    return candles, requests


def scenario(url: str, markets: list[str], latency: float, redis_url: str | None) -> list[dict]:
    control(url, "POST", "/_replay/reset")
    if latency:
        control(url, "POST", "/_replay/faults", {"kind": "latency", "seconds": latency, "count": None, "path": "/v1/candles/*"})
    end = pd.Timestamp.now(tz="UTC").floor("h")
    start = end - pd.Timedelta(hours=1)
    redis = RedisResource(url=redis_url, prefix=f"dantaro_bench_{uuid.uuid4().hex[:6]}") if redis_url else None
    client = UpbitClient(base_url=url, redis=redis)
    rows = []

    began = time.perf_counter()
    frame, stats = client.candles(markets, "minute1", start, end)
    wall = time.perf_counter() - began
    client.close()
    rows.append({"latency_s": latency, "method": "UpbitClient", "wall_s": wall, "requests": stats.requests, "candles": len(frame),
                 "http_429": server_429s(url)})

    time.sleep(1.1)  # let the server's window empty
    control(url, "POST", "/_replay/stats/reset")
    began = time.perf_counter()
    candles, requests = naive(url, markets, start, end)
    wall = time.perf_counter() - began
    rows.append({"latency_s": latency, "method": "naive (sequential, sleep 0.1 s)", "wall_s": wall, "requests": requests, "candles": candles,
                 "http_429": server_429s(url)})
    for row in rows:
        row["lower_bound_s"] = row["requests"] / RATE
        row["ratio_to_lower_bound"] = row["wall_s"] / row["lower_bound_s"]
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--latencies", default="0,0.05", help="comma-separated seconds of latency added to every candle answer")
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/0"), help="shared limiter; '' for in-process")
    args = parser.parse_args(argv)

    replay = start_replay_server("--simulated", str(args.markets), "--rate-limit", str(RATE))
    url = replay.url
    try:
        markets = [m["market"] for m in control(url, "GET", "/v1/market/all")]
        rows = [row for latency in map(float, args.latencies.split(",")) for row in scenario(url, markets, latency, args.redis_url or None)]
    finally:
        replay.stop()

    print(tabulate(rows, headers="keys", floatfmt=".3f", tablefmt="github"))
    redis_arg = redact_url(args.redis_url) if args.redis_url else "''"
    print(f"\ncommand: python bench/fetch.py --markets {args.markets} --latencies {args.latencies} --redis-url {redis_arg}")
    ours = [r for r in rows if r["method"] == "UpbitClient"]
    naives = [r for r in rows if r["method"] != "UpbitClient"]
    for o, n in zip(ours, naives):
        assert o["candles"] == n["candles"], f"both methods must fetch the same candles: {o['candles']} vs {n['candles']}"
    first, first_naive = ours[0], naives[0]
    print(json.dumps({
        "ratio_to_lower_bound": round(max(r["ratio_to_lower_bound"] for r in ours), 3),
        "http_429": sum(r["http_429"] for r in ours),
        "vs_naive": round(first_naive["wall_s"] / first["wall_s"], 3),
        "vs_naive_by_latency": {str(o["latency_s"]): round(n["wall_s"] / o["wall_s"], 3) for o, n in zip(ours, naives)},
    }))


if __name__ == "__main__":
    main()
