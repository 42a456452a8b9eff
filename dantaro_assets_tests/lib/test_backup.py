"""``dantaro backup`` and ``dantaro restore`` on a private Postgres: a restore into an empty database answers the API as before."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

from dantaro_assets.lib.backup import BackupError, _without_password, backup, restore
from dantaro_assets.lib.migrations import LATEST, migrate
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets_tests.upgrade.releases import FIXTURES, api_answers, table_checksums

SCHEMA = "dantaro"


@pytest.fixture
def databases(private_postgres) -> Iterator[Callable[[], str]]:
    """``new()`` makes an empty database on the private Postgres and returns its URL; all are dropped after."""
    made = []

    def new() -> str:
        name = f"backup_{uuid.uuid4().hex[:8]}"
        with psycopg.connect(private_postgres.url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        made.append(name)
        return private_postgres.url.replace("/postgres?", f"/{name}?")

    yield new
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        for name in made:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _dantaro(url: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "DATABASE_URL": url, "DANTARO_SCHEMA": SCHEMA}
    return subprocess.run([sys.executable, "-m", "dantaro_assets.cli", *args], env=env, capture_output=True, text=True, timeout=300,
                          check=False)


@pytest.mark.slow
def test_a_backup_restored_into_an_empty_database_answers_the_api_as_before(databases, private_redis, settings, tmp_path):
    in_use = databases()  # a database in use: the last release's tables, migrated to this code
    postgres = PostgresResource(url=in_use, db_schema=SCHEMA)
    restore(postgres, FIXTURES / "1088aa0.dump")
    served = settings.model_copy(update={"db_schema": SCHEMA, "redis_url": private_redis.url, "scorer": "v1"})

    def answers(url: str) -> dict[str, dict]:  # a fresh Redis prefix each time: the API answers from Postgres
        prefix = f"backup_{uuid.uuid4().hex[:6]}"
        return api_answers(served.model_copy(update={"database_url": url, "redis_prefix": prefix}), PostgresResource(url=url, db_schema=SCHEMA))

    before = answers(in_use)
    path = tmp_path / "dantaro.backup"
    made = _dantaro(in_use, "backup", str(path))
    assert made.returncode == 0, made.stderr
    assert f"{path} (" in made.stdout and f"schema {SCHEMA} at version {LATEST}" in made.stdout
    assert not (tmp_path / "dantaro.backup.partial").exists()

    empty = databases()
    restored = _dantaro(empty, "restore", str(path))

    assert restored.returncode == 0, restored.stderr
    assert f"schema {SCHEMA}: at version {LATEST}, nothing to migrate" in restored.stdout
    assert table_checksums(empty, SCHEMA) == table_checksums(in_use, SCHEMA)
    assert answers(empty) == before


@pytest.mark.slow
def test_a_restore_is_refused_over_tables_and_an_old_backup_is_migrated(databases, tmp_path):
    in_use = databases()
    postgres = PostgresResource(url=in_use, db_schema=SCHEMA)
    restore(postgres, FIXTURES / "66c7cb9.dump", then_migrate=False)  # a backup taken before migrations were versioned
    kept = table_checksums(in_use, SCHEMA)

    with pytest.raises(BackupError, match=f"schema {SCHEMA} already holds 8 table\\(s\\).*nothing was restored"):
        restore(postgres, FIXTURES / "1088aa0.dump")
    assert table_checksums(in_use, SCHEMA) == kept

    elsewhere = PostgresResource(url=databases(), db_schema="other")
    with pytest.raises(BackupError, match=r"holds schema\(s\) \['dantaro'\], not other: set DANTARO_SCHEMA"):
        restore(elsewhere, FIXTURES / "66c7cb9.dump")
    with pytest.raises(BackupError, match="schema other holds no table: nothing to back up"):
        backup(elsewhere, tmp_path / "nothing.backup")
    assert not (tmp_path / "nothing.backup").exists()

    summary = restore(PostgresResource(url=databases(), db_schema=SCHEMA), FIXTURES / "66c7cb9.dump")
    assert summary.version == 0 and summary.migrated.after == LATEST and summary.rows["schema_migrations"] == LATEST
    assert migrate(PostgresResource(url=in_use, db_schema=SCHEMA)).after == LATEST


def test_the_password_reaches_the_tools_in_their_environment_not_their_command_line():
    url, env = _without_password("postgresql://dantaro:s3cr%40t@db.internal:5432/dantaro?sslmode=require")
    assert (url, env) == ("postgresql://dantaro@db.internal:5432/dantaro?sslmode=require", {"PGPASSWORD": "s3cr@t"})
    url, env = _without_password("postgresql://db/dantaro?user=u&password=pw&sslmode=require")
    assert (url, env) == ("postgresql://db/dantaro?user=u&sslmode=require", {"PGPASSWORD": "pw"})
    assert _without_password("postgresql://postgres@/postgres?host=/tmp/pg") == ("postgresql://postgres@/postgres?host=%2Ftmp%2Fpg", {})


def test_a_missing_backup_file_is_named(tmp_path: Path):
    with pytest.raises(BackupError, match="no such backup file"):
        restore(PostgresResource(url="postgresql://127.0.0.1:1/x", db_schema=SCHEMA), tmp_path / "absent.backup")
