"""Benchmark: ``dantaro backup`` and ``dantaro restore`` of a schema of 1-minute candles, as an operator runs them.

``--days`` days of 1-minute candles for 250 markets (360,000 rows a day, the candles_1m schema, written by
the IO manager) go into a new database on the server of ``--url``; ``dantaro backup`` dumps the schema,
``dantaro restore`` restores it into a second new database (then migrates it), and the row counts of both
are compared. Both databases are dropped at the end.

    python bench/backup.py [--url postgresql://postgres@127.0.0.1:5432/test] [--days 3]
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import pandas as pd
import psycopg
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: bench.io and dantaro_assets_tests are not pip-installed

from bench.io import METADATA, synthetic_candles
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.redaction import redact_url

SCHEMA = "dantaro"


def _database(url: str, name: str) -> str:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return urlunsplit(urlsplit(url)._replace(path=f"/{name}"))


def _timed_cli(url: str, *args: str) -> float:
    env = {**os.environ, "DATABASE_URL": url, "DANTARO_SCHEMA": SCHEMA}
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "dantaro_assets.cli", *args], env=env, check=True, capture_output=True, text=True)
    return time.perf_counter() - began


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="postgresql://postgres@127.0.0.1:5432/test", help="a database on the server to use")
    parser.add_argument("--days", type=int, default=3)
    args = parser.parse_args()
    names = [f"dantaro_bench_backup_{uuid.uuid4().hex[:6]}" for _ in range(2)]
    source = _database(args.url, names[0])
    try:
        postgres = PostgresResource(url=source, db_schema=SCHEMA)
        io = PostgresDataFrameIOManager(postgres=postgres)
        daily = dg.DailyPartitionsDefinition(start_date="2025-09-01", timezone="UTC")
        frame = synthetic_candles(250)
        for day in range(args.days):
            shifted = frame.assign(candle_start=frame["candle_start"] + pd.Timedelta(days=day))
            io.write("candles_1m", shifted, METADATA, daily.time_window_for_partition_key(daily.get_partition_keys()[day]))
        rows = postgres.read_arrow(f"SELECT count(*) AS n FROM {postgres.table_name('candles_1m')}")["n"][0].as_py()
        with tempfile.TemporaryDirectory() as folder:
            path = Path(folder) / "dantaro.backup"
            backup_s = _timed_cli(source, "backup", str(path))
            size_mb = path.stat().st_size / 2**20
            target = _database(args.url, names[1])
            restore_s = _timed_cli(target, "restore", str(path))
        restored = PostgresResource(url=target, db_schema=SCHEMA)
        restored_rows = restored.read_arrow(f"SELECT count(*) AS n FROM {restored.table_name('candles_1m')}")["n"][0].as_py()
    finally:
        with psycopg.connect(args.url, autocommit=True) as conn:
            for name in names:
                conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    print(f"server: {redact_url(args.url)}; {args.days} day(s) x 250 markets of 1-minute candles")
    print(tabulate([["dantaro backup", rows, f"{backup_s:.1f}", f"{rows / backup_s:,.0f}", f"{size_mb:.1f}"],
                    ["dantaro restore (then migrate)", restored_rows, f"{restore_s:.1f}", f"{restored_rows / restore_s:,.0f}", ""]],
                   headers=["command", "rows", "seconds", "rows/s", "file MB"], tablefmt="github"))
    print(json.dumps({"rows": rows, "restored_rows": restored_rows, "backup_s": round(backup_s, 2), "restore_s": round(restore_s, 2),
                      "file_mb": round(size_mb, 1), "bytes_per_row": round(size_mb * 2**20 / rows, 1)}))


if __name__ == "__main__":
    main()
