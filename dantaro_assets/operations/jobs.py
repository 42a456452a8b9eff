"""How every job is built: tags of its type, the run-limited executor, the Upbit steps' retries.

Each domain's ``build_defs(settings)`` calls these for its own jobs (``markets/definitions.py`` and
the others), so a job sits beside the assets it runs while the run limits stay one concern here.
Each hourly analysis job completes the hour's 1-minute candles before computing (over REST only what
``dantaro stream`` did not store: markets/seen.py).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import dagster as dg

from dantaro_assets.lib.dagster_internals import UnresolvedAssetJobDefinition
from dantaro_assets.operations.limits import JobType, run_limited_executor, timeout_tags
from dantaro_assets.settings import Settings


def upbit_retry_policy(retries: int) -> dg.RetryPolicy:
    """Step retries of the assets that call Upbit (``DANTARO_RUN_RETRIES``), on top of the client's own request retries."""
    return dg.RetryPolicy(max_retries=retries, delay=5, backoff=dg.Backoff.EXPONENTIAL, jitter=dg.Jitter.PLUS_MINUS)


def run_tags(job_type: JobType, settings: Settings) -> dict[str, str]:
    """A job's tags, which Dagster puts on each of its runs: its type's tags and the run timeout."""
    return {**job_type.tags(), **timeout_tags(settings.run_timeout)}


def run_executor(settings: Settings) -> dg.ExecutorDefinition:
    """The in-process executor holding ``DANTARO_RUN_MEMORY_MB`` and ``DANTARO_RUN_TIMEOUT``."""
    return run_limited_executor(settings.run_memory_mb, settings.run_timeout)


# Analyses and scoring are pure over their stored inputs: a retry would compute the same failure. Steps in
# a job with an op_retry_policy (the Upbit fetches' retries) keep this policy of their own.
NO_RETRIES = dg.RetryPolicy(max_retries=0)


def asset_job(
    name: str, job_type: JobType, keys: list[str], description: str, settings: Settings, *, retry_policy: dg.RetryPolicy | None = None,
    config: Mapping[str, Any] | None = None,
) -> UnresolvedAssetJobDefinition:
    """A job of asset keys (so it does not import the assets it runs), in one memory-capped process.

    ``retry_policy`` (public ``op_retry_policy``) is how a setting reaches step retries: Dagster applies
    it to every step of the job that declares no policy of its own. ``config`` is the run config of
    every run of the job (the launchpad shows it, and it can be edited there).
    """
    return dg.define_asset_job(
        name=name,
        selection=dg.AssetSelection.assets(*keys),
        config=config,
        tags=run_tags(job_type, settings),
        executor_def=run_executor(settings),
        op_retry_policy=retry_policy,
        description=description,
    )
