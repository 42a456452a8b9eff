"""Benchmark: the Postgres IO manager (ADBC, Arrow, binary COPY) against pandas to_sql / read_sql.

One day of 1-minute candles for 250 markets (360,000 rows, the candles_1m schema) is written as one
daily partition through ``handle_output`` and read back through ``load_input`` (alternating with the
same window query through ``pandas.read_sql``); the stored partitions are then rewritten in both write
modes, interleaved so they share the machine's load: merge (staging COPY + upsert, the candles') with
every row changed, merge with identical rows (a refetch of a closed window), and partition replace
(DELETE + COPY, the analyses'). Then the same frame goes through ``DataFrame.to_sql``
(SQLAlchemy + psycopg2, the default ``method=None`` and ``method="multi"``). Runs against the
machine's Postgres in a temporary schema that is dropped at the end.

    python bench/io.py [--url postgresql://postgres@127.0.0.1:5432/test] [--repeat 3] [--baseline-repeat 1] [--writes-only]
"""

import argparse
import json
import os
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Callable
from contextlib import ExitStack

import dagster as dg
import numpy as np
import pandas as pd
import sqlalchemy as sa
from tabulate import tabulate

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode

DAY = "2025-09-01"
DAILY = dg.DailyPartitionsDefinition(start_date=DAY, timezone="UTC")
METADATA = {"partition_expr": "candle_start", "primary_key": ["market", "candle_start"], "write_mode": WriteMode.REPLACE}
MERGE_METADATA = {**METADATA, "write_mode": WriteMode.MERGE}
NEW_PARTITION = "IO manager write, new partition (ADBC binary COPY)"
REWRITE = "IO manager rewrite of a stored partition (DELETE + COPY, 1 tx)"
MERGE_SAME = "IO manager merge into a stored partition, identical rows (staging COPY + upsert, 1 tx)"
MERGE_CHANGED = "IO manager merge into a stored partition, every row changed"
TO_SQL = "pandas to_sql, method=None (psycopg2)"
TO_SQL_MULTI = "pandas to_sql, method='multi' (psycopg2)"
READ_FIRST = "IO manager first read after the rewrite (ADBC -> Arrow)"
READ = "IO manager read of a partition (ADBC -> Arrow)"
READ_SQL = "pandas read_sql (psycopg2)"


def synthetic_candles(markets: int, seed: int = 7) -> pd.DataFrame:
    """A random walk per market for every minute of DAY, in the candles_1m schema."""
    rng = np.random.default_rng(seed)
    minutes = pd.date_range(DAY, periods=1440, freq="1min", tz="UTC")
    names = [f"KRW-C{i:03d}" for i in range(markets)]
    start = 10 ** rng.uniform(0, 6, markets)
    close = start[:, None] * np.exp(np.cumsum(rng.normal(0, 0.002, (markets, 1440)), axis=1))
    spread = np.abs(rng.normal(0, 0.001, close.shape)) * close
    volume = rng.gamma(2.0, 50.0, close.shape)
    return pd.DataFrame(
        {
            "market": np.repeat(names, 1440),
            "candle_start": np.tile(minutes, markets),
            "open": (close - spread / 2).ravel(),
            "high": (close + spread).ravel(),
            "low": (close - spread).ravel(),
            "close": close.ravel(),
            "volume": volume.ravel(),
            "value": (volume * close).ravel(),
        }
    )


def timed(actions: list[Callable[[], object]]) -> tuple[float, object]:
    """Median seconds of the prepared actions, and the last one's result."""
    seconds, result = [], None
    for action in actions:
        started = time.perf_counter()
        result = action()
        seconds.append(time.perf_counter() - started)
    return statistics.median(seconds), result


def rewrites(write: Callable[..., Callable[[], None]], keys: list[str], changed: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Median seconds of each way to rewrite a stored partition, interleaved per partition.

    Each partition goes stored -> every row changed (merge) -> the same again (merge, identical) ->
    the original frame (replace), so every write meets a full partition and the table ends as stored.
    """
    seconds: dict[str, list[float]] = {MERGE_CHANGED: [], MERGE_SAME: [], REWRITE: []}
    for key in keys:
        seconds[MERGE_CHANGED].append(timed([write(key, MERGE_METADATA, changed)])[0])
        seconds[MERGE_SAME].append(timed([write(key, MERGE_METADATA, changed)])[0])
        seconds[REWRITE].append(timed([write(key)])[0])
    return {name: statistics.median(values) for name, values in seconds.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--markets", type=int, default=250)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each fast path (median reported)")
    parser.add_argument("--baseline-repeat", type=int, default=1, help="runs of each to_sql path (tens of seconds each)")
    parser.add_argument("--writes-only", action="store_true", help="only the IO manager's writes: new partition, replace vs merge")
    args = parser.parse_args()

    schema = f"bench_io_{os.getpid()}"
    postgres = PostgresResource(url=args.url, db_schema=schema)
    io_manager = PostgresDataFrameIOManager(postgres=postgres)
    engine = sa.create_engine(args.url.replace("postgresql://", "postgresql+psycopg2://", 1))
    frame = synthetic_candles(args.markets)
    rows = len(frame)
    keys = DAILY.get_partition_keys()[: args.repeat]
    frames = {key: frame.assign(candle_start=frame["candle_start"] + pd.Timedelta(days=i)) for i, key in enumerate(keys)}
    window = DAILY.time_window_for_partition_key(DAY)

    # Dagster contexts are built before the clock starts (a run has them already), and closed at the end.
    opened = ExitStack()

    def io_write(key: str, metadata: dict = METADATA, source: dict[str, pd.DataFrame] = frames) -> Callable[[], None]:
        context = opened.enter_context(dg.build_output_context(
            asset_key="candles_1m", definition_metadata=metadata, asset_partitions_def=DAILY, partition_key=key
        ))
        return lambda: io_manager.handle_output(context, source[key])

    changed = {key: part.assign(close=part["close"] * 1.001) for key, part in frames.items()}

    def io_read() -> Callable[[], pd.DataFrame]:
        upstream = opened.enter_context(dg.build_output_context(asset_key="candles_1m", definition_metadata=METADATA))
        context = opened.enter_context(
            dg.build_input_context(asset_key="candles_1m", upstream_output=upstream, asset_partitions_def=DAILY, partition_key=DAY))
        return lambda: io_manager.load_input(context)

    def to_sql(method: str | None) -> Callable[[], None]:
        return lambda: frame.to_sql("candles_to_sql", engine, schema=schema, if_exists="replace", index=False, method=method,
            chunksize=10_000 if method else None)

    def read_sql() -> pd.DataFrame:
        query = sa.text(f'SELECT * FROM "{schema}".candles_1m WHERE candle_start >= :start AND candle_start < :end ORDER BY candle_start, market')
        return pd.read_sql(query, engine, params={"start": window.start, "end": window.end})

    load_before = os.getloadavg()[0]
    postgres.execute(f'CREATE SCHEMA "{schema}"')
    try:
        results = {}
        results[NEW_PARTITION] = timed([io_write(key) for key in keys])[0]
        results |= rewrites(io_write, keys, changed)
        io_manager_rss_mb = peak_rss_mb()
        if args.writes_only:
            print_rewrites(results, rows, args, load_before)
            return
        # The first read after a write also sets the new rows' hint bits: a one-off cost for whoever reads first.
        results[READ_FIRST], ours = timed([io_read()])
        # Alternated so both readers see the same table and, as far as can be, the same machine load.
        ours_seconds, theirs_seconds = [], []
        for read in [io_read() for _ in range(args.repeat)]:
            seconds, ours = timed([read])
            ours_seconds.append(seconds)
            seconds, theirs = timed([read_sql])
            theirs_seconds.append(seconds)
        results[READ], results[READ_SQL] = statistics.median(ours_seconds), statistics.median(theirs_seconds)
        results[TO_SQL] = timed([to_sql(None)] * args.baseline_repeat)[0]
        results[TO_SQL_MULTI] = timed([to_sql("multi")] * args.baseline_repeat)[0]
    finally:
        opened.close()
        postgres.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        engine.dispose()

    expected = frame.sort_values(["candle_start", "market"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(ours, expected)
    pd.testing.assert_frame_equal(theirs.astype({"candle_start": "datetime64[ns, UTC]"}), expected)

    table = []
    for name in [NEW_PARTITION, REWRITE, MERGE_SAME, MERGE_CHANGED, TO_SQL, TO_SQL_MULTI, READ_FIRST, READ, READ_SQL]:
        seconds = results[name]
        base = results[READ_SQL] if "read" in name else results[TO_SQL]
        table.append([name, f"{seconds:.3f}", f"{rows / seconds:,.0f}", f"{base / seconds:.1f}x"])
    print(
        f"{rows:,} rows ({args.markets} markets x 1440 minutes) a partition, median of {args.repeat} (to_sql: {args.baseline_repeat}), "
        f"schema {schema} (dropped), load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs"
    )
    print(tabulate(table, headers=["path", "seconds", "rows/s", "vs pandas default"], tablefmt="github"))
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(f"peak RSS: {io_manager_rss_mb:.0f} MB after the IO manager paths (frames included), {peak_rss_mb():.0f} MB after the pandas paths")
    summary = {
        "write_vs_to_sql": round(results[TO_SQL] / results[NEW_PARTITION], 1),
        "rewrite_vs_to_sql": round(results[TO_SQL] / results[REWRITE], 1),
        "merge_same_vs_replace": round(results[MERGE_SAME] / results[REWRITE], 2),
        "merge_changed_vs_replace": round(results[MERGE_CHANGED] / results[REWRITE], 2),
        "read_vs_read_sql": round(results[READ_SQL] / results[READ], 1),
        "first_read_vs_read_sql": round(results[READ_SQL] / results[READ_FIRST], 1),
        "peak_rss_mb": round(io_manager_rss_mb),
        "peak_rss_mb_with_pandas_paths": round(peak_rss_mb()),
    }
    print(json.dumps(summary))


def print_rewrites(results: dict[str, float], rows: int, args: argparse.Namespace, load_before: float) -> None:
    """The ``--writes-only`` report: each write path against partition replace."""
    table = [[name, f"{results[name]:.3f}", f"{rows / results[name]:,.0f}", f"{results[name] / results[REWRITE]:.2f}"]
             for name in [NEW_PARTITION, REWRITE, MERGE_SAME, MERGE_CHANGED]]
    print(f"{rows:,} rows ({args.markets} markets x 1440 minutes) a partition, median of {args.repeat}, "
          f"load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(tabulate(table, headers=["path", "seconds", "rows/s", "time vs replace"], tablefmt="github"))
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({
        "merge_same_vs_replace": round(results[MERGE_SAME] / results[REWRITE], 2),
        "merge_changed_vs_replace": round(results[MERGE_CHANGED] / results[REWRITE], 2),
    }))


if __name__ == "__main__":
    main()
