"""The Redis every process shares: the Upbit rate limiter's budget and the latest snapshots the API serves.

This module is the connection; the snapshot keys and their format live in
:mod:`dantaro_assets.lib.snapshot_store`, the limiter's in :mod:`dantaro_assets.lib.upbit.rate_limit`.
"""

from __future__ import annotations

import dagster as dg
import redis
from pydantic import PrivateAttr

from dantaro_assets.lib.embedded import embedded_redis_url
from dantaro_assets.settings import get_settings


class RedisResource(dg.ConfigurableResource):
    """A Redis connection and the prefix of every key; ``url=None`` uses the embedded Redis in the state folder."""

    url: str | None = None
    prefix: str = "dantaro"

    _client: redis.Redis | None = PrivateAttr(default=None)

    def client(self) -> redis.Redis:
        """A client with short timeouts: a Redis outage must cost a run seconds, not minutes."""
        if self._client is None:
            url = self.url or embedded_redis_url(get_settings().state_dir)
            self._client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=5)
        return self._client
