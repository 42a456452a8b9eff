"""Versioned migrations of the project's own tables: an ordered list, recorded in ``<schema>.schema_migrations``.

The IO manager creates tables and adds columns itself; a changed type or key is a migration here
(``dantaro migrate``): one transaction under the tables' write locks, idempotent, refused on a database a newer
release migrated. Why a plain list and not Alembic: docs/storage.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from dantaro_assets.lib.postgres import PostgresResource, quote_ident
from dantaro_assets.lib.postgres_io import advisory_lock, key_columns, lock_table, table_exists

VERSION_TABLE = "schema_migrations"


@dataclass(frozen=True)
class Catalogue:
    """What a migration may ask of the database it runs in (inside its transaction)."""

    postgres: PostgresResource
    conn: object

    def exists(self, table: str) -> bool:
        return table_exists(self.postgres, table, conn=self.conn)

    def column_type(self, table: str, column: str) -> str | None:
        """``information_schema``'s data type of the column, None when it (or the table) does not exist."""
        rows = self.postgres.read_arrow(
            "SELECT data_type::text AS t FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2 AND column_name = $3",
            (self.postgres.db_schema, table, column), conn=self.conn,
        )["t"].to_pylist()
        return rows[0] if rows else None

    def key(self, table: str) -> list[str]:
        return key_columns(self.postgres, table, conn=self.conn)

    def table(self, table: str) -> str:
        return self.postgres.table_name(table)

    def index(self, name: str) -> str:
        return f"{quote_ident(self.postgres.db_schema)}.{quote_ident(name)}"


@dataclass(frozen=True)
class Migration:
    version: int
    name: str
    tables: tuple[str, ...]  # whose write locks it takes
    statements: Callable[[Catalogue], list[str]]  # what the tables still need, read from the catalogue


def _caution_as_jsonb(db: Catalogue) -> list[str]:
    """Picks stored ``caution`` as comma-separated text before it became a jsonb list of flag names;
    a release that cast a list into the text column stored it as JSON text."""
    if db.column_type("recommendations", "caution") != "text":
        return []
    return [
        f"ALTER TABLE {db.table('recommendations')} ALTER COLUMN caution TYPE jsonb USING CASE"
        " WHEN caution IS NULL THEN NULL"
        " WHEN caution ~ '^\\s*\\[' THEN caution::jsonb"
        " WHEN caution = '' THEN '[]'::jsonb"
        " ELSE to_jsonb(string_to_array(caution, ',')) END"
    ]


_SCORER_KEY = ["as_of", "scorer", "market"]


def _scorer_in_the_key(db: Catalogue) -> list[str]:
    """Picks and their outcomes are kept per scorer; rows stored before there were scorers were ranked by v1."""
    statements = []
    for table in ("recommendations", "recommendation_outcomes"):
        if not db.exists(table):
            continue
        if db.column_type(table, "scorer") is None:
            statements.append(f"ALTER TABLE {db.table(table)} ADD COLUMN scorer text")
        statements.append(f"UPDATE {db.table(table)} SET scorer = 'v1' WHERE scorer IS NULL")
        if db.key(table) != _SCORER_KEY:
            statements += [
                f"DROP INDEX IF EXISTS {db.index(table + '_key')}",
                f"CREATE UNIQUE INDEX {quote_ident(table + '_key')} ON {db.table(table)} ({', '.join(map(quote_ident, _SCORER_KEY))})",
            ]
    return statements


# The columns the analyses store as JSON objects (dicts in their frames); recommendations.caution is migration 1's.
_JSON_OBJECTS = (("recommendations", "reasons"), ("support_levels", "reasons"))


def _reasons_as_jsonb(db: Catalogue) -> list[str]:
    """``reasons`` stored as text: JSON text from the release before they were objects, or a column created ``text``
    by a first write without rows (the IO manager now types such a column from its first values)."""
    return [f"ALTER TABLE {db.table(table)} ALTER COLUMN {column} TYPE jsonb USING {column}::jsonb"
            for table, column in _JSON_OBJECTS if db.column_type(table, column) == "text"]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(1, "recommendations.caution: comma-separated text to a jsonb list", ("recommendations",), _caution_as_jsonb),
    Migration(2, "scorer in the key of recommendations and recommendation_outcomes (earlier rows: v1)",
              ("recommendations", "recommendation_outcomes"), _scorer_in_the_key),
    Migration(3, "recommendations.reasons and support_levels.reasons: JSON text to jsonb objects", ("recommendations", "support_levels"),
              _reasons_as_jsonb),
)
LATEST = MIGRATIONS[-1].version


class MigrationError(RuntimeError):
    """The database cannot be migrated by this code (e.g. a newer release migrated it); nothing was changed."""


@dataclass
class MigrationReport:
    schema: str
    before: int
    after: int
    applied: list[tuple[int, str, int]] = field(default_factory=list)  # version, name, statements run

    def lines(self) -> list[str]:
        done = [f"  {version}: {name} ({count} statement(s))" for version, name, count in self.applied]
        head = (f"schema {self.schema}: version {self.before} -> {self.after}" if self.applied
                else f"schema {self.schema}: at version {self.after}, nothing to migrate")
        return [head, *done]


def _versions(postgres: PostgresResource, conn) -> list[int]:
    rows = postgres.read_arrow(f"SELECT version FROM {postgres.table_name(VERSION_TABLE)} ORDER BY version", conn=conn)
    return rows["version"].to_pylist()


def _prepare(postgres: PostgresResource, conn, tables: Sequence[str] = ()) -> list[int]:
    """Lock, then create the schema and its version table when missing; the versions applied.

    Locks in the IO manager's order (a table's write lock, then the schema's), after the migrations' own.
    """
    advisory_lock(conn, f"{postgres.db_schema}:migrations")
    for table in tables:
        lock_table(conn, postgres, table)  # writes of these tables wait for the migration
    advisory_lock(conn, postgres.db_schema)  # the IO manager's lock for creating tables in the schema
    with conn.cursor() as cur:
        cur.execute(f"CREATE SCHEMA IF NOT EXISTS {quote_ident(postgres.db_schema)}")
        cur.execute(
            f"CREATE TABLE IF NOT EXISTS {postgres.table_name(VERSION_TABLE)} (version integer PRIMARY KEY, name text NOT NULL,"
            " applied_at timestamptz NOT NULL DEFAULT now(), statements integer NOT NULL)"
        )
    return _versions(postgres, conn)


def applied_versions(postgres: PostgresResource) -> list[int]:
    """The migrations recorded in the schema (empty when it has no version table)."""
    with postgres.connect() as conn:
        return _versions(postgres, conn) if table_exists(postgres, VERSION_TABLE, conn=conn) else []


def pending(postgres: PostgresResource, migrations: Sequence[Migration] = MIGRATIONS) -> list[Migration]:
    """The migrations the schema has not recorded yet."""
    done = set(applied_versions(postgres))
    return [m for m in migrations if m.version not in done]


def migrate(postgres: PostgresResource, migrations: Sequence[Migration] = MIGRATIONS) -> MigrationReport:
    """Apply every migration the schema has not recorded, in order, each in its own transaction."""
    latest = migrations[-1].version if migrations else 0
    with postgres.connect() as conn:
        done = _prepare(postgres, conn)
    if done and max(done) > latest:
        raise MigrationError(
            f"schema {postgres.db_schema} is at version {max(done)}, newer than this code's {latest}: a newer release "
            "migrated it; run that release (or restore a backup taken before it), nothing was changed"
        )
    report = MigrationReport(postgres.db_schema, before=max(done, default=0), after=max(done, default=0))
    for migration in migrations:
        if migration.version in done:
            continue
        with postgres.connect() as conn:
            if migration.version in _prepare(postgres, conn, migration.tables):  # another process applied it meanwhile
                continue
            statements = migration.statements(Catalogue(postgres, conn))
            with conn.cursor() as cur:
                for statement in statements:
                    cur.execute(statement)
                cur.execute(f"INSERT INTO {postgres.table_name(VERSION_TABLE)} (version, name, statements) VALUES ($1, $2, $3)",
                            (migration.version, migration.name, len(statements)))
        report.applied.append((migration.version, migration.name, len(statements)))
        report.after = migration.version
    return report
