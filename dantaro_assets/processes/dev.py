"""``dantaro dev``: the pipeline, its UI and the stream on one machine, with nothing to install but Python.

It starts what the settings leave unset (embedded Postgres and Redis, the replay server when Upbit cannot be
reached), records what it uses in ``dev.json``, hands over to ``dagster dev`` with the stream beside it, and
stops runs before services (docs/operations.md, "The console, stopping and ``dantaro stop``").
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import IO
from urllib.parse import urlsplit

import dagster as dg
import httpx

from dantaro_assets.lib.migrations import MigrationError, migrate
from dantaro_assets.lib.postgres import PostgresUnavailableError
from dantaro_assets.lib.tls import tls_context
from dantaro_assets.processes.console import RunLines, StackTraceFilter, service_log_level, stop_noise
from dantaro_assets.processes.dagster_dev import stop_dagster_dev
from dantaro_assets.processes.instance import use_instance
from dantaro_assets.processes.stop import DEV_RECORD, claim_state, running_dev, write_dev_record
from dantaro_assets.processes.stream_child import StreamChild
from dantaro_assets.redaction import redact_url
from dantaro_assets.resources import process_storage
from dantaro_assets.settings import Settings
from dantaro_replay.process import start_replay_server

LIVE_UPBIT = "https://api.upbit.com"


@dataclass(frozen=True)
class DevOptions:
    """``dantaro dev``'s command-line options."""

    host: str = "127.0.0.1"
    port: int = 3000
    offline: bool = False
    markets: int = 250
    seed: int = 7
    verbose: bool = False
    no_stream: bool = False


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _echo(output: IO[str], keep: Callable[[str], bool], stopping: threading.Event) -> None:
    """Copy `dagster dev`'s output (its services, code servers and run workers) to ours, line by line."""
    for line in output:
        if keep(line) and not (stopping.is_set() and stop_noise(line)):
            sys.stdout.write(line)
            sys.stdout.flush()


def _announce_when_up(url: str, banner: str, dagster: subprocess.Popen, stop: threading.Event) -> None:
    """Print ``banner`` once the UI answers ``/server_info``: the webserver starts seconds after `dagster dev`."""
    with httpx.Client(timeout=2, verify=tls_context()) as client:  # one client: polled four times a second
        while not stop.is_set() and dagster.poll() is None:
            try:
                if client.get(f"{url}/server_info").status_code == 200:
                    print(banner, flush=True)
                    return
            except httpx.HTTPError:
                pass
            stop.wait(0.25)


def run_dev(settings: Settings, options: DevOptions) -> int:
    """Run until Ctrl-C/SIGTERM; returns the exit code. One per state folder: the lock is held until it returns."""
    lock = claim_state(settings.state_dir)
    if lock is None:
        pid = (running_dev(settings.state_dir) or {}).get("pid")  # none yet while that one starts
        print(f"dantaro dev: already running for {settings.state_dir}{f' (pid {pid})' if pid else ''}; `dantaro stop` stops it",
              file=sys.stderr)
        return 1
    with lock:
        try:
            return _run_dev(settings, options)
        finally:
            (settings.state_dir / DEV_RECORD).unlink(missing_ok=True)


def _run_dev(settings: Settings, options: DevOptions) -> int:
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # a service manager's stop or Ctrl-C: acted on once Dagster is started
        signal.signal(signum, lambda *_: stop.set())
    if options.verbose:
        settings = settings.model_copy(update={"worker_log_level": "DEBUG"})
    home = use_instance(settings, refresh=True)
    if not home.is_dir():  # only an operator's DAGSTER_HOME can be missing: the state folder's own is created
        print(f"dantaro dev: DAGSTER_HOME {home} is not a folder: create it with a dagster.yaml (deploy/README.md), "
              "or unset DAGSTER_HOME to use the state folder's instance", file=sys.stderr)
        return 2
    env = {**os.environ, "WORKER_LOG_LEVEL": settings.worker_log_level}
    # Started here so a failure shows at once; the children resolve the same servers themselves (resources.py).
    storage = process_storage(settings)
    postgres, redis = storage.urls()
    replay = None
    explicit_url = "UPBIT_BASE_URL" in os.environ
    # Opened before anything else starts (an operator's DAGSTER_HOME has its storage created here, before `dagster dev`'s
    # processes could race on it; the state folder's is prepared under a lock by use_instance) and kept for the run lines.
    instance = dg.DagsterInstance.from_config(str(home))
    record = {"pid": os.getpid()}
    write_dev_record(settings.state_dir, record)
    try:
        if options.offline or (not explicit_url and not _reachable(LIVE_UPBIT)):
            # not tied to this process: a killed `dantaro dev` leaves it serving its orphans until `dantaro stop` (the record)
            replay = start_replay_server("--simulated", str(options.markets), "--seed", str(options.seed), die_with_parent=False)
            record["replay_pid"] = replay.process.pid
            env["UPBIT_BASE_URL"] = replay.url
            print(f"dantaro dev: Upbit is not reachable or --offline given: replaying a simulated market at {env['UPBIT_BASE_URL']}")
        # what `dantaro settings` shows while this runs: the values used here where they differ from the environment's
        record["settings"] = {"UPBIT_BASE_URL": redact_url(env.get("UPBIT_BASE_URL", settings.upbit_base_url)),
                              "DATABASE_URL": redact_url(postgres), "REDIS_URL": redact_url(redis),
                              "WORKER_LOG_LEVEL": settings.worker_log_level, "DAGSTER_HOME": str(home)}
        write_dev_record(settings.state_dir, record)
        print(f"dantaro dev: Postgres {redact_url(postgres)}, Redis {redact_url(redis)}, DAGSTER_HOME {home}")
        try:  # the tables at this code's version before anything writes them
            migrated = migrate(storage.postgres)
        except (MigrationError, PostgresUnavailableError) as exc:
            print(f"dantaro dev: {exc}", file=sys.stderr)
            instance.dispose()
            if replay is not None:
                replay.stop()
            return 1
        if migrated.applied:
            print(*(f"dantaro dev: {line.strip()}" for line in migrated.lines()), sep="\n")
        services = service_log_level(settings.worker_log_level)
        command = [
            # `dagster dev` announces its successor `dg dev` with a SupersessionWarning on every start
            sys.executable, "-W", "ignore:Function `dev_command` is superseded", "-m", "dagster", "dev",
            # the code location by module (what workspace.yaml names), so an installed package needs no project folder
            "-m", "dantaro_assets.definitions", "-h", options.host, "-p", str(options.port),
            "--log-level", services, "--code-server-log-level", services,
        ]
    except BaseException:
        instance.dispose()
        if replay is not None:
            replay.stop()
        raise
    # Run from DAGSTER_HOME so dagster dev does not warn about the template dagster.yaml in the project folder;
    # in a session of its own so Ctrl-C reaches only this process, which stops the runs before the services.
    dagster = subprocess.Popen(command, env=env, cwd=home, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    keep = (lambda _: True) if options.verbose else StackTraceFilter().keep
    echo = threading.Thread(target=_echo, args=(dagster.stdout, keep, stop), daemon=True)
    echo.start()
    record["dagster_pgid"] = dagster.pid
    write_dev_record(settings.state_dir, record)
    stream = None
    if not options.no_stream:  # beside Dagster, against UPBIT_BASE_URL's WebSocket (the replay's when offline)
        stream = StreamChild(settings.state_dir, env, keep=keep if options.verbose else StackTraceFilter().keep,
                             on_start=lambda pid: write_dev_record(settings.state_dir, {**record, "stream_pid": pid}))
        stream.start()
    ui = f"http://{'127.0.0.1' if options.host in ('0.0.0.0', '') else options.host}:{options.port}"
    print(f"dantaro dev: starting Dagster ({'no stream: --no-stream' if stream is None else 'the stream started'}); "
          "the UI's address follows when it answers", flush=True)
    banner = f"dantaro dev: UI on http://{options.host}:{options.port}; Ctrl-C or `dantaro stop` stops it"
    threading.Thread(target=_announce_when_up, args=(ui, banner, dagster, stop), name="dantaro-dev-banner", daemon=True).start()
    try:
        run_lines = RunLines(instance)
        while not stop.wait(1):
            if dagster.poll() is not None:
                print(f"dantaro dev: dagster dev exited with {dagster.returncode}", file=sys.stderr)
                return dagster.returncode or 1
            for line in run_lines.poll():
                print(line, flush=True)
        started = time.monotonic()
        print("dantaro dev: stopping (the stream and runs first, then the Dagster services)")
        if stream is not None:
            stream.terminate()  # it writes its closed minutes while Dagster stops
        closed = stop_dagster_dev(dagster, home)
        if stream is not None:
            stream.wait()
        note = f", {closed} run(s) marked CANCELED" if closed else ""
        echo.join(timeout=1)
        print(f"dantaro dev: stopped in {time.monotonic() - started:.1f} s{note}")
        return 0
    finally:
        stop.set()
        instance.dispose()
        if dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGKILL)
        if stream is not None:
            stream.terminate()
            stream.wait(timeout=1)
        if replay is not None:
            replay.stop()
