"""An hourly analysis declared once, and everything Dagster runs of it built from that declaration.

A domain declares its ``Analysis`` and gets its asset, its ``<name>_redis`` publish step, its job and its schedule,
so adding an analysis is one domain folder and one line in ``definitions.py`` (docs/analyses.md). No
``from __future__ import annotations``: Dagster reads the asset function's annotations.
"""

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, Lookback, stored_ticks
from dantaro_assets.lib.checks import checked, pandera_check, schema_check_spec
from dantaro_assets.lib.postgres_io import DELETE_WINDOW, WriteMode
from dantaro_assets.lib.publishing import redis_publish_asset
from dantaro_assets.lib.run_settings import RunSettings
from dantaro_assets.operations.jobs import NO_RETRIES, asset_job, upbit_retry_policy
from dantaro_assets.operations.limits import LIVE, JobType
from dantaro_assets.operations.schedules import cadence_schedule, start_sensor
from dantaro_assets.partitions import analysis_ins, freshness, hourly_backfill, hourly_partitions
from dantaro_assets.settings import Settings

# An analysis job's candles_1m step reads what the stream stored and fetches only what it missed (markets.assets.MinuteSource).
MINUTES_FROM_STREAM = {"ops": {"candles_1m": {"config": {"source": "stream"}}}}


@dataclass(frozen=True)
class AnalysisRun:
    """One materialisation of an analysis: its partition window, ticks, inputs and parameters (what its schema and
    its metadata read)."""

    start: pd.Timestamp
    end: pd.Timestamp
    ticks: pd.DatetimeIndex
    inputs: AnalysisInputs
    params: Any
    run_settings: RunSettings


@dataclass(frozen=True)
class Analysis:
    """An hourly analysis: ``compute(inputs, ticks, params)`` (the contract of ``lib/analysis_inputs.py``) over its
    ``lookback``, every ``cadence`` seconds (the name of its ``Settings`` and ``RunSettings`` field), stored under
    ``primary_key`` once ``schema(run)`` passes, with ``metadata(run, result)`` beside the tick count. Its runs
    leave the run queue by ``priority`` (the worker's order: docs/operations.md) into the Celery ``queue``. An input
    beyond the lookback's is declared in ``ins`` (``{"optional": True}`` metadata when a partition may lack it) and,
    when its job fetches it, named in ``also_fetch``."""

    name: str
    description: str
    job_description: str
    lookback: Lookback
    primary_key: tuple[str, ...]
    cadence: str
    priority: int
    compute: Callable[[AnalysisInputs, pd.DatetimeIndex, Any], AnalysisResult]
    params: Callable[[RunSettings], Any]
    schema: Callable[[AnalysisRun], pa.DataFrameSchema]
    metadata: Callable[[AnalysisRun, AnalysisResult], Mapping[str, Any]] | None = None
    per_market: bool = False  # its Redis snapshot also has one key per market
    queue: str = LIVE  # a cadence run: never behind a backfill on a Celery worker
    # Inputs beyond its lookback's (``partitions.analysis_ins``), handed to ``AnalysisInputs.assemble`` by name, and the
    # assets its job materialises after ``candles_1m`` and before it (inputs only this analysis reads, e.g. order books).
    ins: Mapping[str, dg.AssetIn] = field(default_factory=dict)
    also_fetch: tuple[str, ...] = ()

    @cached_property
    def job_type(self) -> JobType:
        return JobType(self.name, self.priority, self.queue)

    @cached_property
    def asset(self) -> dg.AssetsDefinition:
        """The analysis's asset: the partition's stored ticks computed, checked, then stored (the IO manager replaces the hour)."""

        @dg.asset(
            name=self.name,
            partitions_def=hourly_partitions,
            backfill_policy=hourly_backfill,  # its job's candles_1m step's: one policy per job
            ins={**analysis_ins(self.lookback), **self.ins},
            metadata={"partition_expr": "as_of", "primary_key": list(self.primary_key), "write_mode": WriteMode.REPLACE.value},
            check_specs=[schema_check_spec(self.name)],
            retry_policy=NO_RETRIES,  # freshness from the cadence: definitions()
            group_name="analysis",
            kinds={"pandas", "postgres"},
            description=self.description,
        )
        def _analysis(context: dg.AssetExecutionContext, run_settings: RunSettings, **stored: pd.DataFrame) -> Iterator:
            window = context.partition_time_window
            start, end = pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")
            ticks = stored_ticks(start, end, getattr(run_settings, self.cadence), stored["candles_1m"])
            run = AnalysisRun(start, end, ticks, AnalysisInputs.assemble(self.lookback, ticks, **stored), self.params(run_settings), run_settings)
            result = self.compute(run.inputs, ticks, run.params)
            yield from checked(pandera_check(self.schema(run), result.frame))
            metadata = {"ticks": len(ticks), **(self.metadata(run, result) if self.metadata else {})}
            if len(ticks) and result.frame.empty:
                # every tick of stored candles yielded no row: the recomputation is the window's truth, even empty.
                # Without a tick nothing stored was computed from, and the IO manager refuses to empty the window.
                metadata[DELETE_WINDOW] = True
            yield dg.Output(result.frame, metadata=metadata)

        return _analysis

    @cached_property
    def publish(self) -> dg.AssetsDefinition:
        """``<name>_redis``: the newest snapshot in Redis after the Postgres write."""
        return redis_publish_asset(self.asset, per_market=self.per_market)

    def definitions(self, settings: Settings) -> dg.Definitions:
        """The asset (its freshness from the cadence), its publish step, the job completing the hour's 1-minute
        candles (and fetching ``also_fetch``) then computing and publishing, and its schedule: one cadence sets
        the cron, the freshness policy and, through ``run_settings``, the ticks."""
        seconds = getattr(settings, self.cadence)
        selection = ["candles_1m", *self.also_fetch, self.name, f"{self.name}_redis"]
        job = asset_job(f"{self.name}_job", self.job_type, selection, self.job_description, settings,
                        retry_policy=upbit_retry_policy(settings.run_retries), config=MINUTES_FROM_STREAM)
        return dg.Definitions(
            assets=[*dg.map_asset_specs(lambda spec: spec.replace_attributes(freshness_policy=freshness(seconds)), [self.asset]), self.publish],
            jobs=[job],
            schedules=[cadence_schedule(job, self.job_type, seconds, settings.worker_enabled, self.asset.key)],
            sensors=[start_sensor(job, self.job_type, self.asset.key, settings.worker_enabled)],
        )
