"""A real ``dantaro api`` process for the API benchmarks, over a Redis prefix and Postgres schema of its own.

``use_bench_environment`` sets that prefix and schema (and a state folder for the API's Dagster instance);
``store_snapshots`` stores what the three analyses store, as their runs do (rows to Postgres through the
IO manager, then the publish step to Redis), with every column their schemas have; ``dantaro_api``
starts ``dantaro api`` with those settings (the command an operator runs) and cleans up after.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import psycopg
import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.resources import build_snapshot_store, process_storage
from dantaro_assets.settings import Settings, load_settings
from dantaro_assets.support_levels.assets import SUPPORT_LEVELS
from dantaro_assets_tests.harness import free_port
from dantaro_replay.process import terminate_with_parent


def use_bench_environment() -> Settings:
    """Point this process (and the API it starts) at a key prefix, schema and state folder of this run's own,
    on ``DATABASE_URL``/``REDIS_URL`` when set, else the embedded servers of the default state folder (left
    running for the next bench, as bench/cycle.py leaves them; `dantaro stop` stops them)."""
    tag = f"bench_api_{uuid.uuid4().hex[:6]}"
    database_url, redis_url = process_storage(load_settings()).urls()
    os.environ.update({"DATABASE_URL": database_url, "REDIS_URL": redis_url,
                       "DANTARO_REDIS_PREFIX": tag, "DANTARO_SCHEMA": tag, "DANTARO_STATE_DIR": tempfile.mkdtemp(prefix=f"{tag}-"),
                       "WORKER_ENABLED": "false"})
    return load_settings()


def _write(snapshots: SnapshotStore, asset: dg.AssetsDefinition, frame: pd.DataFrame, hour: str) -> None:
    with dg.build_output_context(asset_key=asset.key, definition_metadata=asset.metadata_by_key[asset.key],
                                 asset_partitions_def=hourly_partitions, asset_partition_key_range=dg.PartitionKeyRange(hour, hour),
                                 run_id="bench") as context:
        PostgresDataFrameIOManager(postgres=snapshots.postgres).handle_output(context, frame)


def snapshot_frames(as_of: pd.Timestamp, markets: list[str], scorer: str) -> dict[str, pd.DataFrame]:
    """One tick of each analysis with every column of its schema, values of the usual size."""
    rng = np.random.default_rng(7)
    status = pd.DataFrame([{
        "as_of": as_of, "regime": "neutral", "summary": "Neutral: breadth 48% up over the hour, BTC above its 20h EMA, calm.",
        "score": 52.3, "score_breadth": 48.1, "score_trend": 61.0, "score_momentum": 44.9, "score_calm": 57.2, "markets": len(markets),
        "markets_warning": 2, "markets_caution": 5, "breadth_1h": 0.48, "breadth_day": 0.55, "median_return_1h_pct": 0.12,
        "dispersion_1h_pct": 1.4, "turnover_krw_1h": 8.1e10, "turnover_ratio_24h": 1.05, "btc_price": 150_012_000.0,
        "btc_return_1h_pct": 0.3, "btc_ema_20h": 149_800_000.0, "btc_vs_ema_pct": 0.14, "btc_ema_slope_pct_h": 0.02,
        "btc_vol_1h_pct": 0.4, "btc_vol_24h_pct": 2.1, "btc_vol_annualised_pct": 38.0,
    }])
    picks = pd.DataFrame([{
        "as_of": as_of, "scorer": scorer, "rank": rank, "market": market, "score": 80.0 - rank, "trend": 70.0, "momentum": 65.0,
        "volume_surge": 55.0, "support_distance": 60.0, "resistance_distance": 58.0, "volatility": 50.0,
        "reasons": {"trend": {"price": 3044.0, "ema20": 3031.0, "ema50": 3002.0}, "support_distance": {"support": 3020.0, "pct_above": 0.79},
                    "plan": {"target_level": 3121.0, "target_pct": 2.46, "stop_pct": -1.64}},
        "summary": "Uptrend above its 20h EMA, volume 1.8x its average, support 0.8% below.", "entry": 3045.0, "target": 3120.0,
        "stop": 2995.0, "reward_risk": 1.5, "tick_size": 1.0, "regime": "neutral", "caution": [],
    } for rank, market in enumerate(markets[:10], start=1)])
    levels = pd.DataFrame([{
        "as_of": as_of, "market": market, "side": side, "rank": rank, "price": 3044.0,
        "level": 3044.0 + sign * 20.0 * rank, "zone_low": 3044.0 + sign * 20.0 * rank - 5, "zone_high": 3044.0 + sign * 20.0 * rank + 5,
        "strength": float(rng.uniform(20, 90)), "touches": 3, "volume_share": 0.12, "pivot": None, "distance_pct": sign * 0.66 * rank,
        "atr": 12.5, "warning": False, "caution": False, "tick_size": 1.0, "reasons": {"touches": 3, "volume_share": 0.12, "pivot_age_h": 14},
    } for market in markets for side, sign in (("support", -1), ("resistance", 1)) for rank in (1, 2, 3)])
    return {"market_status": status, "recommendations": picks, "support_levels": levels}


def store_snapshots(settings: Settings, markets: list[str], as_of: pd.Timestamp) -> SnapshotStore:
    """Each analysis's tick at ``as_of`` stored as its run stores it: Postgres, then Redis."""
    postgres, redis_resource = process_storage(settings)
    snapshots = build_snapshot_store(settings, redis_resource, postgres)
    hour = hourly_partitions.get_partition_key_for_timestamp(as_of.timestamp())
    assets = {analysis.name: analysis.asset for analysis in (MARKET_STATUS, RECOMMENDATIONS, SUPPORT_LEVELS)}
    for name, frame in snapshot_frames(as_of, markets, settings.scorer).items():
        _write(snapshots, assets[name], frame, hour)
        snapshots.publish(name, frame, run_id="bench", partition=hour, per_market=name == "support_levels")
    return snapshots


@contextmanager
def dantaro_api(settings: Settings, *args: str) -> Iterator[str]:
    """``dantaro api`` on a free port (with ``args``) in this environment; yields its URL; drops the run's keys,
    schema and state folder (``settings``') after."""
    port = free_port()
    process = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "api", "--port", str(port), *args],
                               preexec_fn=terminate_with_parent())  # ends with this process, even a killed one
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None and time.monotonic() < deadline, "dantaro api did not start"
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(f"{settings.redis_prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{settings.db_schema}" CASCADE')
        shutil.rmtree(settings.state_dir, ignore_errors=True)
