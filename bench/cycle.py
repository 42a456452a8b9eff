"""Cycle latency of the market-status job, launch through the run queue -> snapshot in Redis, on the stream and on REST.

Runs `dagster dev` (webserver + daemon, the project's instance config) against the offline replay
server simulating N KRW markets with Upbit's real rate limits (10 requests/s per group), prepares the
history the analysis looks back over, then launches market_status_job for the current hour R times
through GraphQL, one after another, timing each from launch until Redis carries that run's snapshot:

  rest    no `dantaro stream` and no record of earlier fetches: the candles_1m step fetches the open hour of
          every market (one request each), as every tick does without the stream
  stream  `dantaro stream` feeding candles_1m from the replay's WebSocket: the step reads what the stream
          saw and fetches nothing while it is healthy (one warm-up run first fetches the minutes of the
          hour before the stream started, once; it is reported, not timed)

Each cycle is split with the run's event-log timestamps:

  queue    launch -> dequeued (PIPELINE_STARTING)        run queue and daemon poll
  startup  dequeued -> first STEP_START                  run worker process, imports, resources
  fetch    candles_1m STEP_START -> its STEP_OUTPUT      stream record read + Upbit requests (rate limited) + checks
  store    candles_1m output -> market_status start      candle write (Postgres COPY), step hand-over
  read     market_status start -> its last LOADED_INPUT  lookback read (IO manager)
  compute  last input -> market_status STEP_OUTPUT       indicators, checks
  write    Postgres write of the snapshots               (IO manager's write_seconds)
  push     rest of the output handling -> Redis seen     the market_status_redis step (Redis push), the poll's granularity

The fetch floor is the REST runs' Upbit requests / 10 per second (counted by the replay server). REST
requests per hour in steady state: the candle requests of a stream run (counted by the replay) times the
analysis ticks an hour (market status, recommendations, support levels at their cadences), plus the three
final runs an hour, which fetch only what the stream missed (nothing while it stays connected).

    python bench/cycle.py [--markets 250] [--runs 10]

Uses DATABASE_URL/REDIS_URL when set, else the embedded servers (left running for the next bench; `dantaro stop`
stops them); schema and Redis prefix dantaro_bench. SIGTERM or Ctrl-C stops everything else it started; so does
the kernel when it is killed.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

os.environ.setdefault("DANTARO_SCHEMA", "dantaro_bench")
os.environ.setdefault("DANTARO_REDIS_PREFIX", "dantaro_bench")
os.environ["WORKER_ENABLED"] = "false"  # only the benchmark's runs

import dagster as dg
import redis

from dantaro_assets.markets.seen import SeenStore
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.resources import process_storage
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.harness import DagsterDev, exit_on_sigterm, prepare_history
from dantaro_replay.process import start_replay_server, terminate_with_parent

PHASES = ("queue", "startup", "fetch", "store", "read", "compute", "write", "push")


def accepted_requests(replay_url: str) -> int:
    groups = httpx.get(f"{replay_url}/_replay/stats", timeout=5).json()["groups"]
    return sum(group["ok"] for group in groups.values())


def phases(instance: dg.DagsterInstance, run_id: str, launched: float, redis_seen: float) -> dict:
    """Split launch -> Redis into phases from the run's event log."""
    first: dict[tuple[str | None, str], float] = {}
    source = "?"
    last_input = 0.0
    write_seconds = 0.0
    for entry in instance.all_logs(run_id):
        event = entry.dagster_event
        if event is None:
            continue
        first.setdefault((entry.step_key, event.event_type_value), entry.timestamp)
        if entry.step_key == "market_status" and event.event_type_value == "LOADED_INPUT":
            last_input = max(last_input, entry.timestamp)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.step_key == "market_status":
            write_seconds = float(event.event_specific_data.materialization.metadata["write_seconds"].value)
        if event.event_type == dg.DagsterEventType.ASSET_MATERIALIZATION and entry.step_key == "candles_1m":
            source = event.event_specific_data.materialization.metadata["source"].value
    starting = first[(None, "PIPELINE_STARTING")]
    fetch_start = first[("candles_1m", "STEP_START")]
    fetch_end = first[("candles_1m", "STEP_OUTPUT")]
    compute_start = first[("market_status", "STEP_START")]
    compute_end = first[("market_status", "STEP_OUTPUT")]
    read_end = last_input or compute_start
    return {
        "queue": starting - launched,
        "startup": fetch_start - starting,
        "fetch": fetch_end - fetch_start,
        "store": compute_start - fetch_end,
        "read": read_end - compute_start,
        "compute": compute_end - read_end,
        "write": write_seconds,
        "push": redis_seen - compute_end - write_seconds,
        "total": redis_seen - launched,
        "source": source,
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


def cycle(dev: DagsterDev, instance: dg.DagsterInstance, cache: redis.Redis, key: str, replay_url: str) -> dict[str, float]:
    hour = hourly_partitions.get_partition_key_for_timestamp(time.time())
    before = accepted_requests(replay_url)
    launched = time.time()
    run_id = dev.launch("market_status_job", hour)
    seen = wait_for_snapshot(cache, key, run_id)
    assert dev.wait(run_id) == "SUCCESS", f"run {run_id} failed"
    return phases(instance, run_id, launched, seen) | {"requests": accepted_requests(replay_url) - before}


def start_stream(home: Path) -> subprocess.Popen:
    """`dantaro stream` against the replay (UPBIT_BASE_URL), on the benchmark's schema and Redis prefix; it ends with the bench."""
    log = (home / "stream.log").open("w")
    return subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "stream"], env={**os.environ, "DAGSTER_HOME": str(home)},
                            stdout=log, stderr=subprocess.STDOUT, preexec_fn=terminate_with_parent())


def wait_until_seeing(store: SeenStore, max_lag: float, timeout: float = 300) -> None:
    """Until the stream is healthy and has committed the first whole minute it saw: from then on it covers every closed minute."""
    deadline = time.monotonic() + timeout
    while True:
        health = store.health()
        if health is not None and health.open_windows and health.problem(time.time(), max_lag) is None:
            if health.covered_through >= max(w.start for w in health.open_windows) + 60:
                return
        if time.monotonic() > deadline:
            raise TimeoutError(f"dantaro stream not covering a whole minute after {timeout} s: {health}")
        time.sleep(1)


def table(rows: list[dict]) -> None:
    print("| phase | p50 s | p95 s |\n|---|---|---|")
    for phase in (*PHASES, "total"):
        values = [row[phase] for row in rows]
        print(f"| {phase} | {percentile(values, 0.5):.2f} | {percentile(values, 0.95):.2f} |")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops the stream, the runs, `dagster dev` and the replay; a SIGKILL makes the kernel stop them
    settings = load_settings()
    servers = process_storage(settings)
    os.environ["DATABASE_URL"], os.environ["REDIS_URL"] = servers.urls()
    replay = start_replay_server("--simulated", str(args.markets))
    replay_url = replay.url
    os.environ["UPBIT_BASE_URL"] = replay_url
    cache = redis.Redis.from_url(os.environ["REDIS_URL"])
    key = f"{settings.redis_prefix}:market_status:latest"
    store = SeenStore(servers.postgres)
    rows: dict[str, list[dict]] = {"rest": [], "stream": []}
    warm_up: dict = {}
    stream: subprocess.Popen | None = None
    try:
        with tempfile.TemporaryDirectory(prefix="dantaro-bench-") as home, DagsterDev(Path(home), settings=settings) as dev:
            print(f"preparing: the analyses' lookback of {args.markets} markets (universe, 1h/1d and 1m candles)", flush=True)
            prepare_history(dev)
            with dg.DagsterInstance.from_config(home) as instance:
                for index in range(args.runs):
                    store.clear()  # every run fetches the open hour, as a tick 2 min after the last would
                    row = cycle(dev, instance, cache, key, replay_url)
                    rows["rest"].append(row)
                    print(f"rest run {index + 1}/{args.runs}: {row['total']:.2f} s, {row['requests']} requests ({row['source']})", flush=True)
                stream = start_stream(Path(home))
                wait_until_seeing(store, settings.stream_max_lag_seconds)
                warm_up = cycle(dev, instance, cache, key, replay_url)
                print(f"stream warm-up run: {warm_up['total']:.2f} s, {warm_up['requests']} requests ({warm_up['source']}: "
                      "the minutes between the last REST run and the stream's first whole minute, once)", flush=True)
                for index in range(args.runs):
                    row = cycle(dev, instance, cache, key, replay_url)
                    rows["stream"].append(row)
                    print(f"stream run {index + 1}/{args.runs}: {row['total']:.2f} s, {row['requests']} requests ({row['source']})", flush=True)
                figures = (store.health().figures if store.health() else {})
            if stream is not None:
                stream.send_signal(signal.SIGTERM)
                stream.wait(timeout=30)
                stream = None
    finally:
        if stream is not None:
            stream.kill()
        replay.stop()

    floor = statistics.median(row["requests"] for row in rows["rest"]) / settings.upbit_requests_per_second
    ticks_per_hour = sum(3600 // seconds for seconds in (settings.market_status_interval, settings.recommendations_interval, settings.support_levels_interval))
    per_tick = statistics.mean(row["requests"] for row in rows["stream"])
    per_hour = per_tick * ticks_per_hour
    for mode in ("stream", "rest"):
        print(f"\n{mode}:")
        table(rows[mode])
    p50, p95 = percentile([r["total"] for r in rows["stream"]], 0.5), percentile([r["total"] for r in rows["stream"]], 0.95)
    p50_rest = percentile([r["total"] for r in rows["rest"]], 0.5)
    rest_per_hour = statistics.mean(row["requests"] for row in rows["rest"]) * ticks_per_hour
    print(f"\nstream: p50 {p50:.2f} s (target <= 10 s: {'met' if p50 <= 10 else 'MISSED'}); REST path: p50 {p50_rest:.2f} s against a fetch floor "
          f"of {floor:.1f} s ({floor * settings.upbit_requests_per_second:.0f} requests / {settings.upbit_requests_per_second} per s)")
    print(f"REST requests per hour for {args.markets} markets: {per_tick:.1f} per stream tick x {ticks_per_hour} ticks = {per_hour:.0f} "
          f"(target <= 300: {'met' if per_hour <= 300 else 'MISSED'}); the REST path: {rest_per_hour:.0f}; "
          f"the stream's warm-up run fetched {warm_up.get('requests')}; stream figures {figures}")
    print(f"command: python bench/cycle.py --markets {args.markets} --runs {args.runs}")
    print(json.dumps({"p50_s": round(p50, 2), "p95_s": round(p95, 2), "p50_s_rest": round(p50_rest, 2), "floor_s": round(floor, 2),
                      "rest_requests_per_hour": round(per_hour), "rest_requests_per_hour_rest_path": round(rest_per_hour),
                      "markets": args.markets, "runs": args.runs}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
