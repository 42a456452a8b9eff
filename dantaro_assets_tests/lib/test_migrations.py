"""Versioned migrations on the real test database: each one transactional, idempotent, applied once, in order."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator

import pandas as pd
import psycopg
import pytest

from dantaro_assets.lib.migrations import LATEST, MIGRATIONS, VERSION_TABLE, Migration, MigrationError, migrate, pending
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode, key_columns, read_table
from dantaro_assets.recommendations.assets import RECOMMENDATIONS, recommendation_outcomes
from dantaro_assets_tests.lib.storage_data import HOUR_A, HOUR_B, write

AS_OF = "2025-09-01T00:05:00Z"


@pytest.fixture
def schema(pg_url: str, settings) -> Iterator[PostgresResource]:
    """A schema of the test's own (dropped after), as an earlier release would have left it: built by hand."""
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_mig_{uuid.uuid4().hex[:6]}")
    yield postgres
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


def _sql(postgres: PostgresResource, *statements: str) -> None:
    with psycopg.connect(postgres.url, autocommit=True) as conn:
        conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{postgres.db_schema}"')
        conn.execute(f'SET search_path TO "{postgres.db_schema}"')
        for statement in statements:
            conn.execute(statement)


def _legacy_picks(postgres: PostgresResource) -> None:
    """``recommendations`` as the first release stored it: caution as comma-separated text, key (as_of, market), no scorer."""
    _sql(postgres,
         "CREATE TABLE recommendations (as_of timestamptz, rank bigint, market text, score double precision, caution text)",
         "CREATE UNIQUE INDEX recommendations_key ON recommendations (as_of, market)",
         f"INSERT INTO recommendations VALUES ('{AS_OF}', 1, 'KRW-BTC', 61.5, 'price_fluctuations,trading_volume_soaring'),"
         f" ('{AS_OF}', 2, 'KRW-ETH', 58.0, ''), ('{AS_OF}', 3, 'KRW-XRP', 55.0, '[\"global_price_differences\"]'),"
         f" ('{AS_OF}', 4, 'KRW-SOL', 52.0, NULL)")


def _versions(postgres: PostgresResource) -> list[int]:
    return postgres.read_frame(f"SELECT version FROM {postgres.table_name(VERSION_TABLE)} ORDER BY 1")["version"].tolist()


def test_an_earlier_releases_picks_are_migrated_once_in_order(schema):
    _legacy_picks(schema)
    assert [m.version for m in pending(schema)] == [m.version for m in MIGRATIONS]

    report = migrate(schema)

    assert [version for version, _, _ in report.applied] == [1, 2, 3] and (report.before, report.after) == (0, LATEST)
    picks = read_table(schema, "recommendations", order=["rank"])
    assert picks["caution"].tolist() == [["price_fluctuations", "trading_volume_soaring"], [], ["global_price_differences"], None]
    assert picks["scorer"].tolist() == ["v1"] * 4  # rows stored before there were scorers were v1's
    assert picks[["market", "score"]].values.tolist() == [["KRW-BTC", 61.5], ["KRW-ETH", 58.0], ["KRW-XRP", 55.0], ["KRW-SOL", 52.0]]
    assert key_columns(schema, "recommendations") == ["as_of", "scorer", "market"]
    assert _versions(schema) == [1, 2, 3] and pending(schema) == []
    assert migrate(schema).applied == []  # recorded: nothing runs twice

    # the current code writes the migrated table: a list into jsonb, one row per scorer
    io_manager = PostgresDataFrameIOManager(postgres=schema)
    metadata = RECOMMENDATIONS.asset.metadata_by_key[RECOMMENDATIONS.asset.key]
    frame = pd.DataFrame({"as_of": pd.Timestamp(AS_OF), "scorer": ["v1", "reversal"], "rank": 1, "market": "KRW-BTC", "score": 60.0,
                          "caution": [["price_fluctuations"], []]})
    write(io_manager, frame, "recommendations", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    assert read_table(schema, "recommendations")["scorer"].tolist() == ["reversal", "v1"]


def test_each_migration_is_idempotent_on_tables_that_never_had_the_old_shape(schema):
    _legacy_picks(schema)
    migrate(schema)
    before = read_table(schema, "recommendations", order=["rank"])
    schema.execute(f"DELETE FROM {schema.table_name(VERSION_TABLE)}")  # forget the record: every migration runs again

    again = migrate(schema)

    # caution is jsonb, the key has its scorer and there is no reasons column: only the no-op UPDATE runs
    assert [count for _, _, count in again.applied] == [0, 1, 0]
    pd.testing.assert_frame_equal(read_table(schema, "recommendations", order=["rank"]), before)


def test_a_fresh_schema_is_created_at_the_latest_version_with_nothing_to_change(schema):
    report = migrate(schema)
    assert report.after == LATEST and all(count == 0 for _, _, count in report.applied)
    tables = schema.read_frame("SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = $1", (schema.db_schema,))
    assert tables["t"].tolist() == [VERSION_TABLE]


def test_a_failed_migration_leaves_the_tables_and_the_record_as_they_were(schema):
    _legacy_picks(schema)
    migrate(schema, MIGRATIONS[:1])
    before = read_table(schema, "recommendations", order=["rank"])

    def half_done(db) -> list[str]:  # the first statement works, the second fails: both must be undone
        return [f"ALTER TABLE {db.table('recommendations')} ADD COLUMN scorer text", "SELECT 1/0"]

    with pytest.raises(Exception, match="division by zero"):
        migrate(schema, [MIGRATIONS[0], Migration(2, "breaks half-way", ("recommendations",), half_done)])

    pd.testing.assert_frame_equal(read_table(schema, "recommendations", order=["rank"]), before)
    assert _versions(schema) == [1]


def test_a_database_migrated_by_a_newer_release_is_refused_untouched(schema):
    _legacy_picks(schema)
    migrate(schema)
    schema.execute(f"INSERT INTO {schema.table_name(VERSION_TABLE)} (version, name, statements) VALUES ({LATEST + 1}, 'future', 0)")
    with pytest.raises(MigrationError, match=f"at version {LATEST + 1}, newer than this code's {LATEST}"):
        migrate(schema)


def test_processes_migrating_at_once_apply_each_migration_once(schema):
    _legacy_picks(schema)
    reports, errors = [], []

    def run() -> None:
        try:
            reports.append(migrate(PostgresResource(url=schema.url, db_schema=schema.db_schema)))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors
    assert sorted(version for report in reports for version, _, _ in report.applied) == [1, 2, 3]
    assert _versions(schema) == [1, 2, 3]


def test_outcomes_gain_the_scorer_key_too(schema):
    _sql(schema, "CREATE TABLE recommendation_outcomes (as_of timestamptz, market text, return_1h double precision)",
         "CREATE UNIQUE INDEX recommendation_outcomes_key ON recommendation_outcomes (as_of, market)",
         f"INSERT INTO recommendation_outcomes VALUES ('{AS_OF}', 'KRW-BTC', 0.01)")
    migrate(schema)
    assert key_columns(schema, "recommendation_outcomes") == recommendation_outcomes.metadata_by_key[recommendation_outcomes.key]["primary_key"]
    assert read_table(schema, "recommendation_outcomes")["scorer"].tolist() == ["v1"]


def test_reasons_stored_as_json_text_become_jsonb_objects_the_current_code_writes(schema):
    """The release before reasons were objects stored them as JSON text; a first write without rows created the column text."""
    _sql(schema,
         "CREATE TABLE recommendations (as_of timestamptz, scorer text, market text, reasons text, caution jsonb)",
         "CREATE UNIQUE INDEX recommendations_key ON recommendations (as_of, scorer, market)",
         f"INSERT INTO recommendations VALUES ('{AS_OF}', 'v1', 'KRW-BTC', '{{\"trend\": {{\"score\": 74.3}}}}', '[]'),"
         f" ('{AS_OF}', 'v1', 'KRW-ETH', NULL, '[]')",
         "CREATE TABLE support_levels (as_of timestamptz, market text, side text, rank bigint, reasons text)",
         "CREATE UNIQUE INDEX support_levels_key ON support_levels (as_of, market, side, rank)",
         f"INSERT INTO support_levels VALUES ('{AS_OF}', 'KRW-BTC', 'support', 1, '{{\"methods\": [\"swing\", \"pivot\"]}}')")

    report = migrate(schema)

    assert [(version, count) for version, _, count in report.applied][2] == (3, 2)
    picks = read_table(schema, "recommendations", order=["market"])
    assert picks["reasons"].tolist() == [{"trend": {"score": 74.3}}, None]
    assert read_table(schema, "support_levels")["reasons"].tolist() == [{"methods": ["swing", "pivot"]}]
    assert migrate(schema).applied == []

    # the current code writes objects into both without drift
    io_manager = PostgresDataFrameIOManager(postgres=schema)
    metadata = RECOMMENDATIONS.asset.metadata_by_key[RECOMMENDATIONS.asset.key]
    frame = pd.DataFrame({"as_of": pd.Timestamp("2025-09-01T01:05:00Z"), "scorer": ["v1"], "market": "KRW-XRP",
                          "reasons": [{"trend": {"score": 50.0}}], "caution": [[]]})
    write(io_manager, frame, "recommendations", partitions=(HOUR_B, HOUR_B), metadata=metadata)
    stored = read_table(schema, "recommendations", order=["as_of", "market"])["reasons"].tolist()
    assert stored == [{"trend": {"score": 74.3}}, None, {"trend": {"score": 50.0}}]


def test_dantaro_migrate_applies_and_check_says_what_is_pending(schema):
    _legacy_picks(schema)
    env = {**os.environ, "DATABASE_URL": schema.url, "DANTARO_SCHEMA": schema.db_schema}

    def dantaro(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "dantaro_assets.cli", *args], check=False, env=env, capture_output=True, text=True, timeout=120)

    check = dantaro("migrate", "--check")
    assert check.returncode == 1 and "pending 1: recommendations.caution" in check.stdout
    done = dantaro("migrate")
    assert done.returncode == 0, done.stderr
    assert f"schema {schema.db_schema}: version 0 -> {LATEST}" in done.stdout
    assert dantaro("migrate", "--check").returncode == 0


def test_a_write_before_the_migration_is_refused_and_after_it_succeeds(schema):
    """The upgrade order deploy/ enforces, seen from the IO manager: drift until `dantaro migrate`, then the write."""
    _legacy_picks(schema)
    io_manager = PostgresDataFrameIOManager(postgres=schema)
    metadata = {**RECOMMENDATIONS.asset.metadata_by_key[RECOMMENDATIONS.asset.key], "write_mode": WriteMode.REPLACE.value}
    frame = pd.DataFrame({"as_of": pd.Timestamp(AS_OF), "scorer": ["reversal"], "rank": 1, "market": "KRW-BTC", "score": 60.0,
                          "caution": [["price_fluctuations"]]})
    with pytest.raises(TypeError, match=r"caution is text, expected jsonb.*Run `dantaro migrate`"):
        write(io_manager, frame, "recommendations", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    assert len(read_table(schema, "recommendations")) == 4
    migrate(schema)
    write(io_manager, frame, "recommendations", partitions=(HOUR_A, HOUR_A), metadata=metadata)
    assert read_table(schema, "recommendations")["caution"].tolist() == [["price_fluctuations"]]
