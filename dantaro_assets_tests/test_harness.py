"""The bench harness: a bench stopped by SIGTERM, or killed, leaves nothing it started running (``bench/cycle.py``)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from dantaro_assets.processes.stop import dagster_processes

pytestmark = pytest.mark.spread  # each test runs a bench of its own

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _running(processes: list[psutil.Process]) -> list[str]:
    left = []
    for process in processes:
        try:
            if process.status() != psutil.STATUS_ZOMBIE:
                left.append(f"{process.pid}: {' '.join(process.cmdline())[:160]}")
        except psutil.NoSuchProcess:
            continue
    return left


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGKILL], ids=["sigterm", "sigkill"])
def test_a_bench_stopped_or_killed_leaves_no_process_it_started(signum, settings, pg_url):
    """`bench/cycle.py` stopped while it prepares the history (its replay server, `dagster dev` and runs up)."""
    schema = f"{settings.db_schema}_bench_{signum.name.lower()}"
    env = {**os.environ, "PYTHONPATH": str(PROJECT_DIR), "PYTHONUNBUFFERED": "1", "DANTARO_SCHEMA": schema,
           "DANTARO_REDIS_PREFIX": f"{settings.redis_prefix}_bench"}
    bench = subprocess.Popen([sys.executable, "bench/cycle.py", "--markets", "10", "--runs", "1"], cwd=PROJECT_DIR, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    started: list[psutil.Process] = []
    try:
        lines = []
        for line in bench.stdout:  # printed once `dagster dev` answers; then the history runs are launched
            lines.append(line)
            if line.startswith("preparing:"):
                break
        assert bench.poll() is None, "".join(lines)[-3000:]
        time.sleep(5)  # a run queued or started
        started = psutil.Process(bench.pid).children(recursive=True)
        [dagster] = [p for p in started if p.ppid() == bench.pid and "dagster" in " ".join(p.cmdline())]
        assert any("dantaro_replay" in " ".join(p.cmdline()) for p in started), [p.cmdline() for p in started]
        bench.send_signal(signum)
        bench.communicate(timeout=90)
        gone, alive = psutil.wait_procs(started, timeout=60)
        left = _running(alive)
        group = dagster_processes(dagster.pid)  # run workers included: the code server spawns them in the group
    finally:
        for process in started:
            try:
                process.kill()
            except psutil.NoSuchProcess:
                pass
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
    assert left == [] and group == [], (left, group)
