"""The latest snapshot of each analysis: written to Redis by the publish steps, read by the API.

A push is a compare-and-set on ``as_of`` against a high-water mark (rebuilt from Postgres after Redis
restarts empty) and announces itself on ``{prefix}:events``; a read serves the newer of Redis and Postgres,
never older than what this process served before. Keys, payload and marks: docs/storage.md.
"""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import adbc_driver_manager
import dagster as dg
import pandas as pd
import redis
from pydantic import Field, PrivateAttr

from dantaro_assets.lib.postgres import PostgresResource, PostgresUnavailableError, quote_ident
from dantaro_assets.lib.postgres_io import read_table, table_exists
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.redaction import redact_text

log = logging.getLogger(__name__)

# KEYS: snapshot key, its high-water mark. ARGV: as_of, payload, ttl, events channel, event. -1 when the
# mark is missing (a Redis that restarted empty, or a key never pushed): set it from Postgres first.
# Otherwise write the snapshot (with its TTL), raise the mark and publish the event, unless the mark or
# the live key holds a strictly newer as_of; the live key counts too so that a key pushed without a mark
# still wins over an older one. The as_of strings share one fixed format (YYYY-MM-DDTHH:MM:SSZ), so string
# order is time order; an empty mark (nothing stored) is older than any.
_PUSH_IF_NEWER = """
local mark = redis.call('GET', KEYS[2])
if not mark then return -1 end
if mark > ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and type(decoded['as_of']) == 'string' and decoded['as_of'] > ARGV[1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[1])
redis.call('PUBLISH', ARGV[4], ARGV[5])
return 1
"""
# KEYS: marks. ARGV: the newest stored as_of of each. Raise each mark to it (never lower one).
_RAISE_MARKS = """
for i, key in ipairs(KEYS) do
  local mark = redis.call('GET', key)
  if (not mark) or mark < ARGV[i] then redis.call('SET', key, ARGV[i]) end
end
return #KEYS
"""
AS_OF = "as_of"
MEMORY = "memory"  # the source of an answer served again because both stores hold only older ones


class MarksNotRebuiltError(RuntimeError):
    """Redis lost its high-water marks and Postgres could not say the newest stored as_of: nothing was pushed."""


def iso_utc(value: pd.Timestamp) -> str:
    """UTC ISO-8601 with a ``Z``, to the second (the format of every snapshot timestamp)."""
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


def _records(rows: pd.DataFrame) -> str:
    # pandas' JSON writer turns NaN/NaT into null and tz-aware timestamps into ISO-8601 Z in C.
    return rows.to_json(orient="records", date_format="iso", date_unit="s")


def _payload(header: dict[str, Any], rows: pd.DataFrame) -> str:
    return json.dumps(header)[:-1] + ', "rows": ' + _records(rows) + "}"


class SnapshotStore(dg.ConfigurableResource):
    """Snapshots of the analyses in Redis (written by the publish steps) with Postgres behind them (read by the API).

    ``ttls`` is each asset's snapshot TTL in seconds; ``served_rows`` the rows of an asset that are served,
    by column value (``{"recommendations": {"scorer": "v1"}}``: the shadow scorers' picks are stored, not served);
    ``row_order`` the columns that order an asset's rows, the same from Redis and from Postgres.
    """

    redis: RedisResource
    postgres: PostgresResource
    ttls: dict[str, int]
    served_rows: dict[str, dict[str, str]] = Field(default_factory=dict)
    row_order: dict[str, list[str]] = Field(default_factory=dict)

    _served: dict[tuple[str, str | None], dict[str, Any]] = PrivateAttr(default_factory=dict)  # newest answer per key
    _served_lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def key(self, asset: str, market: str | None = None) -> str:
        return f"{self.redis.prefix}:{asset}:{market or 'latest'}"

    @property
    def events_channel(self) -> str:
        """Where every stored snapshot is announced (``{prefix}:events``; the API's push listens there)."""
        return f"{self.redis.prefix}:events"

    def high_water_key(self, asset: str, market: str | None = None) -> str:
        """The newest as_of ever pushed to ``key(asset, market)``; no TTL, so it outlives the snapshot."""
        return f"{self.redis.prefix}:high_water:{asset}:{market or 'latest'}"

    def rebuild_marks(self, asset: str, as_of: str, markets: list[str | None]) -> None:
        """Set the missing marks of ``markets`` (None: the ``latest`` key) from Postgres, for a push at ``as_of``."""
        try:
            newest = self._newest_stored(asset, as_of, markets)
        except (adbc_driver_manager.Error, PostgresUnavailableError) as exc:
            raise MarksNotRebuiltError(f"{asset}: Redis has no high-water mark for {len(markets)} key(s) (restarted empty?) and "
                                       f"Postgres did not say the newest stored as_of, so nothing was pushed: {redact_text(str(exc))}") from None
        keys = [self.high_water_key(asset, market) for market in markets]
        self.redis.client().register_script(_RAISE_MARKS)(keys=keys, args=[newest.get(market, "") for market in markets])
        if None in markets:  # a Redis restarted empty (or never published to)
            log.warning("%s: %d high-water mark(s) missing in Redis, set from Postgres (latest: %s)", asset, len(markets),
                        newest.get(None, "-"))

    def _newest_stored(self, asset: str, as_of: str, markets: list[str | None]) -> dict[str | None, str]:
        """The newest served as_of stored, as ``iso_utc``: for None the asset's, for a market its own among rows from ``as_of`` on
        (the pushed rows are stored, so nothing of that market is older than them and newer is what matters)."""
        served, values = self._row_filter(asset, None)
        table = self.postgres.table_name(asset)
        found: dict[str | None, str] = {}
        with self.postgres.connect() as conn:
            if not table_exists(self.postgres, asset, conn=conn):
                return found
            if None in markets:
                sql = f"SELECT max({AS_OF}) AS newest FROM {table}" + (f" WHERE {' AND '.join(served)}" if served else "")
                newest = self.postgres.read_arrow(sql, values or None, conn=conn)["newest"][0].as_py()
                if newest is not None:
                    found[None] = iso_utc(newest)
            named = [market for market in markets if market is not None]
            if named:
                params = [*values, pd.Timestamp(as_of).to_pydatetime(), *named]
                listed = ", ".join(f"${i}" for i in range(len(values) + 2, len(params) + 1))
                where = " AND ".join([*served, f"{AS_OF} >= ${len(values) + 1}", f"market IN ({listed})"])
                rows = self.postgres.read_arrow(f"SELECT market, max({AS_OF}) AS newest FROM {table} WHERE {where} GROUP BY market",
                                                params, conn=conn).to_pylist()
                found |= {row["market"]: iso_utc(row["newest"]) for row in rows}
        return found

    def served(self, asset: str, frame: pd.DataFrame) -> pd.DataFrame:
        """The rows of ``frame`` that ``asset`` serves."""
        for column, value in self.served_rows.get(asset, {}).items():
            frame = frame[frame[column] == value]
        return frame

    def publish(self, asset: str, frame: pd.DataFrame, *, run_id: str, partition: str | None, per_market: bool = False) -> dict[str, Any]:
        """Push the served rows of ``frame``'s newest as_of with the asset's TTL; what was published, as metadata.

        Raises ``redis.RedisError`` / ``OSError`` when Redis does not answer.
        """
        ttl = self.ttls.get(asset)
        if ttl is None:
            raise KeyError(f"{asset}: no snapshot TTL configured (SnapshotStore.ttls has {sorted(self.ttls)})")
        frame = self.served(asset, frame)
        if frame.empty:
            return {"published": "skipped: no rows", "ttl_seconds": ttl}
        as_of = frame[AS_OF].max()
        rows = frame[frame[AS_OF] == as_of]
        if order := self.row_order.get(asset):
            rows = rows.sort_values(order, kind="stable")
        header = {"asset": asset, "as_of": iso_utc(as_of), "run_id": run_id, "partition": partition}
        payloads = {None: _payload(header, rows)}
        if per_market:
            for market, market_rows in rows.groupby("market", sort=False):
                payloads[str(market)] = _payload(header, market_rows)
        results = dict(zip(payloads, self._push(asset, header, payloads, ttl)))
        if unmarked := [market for market, result in results.items() if result == -1]:  # marks from Postgres, then those keys again
            self.rebuild_marks(asset, header["as_of"], unmarked)
            results |= dict(zip(unmarked, self._push(asset, header, {m: payloads[m] for m in unmarked}, ttl)))
            if -1 in results.values():
                raise MarksNotRebuiltError(f"{asset}: Redis lost its high-water marks again while they were set; nothing more was pushed")
        written = sum(results.values())
        kept_newer = len(payloads) - written
        keys = [self.key(asset)] + ([self.key(asset, "<MARKET>")] if per_market else [])
        return {
            "published": f"pushed {written} key(s), {kept_newer} kept a newer snapshot",
            "keys": keys,
            "keys_written": written,
            "keys_kept_newer": kept_newer,  # the high-water mark refused this older snapshot there
            "as_of": header["as_of"],
            "rows": len(rows),
            "ttl_seconds": ttl,
        } | ({"markets": len(payloads) - 1} if per_market else {})

    def _push(self, asset: str, header: dict[str, Any], payloads: dict[str | None, str], ttl: int) -> list[int]:
        push = self.redis.client().register_script(_PUSH_IF_NEWER)
        pipe = self.redis.client().pipeline(transaction=False)
        for market, payload in payloads.items():
            key = self.key(asset, market)
            event = json.dumps({"asset": asset, "market": market, "as_of": header["as_of"], "run_id": header["run_id"], "key": key})
            push(keys=[key, self.high_water_key(asset, market)], args=[header["as_of"], payload, ttl, self.events_channel, event], client=pipe)
        return pipe.execute()

    def cached(self, asset: str, market: str | None = None) -> dict[str, Any] | None:
        """The snapshot of ``asset`` (of one market when given) in Redis, or None when absent or expired."""
        raw = self.redis.client().get(self.key(asset, market))
        return None if raw is None else json.loads(raw)

    def _row_filter(self, asset: str, market: str | None) -> tuple[list[str], list[Any]]:
        """SQL conditions (``$1``...) and their values selecting the served rows of ``asset`` (of one market)."""
        match = ({"market": market} if market else {}) | self.served_rows.get(asset, {})
        return [f"{quote_ident(column)} = ${i}" for i, column in enumerate(match, start=1)], list(match.values())

    @staticmethod
    def _snapshot(asset: str, frame: pd.DataFrame) -> dict[str, Any]:
        """The rows of one as_of read from Postgres, in the payload format."""
        as_of = frame[AS_OF].iloc[0]
        return {
            "asset": asset,
            "as_of": iso_utc(as_of),
            "run_id": frame["run_id"].iloc[0] if "run_id" in frame else None,
            "partition": as_of.strftime("%Y-%m-%d-%H:00"),
            "rows": json.loads(_records(frame)),
            "source": "postgres",
        }

    def stored(self, asset: str, market: str | None = None, *, newer_than: str | None = None) -> dict[str, Any] | None:
        """The newest served snapshot of ``asset`` (of one market) in Postgres, if it is newer than ``newer_than``:
        one query, one backward step on the key index (which leads with as_of) to find it."""
        table = self.postgres.table_name(asset)
        row_filter, params = self._row_filter(asset, market)
        newest = f"SELECT max({AS_OF}) FROM {table}" + (f" WHERE {' AND '.join(row_filter)}" if row_filter else "")
        where = [f"{AS_OF} = ({newest})", *row_filter]
        if newer_than is not None:
            params.append(pd.Timestamp(newer_than).to_pydatetime())
            where.append(f"{AS_OF} > ${len(params)}")
        frame = read_table(self.postgres, asset, where=" AND ".join(where), params=params or None, order=self.row_order.get(asset, ()))
        if frame is None or frame.empty:
            return None
        return self._snapshot(asset, frame)

    def since(self, asset: str, market: str | None = None, *, after: str, limit: int) -> list[dict[str, Any]]:
        """The served snapshots of ``asset`` (of one market) in Postgres with an as_of after ``after``, oldest
        first, the newest ``limit`` of them: what an event stream missed (one query on the key index)."""
        table = self.postgres.table_name(asset)
        row_filter, params = self._row_filter(asset, market)
        params.append(pd.Timestamp(after).to_pydatetime())
        missed = " AND ".join([*row_filter, f"{AS_OF} > ${len(params)}"])
        recent = f"SELECT DISTINCT {AS_OF} FROM {table} WHERE {missed} ORDER BY {AS_OF} DESC LIMIT {int(limit)}"
        frame = read_table(self.postgres, asset, where=" AND ".join([f"{AS_OF} IN ({recent})", *row_filter]), params=params,
                           order=[AS_OF, *self.row_order.get(asset, ())])
        if frame is None:
            return []
        return [self._snapshot(asset, rows) for _, rows in frame.groupby(AS_OF, sort=True)]

    def latest(self, asset: str, market: str | None = None) -> dict[str, Any] | None:
        """The newer of Redis and Postgres (by as_of; Redis on a tie), with its ``source``; None when neither has one;
        never older than what this process served for the key before (that answer again, ``source: memory``).

        Either store may be down: the other answers. Postgres errors are raised only when neither Redis nor
        this process has an answer.
        """
        with self._served_lock:
            before = self._served.get((asset, market))
        try:
            answer = self._newer_of_the_stores(asset, market)
        except (adbc_driver_manager.Error, PostgresUnavailableError):
            if before is None:
                raise
            answer = None
        if before is not None and (answer is None or answer[AS_OF] < before[AS_OF]):
            log.warning("%s%s: the stores hold nothing newer than %s, which was served before: serving it again",
                        asset, f" {market}" if market else "", before[AS_OF])
            return {**before, "source": MEMORY}
        if answer is not None:
            with self._served_lock:
                self._served[(asset, market)] = answer
        return answer

    def _newer_of_the_stores(self, asset: str, market: str | None) -> dict[str, Any] | None:
        try:
            cached = self.cached(asset, market)
        except (redis.RedisError, OSError) as exc:
            log.warning("redis unavailable, reading %s from postgres: %s", asset, redact_text(str(exc)))
            cached = None
        try:
            stored = self.stored(asset, market, newer_than=None if cached is None else cached[AS_OF])
        except (adbc_driver_manager.Error, PostgresUnavailableError) as exc:
            if cached is None:
                raise
            log.warning("postgres unavailable, serving %s from redis: %s", asset, redact_text(str(exc)))
            stored = None
        if stored is not None:
            return stored
        return None if cached is None else {**cached, "source": "redis"}
