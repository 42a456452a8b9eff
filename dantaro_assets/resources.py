"""The resources every asset shares, built from settings: URLs set means external servers, unset means embedded.

Local and production differ only by settings, never by code. Credentials reach the resources as ``dg.EnvVar``,
so the UI shows a variable's name, never a password. ``storage`` is the one place that decides which
servers: runs get its resources, every other process takes them initialised from ``process_storage``.
"""

from __future__ import annotations

from typing import Any, NamedTuple

import dagster as dg

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.run_settings import RunSettings
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.lib.upbit import UpbitClient
from dantaro_assets.settings import Settings


def _url(variable: str, value: str | None) -> dg.EnvVar | None:
    return dg.EnvVar(variable) if value else None


def run_settings(settings: Settings) -> RunSettings:
    """The values runs read while computing (cadences for ticks, thresholds, scorer, retention)."""
    return RunSettings(**{name: getattr(settings, name) for name in RunSettings.model_fields})


def build_snapshot_store(settings: Settings, redis: RedisResource, postgres: PostgresResource) -> SnapshotStore:
    """The Redis snapshots of the analyses with their TTLs; of the recommendations only the served scorer's
    picks are published (the shadow scorers' are stored beside them), ranked."""
    return SnapshotStore(
        redis=redis, postgres=postgres, ttls=settings.cache_ttls,
        served_rows={"recommendations": {"scorer": settings.scorer}},
        row_order={"recommendations": ["rank"], "support_levels": ["market", "side", "rank"]},
    )


class Storage(NamedTuple):
    postgres: PostgresResource
    redis: RedisResource

    def urls(self) -> tuple[str, str]:
        """Postgres' and Redis' URLs; an embedded server in use is started if it is down (unless ``start_embedded`` is off)."""
        return self.postgres.resolved_url(), self.redis.resolved_url()


def storage(settings: Settings, *, start_embedded: bool = True) -> Storage:
    """The Postgres and Redis of ``settings``: the URL variables as ``EnvVar`` when set, else the embedded servers of the state folder."""
    state_dir = str(settings.state_dir)
    return Storage(
        postgres=PostgresResource(url=_url("DATABASE_URL", settings.database_url), db_schema=settings.db_schema, state_dir=state_dir,
                                  start_embedded=start_embedded),
        redis=RedisResource(url=_url("REDIS_URL", settings.redis_url), prefix=settings.redis_prefix, state_dir=state_dir,
                            start_embedded=start_embedded),
    )


def process_storage(settings: Settings, *, start_embedded: bool = True) -> Storage:
    """``storage`` for a process outside a run (the CLI, ``dantaro stream``, the API, benches): initialised now, EnvVars read.

    ``start_embedded=False``: the state folder's embedded servers are used while they run and never started.
    """
    postgres, redis = storage(settings, start_embedded=start_embedded)
    # Initialising opens an in-memory Dagster instance; the block closes it before returning (left open, the garbage
    # collector closes it later, in whatever order, and SQLAlchemy logs closed-database tracebacks). The resources
    # have no teardown: they stay usable after it.
    with dg.build_resources({"postgres": postgres, "redis": redis}) as initialised:
        return Storage(initialised.postgres, initialised.redis)


def build_resources(settings: Settings) -> dict[str, Any]:
    """``io_manager`` (Postgres history), ``snapshots`` (Redis snapshots, with their TTLs), ``postgres``, ``redis``, ``upbit``
    and ``run_settings``."""
    postgres, redis = storage(settings)
    return {
        "io_manager": PostgresDataFrameIOManager(postgres=postgres),
        "snapshots": build_snapshot_store(settings, redis, postgres),
        "postgres": postgres,
        "redis": redis,
        "upbit": UpbitClient(
            base_url=settings.upbit_base_url,
            timeout=settings.upbit_api_timeout,
            max_retries=settings.upbit_max_retries,
            requests_per_second=settings.upbit_requests_per_second,
            max_symbols_per_batch=settings.max_symbols_per_batch,
            redis=redis,
        ),
        "run_settings": run_settings(settings),
    }


def snapshot_store(settings: Settings) -> SnapshotStore:
    """The snapshot store for use outside a run (the API), over ``process_storage``.

    It never starts the embedded servers: an API left running after ``dantaro stop`` answers 503 (storage
    unavailable) until ``dantaro dev`` starts them again, instead of starting servers that would outlive it.
    """
    postgres, redis = process_storage(settings, start_embedded=False)
    return build_snapshot_store(settings, redis, postgres)
