"""Memory of `dantaro stream` over hours of simulated markets: does its RSS stay flat?

Starts the replay server simulating N KRW markets with its clock running at ``--speed`` replay
seconds per real second from 2025-09-03 00:00 UTC (so an hour of candles passes in 60/speed real
minutes), stores that day's universe in a throwaway Postgres schema, runs `dantaro stream` as its own
process against the replay's WebSocket, and samples the process's RSS every ``--every`` real seconds.
Prints a table (real time, simulated minutes, rows of candles_1m written, RSS) and a final JSON line:

  {"rss_start_mb", "rss_end_mb", "rss_max_mb", "slope_mb_per_hour", "simulated_minutes", "speed", ...}

``rss_start_mb`` is the first sample after the first minute was written (imports and connections
done); ``slope_mb_per_hour`` is the least-squares slope of RSS over simulated hours from then on, and
``slope_last_hour_mb_per_hour`` the same over the last simulated hour only.

    python bench/stream_memory.py [--markets 250] [--hours 1] [--speed 12] [--every 5]

Uses DATABASE_URL/REDIS_URL when set, else the embedded servers; the schema and Redis prefix
(dantaro_bench_stream_<pid>) and the Dagster home are removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import httpx
import pandas as pd
import psutil
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, table_exists
from dantaro_assets.lib.upbit import MARKET_COLUMNS
from dantaro_assets.resources import process_storage
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.harness import exit_on_sigterm
from dantaro_replay.process import start_replay_server, terminate_with_parent

START = datetime(2025, 9, 3, tzinfo=UTC)


def store_universe(io: PostgresDataFrameIOManager, replay_url: str) -> int:
    """The replay's KRW markets as the 2025-09-03 ``upbit_markets`` partition (what the stream subscribes to)."""
    markets = [m["market"] for m in httpx.get(f"{replay_url}/v1/market/all", timeout=30).json() if m["market"].startswith("KRW-")]
    frame = pd.DataFrame({"day": pd.Timestamp(START), "market": markets, "korean_name": markets, "english_name": markets})
    for column in MARKET_COLUMNS[3:]:
        frame[column] = False
    io.write("upbit_markets", frame, {"partition_expr": "day", "primary_key": ["day", "market"], "write_mode": "replace"},
             dg.TimeWindow(START, START + timedelta(days=1)))
    return len(markets)


def rows_written(database_url: str, schema: str) -> int:
    postgres = PostgresResource(url=database_url, db_schema=schema)
    if not table_exists(postgres, "candles_1m"):
        return 0
    return postgres.read_arrow(f"SELECT count(*) AS n FROM {postgres.table_name('candles_1m')}")["n"][0].as_py()


def slope(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of y over x."""
    if len(points) < 2:
        return 0.0
    mean_x = sum(x for x, _ in points) / len(points)
    mean_y = sum(y for _, y in points) / len(points)
    spread = sum((x - mean_x) ** 2 for x, _ in points)
    return sum((x - mean_x) * (y - mean_y) for x, y in points) / spread if spread else 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--hours", type=float, default=1.0, help="simulated hours to stream")
    parser.add_argument("--speed", type=float, default=12.0, help="replay seconds per real second (1 = real time)")
    parser.add_argument("--every", type=float, default=5.0, help="real seconds between RSS samples")
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops the stream and the replay; when killed, the kernel stops them

    settings = load_settings()
    database_url, redis_url = process_storage(settings).urls()
    name = f"dantaro_bench_stream_{os.getpid()}"
    home = Path(tempfile.mkdtemp(prefix="dantaro-bench-stream-"))
    io = PostgresDataFrameIOManager(postgres=PostgresResource(url=database_url, db_schema=name))
    replay = start_replay_server("--simulated", str(args.markets), "--seed", "7", "--clock", START.isoformat())
    env = {**os.environ, "DATABASE_URL": database_url, "REDIS_URL": redis_url, "UPBIT_BASE_URL": replay.url, "DANTARO_SCHEMA": name,
           "DANTARO_REDIS_PREFIX": name, "DAGSTER_HOME": str(home), "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    stream = None
    try:
        universe = store_universe(io, replay.url)
        log_path = home / "stream.log"
        with log_path.open("w") as log:
            stream = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "stream"], env=env, stdout=log, stderr=subprocess.STDOUT,
                                      preexec_fn=terminate_with_parent())
        process = psutil.Process(stream.pid)
        deadline = time.monotonic() + 120
        while replay.stats()["websocket"]["requests"] < 1:  # subscribed: from here the replay clock runs
            if stream.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"dantaro stream never subscribed:\n{log_path.read_text()[-3000:]}")
            time.sleep(0.2)
        replay.set_clock(START, running=True, speed=args.speed)
        load_before = os.getloadavg()
        began = time.monotonic()
        print(f"{universe} markets, clock speed {args.speed:g} (one simulated hour in {60 / args.speed:.1f} real minutes), "
              f"sample every {args.every:g} s; load {load_before[0]:.2f}")
        print("| real s | simulated min | rows written | RSS MB |\n|---:|---:|---:|---:|")
        samples: list[tuple[float, int, float]] = []  # simulated minutes, rows, RSS MB
        end = args.hours * 60
        while True:
            simulated = (replay.clock() - START).total_seconds() / 60
            rows, rss = rows_written(database_url, name), process.memory_info().rss / 2**20
            samples.append((simulated, rows, rss))
            print(f"| {time.monotonic() - began:.0f} | {simulated:.1f} | {rows} | {rss:.1f} |", flush=True)
            if stream.poll() is not None:
                raise RuntimeError(f"dantaro stream exited with {stream.returncode}:\n{log_path.read_text()[-3000:]}")
            if simulated >= end:
                break
            time.sleep(args.every)
        load_after = os.getloadavg()
        print("the stream's last lines:", *log_path.read_text().splitlines()[-3:], sep="\n  ")
        written = [(minutes, rss) for minutes, rows, rss in samples if rows > 0]
        last_hour = [(minutes, rss) for minutes, rss in written if minutes >= samples[-1][0] - 60]
        result = {
            "rss_start_mb": round(written[0][1], 1), "rss_end_mb": round(written[-1][1], 1),
            "rss_max_mb": round(max(rss for _, rss in written), 1),
            "slope_mb_per_hour": round(slope(written) * 60, 2), "slope_last_hour_mb_per_hour": round(slope(last_hour) * 60, 2),
            "simulated_minutes": round(samples[-1][0], 1), "rows_written": samples[-1][1], "markets": universe,
            "speed": args.speed, "real_seconds": round(time.monotonic() - began), "load_1m": [round(load_before[0], 2), round(load_after[0], 2)],
        }
        print(json.dumps(result))
    finally:
        if stream is not None and stream.poll() is None:
            stream.send_signal(signal.SIGTERM)
            try:
                stream.wait(timeout=30)
            except subprocess.TimeoutExpired:
                stream.kill()
        replay.stop()
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{name}" CASCADE')
        client = redis.Redis.from_url(redis_url)
        keys = list(client.scan_iter(f"{name}*"))
        if keys:
            client.delete(*keys)
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
