"""``dantaro backup`` / ``dantaro restore``: the project schema with PostgreSQL's own pg_dump and pg_restore.

The client tools come from the ``pgserver`` wheel, so nothing is installed; a backup is renamed into place
whole, a restore is one transaction then migrated (docs/storage.md, "Migrations, upgrades and backups").
"""

from __future__ import annotations

import os
import re
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

from dantaro_assets.lib.migrations import LATEST, VERSION_TABLE, MigrationReport, migrate
from dantaro_assets.lib.postgres import PostgresResource, quote_ident
from dantaro_assets.redaction import redact_text

_SCHEMA_ENTRY = re.compile(r"^\d+; \d+ \d+ SCHEMA - (\S+) ", re.MULTILINE)


class BackupError(RuntimeError):
    """A backup or restore that did not happen; the message says why (nothing was changed)."""


def pg_tool(name: str) -> Path:
    """The path of a PostgreSQL client program (``pg_dump``, ``pg_restore``) of the pgserver wheel."""
    with warnings.catch_warnings():  # pgserver warns at import when XDG_RUNTIME_DIR is unset: harmless
        warnings.simplefilter("ignore")
        from pgserver._commands import POSTGRES_BIN_PATH

    return Path(POSTGRES_BIN_PATH) / name


def _without_password(url: str) -> tuple[str, dict[str, str]]:
    """``url`` without its password (user info or ``password=``) and the environment that carries it."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    password = unquote(parts.password) if parts.password else next((v for k, v in query if k == "password"), None)
    netloc = parts.netloc.rpartition("@")
    if netloc[1]:
        netloc = (netloc[0].partition(":")[0], "@", netloc[2])
    stripped = urlunsplit(parts._replace(netloc="".join(netloc), query=urlencode([(k, v) for k, v in query if k != "password"])))
    return stripped, ({"PGPASSWORD": password} if password else {})


def _run(tool: str, args: list[str], url: str | None = None) -> str:
    """Run a client tool on the database ``url`` (its password in the environment); its stdout, or a BackupError."""
    command, env = [str(pg_tool(tool)), *args], dict(os.environ)
    if url is not None:
        stripped, secret = _without_password(url)
        command.append(f"--dbname={stripped}")
        env |= secret
    done = subprocess.run(command, check=False, env=env, capture_output=True, text=True)
    if done.returncode:
        raise BackupError(f"{tool} failed (exit {done.returncode}): {redact_text(done.stderr.strip())[-2000:]}")
    return done.stdout


def _row_counts(postgres: PostgresResource) -> dict[str, int]:
    """Rows of each table of the schema (exact counts)."""
    tables = postgres.read_arrow(
        "SELECT table_name::text AS t FROM information_schema.tables WHERE table_schema = $1 AND table_type = 'BASE TABLE' ORDER BY 1",
        (postgres.db_schema,),
    )["t"].to_pylist()
    return {table: postgres.read_arrow(f"SELECT count(*) AS n FROM {postgres.table_name(table)}")["n"][0].as_py() for table in tables}


@dataclass(frozen=True)
class BackupSummary:
    path: Path
    schema: str
    version: int  # the newest migration the schema holds
    rows: dict[str, int]
    migrated: MigrationReport | None = None  # what a restore then migrated

    def lines(self) -> list[str]:
        size = self.path.stat().st_size if self.path.exists() else 0
        lines = [f"{self.path} ({size:,} bytes): schema {self.schema} at version {self.version}, "
                 f"{len(self.rows)} table(s), {sum(self.rows.values()):,} row(s)"]
        lines += [f"  {table}: {rows:,}" for table, rows in self.rows.items()]
        return lines + (self.migrated.lines() if self.migrated else [])


def backup(postgres: PostgresResource, path: Path) -> BackupSummary:
    """Dump the schema to ``path`` (pg_dump custom format); refused when the schema holds no table."""
    rows = _row_counts(postgres)
    if not rows:
        raise BackupError(f"schema {postgres.db_schema} holds no table: nothing to back up")
    path = path.resolve()
    partial = path.with_name(path.name + ".partial")
    _run("pg_dump", ["--format=custom", "--no-owner", "--no-privileges", f"--schema={postgres.db_schema}", f"--file={partial}"],
         postgres.resolved_url())
    partial.replace(path)
    return BackupSummary(path, postgres.db_schema, max(_versions_in(path), default=0), rows)


def _versions_in(path: Path) -> list[int]:
    """The migrations a dump records (none for one taken before migrations were versioned)."""
    text = _run("pg_restore", ["--data-only", f"--table={VERSION_TABLE}", "--file=-", str(path)])
    versions, copying = [], False
    for line in text.splitlines():
        if line.startswith("COPY ") and f"{VERSION_TABLE} " in line:
            copying = True
        elif copying and line == "\\.":
            break
        elif copying:
            versions.append(int(line.split("\t", 1)[0]))
    return versions


def restore(postgres: PostgresResource, path: Path, *, then_migrate: bool = True) -> BackupSummary:
    """Restore a backup into the schema, which must hold no table; then migrate it (unless told not to)."""
    path = path.resolve()
    if not path.is_file():
        raise BackupError(f"{path}: no such backup file")
    schemas = _SCHEMA_ENTRY.findall(_run("pg_restore", ["--list", str(path)]))
    if schemas != [postgres.db_schema]:
        raise BackupError(f"{path} holds schema(s) {schemas}, not {postgres.db_schema}: set DANTARO_SCHEMA to the backup's schema "
                          "(restore into another database if that schema is in use); nothing was restored")
    newest = max(_versions_in(path), default=0)
    if newest > LATEST:
        raise BackupError(f"{path} was taken at schema version {newest}, newer than this code's {LATEST}: restore it with that "
                          "release; nothing was restored")
    if present := _row_counts(postgres):
        raise BackupError(f"schema {postgres.db_schema} already holds {len(present)} table(s) ({', '.join(present)}): a restore "
                          "goes into an empty schema (a new database, or drop the schema after a backup); nothing was restored")
    postgres.execute(f"DROP SCHEMA IF EXISTS {quote_ident(postgres.db_schema)}")  # holds no table; pg_restore creates it
    _run("pg_restore", ["--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges", str(path)], postgres.resolved_url())
    migrated = migrate(postgres) if then_migrate else None
    return BackupSummary(path, postgres.db_schema, newest, _row_counts(postgres), migrated)
