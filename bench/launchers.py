"""Benchmark: launch-to-start overhead and market status tick-to-Redis, Celery run launcher vs default, in one run.

Both instances keep Dagster's storage in Postgres (a database of the benchmark's own) and the project's run
queue; the default one launches each run as a `dagster api execute_run` process from the code server
(deploy/dagster.prod.yaml), the Celery one as a task for a `dantaro worker` (deploy/dagster.celery.yaml),
which forks a child per run from a parent that has imported the code. Runs go one after another through
the run queue (the daemon's iteration called directly). First a no-op job (bench/launchers_defs.py) whose
code location imports the project's definitions, so the times are the launcher's; per run, from its event log:

  start   RUN_STARTING (dequeued, launch begins) -> RUN_START (the run worker executes)
  done    RUN_STARTING -> RUN_SUCCESS

Then the real market_status_job for the current hour against the replay server simulating --markets
markets (history prepared once, as bench/cycle.py does), timed from the run's submission (what a schedule
tick does) until Redis's market status snapshot is that run's, carrying the submission's tick as_of or a
later one; split into phases by bench/cycle.py's `phases` (queue, startup, fetch, ...).

    python bench/launchers.py [--runs 10] [--status-runs 5] [--markets 40]

Uses DATABASE_URL/REDIS_URL; schema and Redis prefix dantaro_bench_launchers.
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
import uuid
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg
import redis
import yaml
from tabulate import tabulate

os.environ.setdefault("DANTARO_SCHEMA", "dantaro_bench_launchers")
os.environ.setdefault("DANTARO_REDIS_PREFIX", "dantaro_bench_launchers")
os.environ["WORKER_ENABLED"] = "false"  # no schedules in the history's dagster dev: only the benchmark's runs

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: dantaro_assets_tests is not pip-installed
from bench.cycle import percentile, phases  # noqa: E402  (after the environment the settings read)
from dantaro_assets.partitions import hourly_partitions  # noqa: E402
from dantaro_assets.processes.instance import write_instance_config  # noqa: E402
from dantaro_assets.settings import load_settings  # noqa: E402
from dantaro_assets_tests.fixtures.environment import environ  # noqa: E402
from dantaro_assets_tests.harness import DagsterDev, exit_on_sigterm, kill_group_with_parent, prepare_history  # noqa: E402
from dantaro_assets_tests.operations.daemon import FINISHED, daemon_workspace, dequeue, submit  # noqa: E402
from dantaro_replay.process import start_replay_server  # noqa: E402

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFS = "bench.launchers_defs"


def _times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    first: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            first.setdefault(entry.dagster_event.event_type_value, entry.timestamp)
    starting = first["PIPELINE_STARTING"]
    return {"start": first["PIPELINE_START"] - starting, "done": first["PIPELINE_SUCCESS"] - starting}


def _run(instance: dg.DagsterInstance, workspace, job: str, tags: dict | None = None, seen=lambda run_id: False) -> tuple[str, float | None]:
    """Submit ``job`` and dequeue it until it succeeds; returns its run id and when ``seen(run_id)`` first held."""
    run_id = submit(instance, workspace, job, tags=tags)
    seen_at = None
    deadline = time.monotonic() + 300
    while (status := instance.get_run_by_id(run_id).status) not in FINISHED:
        assert time.monotonic() < deadline, f"run {run_id} did not finish"
        if status == dg.DagsterRunStatus.QUEUED:
            dequeue(workspace)
        if seen_at is None and seen(run_id):
            seen_at = time.time()
        time.sleep(0.05)
    assert status == dg.DagsterRunStatus.SUCCESS, f"{job} run {run_id} ended {status}"
    return run_id, seen_at


def _measure(home: Path, env: dict[str, str], runs: int, status_runs: int) -> tuple[list[dict[str, float]], list[dict[str, float]]]:
    cache = redis.Redis.from_url(load_settings().redis_url)
    key = f"{load_settings().redis_prefix}:market_status:latest"
    interval = load_settings().market_status_interval
    launches, statuses = [], []
    with environ(env):
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            with daemon_workspace(instance, DEFS, env) as workspace:
                for index in range(runs + 1):  # the first run warms the code server / worker: not counted
                    run_id, _ = _run(instance, workspace, "tick_job")
                    if index:
                        launches.append(_times(instance, run_id))
                for _ in range(status_runs):
                    submitted = time.time()
                    tick = datetime.fromtimestamp(submitted - submitted % interval, timezone.utc)

                    def snapshot_of(run_id: str, tick: datetime = tick) -> bool:
                        raw = cache.get(key)
                        snapshot = json.loads(raw) if raw is not None else {}
                        return snapshot.get("run_id") == run_id and datetime.fromisoformat(snapshot["as_of"].replace("Z", "+00:00")) >= tick

                    hour = hourly_partitions.get_partition_key_for_timestamp(submitted)
                    run_id, seen_at = _run(instance, workspace, "market_status_job", {"dagster/partition": hour}, snapshot_of)
                    assert seen_at is not None, f"run {run_id} succeeded without its snapshot in {key}"
                    statuses.append(phases(instance, run_id, submitted, seen_at))
                    print(f"  market status run: {statuses[-1]['total']:.2f} s tick-to-Redis", flush=True)
        finally:
            instance.dispose()
    return launches, statuses


def _home(root: Path, name: str, template: str) -> Path:
    home = root / name
    write_instance_config(home, load_settings(), template=PROJECT_DIR / "deploy" / template)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="no-op runs per launcher")
    parser.add_argument("--status-runs", type=int, default=5, help="market_status_job runs per launcher")
    parser.add_argument("--markets", type=int, default=40, help="markets the replay server simulates")
    args = parser.parse_args()
    exit_on_sigterm()  # SIGTERM stops what it started; a SIGKILL too (the replay by the kernel, `dagster dev` and the worker by watchdogs)
    settings = load_settings()
    tag = uuid.uuid4().hex[:8]
    database = f"dantaro_bench_launchers_{tag}"
    prefix = f"dantaro_bench_{tag}_celery:"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(settings.database_url)
    pg_url = urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{database}", parts.query, ""))
    results: dict[str, list[dict[str, float]]] = {}
    status_results: dict[str, list[dict[str, float]]] = {}
    replay = start_replay_server("--simulated", str(args.markets))
    os.environ["UPBIT_BASE_URL"] = replay.url
    worker = None
    try:
        with tempfile.TemporaryDirectory(prefix="dantaro-bench-launchers-") as root:
            print(f"preparing: the analyses' lookback of {args.markets} markets (universe, 1h/1d and 1m candles)", flush=True)
            with DagsterDev(Path(root) / "history", settings=settings) as dev:
                prepare_history(dev)
            default_home = _home(Path(root), "default", "dagster.prod.yaml")
            celery_home = _home(Path(root), "celery", "dagster.celery.yaml")
            config = yaml.safe_load((celery_home / "dagster.yaml").read_text())
            keyprefix = {"global_keyprefix": prefix}
            config["run_launcher"]["config"]["config_source"] = {"broker_transport_options": keyprefix, "result_backend_transport_options": keyprefix}
            (celery_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

            base = {"DAGSTER_PG_URL": pg_url, "PYTHONPATH": str(PROJECT_DIR),
                    "DANTARO_CELERY_BROKER_URL": settings.redis_url, "DANTARO_CELERY_BACKEND_URL": settings.redis_url}  # fmt: skip
            print("default launcher ...", flush=True)
            results["default"], status_results["default"] = _measure(default_home, {**base, "DAGSTER_HOME": str(default_home)}, args.runs, args.status_runs)
            print("celery launcher ...", flush=True)
            celery_env = {**base, "DAGSTER_HOME": str(celery_home)}
            worker = subprocess.Popen(
                [sys.executable, "-m", "dantaro_assets.cli", "worker", "--queue", "live", "--queue", "bulk",
                 "--name", f"bench-{tag}@%h", "--preload", DEFS, "--loglevel", "WARNING"],
                env={**os.environ, **celery_env}, cwd=PROJECT_DIR, start_new_session=True,
            )  # fmt: skip
            watchdog = kill_group_with_parent(worker.pid)  # its prefork children too
            results["celery"], status_results["celery"] = _measure(celery_home, celery_env, args.runs, args.status_runs)
    finally:
        replay.stop()
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
            watchdog.kill()
        with psycopg.connect(settings.database_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        client = redis.Redis.from_url(settings.redis_url)
        keys = list(client.scan_iter(f"{prefix}*", count=1000))
        if keys:
            client.delete(*keys)

    summary = {}
    table = []
    for launcher, rows in results.items():
        for measure in ("start", "done"):
            values = sorted(row[measure] for row in rows)
            p50 = statistics.median(values)
            summary[f"{launcher}_{measure}_p50_s"] = round(p50, 3)
            table.append([launcher, measure, f"{p50:.3f}", f"{values[-1]:.3f}"])
    summary["start_ratio_default_over_celery"] = round(summary["default_start_p50_s"] / summary["celery_start_p50_s"], 1)
    print(tabulate(table, headers=["launcher", "from RUN_STARTING to", "p50 s", "max s"], tablefmt="github"))
    table = []
    for launcher, rows in status_results.items():
        for phase in ("queue", "startup", "fetch", "compute", "total"):
            values = [row[phase] for row in rows]
            table.append([launcher, phase, f"{percentile(values, 0.5):.2f}", f"{percentile(values, 0.95):.2f}"])
        summary[f"{launcher}_status_p50_s"] = round(percentile([row["total"] for row in rows], 0.5), 2)
        summary[f"{launcher}_status_p95_s"] = round(percentile([row["total"] for row in rows], 0.95), 2)
    summary["status_ratio_default_over_celery"] = round(summary["default_status_p50_s"] / summary["celery_status_p50_s"], 2)
    print()
    print(tabulate(table, headers=["launcher", f"market status, {args.markets} markets", "p50 s", "p95 s"], tablefmt="github"))
    print(f"command: python bench/launchers.py --runs {args.runs} --status-runs {args.status_runs} --markets {args.markets}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
