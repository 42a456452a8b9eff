"""Cycle latency of the market-status job: launch through the run queue -> snapshot in Redis.

Runs `dagster dev` (webserver + daemon, the project's instance config) against the offline replay
server simulating N KRW markets with Upbit's real rate limits (10 requests/s per group), prepares the
history the analysis looks back over, then launches market_status_job for the current hour R times
through GraphQL, one after another, and times each from launch until Redis carries that run's snapshot.
Each cycle is split with the run's event-log timestamps:

  queue    launch -> dequeued (PIPELINE_STARTING)        run queue and daemon poll
  startup  dequeued -> first STEP_START                  run worker process, imports, resources
  fetch    candles_1m STEP_START -> its STEP_OUTPUT      Upbit requests (rate limited) and checks
  store    candles_1m output -> market_status start      candle write (Postgres COPY), step hand-over
  compute  market_status start -> its STEP_OUTPUT        lookback read, indicators, checks
  write    Postgres write of the snapshots               (IO manager's write_seconds)
  push     rest of the output handling -> Redis seen     Redis push and the poll's granularity

The fetch floor is the run's Upbit requests / 10 per second (counted by the replay server).

    python bench/cycle.py [--markets 250] [--runs 10]

Uses DATABASE_URL/REDIS_URL when set, else the embedded servers; schema and Redis prefix dantaro_bench.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import httpx

os.environ.setdefault("DANTARO_SCHEMA", "dantaro_bench")
os.environ.setdefault("DANTARO_REDIS_PREFIX", "dantaro_bench")
os.environ["WORKER_ENABLED"] = "false"  # only the benchmark's runs

import dagster as dg
import redis

from dantaro_assets.lib import embedded
from dantaro_assets.operations.dev_server import DagsterDev, prepare_history
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.settings import load_settings
from dantaro_replay.process import start_replay_server

PHASES = ("queue", "startup", "fetch", "store", "compute", "write", "push")


def accepted_requests(replay_url: str) -> int:
    groups = httpx.get(f"{replay_url}/_replay/stats", timeout=5).json()["groups"]
    return sum(group["ok"] for group in groups.values())


def phases(instance: dg.DagsterInstance, run_id: str, launched: float, redis_seen: float) -> dict[str, float]:
    """Split launch -> Redis into phases from the run's event log."""
    first: dict[tuple[str | None, str], float] = {}
    write_seconds = 0.0
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        first.setdefault((entry.step_key, event.event_type_value), entry.timestamp)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.step_key == "market_status":
            write_seconds = float(event.event_specific_data.materialization.metadata["write_seconds"].value)
    starting = first[(None, "PIPELINE_STARTING")]
    fetch_start = first[("candles_1m", "STEP_START")]
    fetch_end = first[("candles_1m", "STEP_OUTPUT")]
    compute_start = first[("market_status", "STEP_START")]
    compute_end = first[("market_status", "STEP_OUTPUT")]
    return {
        "queue": starting - launched,
        "startup": fetch_start - starting,
        "fetch": fetch_end - fetch_start,
        "store": compute_start - fetch_end,
        "compute": compute_end - compute_start,
        "write": write_seconds,
        "push": redis_seen - compute_end - write_seconds,
        "total": redis_seen - launched,
    }


def wait_for_snapshot(client: redis.Redis, key: str, run_id: str, timeout: float = 300) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        raw = client.get(key)
        if raw is not None and json.loads(raw).get("run_id") == run_id:
            return time.time()
        time.sleep(0.05)
    raise TimeoutError(f"no snapshot of run {run_id} in {key} after {timeout} s")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    settings = load_settings()
    os.environ["DATABASE_URL"] = embedded.postgres_url(settings)
    os.environ["REDIS_URL"] = embedded.redis_url(settings)
    replay = start_replay_server("--simulated", str(args.markets))
    replay_url = replay.url
    os.environ["UPBIT_BASE_URL"] = replay_url
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = f"{settings.redis_prefix}:market_status:latest"
    rows = []
    try:
        with tempfile.TemporaryDirectory(prefix="dantaro-bench-") as home, DagsterDev(Path(home), settings=settings) as dev:
            print(f"preparing: universe and 1h/1d candles for 2 days, 1m candles for 26 h of {args.markets} markets", flush=True)
            prepare_history(dev)
            with dg.DagsterInstance.from_config(home) as instance:
                for index in range(args.runs):
                    hour = hourly_partitions.get_partition_key_for_timestamp(time.time())
                    before = accepted_requests(replay_url)
                    launched = time.time()
                    run_id = dev.launch("market_status_job", hour)
                    seen = wait_for_snapshot(cache, key, run_id)
                    assert dev.wait(run_id) == "SUCCESS", f"run {run_id} failed"
                    row = phases(instance, run_id, launched, seen) | {"requests": accepted_requests(replay_url) - before}
                    rows.append(row)
                    print(f"run {index + 1}/{args.runs}: {row['total']:.2f} s, {row['requests']} requests", flush=True)
    finally:
        replay.stop()

    totals = [row["total"] for row in rows]
    floor = statistics.median(row["requests"] for row in rows) / settings.upbit_requests_per_second
    print("\n| phase | p50 s | p95 s |\n|---|---|---|")
    for phase in (*PHASES, "total"):
        values = [row[phase] for row in rows]
        print(f"| {phase} | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} |")
    p50, p95 = percentile(totals, 0.5), percentile(totals, 0.95)
    print(f"\nfetch floor {floor:.1f} s ({floor * settings.upbit_requests_per_second:.0f} requests / {settings.upbit_requests_per_second} per s); "
          f"target p50 <= floor + 10 s = {floor + 10:.1f} s: {'met' if p50 <= floor + 10 else 'MISSED'}")
    print(f"command: python bench/cycle.py --markets {args.markets} --runs {args.runs}")
    print(json.dumps({"p50_s": round(p50, 2), "p95_s": round(p95, 2), "floor_s": round(floor, 2)}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
