"""Postgres access for assets and the IO manager: Arrow-native in both directions through ADBC.

ADBC's libpq driver moves Arrow columns straight into COPY ... FROM STDIN (FORMAT binary) and reads
results back as Arrow, so a frame never goes through Python rows or text parsing either way.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import adbc_driver_manager
import dagster as dg
import pandas as pd
import pyarrow as pa

from dantaro_assets.lib.embedded import embedded_server_url
from dantaro_assets.redaction import redact_text, redact_url
from dantaro_assets.settings import Settings

if TYPE_CHECKING:
    import adbc_driver_postgresql.dbapi as adbc


def quote_ident(name: str) -> str:
    """A Postgres identifier, quoted (names come from asset keys and frame columns)."""
    return '"' + name.replace('"', '""') + '"'


def timestamptz_literal(moment: dt.datetime) -> str:
    """A tz-aware time as SQL text, for reads that should stream: ADBC turns a query with bound
    parameters into a prepared statement read row-set by row-set instead of one binary COPY."""
    if moment.tzinfo is None:
        raise ValueError(f"naive time {moment!r}: a timestamptz literal needs a timezone")
    return f"'{moment.isoformat()}'::timestamptz"


def arrow_to_pandas(table: pa.Table) -> pd.DataFrame:
    """Arrow result to pandas with nanosecond timestamps (pandas' default unit) so frames round-trip."""
    return table.to_pandas(coerce_temporal_nanoseconds=True)


_POOL: dict[tuple[int, str], list[adbc.Connection]] = {}
_POOL_LOCK = threading.Lock()


def _alive(conn: adbc.Connection) -> bool:
    """Whether an idle pooled connection still answers (the server may have restarted)."""
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchall()
        return True
    except adbc_driver_manager.Error:
        conn.close()
        return False


class PostgresUnavailableError(ConnectionError):
    """The database did not accept a connection; the message names the server with its password redacted."""


class PostgresResource(dg.ConfigurableResource):
    """Connections to the Dantaro database; ``url=None`` uses the embedded server in ``state_dir``."""

    url: str | None = None
    db_schema: str = Settings.model_fields["db_schema"].default  # DANTARO_SCHEMA
    state_dir: str | None = None  # where the embedded server lives when ``url`` is unset
    # False: use the embedded server only while it runs (the API must never start one that outlives `dantaro stop`)
    start_embedded: bool = True

    def resolved_url(self) -> str:
        url = self.url or embedded_server_url("postgres", self.state_dir, start=self.start_embedded)
        if url is None:
            raise PostgresUnavailableError(f"the embedded Postgres of {self.state_dir} is not running (`dantaro dev` starts it)")
        return url

    @contextlib.contextmanager
    def connect(self) -> Iterator[adbc.Connection]:
        """A pooled ADBC connection in a transaction: committed when the block ends, discarded on error.

        Opening an ADBC connection costs ~0.1 s (the driver loads Postgres' type catalogue), more than
        a whole small read, so connections are kept per process and URL and reused.
        """
        key = (os.getpid(), self.resolved_url())
        with _POOL_LOCK:
            idle = _POOL.setdefault(key, [])
            conn = idle.pop() if idle else None
        if conn is None or not _alive(conn):
            # imported on the first connection: ADBC's DB-API loads pyarrow.dataset (0.4 s), which processes that
            # only load the definitions (code servers, the webserver, the CLI) never need
            import adbc_driver_postgresql.dbapi

            try:
                conn = adbc_driver_postgresql.dbapi.connect(key[1])
            except adbc_driver_manager.Error as exc:
                detail = redact_text(str(exc)).strip()
                raise PostgresUnavailableError(f"cannot connect to Postgres at {redact_url(key[1])}: {detail}") from None
        try:
            yield conn
            conn.commit()
        except BaseException:
            conn.close()  # ends the transaction server-side; a broken connection never goes back
            raise
        with _POOL_LOCK:
            _POOL[key].append(conn)

    def table_name(self, table: str) -> str:
        """``schema.table``, quoted."""
        return f"{quote_ident(self.db_schema)}.{quote_ident(table)}"

    def execute(self, sql: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement in its own transaction (``$1``-style parameters)."""
        with self.connect() as conn, conn.cursor() as cur:
            cur.execute(sql, params)

    def read_arrow(self, sql: str, params: Sequence[Any] | None = None, *, conn: adbc.Connection | None = None) -> pa.Table:
        """One query's result as an Arrow table (on ``conn`` when given, else a fresh connection)."""
        with contextlib.ExitStack() as stack:
            conn = conn or stack.enter_context(self.connect())
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetch_arrow_table()

    def read_frame(self, sql: str, params: Sequence[Any] | None = None) -> pd.DataFrame:
        """One query's result as a DataFrame, without Python row objects."""
        return arrow_to_pandas(self.read_arrow(sql, params))

    def ingest(self, conn: adbc.Connection, table: str, data: pa.Table) -> int:
        """Bulk-append ``data`` to ``schema.table`` with binary COPY, inside ``conn``'s transaction.

        Columns are matched by name; table columns missing from ``data`` get their default (NULL).
        """
        if data.num_rows == 0:
            return 0
        with conn.cursor() as cur:
            return cur.adbc_ingest(table, data, mode="append", db_schema_name=self.db_schema)
