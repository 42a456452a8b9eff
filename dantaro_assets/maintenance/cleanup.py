"""Retention: drop rows older than each table's window and Dagster runs older than the run window.

Dagster never prunes runs or their event logs, so runs go through the instance API, oldest first, never one in
flight; a SQLite instance's per-run event file and the compute logs are removed too (docs/operations.md).
"""

import contextlib
import os
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

import dagster as dg

from dantaro_assets.lib.dagster_internals import sqlite_event_shard
from dantaro_assets.lib.postgres import PostgresResource, quote_ident
from dantaro_assets.lib.postgres_io import table_exists
from dantaro_assets.lib.run_settings import RunSettings

# table -> (time column, RunSettings field with its retention in days)
RETENTION: Mapping[str, tuple[str, str]] = {
    "candles_1m": ("candle_start", "retention_candles_1m_days"),
    "orderbook_top": ("as_of", "retention_candles_1m_days"),  # ~72,000 rows a day for 250 markets; read by recent hours only
    "candles_1h": ("candle_start", "retention_candles_days"),
    "candles_1d": ("candle_start", "retention_candles_days"),
    "upbit_markets": ("day", "retention_candles_days"),
    "upbit_instruments": ("day", "retention_candles_days"),
    "market_status": ("as_of", "retention_analyses_days"),
    "support_levels": ("as_of", "retention_analyses_days"),
    "recommendations": ("as_of", "retention_analyses_days"),
    "recommendation_outcomes": ("as_of", "retention_analyses_days"),
    "webhook_deliveries": ("created_at", "retention_runs_days"),  # the alerts' outbox: kept as long as the runs it speaks of
}
_RUN_PAGE = 200
FINISHED_STATUSES = [dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED]

def table_cutoffs(now: datetime, settings: RunSettings) -> dict[str, datetime]:
    """The oldest time each table keeps."""
    return {table: now - timedelta(days=getattr(settings, field)) for table, (_, field) in RETENTION.items()}

def purge_tables(postgres: PostgresResource, cutoffs: Mapping[str, datetime]) -> dict[str, int]:
    """Delete rows older than each table's cutoff, one transaction per table; absent tables are skipped."""
    removed = {}
    for table, cutoff in cutoffs.items():
        if not table_exists(postgres, table):
            continue
        statement = (
            f"WITH removed AS (DELETE FROM {postgres.table_name(table)} WHERE {quote_ident(RETENTION[table][0])} < $1 RETURNING 1) "
            "SELECT count(*) FROM removed"
        )
        with postgres.connect() as conn:
            removed[table] = postgres.read_arrow(statement, [cutoff], conn=conn).column(0)[0].as_py()
    return removed


def delete_run_fully(instance: dg.DagsterInstance, run_id: str) -> None:
    """Delete a run, its events, its event-log file (SQLite instances shard events per run) and its compute logs."""
    instance.delete_run(run_id)
    shard = sqlite_event_shard(instance, run_id)
    if shard is not None:
        for path in (shard, f"{shard}-wal", f"{shard}-shm"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
    instance.compute_log_manager.delete_logs(prefix=[run_id])


def purge_runs(instance: dg.DagsterInstance, created_before: datetime) -> int:
    """Delete finished runs (with their event logs and compute logs) created before ``created_before``; returns how many."""
    removed = 0
    while True:
        records = instance.get_run_records(
            filters=dg.RunsFilter(created_before=created_before, statuses=FINISHED_STATUSES),
            limit=_RUN_PAGE,
            ascending=True,
        )
        for record in records:
            delete_run_fully(instance, record.dagster_run.run_id)
        removed += len(records)
        if len(records) < _RUN_PAGE:
            return removed


@dg.op(tags={"kind": "postgres"}, out=dg.Out(dg.Nothing))
def enforce_retention(context: dg.OpExecutionContext, postgres: PostgresResource, run_settings: RunSettings) -> dg.Output:
    """Apply every retention window; the output's metadata lists rows removed per table and runs removed.

    The output is ``Nothing``: the counts travel as metadata only, so no IO manager is asked to store
    them (the jobs' default IO manager writes asset partitions to Postgres and refuses an op's output).
    """
    now = datetime.now(UTC)
    removed = purge_tables(postgres, table_cutoffs(now, run_settings))
    runs = purge_runs(context.instance, now - timedelta(days=run_settings.retention_runs_days))
    context.log.info(f"retention removed {sum(removed.values())} rows ({removed}) and {runs} runs")
    return dg.Output(
        None,
        metadata={
            **{f"rows_removed/{table}": count for table, count in removed.items()},
            "rows_removed": sum(removed.values()),
            "runs_removed": runs,
            "runs_cutoff": dg.MetadataValue.timestamp(now - timedelta(days=run_settings.retention_runs_days)),
        },
    )
