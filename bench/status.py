"""Benchmark: ``GET /worker/status`` served from the background refresh against computed per request.

A real instance from the project's dagster.yaml (SQLite under a temporary DAGSTER_HOME) holds ``--jobs``
runs (every fifth one failed, the rest reporting a market count, as the job log shows them); the API is
served twice by uvicorn over it: with the default background refresh (``--status-refresh 2``) and
computing every request (``--status-refresh 0``, the path before the cache). Requests alternate between
the two servers so they share the machine's load. Also timed in-process: one uncached computation, and
one background refresh (the endpoint's 200 jobs, finished runs' details already read).

    python bench/status.py [--jobs 20] [--requests 100]
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import dagster as dg
import httpx
import uvicorn
from tabulate import tabulate

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed

from dantaro_assets.api.app import create_app
from dantaro_assets.api.job_log import JobLog
from dantaro_assets.api.worker_status import MAX_JOBS, STATUS_REFRESH_S, worker_status
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.processes.instance import write_instance_config
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.harness import free_port

CACHED = f"GET /worker/status, background refresh every {STATUS_REFRESH_S:g} s"
UNCACHED = "GET /worker/status, computed per request (--status-refresh 0)"
COMPUTE = "worker_status() in-process, uncached"
REFRESH = f"one background refresh ({MAX_JOBS} jobs listed, finished runs remembered)"


@dg.asset(name="market_status")
def counted() -> dg.MaterializeResult:
    return dg.MaterializeResult(metadata={"markets": 250})


@dg.asset(name="recommendations")
def failing() -> None:
    raise ValueError("Upbit answered 429")


def fill_job_log(instance: dg.DagsterInstance, jobs: int) -> None:
    for n in range(jobs):
        if n % 5 == 4:
            dg.materialize([failing], instance=instance, tags=RECOMMENDATIONS.job_type.tags(), raise_on_error=False)
        else:
            dg.materialize([counted], instance=instance, tags=MARKET_STATUS.job_type.tags())


@contextmanager
def served(app) -> Iterator[httpx.Client]:
    """``app`` under uvicorn on a free loopback port, in a thread of this process."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    try:
        with httpx.Client(base_url=f"http://127.0.0.1:{server.config.port}", timeout=60) as client:
            yield client
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def timed(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=20)
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    load_before = os.getloadavg()[0]
    # /worker/status reads no snapshot: the reader's servers are never contacted
    snapshots = SnapshotStore(redis=RedisResource(url="redis://127.0.0.1:1/0", prefix="bench"),
                              postgres=PostgresResource(url="postgresql://127.0.0.1:1/none", db_schema="bench"), ttls={})
    with tempfile.TemporaryDirectory() as home:
        settings = load_settings()
        write_instance_config(Path(home), settings)
        instance = dg.DagsterInstance.from_config(home)
        try:
            fill_job_log(instance, args.jobs)
            samples: dict[str, list[float]] = {CACHED: [], UNCACHED: [], COMPUTE: [], REFRESH: []}
            with (
                served(create_app(lambda: instance, snapshots, settings=settings)) as cached,
                served(create_app(lambda: instance, snapshots, 0, settings=settings)) as uncached,
            ):
                for client in (cached, uncached):  # warm up: connections, the first refresh
                    assert len(client.get("/worker/status").json()["last_jobs"]) == min(args.jobs, 20)
                memo = JobLog(instance)
                worker_status(instance, time.monotonic(), MAX_JOBS, memo, settings=settings)
                for _ in range(args.requests):
                    samples[CACHED].append(timed(lambda: cached.get("/worker/status").raise_for_status()))
                    samples[UNCACHED].append(timed(lambda: uncached.get("/worker/status").raise_for_status()))
                for _ in range(max(5, args.requests // 10)):
                    samples[COMPUTE].append(timed(lambda: worker_status(instance, time.monotonic(), settings=settings)))
                    samples[REFRESH].append(timed(lambda: worker_status(instance, time.monotonic(), MAX_JOBS, memo, settings=settings)))
                age = cached.get("/worker/status").json()["cache_age"]
        finally:
            instance.dispose()

    def ms(values: list[float], q: float) -> float:
        return 1000 * statistics.quantiles(values, n=100, method="inclusive")[int(q * 100) - 1] if q < 1 else 1000 * max(values)

    p50 = {name: 1000 * statistics.median(values) for name, values in samples.items()}
    table = [[name, len(values), f"{p50[name]:.1f}", f"{ms(values, 0.95):.1f}", f"{p50[UNCACHED] / p50[name]:.1f}" if "GET" in name else ""]
             for name, values in samples.items()]
    print(f"{args.jobs} jobs in the job log, SQLite instance; load average {load_before:.1f} -> {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(tabulate(table, headers=["path", "n", "p50 ms", "p95 ms", "uncached p50 / p50"], tablefmt="github"))
    print(f"command: {shlex.join([os.path.basename(sys.executable), *sys.argv])}")
    print(json.dumps({
        "jobs": args.jobs,
        "cached_p50_ms": round(p50[CACHED], 1),
        "uncached_p50_ms": round(p50[UNCACHED], 1),
        "speedup_p50": round(p50[UNCACHED] / p50[CACHED], 1),
        "refresh_ms": round(p50[REFRESH], 1),
        "last_cache_age_s": age,
        "load_average": round(load_before, 1),
    }))


if __name__ == "__main__":
    main()
