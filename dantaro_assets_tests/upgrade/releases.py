"""The earlier releases the upgrade test starts from, and how the tests look at a database: checksums and API answers.

``table_checksums`` says what a schema holds, table by table: key, row count and one checksum per column,
computed in Postgres. The fixtures record it for the database an earlier release built (``make_fixture``);
the upgrade test computes it again after the current code migrated that database and compares.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
from psycopg import sql

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets.settings import Settings
from dantaro_assets_tests.fixtures.servers import serve_http

FIXTURES = Path(__file__).resolve().parent / "fixtures"
RELEASES = sorted(path.stem for path in FIXTURES.glob("*.json"))  # one dump and manifest per release
SNAPSHOT_PATHS = ["/market-status/latest", "/recommendations/latest", "/support-levels/KRW-BTC", "/recommendations/scorecard"]


def api_answers(settings: Settings, postgres: PostgresResource) -> dict[str, dict]:
    """The API's answers to ``SNAPSHOT_PATHS`` over ``postgres`` and the settings' Redis prefix, each a 200."""
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=settings.redis_prefix), postgres)
    with serve_http(create_app(lambda: None, store, settings=settings)) as client:
        responses = {path: client.get(path) for path in SNAPSHOT_PATHS}
    for path, response in responses.items():
        assert response.status_code == 200, (path, response.text)
    return {path: response.json() for path, response in responses.items()}


def _key(conn: psycopg.Connection, schema: str, table: str) -> list[str]:
    """The columns of the table's unique key index (``<table>_key``), in index order; all columns if it has none."""
    rows = conn.execute(
        """
        SELECT a.attname FROM pg_index i
        JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE n.nspname = %s AND c.relname = %s ORDER BY k.position
        """,
        (schema, f"{table}_key"),
    ).fetchall()
    return [name for (name,) in rows]


def table_checksums(url: str, schema: str, tables: list[str] | None = None, key_of: dict[str, list[str]] | None = None,
                    as_text: dict[tuple[str, str], str] | None = None) -> dict[str, dict]:
    """``{table: {"key", "rows", "columns": {column: {"type", "md5"}}}}`` of ``schema``'s tables (or ``tables``).

    A column's checksum is the md5 of its values as text (NULL as ``\\N``) in key order (``key_of[table]``
    when given, e.g. the key before an upgrade widened it), with the session in UTC so times print alike.
    ``as_text[(table, column)]`` is SQL that reads a migrated column back in its earlier form.
    """
    found: dict[str, dict] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("SET TimeZone = 'UTC'")
        names = tables or [name for (name,) in conn.execute(
            "SELECT table_name FROM information_schema.tables WHERE table_schema = %s AND table_type = 'BASE TABLE' ORDER BY 1",
            (schema,)).fetchall()]
        for table in names:
            columns = conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns WHERE table_schema = %s AND table_name = %s"
                " ORDER BY ordinal_position", (schema, table)).fetchall()
            key = (key_of or {}).get(table) or _key(conn, schema, table) or [name for name, _ in columns]
            order = sql.SQL(", ").join(sql.Identifier(c) for c in key)
            text = {name: sql.SQL((as_text or {}).get((table, name), "{c}::text")).format(c=sql.Identifier(name)) for name, _ in columns}
            sums = [sql.SQL("md5(coalesce(string_agg(coalesce({t}, '\\N'), E'\\x1f' ORDER BY {o}), ''))").format(t=text[name], o=order)
                    for name, _ in columns]
            query = sql.SQL("SELECT count(*), {sums} FROM {table}").format(
                sums=sql.SQL(", ").join(sums), table=sql.Identifier(schema, table))
            count, *md5s = conn.execute(query).fetchone()
            found[table] = {
                "key": key,
                "rows": count,
                "columns": {name: {"type": kind, "md5": md5} for (name, kind), md5 in zip(columns, md5s)},
            }
    return found
