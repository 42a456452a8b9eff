"""Retention on real Postgres tables and a real temporary Dagster instance."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.maintenance.cleanup import purge_runs, purge_tables, table_cutoffs
from dantaro_assets_tests.operations.daemon import (
    FINISHED,
    ComputeIOType,
    RunsTable,
    create_run_for_test,
    daemon_workspace,
    dequeue,
    project_instance,
    submit,
    wait_for,
)

NOW = datetime.now(UTC)


@pytest.fixture
def tables(pg_url: str, settings) -> Iterator[str]:
    """A schema of its own holding candles_1m and market_status rows aged 10, 40 and 200 days, and no other table."""
    schema = f"{settings.db_schema}_retention"
    ages = [10, 40, 200]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'DROP TABLE IF EXISTS "{schema}".candles_1m, "{schema}".market_status')
        conn.execute(f'CREATE TABLE "{schema}".candles_1m (market text, candle_start timestamptz, close double precision)')
        conn.execute(f'CREATE TABLE "{schema}".market_status (as_of timestamptz, score double precision)')
        for age in ages:
            conn.execute(f'INSERT INTO "{schema}".candles_1m VALUES (%s, %s, 1.0), (%s, %s, 2.0)', ("KRW-BTC", NOW - timedelta(days=age), "KRW-ETH",
                NOW - timedelta(days=age)))
            conn.execute(f'INSERT INTO "{schema}".market_status VALUES (%s, 0.5)', (NOW - timedelta(days=age),))
    yield schema
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _ages_left(pg_url: str, schema: str, table: str, column: str) -> list[int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f'SELECT DISTINCT round(extract(epoch FROM %s - {column}) / 86400)::int FROM "{schema}".{table} ORDER BY 1', (NOW,)).fetchall()
    return [row[0] for row in rows]


def test_purge_tables_keeps_each_tables_window(tables, pg_url, settings):
    removed = purge_tables(PostgresResource(url=pg_url, db_schema=tables), table_cutoffs(NOW, settings))
    # 1-minute candles keep 30 days (2 markets x 2 old days), analyses keep 180 (1 row); absent tables are skipped
    assert removed == {"candles_1m": 4, "market_status": 1}
    assert _ages_left(pg_url, tables, "candles_1m", "candle_start") == [10]
    assert _ages_left(pg_url, tables, "market_status", "as_of") == [10, 40]


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:

    return create_run_for_test(instance, job_name="some_job", status=status).run_id


def _age_run(instance: dg.DagsterInstance, run_id: str, days: int) -> None:
    """Backdate a run (Dagster has no API to create a run in the past)."""

    with instance.run_storage.connect() as conn:
        conn.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(create_timestamp=datetime.now() - timedelta(days=days)))


def _with_logs(instance: dg.DagsterInstance, run_id: str) -> tuple[Path, Path]:
    """Give a run an event and a compute log, as a real run has; returns the event-log file and compute-log folder."""
    instance.report_engine_event("an event", instance.get_run_by_id(run_id))
    logs = instance.compute_log_manager
    log_key = [run_id, "compute_logs", "step"]
    with logs.open_log_stream(log_key, ComputeIOType.STDOUT) as stream:
        stream.write("step output")
    shard = Path(instance.event_log_storage.path_for_shard(run_id))
    folder = Path(logs.get_captured_local_path(log_key, "out")).parents[1]
    assert shard.exists() and folder.name == run_id and folder.exists()
    return shard, folder


def test_purge_runs_removes_old_finished_runs_with_their_events_and_logs(tmp_path: Path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        old_done = _run(instance, dg.DagsterRunStatus.SUCCESS)
        old_failed = _run(instance, dg.DagsterRunStatus.FAILURE)
        old_running = _run(instance, dg.DagsterRunStatus.STARTED)
        recent = _run(instance, dg.DagsterRunStatus.SUCCESS)
        old_files = _with_logs(instance, old_done)
        kept_files = _with_logs(instance, recent)
        for run_id in (old_done, old_failed, old_running):
            _age_run(instance, run_id, 40)

        assert purge_runs(instance, datetime.now(UTC) - timedelta(days=30)) == 2
        assert instance.get_run_by_id(old_done) is None and instance.get_run_by_id(old_failed) is None
        assert not any(path.exists() for path in old_files)  # its events' file and its compute-log folder are gone too
        assert all(path.exists() for path in kept_files)
        assert instance.get_run_by_id(old_running) is not None  # never touch a run still waiting or in flight
        assert instance.get_run_by_id(recent) is not None


@pytest.mark.slow
def test_cleanup_job_succeeds_under_the_daemon_and_reports_what_it_removed(tables, pg_url, settings, tmp_path: Path):
    """Queued, launched and run by a run worker with the project's resources (its Postgres IO manager included)."""
    with project_instance(tmp_path / "home") as instance:
        old = _run(instance, dg.DagsterRunStatus.SUCCESS)
        old_files = _with_logs(instance, old)
        _age_run(instance, old, settings.retention_runs_days + 1)
        with daemon_workspace(instance, "dantaro_assets.definitions", {"DANTARO_SCHEMA": tables}) as workspace:
            run_id = submit(instance, workspace, "cleanup_job")
            dequeue(workspace)
            assert wait_for(instance, [run_id], FINISHED)[run_id] == dg.DagsterRunStatus.SUCCESS

        (output,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_OUTPUT)
        metadata = output.dagster_event.step_output_data.metadata
        assert metadata["rows_removed"].value == 5 and metadata["runs_removed"].value == 1
        assert metadata["rows_removed/candles_1m"].value == 4
        assert _ages_left(pg_url, tables, "candles_1m", "candle_start") == [10]
        assert _ages_left(pg_url, tables, "market_status", "as_of") == [10, 40]
        assert instance.get_run_by_id(old) is None and not any(path.exists() for path in old_files)
        assert instance.get_run_by_id(run_id).tags["dagster/priority"] == "-10"
