"""Publishing an analysis: the step after its Postgres write that puts its newest snapshot in Redis.

A downstream asset ``<analysis>_redis`` in the same job and partition, so the run shows what was published and
an analysis whose check or write failed publishes nothing. No ``from __future__ import annotations``: Dagster
reads the asset function's annotations to find its context and its ``SnapshotStore`` resource.
"""

import dagster as dg
import pandas as pd
import redis

from dantaro_assets.lib.snapshot_store import MarksNotRebuiltError, SnapshotStore
from dantaro_assets.redaction import redact_text


def _partition(context: dg.AssetExecutionContext) -> str | None:
    """The run's partition key, ``start...end`` for a backfill range."""
    if context.has_partition_key:
        return context.partition_key
    if context.has_partition_key_range:
        keys = context.partition_key_range
        return f"{keys.start}...{keys.end}"
    return None


def redis_publish_asset(analysis: dg.AssetsDefinition, *, per_market: bool = False) -> dg.AssetsDefinition:
    """``<analysis>_redis``: the newest ``as_of`` of each materialised partition of ``analysis`` in Redis
    (and one key per market when ``per_market``), through the ``SnapshotStore`` resource.

    A Redis outage does not fail the run (the Postgres write stands and the API serves from Postgres):
    it is logged and the materialisation reads ``published: failed: <reason>``; so does a Redis that lost
    its high-water marks while Postgres cannot say how far they went (nothing is pushed then).
    """
    name = analysis.key.path[-1]

    @dg.asset(
        name=f"{name}_redis",
        partitions_def=analysis.partitions_def,
        backfill_policy=analysis.backfill_policy,  # one policy per job
        ins={"stored": dg.AssetIn(key=analysis.key)},
        group_name=analysis.group_names_by_key[analysis.key],
        kinds={"redis"},
        description=f"The newest {name} snapshot in Redis ({'one key per market and ' if per_market else ''}the latest key), "
                    "published after the Postgres write; the API serves the newer of it and Postgres.",
    )
    def publish(context: dg.AssetExecutionContext, snapshots: SnapshotStore, stored: pd.DataFrame) -> dg.MaterializeResult:
        try:
            metadata = snapshots.publish(name, stored, run_id=context.run.run_id, partition=_partition(context), per_market=per_market)
        except (redis.RedisError, OSError, MarksNotRebuiltError) as exc:  # a cache outage must never fail a committed write
            reason = f"{type(exc).__name__}: {redact_text(str(exc))}"
            context.log.warning(f"{name}: Redis snapshot push failed, Postgres write stands: {reason}")
            metadata = {"published": f"failed: {reason}"}
        return dg.MaterializeResult(metadata=metadata)

    return publish
