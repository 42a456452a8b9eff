"""The Redis every process shares: the Upbit rate limiter's budget and the latest snapshots the API serves.

This module is the connection; the snapshot keys and their format live in
:mod:`dantaro_assets.lib.snapshot_store`, the limiter's in :mod:`dantaro_assets.lib.upbit.rate_limit`.
"""

from __future__ import annotations

import dagster as dg
import redis
import redis.asyncio
from pydantic import PrivateAttr

from dantaro_assets.lib.embedded import embedded_server_url
from dantaro_assets.settings import Settings


class RedisResource(dg.ConfigurableResource):
    """A Redis connection and the prefix of every key; ``url=None`` uses the embedded Redis in ``state_dir``."""

    url: str | None = None
    prefix: str = Settings.model_fields["redis_prefix"].default  # DANTARO_REDIS_PREFIX
    state_dir: str | None = None  # where the embedded server lives when ``url`` is unset
    # False: use the embedded server only while it runs (the API must never start one that outlives `dantaro stop`)
    start_embedded: bool = True

    _client: redis.Redis | None = PrivateAttr(default=None)

    def resolved_url(self) -> str:
        url = self.url or embedded_server_url("redis", self.state_dir, start=self.start_embedded)
        if url is None:
            raise redis.ConnectionError(f"the embedded Redis of {self.state_dir} is not running (`dantaro dev` starts it)")
        return url

    def client(self) -> redis.Redis:
        """A client with short timeouts: a Redis outage must cost a run seconds, not minutes."""
        if self._client is None:
            self._client = redis.Redis.from_url(self.resolved_url(), socket_connect_timeout=2, socket_timeout=5)
        return self._client

    def subscriber(self) -> redis.asyncio.Redis:
        """A new asyncio client for a subscription: no read timeout (a quiet channel is not an outage; the
        connection is pinged instead), a short connect timeout."""
        return redis.asyncio.Redis.from_url(self.resolved_url(), socket_connect_timeout=2, health_check_interval=15)
