"""The ``dantaro`` command: the pipeline with its UI, the replay, the API, the stream, and the upkeep of stored data.

It parses and dispatches; each subcommand's work lives with its concern (``processes/``, ``api/``, ``markets/``),
and every one finds the state folder and the Dagster instance the same way (``processes.instance.use_instance``).
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import datetime
from pathlib import Path

from dantaro_assets.processes.instance import state_folder_problem, use_instance
from dantaro_assets.settings import Settings, SettingsError, load_settings


def dev(args: argparse.Namespace, settings: Settings) -> int:
    from dantaro_assets.processes.dev import DevOptions, run_dev

    return run_dev(settings, DevOptions(host=args.host, port=args.port, offline=args.offline, markets=args.markets, seed=args.seed,
                                        verbose=args.verbose, no_stream=args.no_stream))


def stop(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro stop``: the state folder's ``dantaro dev``, what a killed one left, and its embedded servers."""
    from dantaro_assets.processes.stop import stop_state

    return stop_state(settings, args.timeout)


def stream(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro stream``: closed 1-minute candles from Upbit's WebSocket into Postgres, recorded into Dagster."""
    import dagster as dg

    from dantaro_assets.markets.stream import run_stream

    if args.state_dir is not None:
        settings = settings.model_copy(update={"state_dir": args.state_dir.resolve()})
    return run_stream(settings, dg.DagsterInstance.from_config(str(use_instance(settings))))


def show_settings(_: argparse.Namespace, settings: Settings) -> int:
    """Print every setting with its variable, value and meaning (docs/configuration.md's table); where the state
    folder's running ``dantaro dev`` uses another value (the replay's URL, the embedded servers), that one, saying so."""
    from dantaro_assets.processes.stop import running_dev

    print("| variable | value | meaning |\n|---|---|---|")
    values = settings.display_values()
    dev = running_dev(settings.state_dir) or {}
    in_use = dev.get("settings", {})
    for field in Settings.model_fields.values():
        value, meaning = values[field.alias], field.description
        if in_use.get(field.alias, value) != value:
            value, meaning = in_use[field.alias], f"{meaning} (used by the running `dantaro dev` (pid {dev['pid']}); the environment here gives `{value}`)"
        print(f"| `{field.alias}` | `{value}` | {meaning} |")
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


def _postgres(settings: Settings):
    """The project's Postgres as every process resolves it (``DATABASE_URL``, else the embedded server)."""
    from dantaro_assets.resources import process_storage

    return process_storage(settings).postgres


def migrate(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro migrate``: apply the migrations the schema lacks (``--check``: list them, exit 1 if any)."""
    from dantaro_assets.lib import migrations
    from dantaro_assets.lib.postgres import PostgresUnavailableError

    try:
        postgres = _postgres(settings)
        if args.check:
            waiting = migrations.pending(postgres)
            print(*[f"pending {m.version}: {m.name}" for m in waiting] or [f"schema {settings.db_schema} is up to date"], sep="\n")
            return 1 if waiting else 0
        report = migrations.migrate(postgres)
    except (migrations.MigrationError, PostgresUnavailableError) as exc:
        print(f"dantaro migrate: {exc}", file=sys.stderr)
        return 1
    print(*report.lines(), sep="\n")
    return 0


def backup_or_restore(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro backup PATH`` / ``dantaro restore PATH``: the project schema to or from a pg_dump file."""
    from dantaro_assets.lib.backup import BackupError, backup, restore
    from dantaro_assets.lib.migrations import MigrationError
    from dantaro_assets.lib.postgres import PostgresUnavailableError

    try:
        summary = (backup if args.command == "backup" else restore)(_postgres(settings), args.path)
    except (BackupError, MigrationError, PostgresUnavailableError) as exc:
        print(f"dantaro {args.command}: {exc}", file=sys.stderr)
        return 1
    print(*summary.lines(), sep="\n")


def _add_calibration_parser(commands: argparse._SubParsersAction) -> None:
    calibration_parser = commands.add_parser("calibration", help="the plans' calibration table (chance of the target first)")
    actions = calibration_parser.add_subparsers(dest="action", required=True)
    refit = actions.add_parser("refit", help="recount the table from the stored picks and their grades (recommendation_outcomes)",
                               description="Writes a table like the shipped one, counted from the graded picks of every scorer; "
                               "serve it with DANTARO_CALIBRATION=PATH.")
    refit.add_argument("--out", required=True, type=Path, help="where to write the table (JSON)")
    refit.add_argument("--days", type=int, default=30, help="picks of the last DAYS days up to the newest graded one")


def refit_calibration(args: argparse.Namespace, settings: Settings) -> int:
    """``dantaro calibration refit``: the table recounted from graded picks, written to ``--out``."""
    from dantaro_assets.recommendations.calibration import CALIBRATION_FILE, load_calibration, refit_from_postgres

    base = load_calibration(Path(settings.calibration) if settings.calibration else CALIBRATION_FILE)
    try:
        table = refit_from_postgres(_postgres(settings), base, args.days)
    except ValueError as exc:
        print(f"dantaro calibration refit: {exc}", file=sys.stderr)
        return 2
    args.out.write_text(table.to_json())
    top = table.cells[table.cells["level"] == 0]
    print(f"wrote {args.out}: {table.fitted['plans']} plans ({table.fitted['picks']} picks) from {table.fitted['from']} to "
          f"{table.fitted['until']}, target first {int(top['target'].sum())} of {int(top['n'].sum())}; "
          f"serve it with DANTARO_CALIBRATION={args.out.resolve()}")
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
    migrate_parser = commands.add_parser("migrate", help="bring the project's tables to this code's schema version")
    migrate_parser.add_argument("--check", action="store_true", help="only list pending migrations; exit 1 if there are any")
    backup_parser = commands.add_parser("backup", help="dump the project schema to PATH (pg_dump custom format)")
    backup_parser.add_argument("path", type=Path)
    restore_parser = commands.add_parser("restore", help="restore a backup into an empty schema, then migrate it")
    restore_parser.add_argument("path", type=Path)
    _add_calibration_parser(commands)

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
    try:
        return _dispatch(argv, args, settings)
    except OSError as exc:  # a read-only or full state folder: one line, not a traceback
        if (problem := state_folder_problem(exc, settings)) is None:
            raise
        print(f"dantaro {argv[0]}: {problem}", file=sys.stderr)
        return 2


def _dispatch(argv: list[str], args: argparse.Namespace | None, settings: Settings) -> int:
    if argv[:1] == ["api"]:
        from dantaro_assets.api.app import main as api_main

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
    return {"stop": stop, "stream": stream, "settings": show_settings, "candles": repair_candles, "migrate": migrate,
            "backup": backup_or_restore, "restore": backup_or_restore, "calibration": refit_calibration}[args.command](args, settings)


if __name__ == "__main__":
    sys.exit(main())
