"""Benchmark: launch-to-start overhead of a run, Celery run launcher vs the default launcher, in one run.

Both instances keep Dagster's storage in Postgres (a database of the benchmark's own) and the project's run
queue; the default one launches each run as a `dagster api execute_run` process from the code server
(deploy/dagster.prod.yaml), the Celery one as a task for a `dantaro worker` (deploy/dagster.celery.yaml),
which forks a child per run from a parent that has imported the code. The job (bench/launchers_defs.py)
imports the project's definitions and does nothing, so the times are the launcher's. Runs go one after
another through the run queue (the daemon's iteration called directly); per run, from its event log:

  start   RUN_STARTING (dequeued, launch begins) -> RUN_START (the run worker executes)
  done    RUN_STARTING -> RUN_SUCCESS

    python bench/launchers.py [--runs 10]

Not measured here: tick-to-Redis of a real market status run under each launcher (see README).
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
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg
import redis
import yaml
from tabulate import tabulate

from dantaro_assets.operations.instance import write_instance_config
from dantaro_assets.settings import get_settings
from dantaro_assets_tests.fixtures.environment import environ
from dantaro_assets_tests.operations.daemon import FINISHED, daemon_workspace, dequeue, submit

PROJECT_DIR = Path(__file__).resolve().parents[1]
DEFS = "bench.launchers_defs"


def _times(instance: dg.DagsterInstance, run_id: str) -> dict[str, float]:
    first: dict[str, float] = {}
    for entry in instance.all_logs(run_id):
        if entry.dagster_event is not None:
            first.setdefault(entry.dagster_event.event_type_value, entry.timestamp)
    starting = first["PIPELINE_STARTING"]
    return {"start": first["PIPELINE_START"] - starting, "done": first["PIPELINE_SUCCESS"] - starting}


def _measure(home: Path, env: dict[str, str], runs: int) -> list[dict[str, float]]:
    rows = []
    with environ(env):
        instance = dg.DagsterInstance.from_config(str(home))
        try:
            with daemon_workspace(instance, DEFS, env) as workspace:
                for index in range(runs + 1):  # the first run warms the code server / worker: not counted
                    run_id = submit(instance, workspace, "tick_job")
                    deadline = time.monotonic() + 120
                    while instance.get_run_by_id(run_id).status not in FINISHED:
                        assert time.monotonic() < deadline, f"run {run_id} did not finish"
                        dequeue(workspace)
                        time.sleep(0.05)
                    assert instance.get_run_by_id(run_id).status == dg.DagsterRunStatus.SUCCESS, run_id
                    if index:
                        rows.append(_times(instance, run_id))
        finally:
            instance.dispose()
    return rows


def _home(root: Path, name: str, template: str) -> Path:
    home = root / name
    write_instance_config(home, template=PROJECT_DIR / "deploy" / template)
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return home


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    settings = get_settings()
    tag = uuid.uuid4().hex[:8]
    database = f"dantaro_bench_launchers_{tag}"
    prefix = f"dantaro_bench_{tag}_celery:"
    with psycopg.connect(settings.database_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{database}"')
    parts = urlsplit(settings.database_url)
    pg_url = urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{database}", parts.query, ""))
    results: dict[str, list[dict[str, float]]] = {}
    worker = None
    try:
        with tempfile.TemporaryDirectory(prefix="dantaro-bench-launchers-") as root:
            default_home = _home(Path(root), "default", "dagster.prod.yaml")
            celery_home = _home(Path(root), "celery", "dagster.celery.yaml")
            config = yaml.safe_load((celery_home / "dagster.yaml").read_text())
            keyprefix = {"global_keyprefix": prefix}
            config["run_launcher"]["config"]["config_source"] = {"broker_transport_options": keyprefix, "result_backend_transport_options": keyprefix}
            (celery_home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))

            base = {"DAGSTER_PG_URL": pg_url, "PYTHONPATH": str(PROJECT_DIR),
                    "DANTARO_CELERY_BROKER_URL": settings.redis_url, "DANTARO_CELERY_BACKEND_URL": settings.redis_url}  # fmt: skip
            print("default launcher ...", flush=True)
            results["default"] = _measure(default_home, {**base, "DAGSTER_HOME": str(default_home)}, args.runs)
            print("celery launcher ...", flush=True)
            celery_env = {**base, "DAGSTER_HOME": str(celery_home)}
            worker = subprocess.Popen(
                [sys.executable, "-m", "dantaro_assets.cli", "worker", "--queue", "live", "--queue", "bulk",
                 "--name", f"bench-{tag}@%h", "--preload", DEFS, "--loglevel", "WARNING"],
                env={**os.environ, **celery_env}, cwd=PROJECT_DIR, start_new_session=True,
            )  # fmt: skip
            results["celery"] = _measure(celery_home, celery_env, args.runs)
    finally:
        if worker is not None:
            os.killpg(worker.pid, signal.SIGTERM)
            worker.wait(timeout=60)
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
    print(f"command: python bench/launchers.py --runs {args.runs}")
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
