"""Earlier releases of main upgrade in place: every stored row kept, the API serves them, the next runs succeed.

Each fixture (``fixtures/<commit>.dump``, built by ``make_fixture`` from that commit's own code against the
simulated replay) is restored into a database of its own on a private Postgres exactly as the release left
it (its checksums match the manifest), upgraded with ``dantaro migrate``, and compared table by table,
column by column with what the release stored; then the current code's API serves it and the next hour of
every asset materialises on top of it. No git history is needed here.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import dagster as dg
import psycopg
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.lib.backup import restore
from dantaro_assets.lib.migrations import LATEST
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.resources import build_resources
from dantaro_assets_tests.reliability.matrix_job import storage_env
from dantaro_assets_tests.upgrade.releases import FIXTURES, RELEASES, api_answers, table_checksums

# Columns a migration retypes, from their earlier type, read back in that form (recommendations.caution: "a,b" -> ["a", "b"]).
EARLIER_FORM = {("recommendations", "caution", "text"): "array_to_string(ARRAY(SELECT jsonb_array_elements_text({c})), ',')"}
NEXT_HOUR, NEXT_OUTCOMES, DAY = "2025-09-20-12:00", "2025-09-20-11:00", "2025-09-20"


@pytest.fixture
def database(private_postgres) -> Iterator[str]:
    """An empty database of the test's own on the private Postgres (dropped after)."""
    name = f"upgrade_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield private_postgres.url.replace("/postgres?", f"/{name}?")
    with psycopg.connect(private_postgres.url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _newest(postgres: PostgresResource, table: str, where: str = "") -> tuple[str, int]:
    """The newest as_of of ``table`` (ISO, Z) and how many rows hold it."""
    frame = postgres.read_frame(
        f"SELECT to_char(as_of AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"') AS as_of, count(*) AS n FROM {postgres.table_name(table)}"
        f" WHERE as_of = (SELECT max(as_of) FROM {postgres.table_name(table)} {where}) {where.replace('WHERE', 'AND')} GROUP BY 1")
    return frame["as_of"].iloc[0], int(frame["n"].iloc[0])


@pytest.mark.slow
@pytest.mark.parametrize("release", RELEASES)
def test_an_earlier_release_upgrades_in_place(release, database, private_redis, small_replay, settings):
    manifest = json.loads((FIXTURES / f"{release}.json").read_text())
    schema = manifest["schema"]
    postgres = PostgresResource(url=database, db_schema=schema)
    restore(postgres, FIXTURES / f"{release}.dump", then_migrate=False)
    assert table_checksums(database, schema) == manifest["tables"], "the database as the release left it"

    env = {**os.environ, "DATABASE_URL": database, "DANTARO_SCHEMA": schema}
    migrated = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "migrate"], env=env, capture_output=True, text=True,
                              timeout=120, check=False)
    assert migrated.returncode == 0, migrated.stderr
    assert f"schema {schema}: version 0 -> {LATEST}" in migrated.stdout

    # every row the release stored, column by column (retyped columns read back in their earlier form)
    before = manifest["tables"]
    after = table_checksums(database, schema, tables=list(before), key_of={t: info["key"] for t, info in before.items()},
                            as_text={(table, column): sql for (table, column, earlier), sql in EARLIER_FORM.items()
                                     if before.get(table, {}).get("columns", {}).get(column, {}).get("type") == earlier})
    for table, stored in before.items():
        assert after[table]["rows"] == stored["rows"], table
        for column, value in stored["columns"].items():
            retyped = after[table]["columns"][column]["type"] != value["type"]
            assert not retyped or (table, column, value["type"]) in EARLIER_FORM, f"{table}.{column} retyped without a reading of its earlier form"
            assert after[table]["columns"][column]["md5"] == value["md5"], f"{table}.{column}"
    for table in ("recommendations", "recommendation_outcomes"):
        assert postgres.read_frame(f"SELECT DISTINCT scorer FROM {postgres.table_name(table)}")["scorer"].tolist() == ["v1"] or \
            "scorer" in before[table]["columns"], f"{table}: rows stored before scorers are v1's"

    # the API serves what the release stored (Redis empty: from Postgres); the picks of the scorer that release served
    served = settings.model_copy(update={"database_url": database, "db_schema": schema, "redis_url": private_redis.url,
                                         "redis_prefix": f"upgrade_{uuid.uuid4().hex[:6]}", "upbit_base_url": small_replay.url,
                                         "scorer": "v1"})
    answers = api_answers(served, postgres)
    for path, table, where in [("/market-status/latest", "market_status", ""), ("/recommendations/latest", "recommendations",
                               "WHERE scorer = 'v1'"), ("/support-levels/KRW-BTC", "support_levels", "WHERE market = 'KRW-BTC'")]:
        as_of, rows = _newest(postgres, table, where)
        assert (answers[path]["source"], answers[path]["as_of"], len(answers[path]["rows"])) == ("postgres", as_of, rows), path
    assert answers["/recommendations/scorecard"]["rows"], "the graded picks of the release count"

    # the next hour of every asset materialises on top of it with the current code
    defs = build_definitions(served)
    runs = [(["upbit_instruments"], DAY), (["candles_1m"], "2025-09-20-13:00"),
            (["market_status", "market_status_redis", "support_levels", "support_levels_redis", "recommendations",
              "recommendations_redis"], NEXT_HOUR), (["recommendation_outcomes"], NEXT_OUTCOMES)]
    with storage_env(served):
        for selection, partition in runs:
            result = dg.materialize(defs.assets, selection=selection, partition_key=partition, resources=build_resources(served),
                                    raise_on_error=False)
            assert result.success, (selection, [e.step_failure_data.error.to_string() for e in result.all_events if e.is_step_failure])
    counts = table_checksums(database, schema)
    assert all(counts[table]["rows"] >= stored["rows"] for table, stored in before.items())
    latest = api_answers(served, postgres)["/market-status/latest"]
    assert (latest["source"], latest["as_of"][:13]) == ("redis", "2025-09-20T12")
