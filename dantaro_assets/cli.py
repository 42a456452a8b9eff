"""The ``dantaro`` command: run the pipeline with its UI, the offline Upbit replay, the API, show settings, repair candles.

``dantaro dev`` is what a new user runs first: it validates the settings, starts the embedded
Postgres and Redis when no URLs are set, starts the offline replay server when the live Upbit API
cannot be reached (or ``--offline`` is given), points ``DAGSTER_HOME`` at the local state folder
with the project's ``dagster.yaml``, and hands over to ``dagster dev``.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
from datetime import datetime
from pathlib import Path
from urllib.parse import urlsplit

from dantaro_assets.replay.process import start_replay_server
from dantaro_assets.settings import Settings, SettingsError, load_settings, redact_url

PROJECT_DIR = Path(__file__).resolve().parent.parent
LIVE_UPBIT = "https://api.upbit.com"


def _reachable(url: str, timeout: float = 3.0) -> bool:
    parts = urlsplit(url)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    try:
        with socket.create_connection((parts.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _dagster_home(settings: Settings, env: dict[str, str]) -> Path:
    """A Dagster home in the state folder with the project's dagster.yaml rendered from the settings.

    A ``DAGSTER_HOME`` set by the operator is used as it is: its dagster.yaml is theirs.
    """
    from dantaro_assets.operations.instance import write_instance_config

    if env.get("DAGSTER_HOME"):
        return Path(env["DAGSTER_HOME"])
    home = settings.state_dir.resolve() / "dagster_home"
    write_instance_config(home, settings)
    return home


def dev(args: argparse.Namespace, settings: Settings) -> int:
    from dantaro_assets.lib import embedded

    env = dict(os.environ)
    env["DANTARO_STATE_DIR"] = str(settings.state_dir.resolve())  # children run from DAGSTER_HOME, not from here
    # Started here so a failure shows at once; the children resolve the same servers themselves (resources.py).
    postgres, redis = embedded.postgres_url(settings), embedded.redis_url(settings)
    env["DAGSTER_HOME"] = str(_dagster_home(settings, env))
    replay = None
    explicit_url = "UPBIT_BASE_URL" in os.environ
    if args.offline or (not explicit_url and not _reachable(LIVE_UPBIT)):
        replay = start_replay_server("--simulated", str(args.markets), "--seed", str(args.seed))
        env["UPBIT_BASE_URL"] = replay.url
        print(f"dantaro dev: Upbit is not reachable or --offline given: replaying a simulated market at {env['UPBIT_BASE_URL']}")
    print(f"dantaro dev: Postgres {redact_url(postgres)}, Redis {redact_url(redis)}, DAGSTER_HOME {env['DAGSTER_HOME']}")
    command = ["dagster", "dev", "-w", str(PROJECT_DIR / "workspace.yaml"), "-h", args.host, "-p", str(args.port)]
    # Run from DAGSTER_HOME so dagster dev does not warn about the template dagster.yaml in the project folder.
    dagster = subprocess.Popen(command, env=env, cwd=env["DAGSTER_HOME"], start_new_session=True)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a service manager's stop ends the children too
    try:
        return dagster.wait()
    except (KeyboardInterrupt, SystemExit):
        return 130
    finally:
        if dagster.poll() is None:
            os.killpg(dagster.pid, signal.SIGINT)  # dagster dev stops its webserver, daemon and code servers
            try:
                dagster.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(dagster.pid, signal.SIGKILL)
        if replay is not None:
            replay.stop()


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
    from dantaro_assets.lib.postgres import PostgresResource
    from dantaro_assets.markets.repair import CandleSelection, CandleSelectionError, delete_candles

    try:
        selection = CandleSelection(args.asset, args.start, args.end, None if args.all_markets else tuple(args.markets))
    except CandleSelectionError as exc:
        print(f"dantaro candles delete: {exc}", file=sys.stderr)
        return 2
    result = delete_candles(PostgresResource(url=settings.database_url, db_schema=settings.db_schema), selection, execute=args.execute)
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
    commands.add_parser("replay", help="serve the offline Upbit replay (see `dantaro replay --help`)", add_help=False)
    commands.add_parser("api", help="serve /worker/status and the latest snapshots (see `dantaro api --help`)", add_help=False)
    commands.add_parser("worker", help="execute runs from Celery queues (see `dantaro worker --help`)", add_help=False)
    commands.add_parser("settings", help="print the effective settings")
    _add_candles_parser(commands)

    if argv[:1] == ["replay"]:
        from dantaro_assets.replay.server import main as replay_main

        return replay_main(argv[1:]) or 0
    if argv[:1] == ["api"]:
        from dantaro_assets.operations.api import main as api_main

        return api_main(argv[1:]) or 0
    if argv[:1] == ["worker"]:
        from dantaro_assets.operations.celery_runs import main as worker_main

        return worker_main(argv[1:])
    args = parser.parse_args(argv)
    try:
        settings = load_settings()
    except SettingsError as exc:
        print(exc, file=sys.stderr)
        return 2
    return {"dev": dev, "settings": show_settings, "candles": repair_candles}[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
