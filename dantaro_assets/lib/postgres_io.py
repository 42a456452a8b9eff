"""The IO manager storing every asset's DataFrame in its own Postgres table, and :func:`read_table`, its reader.

Dagster ships none for Postgres and pandas; this one is modelled on its ``DbIOManager`` (``partition_expr``)
with what that lacks: one transaction per write, real types and indexes, one range query per lookback, and
frames refused or schema drift stopped before anything is stored. Metadata, write modes and schema
evolution: docs/storage.md.
"""

import json
import time
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

import dagster as dg
import numpy as np
import pandas as pd
import pyarrow as pa

from dantaro_assets.lib.postgres import (
    PostgresResource,
    arrow_to_pandas,
    quote_ident,
    timestamptz_literal,
)

# Postgres type (as information_schema.columns.data_type spells it) -> the Arrow type COPY binary needs.
PG_ARROW_TYPES: dict[str, pa.DataType] = {
    "timestamp with time zone": pa.timestamp("us", tz="UTC"),
    "double precision": pa.float64(),
    "bigint": pa.int64(),
    "boolean": pa.bool_(),
    "text": pa.string(),
    "jsonb": pa.json_(),
}
# (type the frame's values need, stored type) pairs written by a value-preserving cast: whole floats into
# bigint (ints with a missing value arrive as floats) and ints into double precision; pyarrow's safe
# cast refuses a fractional or out-of-range value. Every other difference is drift.
_EXACT_CASTS = {("double precision", "bigint"), ("bigint", "double precision")}
MIGRATE_COMMAND = "dantaro migrate"
DELETE_WINDOW = "delete_window"  # Output metadata: an empty frame may replace a window that holds rows


class MissingUpstreamTableError(RuntimeError):
    """An input's table does not exist: its asset was never materialised into this database."""


class RefusedFrameError(ValueError):
    """A frame that would wipe or corrupt stored rows; nothing was written."""


class SchemaDriftError(TypeError):
    """A stored table's column types or key are not the ones this code writes; nothing was written."""


class WriteMode(StrEnum):
    """How a write treats the rows already stored in its window.

    Assets declare it as ``metadata={"write_mode": WriteMode.MERGE.value, ...}``: the plain value,
    because Dagster serialises asset metadata into the code location's snapshot and refuses enums.
    """

    REPLACE = "replace"
    """Data derived from stored rows (the analyses): the window's rows are deleted and the frame's
    inserted in one transaction, so a recomputation never leaves rows of an older version behind."""

    MERGE = "merge"
    """Facts fetched from outside (candles): the frame's rows replace stored rows with the same
    primary key and are added otherwise; stored rows the frame lacks are kept, so an empty or partial
    reply never deletes anything. Removing rows is a repair (``dantaro candles delete``)."""


def write_mode(metadata: dict, asset: str) -> WriteMode:
    """The asset's declared write mode; there is no default, every asset says which it is."""
    declared = metadata.get("write_mode")
    if declared is None:
        raise ValueError(
            f"{asset}: asset metadata lacks 'write_mode': "
            f"{WriteMode.MERGE.value!r} for fetched facts, {WriteMode.REPLACE.value!r} for derived data"
        )
    try:
        return WriteMode(declared)
    except ValueError:
        raise ValueError(f"{asset}: write_mode {declared!r} is not one of {[m.value for m in WriteMode]}") from None


def _pg_type(column: str, arrow_type: pa.DataType) -> str:
    """The column type a new table gets for a frame column."""
    if pa.types.is_timestamp(arrow_type):
        if arrow_type.tz is None:
            raise TypeError(f"column {column!r} holds naive timestamps; store tz-aware UTC times (e.g. pd.to_datetime(..., utc=True))")
        return "timestamp with time zone"
    if isinstance(arrow_type, pa.JsonType):
        return "jsonb"
    if pa.types.is_floating(arrow_type):
        return "double precision"
    if pa.types.is_integer(arrow_type):
        return "bigint"
    if pa.types.is_boolean(arrow_type):
        return "boolean"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type) or pa.types.is_dictionary(arrow_type):
        return "text"
    raise TypeError(
        f"column {column!r} has Arrow type {arrow_type}, which is not stored; use float, int, bool, str, "
        "tz-aware datetime, or dict/list values (jsonb)"
    )


def frame_to_arrow(frame: pd.DataFrame) -> pa.Table:
    """Columns to Arrow (NaN becomes NULL); object columns of dicts/lists become JSON text for jsonb."""
    arrays = []
    for name in frame.columns:
        if not isinstance(name, str):
            raise TypeError(f"column names must be strings, got {name!r}")
        series = frame[name]
        first = series.first_valid_index()
        if series.dtype == object and first is not None and isinstance(series[first], (dict, list)):
            values = [None if value is None else json.dumps(value) for value in series]
            arrays.append(pa.array(values, type=pa.json_()))
        else:
            arrays.append(pa.Array.from_pandas(series))
    return pa.Table.from_arrays(arrays, names=list(frame.columns))


def _needed_type(field: pa.Field) -> str | None:
    """The column type ``field``'s values need; None for a column of nothing but missing values (it fits any)."""
    return None if pa.types.is_null(field.type) else _pg_type(field.name, field.type)


def type_changes(data: pa.Table, table_types: dict[str, str]) -> dict[str, str]:
    """The stored columns whose type is not the one ``data``'s values need (beyond the exact casts): column -> needed type."""
    changes = {}
    for field in data.schema:
        needed, stored = _needed_type(field), table_types.get(field.name)
        if stored is not None and needed is not None and needed != stored and (needed, stored) not in _EXACT_CASTS:
            changes[field.name] = needed
    return changes


def conform(data: pa.Table, table_types: dict[str, str], table: str) -> tuple[pa.Table, dict[str, str]]:
    """Cast ``data`` to the table's column types; return it and the columns the table must gain.

    Raises :class:`SchemaDriftError` naming every column whose stored type differs from the one its
    values need (beyond the exact casts of ``_EXACT_CASTS``): casting would change what is stored.
    A new column no value types yet (an empty frame's object column) is created ``text``; the first
    values that arrive give it their type (``PostgresDataFrameIOManager.write``).
    """
    columns, new_columns, drift = [], {}, []
    changes = type_changes(data, table_types)
    for field, column in zip(data.schema, data.columns):
        needed = _needed_type(field)
        stored = table_types.get(field.name)
        if stored is None:
            stored = new_columns[field.name] = needed or "text"
        elif field.name in changes:
            drift.append(f"{field.name} is {stored}, expected {needed}")
            continue
        target = PG_ARROW_TYPES.get(stored)
        if target is None:
            drift.append(f"{field.name} is {stored}, which this IO manager does not write")
            continue
        try:
            columns.append(column.cast(target, safe=not pa.types.is_timestamp(target)))
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise TypeError(f"column {field.name!r} ({field.type}) does not fit {table}.{field.name} ({stored}): {exc}") from None
    if drift:
        raise SchemaDriftError(drift_message(table, drift))
    return pa.Table.from_arrays(columns, names=data.column_names), new_columns


def drift_message(table: str, problems: Sequence[str]) -> str:
    """What a write refused for drift says: the table, each column found and expected, and the command to run."""
    return (
        f"{table}: the stored table is not what this code writes (schema drift): {'; '.join(problems)}. "
        f"Nothing was written. Run `{MIGRATE_COMMAND}` to bring the tables to this code's version; if the "
        "difference stays, the table was changed by hand: put it back as expected (docs: Storage, Migrations)."
    )


def key_order(partition_expr: str | None, primary_key: Sequence[str]) -> list[str]:
    """The columns of a table's unique key index, in index order: the time column first when it is in the key."""
    return storage_order(partition_expr, primary_key) if partition_expr in primary_key else list(primary_key)


def check_frame(frame: pd.DataFrame, asset: str, window: dg.TimeWindow | None, partition_expr: str | None, primary_key: Sequence[str]) -> None:
    """Refuse a frame that would corrupt the table, before anything touches the database."""
    if frame.columns.empty:
        raise RefusedFrameError(
            f"{asset}: the frame has no columns, so it cannot say which rows it holds; nothing was written "
            "(return the asset's columns even when there are no rows)"
        )
    missing = [c for c in [*primary_key, *([partition_expr] if window else [])] if c not in frame.columns]
    if missing:
        raise ValueError(f"{asset}: frame lacks column(s) {missing} (partition_expr / primary_key in the asset's metadata)")
    if window is not None:
        times = frame[partition_expr]
        if not isinstance(times.dtype, pd.DatetimeTZDtype):
            raise TypeError(f"{asset}: partition column {partition_expr!r} must be tz-aware datetimes, got {times.dtype}")
        outside = times.isna() | (times < window.start) | (times >= window.end)
        if outside.any():
            bad = times[outside]
            raise ValueError(
                f"{asset}: {int(outside.sum())} row(s) have {partition_expr} outside the partition window "
                f"[{window.start.isoformat()}, {window.end.isoformat()}) (found {bad.min()} .. {bad.max()}, "
                f"{int(bad.isna().sum())} missing); nothing was written"
            )
    infinite = {c: int(np.isinf(frame[c].to_numpy(dtype=float, na_value=np.nan)).sum())
                for c in frame.columns if pd.api.types.is_float_dtype(frame[c].dtype)}
    if infinite := {c: n for c, n in infinite.items() if n}:
        raise RefusedFrameError(f"{asset}: ±inf in float column(s) {infinite} (Postgres would store Infinity); nothing was written")
    if primary_key:
        keys = frame[list(primary_key)]
        if keys.isna().any(axis=None):
            raise ValueError(f"{asset}: primary key {list(primary_key)} has missing values; nothing was written")
        duplicated = keys.duplicated(keep=False)
        if duplicated.any():
            sample = keys[duplicated].head(5).to_dict("records")
            raise ValueError(f"{asset}: {int(duplicated.sum())} rows share a primary key {list(primary_key)}, e.g. {sample}; nothing was written")


def lock_table(conn, postgres: PostgresResource, table: str) -> None:
    """The transaction-scoped advisory lock every writer of ``table`` takes (the IO manager, candle repairs)."""
    advisory_lock(conn, f"{postgres.db_schema}.{table}")


def advisory_lock(conn, name: str) -> None:
    """A transaction-scoped advisory lock on ``name``."""
    with conn.cursor() as cur:
        cur.execute("SELECT pg_advisory_xact_lock(hashtext($1))", (name,))
        cur.fetchall()


def storage_order(partition_expr: str | None, primary_key: Sequence[str]) -> list[str]:
    """Row order on disk and on read: the time column, then the rest of the key."""
    return list(dict.fromkeys([c for c in [partition_expr, *primary_key] if c]))


def table_exists(postgres: PostgresResource, table: str, *, conn=None) -> bool:
    """Whether ``schema.table`` exists (an asset's table appears at its first write); on ``conn`` when given."""
    found = postgres.read_arrow("SELECT to_regclass($1) IS NOT NULL AS present", (f"{quote_ident(postgres.db_schema)}.{quote_ident(table)}",),
                                conn=conn)
    return bool(found["present"][0].as_py())


def key_columns(postgres: PostgresResource, table: str, *, conn=None) -> list[str]:
    """The columns of ``table``'s unique key index ``<table>_key`` in index order; empty when it has none."""
    rows = postgres.read_arrow(
        "SELECT a.attname::text AS name FROM pg_index i"
        " JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_namespace n ON n.oid = c.relnamespace"
        " JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) ON true"
        " JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum"
        " WHERE n.nspname = $1 AND c.relname = $2 ORDER BY k.position",
        (postgres.db_schema, f"{table}_key"), conn=conn,
    )
    return rows["name"].to_pylist()


def read_table(
    postgres: PostgresResource,
    table: str,
    *,
    where: str | None = None,
    params: Sequence[Any] | None = None,
    order: Sequence[str] = (),
) -> pd.DataFrame | None:
    """The rows of ``table`` matching ``where`` (SQL over its columns, ``$n`` placeholders for ``params``),
    ordered by ``order``, jsonb decoded: one query (after :func:`table_exists` on the same connection).
    None when the table does not exist (never written).

    The read path of the IO manager and of the API, so both see stored rows the same way.
    """
    sql = f"SELECT * FROM {postgres.table_name(table)}"
    if where:
        sql += f" WHERE {where}"
    if order:
        sql += " ORDER BY " + ", ".join(map(quote_ident, order))
    with postgres.connect() as conn:
        if not table_exists(postgres, table, conn=conn):
            return None
        with conn.cursor() as cur:
            # The key index (time column first) yields rows in this order already; right after a
            # bulk write, before autovacuum's ANALYZE, the planner would rather sort the window on disk
            # (with statistics it picks the same index scan, so this costs nothing then).
            cur.execute("SET LOCAL enable_sort = off")
        result = postgres.read_arrow(sql, params, conn=conn)
    frame = arrow_to_pandas(result)
    for field in result.schema:
        if isinstance(field.type, pa.JsonType):
            frame[field.name] = [None if text is None else json.loads(text) for text in frame[field.name]]
    return frame


def _in_window(partition_expr: str | None, window: dg.TimeWindow | None) -> tuple[str, tuple | None]:
    """The WHERE clause (with its parameters) of a write's window; none for an unpartitioned table."""
    if window is None:
        return "", None
    column = quote_ident(partition_expr)
    return f" WHERE {column} >= $1 AND {column} < $2", (window.start, window.end)


class PostgresDataFrameIOManager(dg.ConfigurableIOManager):
    """DataFrames in ``schema.<asset name>``; a partition is the time window of ``partition_expr``."""

    # Plain resource annotations (Dagster's nested-resource pattern); this module must not use
    # ``from __future__ import annotations``, which hides them from Dagster's resource detection.
    postgres: PostgresResource

    def handle_output(self, context: dg.OutputContext, obj: pd.DataFrame) -> None:
        if not isinstance(obj, pd.DataFrame):
            raise TypeError(f"{context.asset_key.to_user_string()}: the Postgres IO manager stores pandas DataFrames, got {type(obj).__name__}")
        metadata = context.definition_metadata or {}
        table = context.asset_key.path[-1]
        window = context.asset_partitions_time_window if context.has_asset_partitions else None
        delete_window = context.output_metadata.get(DELETE_WINDOW)
        delete_window = bool(getattr(delete_window, "value", delete_window))
        context.add_output_metadata(self.write(table, obj, metadata, window, delete_window=delete_window))

    def write(self, table: str, obj: pd.DataFrame, metadata: dict, window: dg.TimeWindow | None, *, delete_window: bool = False) -> dict[str, Any]:
        """Store ``obj`` in ``table`` by the asset ``metadata``'s write mode, in one transaction under
        the table's lock; the output metadata. Also the write path of ``dantaro stream`` (candles
        that arrive outside a run merge exactly as a run's do). ``delete_window`` lets an empty frame
        replace a window that holds rows."""
        partition_expr = metadata.get("partition_expr")
        primary_key = list(metadata.get("primary_key") or [])
        mode = write_mode(metadata, table)
        if window is not None and not partition_expr:
            raise ValueError(f"{table} is partitioned but has no 'partition_expr' metadata naming its time column")
        if mode is WriteMode.MERGE and not primary_key:
            raise ValueError(f"{table}: write_mode merge matches rows by 'primary_key', which its metadata lacks")
        check_frame(obj, table, window, partition_expr, primary_key)
        data = frame_to_arrow(obj)
        order = [c for c in storage_order(partition_expr, primary_key) if c in data.column_names]
        if order and data.num_rows:
            data = data.sort_by([(c, "ascending") for c in order])

        started = time.perf_counter()
        with self.postgres.connect() as conn:
            # Two runs writing one asset take turns, so the later one's rows win instead of colliding
            # with the earlier's on the key.
            lock_table(conn, self.postgres, table)
            table_types = self._column_types(conn, table)
            qualified = f"{self.postgres.db_schema}.{table}"
            # a stored column without a single value (created by an empty first write) takes the type of the first
            # values that arrive: nothing stored can change; a column holding values keeps its type (drift otherwise)
            typed = self._valueless(conn, table, type_changes(data, table_types))
            data, new_columns = conform(data, table_types | typed, qualified)
            if table_types:
                self._refuse_drift_and_wipes(conn, table, table_types, data, primary_key, partition_expr, window,
                                             replace=mode is WriteMode.REPLACE and not delete_window)
            if new_columns or typed:
                self._create_or_extend(conn, table, new_columns, primary_key, partition_expr, exists=bool(table_types), typed=typed)
            if mode is WriteMode.MERGE:
                changed = self._merge(conn, table, data, primary_key)
            else:
                if table_types or new_columns:
                    self._delete(conn, table, partition_expr, window)
                changed = self.postgres.ingest(conn, table, data)
        write_seconds = time.perf_counter() - started

        output: dict[str, Any] = {
            "dagster/table_name": qualified,
            "write_mode": mode.value,
            "rows_written": changed,
            "write_seconds": round(write_seconds, 3),
        }
        if window is not None:
            output |= {
                "dagster/partition_row_count": len(obj),
                "time_window_start": window.start.isoformat(),
                "time_window_end": window.end.isoformat(),
            }
        else:
            output["dagster/row_count"] = len(obj)
        return output

    def load_input(self, context: dg.InputContext) -> pd.DataFrame:
        metadata = context.upstream_output.definition_metadata or {}
        table = context.asset_key.path[-1]
        partition_expr = metadata.get("partition_expr")
        where = None
        if context.has_asset_partitions:
            if not context.asset_partition_keys:
                where = "false"
            else:
                # Literal bounds, not $1/$2: ADBC streams a parameterless query as one binary COPY.
                window = context.asset_partitions_time_window
                column = quote_ident(partition_expr)
                where = f"{column} >= {timestamptz_literal(window.start)} AND {column} < {timestamptz_literal(window.end)}"
        frame = read_table(self.postgres, table, where=where, order=storage_order(partition_expr, metadata.get("primary_key") or []))
        if frame is not None:
            return frame
        if (context.definition_metadata or {}).get("optional"):
            return pd.DataFrame()  # an input the asset can do without (metadata {"optional": True})
        raise MissingUpstreamTableError(
            f"upstream asset {context.asset_key.to_user_string()!r} was never materialised: table "
            f"{self.postgres.db_schema}.{table} does not exist. Materialise {table} first."
        )

    def _column_types(self, conn, table: str) -> dict[str, str]:
        rows = self.postgres.read_arrow(
            "SELECT column_name, data_type FROM information_schema.columns"
            " WHERE table_schema = $1 AND table_name = $2 ORDER BY ordinal_position",
            (self.postgres.db_schema, table),
            conn=conn,
        ).to_pylist()
        return {row["column_name"]: row["data_type"] for row in rows}

    def _refuse_drift_and_wipes(self, conn, table: str, table_types: dict[str, str], data: pa.Table, primary_key: list[str],
                                partition_expr: str | None, window: dg.TimeWindow | None, *, replace: bool) -> None:
        """Before a stored table is touched: its key index must be the declared key, a frame of key columns
        only would null every other column, and (``replace``) an empty frame must not delete stored rows."""
        qualified = f"{self.postgres.db_schema}.{table}"
        if primary_key and (found := key_columns(self.postgres, table, conn=conn)) != (expected := key_order(partition_expr, primary_key)):
            raise SchemaDriftError(drift_message(qualified, [f"key is ({', '.join(found) or 'none'}), expected ({', '.join(expected)})"]))
        keys = {*primary_key, partition_expr}
        if data.num_columns and all(c in keys for c in data.column_names) and any(c not in keys for c in table_types):
            raise RefusedFrameError(f"{qualified}: the frame holds key columns only, so its rows would null every other "
                                    "column; nothing was written")
        if replace and data.num_rows == 0:
            stored = self._stored_rows(conn, table, partition_expr, window)
            if stored:
                span = f"window [{window.start.isoformat()}, {window.end.isoformat()})" if window else "table"
                raise RefusedFrameError(
                    f"{qualified}: an empty frame would delete the {stored} row(s) stored in its {span}; nothing was written. "
                    f"An asset that means it says so: dg.Output(frame, metadata={{{DELETE_WINDOW!r}: True}})"
                )

    def _valueless(self, conn, table: str, changes: dict[str, str]) -> dict[str, str]:
        """Of ``changes`` (column -> the type its new values need), the columns in which no stored row holds a value:
        one query, under the table's lock, so no write can fill them before the write that retypes them commits."""
        if not changes:
            return {}
        empty = ", ".join(f"NOT EXISTS (SELECT 1 FROM {self.postgres.table_name(table)} WHERE {quote_ident(c)} IS NOT NULL) AS {quote_ident(c)}"
                          for c in changes)
        found = self.postgres.read_arrow(f"SELECT {empty}", conn=conn).to_pylist()[0]
        return {column: needed for column, needed in changes.items() if found[column]}

    def _stored_rows(self, conn, table: str, partition_expr: str | None, window: dg.TimeWindow | None) -> int:
        where, params = _in_window(partition_expr, window)
        return self.postgres.read_arrow(f"SELECT count(*) AS n FROM {self.postgres.table_name(table)}{where}", params, conn=conn)["n"][0].as_py()

    def _create_or_extend(
        self, conn, table: str, columns: dict[str, str], primary_key: list[str], partition_expr: str | None, *, exists: bool,
        typed: dict[str, str] | None = None,
    ) -> None:
        """Create the table (and its indexes) or add columns and give ``typed`` columns (checked to hold no value)
        their type, serialised per schema by an advisory lock."""
        qualified = self.postgres.table_name(table)
        schema = self.postgres.db_schema
        definitions = ", ".join(f"{quote_ident(name)} {pg_type}" for name, pg_type in columns.items())
        statements = [f"CREATE SCHEMA IF NOT EXISTS {quote_ident(schema)}"]
        # The key's unique index leads with the time column: it also serves the window's DELETE, the
        # ranged read and its ORDER BY, and rows arrive sorted, so inserts append at its right edge.
        unique = key_order(partition_expr, primary_key)
        if exists:
            statements += [f"ALTER TABLE {qualified} ADD COLUMN IF NOT EXISTS {quote_ident(n)} {t}" for n, t in columns.items()]
            # every value is NULL (_valueless), so USING NULL converts nothing, whatever the two types
            statements += [f"ALTER TABLE {qualified} ALTER COLUMN {quote_ident(n)} TYPE {t} USING NULL::{t}" for n, t in (typed or {}).items()]
        else:
            statements.append(f"CREATE TABLE IF NOT EXISTS {qualified} ({definitions})")
            if unique:
                statements.append(f"CREATE UNIQUE INDEX IF NOT EXISTS {quote_ident(table + '_key')} ON {qualified} "
                                  f"({', '.join(map(quote_ident, unique))})")
            if partition_expr in columns and unique[:1] != [partition_expr]:
                statements.append(f"CREATE INDEX IF NOT EXISTS {quote_ident(table + '_' + partition_expr)} ON {qualified} ({quote_ident(partition_expr)})")
        advisory_lock(conn, schema)
        with conn.cursor() as cur:
            for statement in statements:
                cur.execute(statement)

    def _delete(self, conn, table: str, partition_expr: str | None, window: dg.TimeWindow | None) -> None:
        where, params = _in_window(partition_expr, window)
        with conn.cursor() as cur:
            cur.execute(f"DELETE FROM {self.postgres.table_name(table)}{where}", params)

    def _merge(self, conn, table: str, data: pa.Table, primary_key: list[str]) -> int:
        """Upsert ``data`` by ``primary_key``: COPY into a transaction-scoped staging table, then one
        INSERT ... ON CONFLICT. Rows whose values did not change are left alone (no dead tuples for
        the identical rows a refetch mostly returns). Returns the rows inserted or changed."""
        if data.num_rows == 0:
            return 0
        stage = quote_ident(f"{table}_merge_stage")
        columns = data.column_names
        values = [c for c in columns if c not in primary_key]
        listed = ", ".join(map(quote_ident, columns))
        sql = f"INSERT INTO {self.postgres.table_name(table)} AS stored ({listed}) SELECT {listed} FROM {stage}"
        sql += f" ON CONFLICT ({', '.join(map(quote_ident, primary_key))}) DO "
        if values:
            targets = ", ".join(map(quote_ident, values))
            stored = ", ".join(f"stored.{quote_ident(c)}" for c in values)
            excluded = ", ".join(f"EXCLUDED.{quote_ident(c)}" for c in values)
            sql += f"UPDATE SET ({targets}) = ROW({excluded}) WHERE ROW({stored}) IS DISTINCT FROM ROW({excluded})"
        else:
            sql += "NOTHING"
        with conn.cursor() as cur:
            cur.execute(f"CREATE TEMP TABLE {stage} (LIKE {self.postgres.table_name(table)}) ON COMMIT DROP")
            cur.adbc_ingest(f"{table}_merge_stage", data, mode="append", temporary=True)
            cur.execute(sql)
            return cur.rowcount
