"""Removing stored candles: an explicit repair with a dry run, never a side effect of a fetch.

Candle writes merge, so rows that must go are selected (asset, time range, markets), listed, and deleted
only with ``execute=True``, in one transaction under the asset's write lock (docs/storage.md).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

import pandas as pd

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import lock_table, table_exists

CANDLE_ASSETS = ("candles_1m", "candles_1h", "candles_1d")
_MARKET = re.compile(r"^[A-Z]+-[A-Z0-9]+$")


class CandleSelectionError(ValueError):
    """A repair selection that names no asset, an empty or naive time range, or a malformed market."""


@dataclass(frozen=True)
class CandleSelection:
    """The stored candles of ``asset`` with ``start <= candle_start < end`` of ``markets`` (None: every market)."""

    asset: str
    start: datetime
    end: datetime
    markets: tuple[str, ...] | None

    def __post_init__(self) -> None:
        if self.asset not in CANDLE_ASSETS:
            raise CandleSelectionError(f"asset {self.asset!r} is not a candle asset; one of {', '.join(CANDLE_ASSETS)}")
        for name, moment in (("start", self.start), ("end", self.end)):
            if moment.tzinfo is None:
                raise CandleSelectionError(f"{name} {moment.isoformat()} has no UTC offset; give one, e.g. 2025-09-15T10:00Z")
        if self.start >= self.end:
            raise CandleSelectionError(f"start {self.start.isoformat()} is not before end {self.end.isoformat()}")
        if self.markets is not None:
            bad = [m for m in self.markets if not _MARKET.match(m)]
            if bad or not self.markets:
                raise CandleSelectionError(f"market codes look like KRW-BTC, got {bad or 'none'}")

    def where(self) -> str:
        """The selection as a WHERE clause over ``$1`` (start) and ``$2`` (end); market codes are validated."""
        clause = "candle_start >= $1 AND candle_start < $2"
        if self.markets is not None:
            clause += " AND market IN (" + ", ".join(f"'{m}'" for m in self.markets) + ")"
        return clause


@dataclass(frozen=True)
class RepairResult:
    """What the selection held (per market: rows, first and last candle_start) and whether it was deleted."""

    table: str
    selected: pd.DataFrame
    deleted: int | None

    @property
    def rows(self) -> int:
        return int(self.selected["rows"].sum()) if len(self.selected) else 0


def delete_candles(postgres: PostgresResource, selection: CandleSelection, *, execute: bool) -> RepairResult:
    """List the selected rows, and delete them only when ``execute``; one transaction either way."""
    table = postgres.table_name(selection.asset)
    qualified = f"{postgres.db_schema}.{selection.asset}"
    params = (selection.start, selection.end)
    with postgres.connect() as conn:
        if not table_exists(postgres, selection.asset, conn=conn):
            return RepairResult(qualified, pd.DataFrame(columns=["market", "rows", "first", "last"]), 0 if execute else None)
        lock_table(conn, postgres, selection.asset)
        selected = postgres.read_arrow(
            f"SELECT market, count(*) AS rows, min(candle_start) AS first, max(candle_start) AS last FROM {table}"
            f" WHERE {selection.where()} GROUP BY market ORDER BY market",
            params,
            conn=conn,
        ).to_pandas()
        deleted = None
        if execute:
            # Counted in SQL: a statement with bound parameters reports no row count through ADBC.
            sql = f"WITH gone AS (DELETE FROM {table} WHERE {selection.where()} RETURNING 1) SELECT count(*) AS deleted FROM gone"
            deleted = postgres.read_arrow(sql, params, conn=conn)["deleted"][0].as_py()
    return RepairResult(qualified, selected, deleted)
