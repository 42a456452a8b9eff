"""`dagster dev` (webserver + daemon) as a managed process, driven through GraphQL as the UI drives it.

A test and bench harness: the end-to-end test, the cycle and launcher benchmarks and the screenshot
script each need a real instance under its own DAGSTER_HOME, runs launched into the run queue and
backfills over ranges. It stops through the package's own ``stop_dagster_dev``. The live page's test and
its screenshot share ``launch_chromium``.

What a bench starts ends with it: :func:`exit_on_sigterm` turns SIGTERM into an exit that runs its
``with`` and ``finally`` blocks; when it is killed, the single processes it starts get SIGTERM from the
kernel (``terminate_with_parent``), and a watchdog kills `dagster dev`'s process group (its services, code
servers and run workers: `dagster dev` alone would leave a code server and its run worker running).
"""

from __future__ import annotations

import itertools
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Self

import httpx
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dantaro_assets.processes.dagster_dev import stop_dagster_dev
from dantaro_assets.processes.instance import write_instance_config
from dantaro_assets.settings import PROJECT_DIR, Settings

FINISHED = ("SUCCESS", "FAILURE", "CANCELED")

_BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""
_BACKFILL_STATUS = "query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }"


CHROMIUM = Path("/usr/bin/chromium")  # Debian's package; Playwright drives it (never `playwright install`)
# Headless as root; without the background-networking flags Chromium's own connections are refused on a closed network.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def launch_chromium(playwright):
    """Debian's headless Chromium under Playwright (the live page's test and its screenshot)."""
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)


def exit_on_sigterm() -> None:
    """SIGTERM ends this process as Ctrl-C would, through its ``with`` and ``finally`` blocks (Python's default
    SIGTERM ends it at once, leaving what it started running); a second SIGTERM does not cut that cleanup short.
    Call it from the main thread."""

    def _exit(signum: int, _frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        sys.exit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


# Kills a process group once the process that started it is gone (however it ended); ignores Ctrl-C, which its
# parent handles. Run outside the group, polling: its parent's death changes its parent pid.
_GROUP_WATCHDOG = """
import os, signal, sys, time
parent, group = int(sys.argv[1]), int(sys.argv[2])
signal.signal(signal.SIGINT, signal.SIG_IGN)
while os.getppid() == parent:
    time.sleep(0.5)
try:
    os.killpg(group, signal.SIGKILL)
except ProcessLookupError:
    pass
"""


def kill_group_with_parent(group: int) -> subprocess.Popen:
    """Start the watchdog of process group ``group``: it kills the group once this process is gone, and ends then."""
    return subprocess.Popen([sys.executable, "-c", _GROUP_WATCHDOG, str(os.getpid()), str(group)])


# Each test process hands out ports from a block of its own below the kernel's ephemeral range (32768-60999 on
# Linux), where servers binding port 0 and outgoing connections take theirs: a port it returned free cannot be
# taken by another worker's server or a client socket before the test's server binds it.
PORT_BLOCK = 200
FIRST_PORT = 10_000
BLOCKS = (32_768 - FIRST_PORT) // PORT_BLOCK


def _own_ports() -> Iterator[int]:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")  # gw0, gw1, ... under xdist; the main process is block 0
    block = (int(worker.removeprefix("gw")) + 1) % BLOCKS if worker.startswith("gw") else 0
    return itertools.cycle(range(FIRST_PORT + PORT_BLOCK * block, FIRST_PORT + PORT_BLOCK * (block + 1)))


_PORTS = _own_ports()


def free_port() -> int:
    """A port of this process's block that nothing listens on now (TIME_WAIT allowed, as servers set SO_REUSEADDR)."""
    for _ in range(PORT_BLOCK):
        port = next(_PORTS)
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"all {PORT_BLOCK} ports of this test process's block are taken")


class DagsterDev:
    """A `dagster dev` of the project's workspace on a fresh DAGSTER_HOME (the project's instance config)."""

    def __init__(self, home: Path, env: Mapping[str, str] | None = None, port: int | None = None, *, settings: Settings):
        """``settings`` render the instance config: the ones ``env`` gives the process it starts."""
        self.home = home
        self.settings = settings
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = {**os.environ, **(env or {}), "DAGSTER_HOME": str(home)}
        self.log_path = home / "dagster_dev.log"
        self.process: subprocess.Popen | None = None
        self._watchdog: subprocess.Popen | None = None
        self.client = DagsterGraphQLClient("127.0.0.1", port_number=self.port)

    def __enter__(self) -> Self:
        write_instance_config(self.home, self.settings)
        with self.log_path.open("w") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_DIR / "workspace.yaml"), "-p", str(self.port)],
                cwd=PROJECT_DIR, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )
        self._watchdog = kill_group_with_parent(self.process.pid)
        deadline = time.monotonic() + 180
        try:
            with httpx.Client(timeout=2) as client:
                while True:
                    if self.process.poll() is not None:
                        raise RuntimeError(f"dagster dev exited:\n{self.log_path.read_text()[-3000:]}")
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"dagster dev did not answer {self.url}/server_info in 180 s")
                    try:
                        if client.get(f"{self.url}/server_info").status_code == 200:
                            return self
                    except httpx.HTTPError:
                        pass
                    time.sleep(1)
        except BaseException:  # a failed or interrupted start (SIGTERM) stops what started: __exit__ will not run
            self.__exit__()
            raise

    def __exit__(self, *_: object) -> None:
        """Stop the whole process group (webserver, daemon, code servers, run workers), no run left open."""
        if self.process is not None:
            stop_dagster_dev(self.process, self.home, timeout=30)
            self._watchdog.kill()  # SIGKILL: a SIGTERM the worker's signal state left ignored or blocked hung here for 600 s
            self._watchdog.wait(timeout=30)

    def query(self, text: str, variables: Mapping[str, object] | None = None) -> dict:
        return self.client._execute(text, dict(variables or {}))

    def launch(self, job: str, partition: str | None = None, timeout: float = 120) -> str:
        """Submit a run into the queue; retried while the code location is still loading."""
        tags = {"dagster/partition": partition} if partition else None
        deadline = time.monotonic() + timeout
        while True:
            try:
                return self.client.submit_job_execution(job, tags=tags)
            except DagsterGraphQLClientError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(2)

    def wait(self, run_id: str, timeout: float = 300, poll: float = 0.5) -> str:
        """The run's final status."""
        deadline = time.monotonic() + timeout
        while (status := self.client.get_run_status(run_id).value) not in FINISHED:
            if time.monotonic() > deadline:
                raise TimeoutError(f"run {run_id} still {status} after {timeout} s")
            time.sleep(poll)
        return status

    def backfill(self, ranges: Mapping[str, tuple[str, str]], timeout: float = 600) -> str:
        """Backfill partition ranges per asset (the UI's "Materialize" dialog) and wait for the end."""
        params = {
            "partitionsByAssets": [
                {"assetKey": {"path": [asset]}, "partitions": {"range": {"start": start, "end": end}}} for asset, (start, end) in ranges.items()
            ]
        }
        launched = self.query(_BACKFILL, {"params": params})["launchPartitionBackfill"]
        if launched["__typename"] != "LaunchBackfillSuccess":
            raise RuntimeError(f"backfill not launched: {launched}")
        deadline = time.monotonic() + timeout
        while (status := self.query(_BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]["status"]) in (
            "REQUESTED", "CANCELING", "FAILING",
        ):
            if time.monotonic() > deadline:
                raise TimeoutError(f"backfill {launched['backfillId']} still {status} after {timeout} s")
            time.sleep(2)
        return status


def prepare_history(
    dev: DagsterDev, now: float | None = None, timeout: float = 1800, progress: Callable[[str], None] = lambda _: None
) -> str:
    """Materialise what the hourly analyses look back over; returns the current hour's partition key.

    The universe and 1h/1d candles of every day the minutes reach (daily_candles_job), and the 1-minute candles of
    the analyses' minute lookback up to the current hour in one backfill (candles_1m's policy: 13 hours a run).
    ``progress`` hears of each step as it ends.
    """
    from dantaro_assets.partitions import daily_partitions, hourly_partitions
    from dantaro_assets_tests.lib.candle_data import analyses_lookback

    now = time.time() if now is None else now
    reach = analyses_lookback().minute_hours * 3600
    # every day the minutes reach (just after midnight UTC, yesterday too): the minutes read their day's universe
    days = dict.fromkeys(daily_partitions.get_partition_key_for_timestamp(t) for t in (now - reach, now))
    for day in days:
        run_id = dev.launch("daily_candles_job", day)
        if (status := dev.wait(run_id, timeout=timeout)) != "SUCCESS":
            raise RuntimeError(f"daily_candles_job {day}: run {run_id} ended {status}")
        progress(f"history: daily_candles_job {day} succeeded")
    hour = hourly_partitions.get_partition_key_for_timestamp(now)
    first = hourly_partitions.get_partition_key_for_timestamp(now - reach)
    if (status := dev.backfill({"candles_1m": (first, hour)}, timeout=timeout)) not in ("COMPLETED", "COMPLETED_SUCCESS"):
        raise RuntimeError(f"candles_1m backfill {first}...{hour} ended {status}")
    progress(f"history: candles_1m backfill {first}...{hour} completed")
    return hour
