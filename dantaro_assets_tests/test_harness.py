"""The harness the tests and benches share: a bench stopped by SIGTERM, or killed, leaves nothing it started running
(``bench/cycle.py``); the ports it hands out are no other process's to take."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psutil
import psycopg
import pytest

from dantaro_assets.processes.stop import dagster_processes
from dantaro_assets_tests.harness import free_port

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


def test_a_free_port_is_outside_the_kernels_ephemeral_range_and_never_one_in_use():
    """The kernel hands ports of its ephemeral range to every server binding port 0 and to every outgoing connection:
    a port chosen there could be taken before the test's server binds it (one ``dantaro api`` test once got another
    server's 404). A port in use in the process's own block is skipped."""
    low, high = map(int, Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    port = free_port()
    assert not low <= port <= high, f"{port} is in the ephemeral range {low}-{high}"
    with socket.socket() as server:
        server.bind(("127.0.0.1", port + 1))  # the block's next port, now taken
        server.listen()
        assert free_port() not in (port, port + 1)
