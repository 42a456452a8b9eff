"""Retention on real Postgres tables and a real temporary Dagster instance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.maintenance.cleanup import purge_runs, purge_tables, table_cutoffs
from dantaro_assets.operations.jobs import cleanup_job

NOW = datetime.now(UTC)


@pytest.fixture
def tables(pg_url: str, settings) -> dict[str, list[int]]:
    """candles_1m and market_status rows aged 10, 40 and 200 days (candles_1d is never created)."""
    schema = settings.db_schema
    ages = [10, 40, 200]
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{schema}"')
        conn.execute(f'DROP TABLE IF EXISTS "{schema}".candles_1m, "{schema}".market_status')
        conn.execute(f'CREATE TABLE "{schema}".candles_1m (market text, candle_start timestamptz, close double precision)')
        conn.execute(f'CREATE TABLE "{schema}".market_status (as_of timestamptz, score double precision)')
        for age in ages:
            conn.execute(f'INSERT INTO "{schema}".candles_1m VALUES (%s, %s, 1.0), (%s, %s, 2.0)', ("KRW-BTC", NOW - timedelta(days=age), "KRW-ETH", NOW - timedelta(days=age)))
            conn.execute(f'INSERT INTO "{schema}".market_status VALUES (%s, 0.5)', (NOW - timedelta(days=age),))
    yield {"candles_1m": ages, "market_status": ages}
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{schema}".candles_1m, "{schema}".market_status')


def _ages_left(pg_url: str, schema: str, table: str, column: str) -> list[int]:
    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(f'SELECT DISTINCT round(extract(epoch FROM %s - {column}) / 86400)::int FROM "{schema}".{table} ORDER BY 1', (NOW,)).fetchall()
    return [row[0] for row in rows]


def _postgres(pg_url: str, settings) -> PostgresResource:
    return PostgresResource(url=pg_url, db_schema=settings.db_schema)


def test_purge_tables_keeps_each_tables_window(tables, pg_url, settings):
    removed = purge_tables(_postgres(pg_url, settings), table_cutoffs(NOW, settings))
    # 1-minute candles keep 30 days (2 markets x 2 old days), analyses keep 180 (1 row); absent tables are skipped
    assert removed == {"candles_1m": 4, "market_status": 1}
    assert _ages_left(pg_url, settings.db_schema, "candles_1m", "candle_start") == [10]
    assert _ages_left(pg_url, settings.db_schema, "market_status", "as_of") == [10, 40]


def _run(instance: dg.DagsterInstance, status: dg.DagsterRunStatus) -> str:
    from dagster._core.test_utils import create_run_for_test

    return create_run_for_test(instance, job_name="some_job", status=status).run_id


def _age_run(instance: dg.DagsterInstance, run_id: str, days: int) -> None:
    """Backdate a run (Dagster has no API to create a run in the past)."""
    from dagster._core.storage.runs.schema import RunsTable

    with instance.run_storage.connect() as conn:
        conn.execute(RunsTable.update().where(RunsTable.c.run_id == run_id).values(create_timestamp=datetime.now() - timedelta(days=days)))


def test_purge_runs_removes_old_finished_runs_with_their_events(tmp_path: Path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        old_done = _run(instance, dg.DagsterRunStatus.SUCCESS)
        old_failed = _run(instance, dg.DagsterRunStatus.FAILURE)
        old_running = _run(instance, dg.DagsterRunStatus.STARTED)
        recent = _run(instance, dg.DagsterRunStatus.SUCCESS)
        instance.report_engine_event("old event", instance.get_run_by_id(old_done))
        for run_id in (old_done, old_failed, old_running):
            _age_run(instance, run_id, 40)

        assert purge_runs(instance, datetime.now(UTC) - timedelta(days=30)) == 2
        assert instance.get_run_by_id(old_done) is None and instance.get_run_by_id(old_failed) is None
        assert instance.all_logs(old_done) == []
        assert instance.get_run_by_id(old_running) is not None  # never touch a run still waiting or in flight
        assert instance.get_run_by_id(recent) is not None


def test_cleanup_job_reports_what_it_removed(tables, pg_url, settings, tmp_path: Path):
    with dg.instance_for_test(temp_dir=str(tmp_path)) as instance:
        old = _run(instance, dg.DagsterRunStatus.SUCCESS)
        _age_run(instance, old, settings.retention_runs_days + 1)
        result = cleanup_job.execute_in_process(instance=instance, resources={"postgres": _postgres(pg_url, settings)})
        assert result.success
        assert result.output_for_node("enforce_retention") == {"candles_1m": 4, "market_status": 1, "runs": 1}
        (output,) = [e for e in result.all_events if e.event_type == dg.DagsterEventType.STEP_OUTPUT]
        metadata = output.step_output_data.metadata
        assert metadata["rows_removed"].value == 5 and metadata["runs_removed"].value == 1
        assert metadata["rows_removed/candles_1m"].value == 4
        assert instance.get_run_by_id(old) is None
        assert result.dagster_run.tags["dagster/priority"] == "-10"
