"""Latest-snapshot cache in Redis: what the API serves without touching Postgres.

Keys are ``{prefix}:{asset}:latest`` (every row of the newest ``as_of``) and, for per-market assets,
``{prefix}:{asset}:{MARKET}``. Payload: JSON ``{"asset", "as_of", "run_id", "partition", "rows"}`` with
timestamps as UTC ISO-8601 ``Z`` strings and NaN as null. A push is a compare-and-set on ``as_of`` in
one Lua script against each key's high-water mark ``{prefix}:high_water:{asset}:{latest|MARKET}``, the
newest ``as_of`` ever pushed there, kept without a TTL: a backfill or a late run never replaces a newer
snapshot with an older one, even after the newer one's key has expired.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import redis
from pydantic import PrivateAttr

from dantaro_assets.lib.embedded import embedded_redis_url

# KEYS: snapshot key, its high-water mark. ARGV: as_of, payload, ttl. Write the snapshot (with its TTL)
# and raise the mark, unless the mark or the live key holds a strictly newer as_of; the live key counts
# too so that a key pushed without a mark still wins over an older one. The as_of strings share one
# fixed format (YYYY-MM-DDTHH:MM:SSZ), so string order is time order.
_PUSH_IF_NEWER = """
local mark = redis.call('GET', KEYS[2])
if mark and mark > ARGV[1] then return 0 end
local current = redis.call('GET', KEYS[1])
if current then
  local ok, decoded = pcall(cjson.decode, current)
  if ok and type(decoded) == 'table' and type(decoded['as_of']) == 'string' and decoded['as_of'] > ARGV[1] then
    return 0
  end
end
redis.call('SET', KEYS[1], ARGV[2], 'EX', tonumber(ARGV[3]))
redis.call('SET', KEYS[2], ARGV[1])
return 1
"""


def iso_utc(value: pd.Timestamp) -> str:
    """UTC ISO-8601 with a ``Z``, to the second (the format of every snapshot timestamp)."""
    return pd.Timestamp(value).tz_convert("UTC").strftime("%Y-%m-%dT%H:%M:%SZ")


class RedisResource(dg.ConfigurableResource):
    """The snapshot cache; ``url=None`` uses the embedded Redis in ``state_dir``."""

    url: str | None = None
    prefix: str = "dantaro"
    state_dir: str | None = None  # where the embedded server lives when ``url`` is unset

    _client: redis.Redis | None = PrivateAttr(default=None)

    def client(self) -> redis.Redis:
        """A client with short timeouts: a Redis outage must cost a run seconds, not minutes."""
        if self._client is None:
            if not self.url and self.state_dir is None:
                raise ValueError("RedisResource needs a url or a state_dir (for the embedded server)")
            url = self.url or embedded_redis_url(Path(self.state_dir))
            self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        return self._client

    def key(self, asset: str, market: str | None = None) -> str:
        return f"{self.prefix}:{asset}:{market or 'latest'}"

    def high_water_key(self, asset: str, market: str | None = None) -> str:
        """The newest as_of ever pushed to ``key(asset, market)``; no TTL, so it outlives the snapshot."""
        return f"{self.prefix}:high_water:{asset}:{market or 'latest'}"

    def push_snapshot(
        self,
        asset: str,
        rows: pd.DataFrame,
        *,
        as_of: pd.Timestamp,
        run_id: str,
        partition: str | None,
        ttl: int,
        per_market: bool = False,
    ) -> dict[str, int]:
        """Write ``rows`` (one as_of's row set) to the latest key and, if asked, one key per market.

        Returns how many keys were written and how many were skipped because they hold (or once
        held: the high-water mark) a newer snapshot. Raises ``redis.RedisError`` / ``OSError``; the
        IO manager turns those into a warning.
        """
        header = {"asset": asset, "as_of": iso_utc(as_of), "run_id": run_id, "partition": partition}
        payloads = {None: _payload(header, rows)}
        if per_market:
            for market, market_rows in rows.groupby("market", sort=False):
                payloads[str(market)] = _payload(header, market_rows)
        push = self.client().register_script(_PUSH_IF_NEWER)
        pipe = self.client().pipeline(transaction=False)
        for market, payload in payloads.items():
            push(keys=[self.key(asset, market), self.high_water_key(asset, market)], args=[header["as_of"], payload, ttl], client=pipe)
        written = sum(pipe.execute())
        return {"written": written, "skipped_newer": len(payloads) - written}

    def latest_snapshot(self, asset: str, market: str | None = None) -> dict[str, Any] | None:
        """The cached snapshot of ``asset`` (of one market when given), or None when absent or expired."""
        raw = self.client().get(self.key(asset, market))
        return None if raw is None else json.loads(raw)


def _payload(header: dict[str, Any], rows: pd.DataFrame) -> str:
    # pandas' JSON writer turns NaN/NaT into null and tz-aware timestamps into ISO-8601 Z in C.
    records = rows.to_json(orient="records", date_format="iso", date_unit="s")
    return json.dumps(header)[:-1] + ', "rows": ' + records + "}"
