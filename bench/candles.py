"""Benchmark: ``recent_candles`` (what ``GET /candles/{market}`` and ``dantaro_assets.reader`` read) over a full candles_1m.

``--days`` of 1-minute candles for ``--markets`` markets are written day by day through the IO manager
(the candle assets' merge, so the table and its key index are the real ones) into a temporary schema of
the machine's Postgres, vacuumed as autovacuum would, then each interval and limit is read for
``--repeat`` markets in turn. The key index leads with ``candle_start``, so one market's newest N
candles cost a walk over every market's rows of that time span: the reads grow with N x markets.

    python bench/candles.py [--url postgresql://postgres@127.0.0.1:5432/test] [--markets 250] [--days 7] [--repeat 10]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import time
import uuid

import dagster as dg
import numpy as np
import pandas as pd
import psycopg
from tabulate import tabulate

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.recent_candles import recent_candles

START = pd.Timestamp("2025-09-01", tz="UTC")
METADATA = {"partition_expr": "candle_start", "primary_key": ["market", "candle_start"], "write_mode": WriteMode.MERGE.value}
READS = [("minute1", 200), ("minute1", 1000), ("minute5", 200), ("minute5", 1000), ("minute15", 200), ("minute15", 1000)]


def minutes(interval: str) -> int:
    return int(interval.removeprefix("minute"))


def day_of_candles(day: int, markets: list[str]) -> pd.DataFrame:
    times = pd.date_range(START + pd.Timedelta(days=day), periods=1440, freq="1min")
    close = 1000.0 + np.random.default_rng(day).integers(0, 50, (len(markets), len(times))).astype(float)
    frame = pd.DataFrame({"market": np.repeat(markets, len(times)), "candle_start": np.tile(times, len(markets)), "close": close.ravel()})
    return frame.assign(open=frame["close"], high=frame["close"] + 1, low=frame["close"] - 1, volume=1.0, value=frame["close"])


def store(postgres: PostgresResource, markets: list[str], days: int) -> None:
    partitions = dg.DailyPartitionsDefinition(start_date=START.strftime("%Y-%m-%d"), timezone="UTC")
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    for day in range(days):
        key = (START + pd.Timedelta(days=day)).strftime("%Y-%m-%d")
        with dg.build_output_context(asset_key="candles_1m", definition_metadata=METADATA, asset_partitions_def=partitions,
                                     asset_partition_key_range=dg.PartitionKeyRange(key, key), run_id="bench") as context:
            io_manager.handle_output(context, day_of_candles(day, markets))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--repeat", type=int, default=10)
    args = parser.parse_args()
    markets = [f"KRW-M{i:03d}" for i in range(args.markets)]
    postgres = PostgresResource(url=args.url, db_schema=f"bench_candles_{uuid.uuid4().hex[:6]}")
    load_before = os.getloadavg()[0]
    try:
        store(postgres, markets, args.days)
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f"VACUUM ANALYZE {postgres.table_name('candles_1m')}")
        samples: dict[tuple[str, int], list[float]] = {read: [] for read in READS}
        answered: dict[tuple[str, int], int] = {}
        for i in range(args.repeat):
            for interval, limit in READS:
                started = time.perf_counter()
                frame = recent_candles(postgres, markets[(i * 37) % len(markets)], interval, limit)
                samples[(interval, limit)].append(time.perf_counter() - started)
                answered[(interval, limit)] = len(frame)
                assert len(frame) == min(limit, args.days * 1440 // minutes(interval)), (interval, limit, len(frame))
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')

    p50 = {read: 1000 * statistics.median(values) for read, values in samples.items()}
    rows = args.markets * args.days * 1440
    print(f"candles_1m: {args.markets} markets x {args.days} days = {rows:,} rows; load average {load_before:.1f} -> "
          f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(tabulate([[interval, limit, answered[(interval, limit)], min(limit * minutes(interval), args.days * 1440), f"{p50[(interval, limit)]:.1f}",
                     f"{1000 * max(samples[(interval, limit)]):.1f}"] for interval, limit in READS],
                   headers=["interval", "limit", "candles", "1m rows read", "p50 ms", "max ms"], tablefmt="github"))
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({"markets": args.markets, "rows": rows, "p50_ms": {f"{i}x{n}": round(v, 1) for (i, n), v in p50.items()},
                      "load_average": round(load_before, 1)}))


if __name__ == "__main__":
    main()
