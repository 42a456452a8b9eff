"""The ``dantaro`` command: run the pipeline with its UI, the offline Upbit replay, the API, the candle stream, show settings, repair candles.

``dantaro dev`` is what a new user runs first: it validates the settings, starts the embedded
Postgres and Redis when no URLs are set, starts the offline replay server when the live Upbit API
cannot be reached (or ``--offline`` is given), points ``DAGSTER_HOME`` at the local state folder
with the project's ``dagster.yaml``, and hands over to ``dagster dev``. Every subcommand finds the
state folder and the Dagster instance the same way (:func:`use_instance`), from any folder.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import IO
from urllib.parse import urlsplit

from dantaro_assets.settings import Settings, SettingsError, load_settings, redact_url
from dantaro_replay.process import start_replay_server

LIVE_UPBIT = "https://api.upbit.com"
DEV_PID_FILE = "dev.json"  # in the state folder: the running `dantaro dev` and its `dagster dev` process group


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def use_instance(settings: Settings, refresh: bool = False) -> Path:
    """Point this process, and every process it starts, at the settings' state folder and Dagster instance."""
    from dantaro_assets.operations.instance import prepare_instance_home

    home = prepare_instance_home(settings, refresh=refresh)
    os.environ["DANTARO_STATE_DIR"] = str(settings.state_dir)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def _alive(pid: int) -> bool:
    try:
        return "dantaro" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def _dev_record(state_dir: Path) -> dict | None:
    """What the last ``dantaro dev`` of ``state_dir`` wrote about itself (removed when it stops)."""
    try:
        return json.loads((state_dir / DEV_PID_FILE).read_text())
    except (OSError, ValueError):
        return None


def _running_dev(state_dir: Path) -> dict | None:
    """The ``dantaro dev`` serving ``state_dir``, if it still runs."""
    record = _dev_record(state_dir)
    return record if record and _alive(record["pid"]) else None


def _dagster_processes(pgid: int) -> list[int]:
    """Processes of a `dagster dev` process group still alive (its leader may be gone): Dagster's services and
    code servers, and the run workers the code server starts as `multiprocessing` spawn children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and any(name in (stat.parent / "cmdline").read_text() for name in ("dagster", "multiprocessing")):
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _echo(output: IO[str], keep: Callable[[str], bool]) -> None:
    """Copy `dagster dev`'s output (its services, code servers and run workers) to ours, line by line."""
    for line in output:
        if keep(line):
            sys.stdout.write(line)
            sys.stdout.flush()


def dev(args: argparse.Namespace, settings: Settings) -> int:
    import dagster as dg

    from dantaro_assets.operations.console import (
        RunLines,
        StackTraceFilter,
        service_log_level,
    )
    from dantaro_assets.operations.dev_server import stop_dagster_dev
    from dantaro_assets.operations.stream_child import StreamChild
    from dantaro_assets.resources import process_storage

    if running := _running_dev(settings.state_dir):
        print(f"dantaro dev: already running for {settings.state_dir} (pid {running['pid']}); `dantaro stop` stops it", file=sys.stderr)
        return 1
    if args.verbose:
        settings = settings.model_copy(update={"worker_log_level": "DEBUG"})
    home = use_instance(settings, refresh=True)
    env = {**os.environ, "WORKER_LOG_LEVEL": settings.worker_log_level}
    # Started here so a failure shows at once; the children resolve the same servers themselves (resources.py).
    postgres, redis = process_storage(settings).urls()
    replay = None
    explicit_url = "UPBIT_BASE_URL" in os.environ
    if args.offline or (not explicit_url and not _reachable(LIVE_UPBIT)):
        replay = start_replay_server("--simulated", str(args.markets), "--seed", str(args.seed))
        env["UPBIT_BASE_URL"] = replay.url
        print(f"dantaro dev: Upbit is not reachable or --offline given: replaying a simulated market at {env['UPBIT_BASE_URL']}")
    print(f"dantaro dev: Postgres {redact_url(postgres)}, Redis {redact_url(redis)}, DAGSTER_HOME {home}")
    services = service_log_level(settings.worker_log_level)
    command = [
        # `dagster dev` announces its successor `dg dev` with a SupersessionWarning on every start
        sys.executable, "-W", "ignore:Function `dev_command` is superseded", "-m", "dagster", "dev",
        # the code location by module (what workspace.yaml names), so an installed package needs no project folder
        "-m", "dantaro_assets.definitions", "-h", args.host, "-p", str(args.port),
        "--log-level", services, "--code-server-log-level", services,
    ]
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):  # a service manager's stop or Ctrl-C
        signal.signal(signum, lambda *_: stop.set())
    # Opened before `dagster dev` starts: a fresh instance's storage is created once, not raced by its processes.
    instance = dg.DagsterInstance.from_config(str(home))
    # Run from DAGSTER_HOME so dagster dev does not warn about the template dagster.yaml in the project folder;
    # in a session of its own so Ctrl-C reaches only this process, which stops the runs before the services.
    dagster = subprocess.Popen(command, env=env, cwd=home, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    keep = (lambda _: True) if args.verbose else StackTraceFilter().keep
    echo = threading.Thread(target=_echo, args=(dagster.stdout, keep), daemon=True)
    echo.start()
    pid_file = settings.state_dir / DEV_PID_FILE
    record = {"pid": os.getpid(), "dagster_pgid": dagster.pid}
    pid_file.write_text(json.dumps(record))
    stream = None
    if not args.no_stream:  # beside Dagster, against UPBIT_BASE_URL's WebSocket (the replay's when offline)
        stream = StreamChild(settings.state_dir, env, keep=keep if args.verbose else StackTraceFilter().keep,
                             on_start=lambda pid: pid_file.write_text(json.dumps({**record, "stream_pid": pid})))
        stream.start()
    print(f"dantaro dev: UI on http://{args.host}:{args.port}; {'no stream (--no-stream)' if stream is None else 'stream started'}; "
          "Ctrl-C or `dantaro stop` stops it")
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
        instance.dispose()
        if dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGKILL)
        if stream is not None:
            stream.terminate()
            stream.wait(timeout=1)
        if replay is not None:
            replay.stop()
        pid_file.unlink(missing_ok=True)


def stop_state(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro stop``: the ``dantaro dev`` of the state folder, then its embedded Postgres and Redis."""
    from dantaro_assets.lib.embedded import stop_embedded

    if record := _dev_record(settings.state_dir):
        if _alive(record["pid"]):
            os.kill(record["pid"], signal.SIGTERM)
            deadline = time.monotonic() + args.timeout
            while _alive(record["pid"]) and time.monotonic() < deadline:
                time.sleep(0.2)
            if _alive(record["pid"]):
                os.kill(record["pid"], signal.SIGKILL)
            print(f"dantaro stop: stopped dantaro dev (pid {record['pid']})")
        if _alive(stream_pid := record.get("stream_pid", 0)) and str(settings.state_dir) in _cmdline(stream_pid):
            _stop_stream(stream_pid)  # left running by a killed `dantaro dev`
            print(f"dantaro stop: stopped the stream (pid {stream_pid}) left by dantaro dev")
        left = _dagster_processes(record["dagster_pgid"])  # what a killed `dantaro dev` left running
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if left:
            import dagster as dg

            from dantaro_assets.operations.dev_server import close_runs

            with dg.DagsterInstance.from_config(str(use_instance(settings))) as instance:
                closed = close_runs(instance, "dantaro dev was killed before the run ended")
            print(f"dantaro stop: killed {len(left)} process(es) left by dantaro dev; {closed} run(s) marked CANCELED")
        (settings.state_dir / DEV_PID_FILE).unlink(missing_ok=True)
    stopped = stop_embedded(settings.state_dir)
    print(f"dantaro stop: embedded servers of {settings.state_dir}: {', '.join(stopped) if stopped else 'none running'}")
    deadline = time.monotonic() + 5  # servers just told to stop may take a moment to exit
    while (left := processes_naming(settings.state_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        print(f"dantaro stop: {len(left)} process(es) still name the state folder:", *left, sep="\n  ", file=sys.stderr)
        return 1
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _stop_stream(pid: int, timeout: float = 10.0) -> None:
    """SIGTERM (it writes the minutes already closed), SIGKILL after ``timeout`` s."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while _alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _alive(pid):
        os.kill(pid, signal.SIGKILL)


def processes_naming(state: Path) -> list[str]:
    """Processes other than this one whose command line names the state folder (servers, dev, workers)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name.isdigit() and str(state) in (text := _cmdline(int(proc.name))) and proc.name != str(os.getpid()):
            found.append(f"{proc.name}: {text[:160]}")
    return found


def stream(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro stream``: closed 1-minute candles from Upbit's WebSocket into Postgres, recorded into Dagster."""
    import dagster as dg

    from dantaro_assets.markets.stream import run_stream

    if args.state_dir is not None:
        settings = settings.model_copy(update={"state_dir": args.state_dir.resolve()})
    return run_stream(settings, dg.DagsterInstance.from_config(str(use_instance(settings))))


def show_settings(_: argparse.Namespace, settings: Settings) -> int:
    """Print every setting with its variable, value and meaning (the README's configuration table)."""
    print("| variable | value | meaning |\n|---|---|---|")
    values = settings.display_values()
    for field in Settings.model_fields.values():
        print(f"| `{field.alias}` | `{values[field.alias]}` | {field.description} |")
    return 0


def _add_candles_parser(commands: argparse._SubParsersAction) -> None:
    candles_parser = commands.add_parser("candles", help="repair stored candles (fetches only ever add or correct them)")
    actions = candles_parser.add_subparsers(dest="action", required=True)
    delete = actions.add_parser(
        "delete",
        help="delete stored candles of one asset, time range and markets (a dry run unless --execute)",
        description="Lists the selected rows; deletes them, in one transaction, only with --execute. "
        "Re-materialise the partitions to fetch them again.",
    )
    delete.add_argument("--asset", required=True, help="candles_1m, candles_1h or candles_1d")
    delete.add_argument(
        "--start", required=True, type=datetime.fromisoformat, help="first candle_start, ISO with offset, e.g. 2025-09-15T10:00Z"
    )
    delete.add_argument("--end", required=True, type=datetime.fromisoformat, help="end of the range (exclusive), ISO with offset")
    which = delete.add_mutually_exclusive_group(required=True)
    which.add_argument("--market", action="append", dest="markets", metavar="MARKET", help="a market code (repeatable)")
    which.add_argument("--all-markets", action="store_true", help="every market of the range")
    delete.add_argument("--execute", action="store_true", help="really delete (without it nothing is changed)")


def repair_candles(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro candles delete``: print the selected rows, delete them only with ``--execute``."""
    from dantaro_assets.markets.repair import (
        CandleSelection,
        CandleSelectionError,
        delete_candles,
    )
    from dantaro_assets.resources import process_storage

    try:
        selection = CandleSelection(args.asset, args.start, args.end, None if args.all_markets else tuple(args.markets))
    except CandleSelectionError as exc:
        print(f"dantaro candles delete: {exc}", file=sys.stderr)
        return 2
    result = delete_candles(process_storage(settings).postgres, selection, execute=args.execute)
    span = f"candle_start in [{selection.start.isoformat()}, {selection.end.isoformat()})"
    markets = "every market" if selection.markets is None else ", ".join(selection.markets)
    if result.rows:
        print(result.selected.to_markdown(index=False))
    if result.deleted is None:
        print(f"dry run: would delete {result.rows} row(s) of {result.table} with {span} for {markets}; nothing was deleted "
              "(add --execute to delete them)")
    else:
        print(f"deleted {result.deleted} row(s) of {result.table} with {span} for {markets} (one transaction); "
              "re-materialise the partitions to fetch them again")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(prog="dantaro", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    dev_parser = commands.add_parser("dev", help="run the pipeline with the Dagster UI (offline replay when Upbit is unreachable)")
    dev_parser.add_argument("--host", default="127.0.0.1")
    dev_parser.add_argument("--port", type=int, default=3000)
    dev_parser.add_argument("--offline", action="store_true", help="always use the simulated replay server")
    dev_parser.add_argument("--markets", type=int, default=250, help="simulated markets when offline")
    dev_parser.add_argument("--seed", type=int, default=7, help="seed of the simulated market")
    dev_parser.add_argument("--verbose", action="store_true", help="everything on the console: as WORKER_LOG_LEVEL=DEBUG")
    dev_parser.add_argument("--no-stream", action="store_true", help="do not start `dantaro stream` beside Dagster")
    stop_parser = commands.add_parser("stop", help="stop the state folder's `dantaro dev` and its embedded Postgres and Redis")
    stop_parser.add_argument("--timeout", type=float, default=15.0, help="seconds `dantaro dev` gets to stop before it is killed")
    commands.add_parser("replay", help="serve the offline Upbit replay (see `dantaro replay --help`)", add_help=False)
    commands.add_parser("api", help="serve /worker/status and the latest snapshots (see `dantaro api --help`)", add_help=False)
    stream_parser = commands.add_parser("stream", help="write closed 1-minute candles from Upbit's WebSocket to Postgres as they close")
    stream_parser.add_argument("--state-dir", type=Path, help="the state folder (DANTARO_STATE_DIR); `dantaro dev` names its own, "
                               "so `dantaro stop` finds the stream")
    commands.add_parser("worker", help="execute runs from Celery queues (see `dantaro worker --help`)", add_help=False)
    commands.add_parser("settings", help="print the effective settings")
    _add_candles_parser(commands)

    if argv[:1] == ["replay"]:
        from dantaro_replay.server import main as replay_main

        return replay_main(argv[1:]) or 0
    own_parser = argv[:1] in (["api"], ["worker"])  # parsed by the subcommand itself, after the instance is set
    args = None if own_parser else parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    if argv[:1] == ["api"]:
        from dantaro_assets.operations.api import main as api_main

        use_instance(settings)
        return api_main(argv[1:], settings) or 0
    if argv[:1] == ["worker"]:
        from dantaro_assets.operations.celery_runs import main as worker_main

        use_instance(settings)
        return worker_main(argv[1:])
    if args.command == "dev":
        code = dev(args, settings)
        sys.stdout.flush()
        sys.stderr.flush()
        # Everything it started is stopped: skip the interpreter's teardown of Dagster's modules, which
        # takes seconds on a loaded machine, out of the 10 s a stop may take.
        os._exit(code)
    return {"stop": stop_state, "stream": stream, "settings": show_settings, "candles": repair_candles}[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
