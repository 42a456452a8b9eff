"""Small jobs carrying the real job tags and executor, for the run-queue, timeout and memory tests: one waiting job per
job type of the project's definitions (``<job type>_job``), tagged as that type's real job is."""

import os
import time

import dagster as dg
import pandas as pd

from dantaro_assets.definitions import defs as project_defs
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.operations.jobs import run_executor, run_tags
from dantaro_assets.operations.limits import JOB_TAG
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.resources import build_resources
from dantaro_assets.settings import load_settings

SETTINGS = load_settings()  # a code location of its own, loaded by the test's workspace: it reads them as definitions.py does
EXECUTOR = run_executor(SETTINGS)
# the storing jobs outlast the workers' short DANTARO_RUN_TIMEOUT: a broker restart happens while they run
STORING = SETTINGS.model_copy(update={"run_timeout": 120})
STORED_ROWS = 3
# every job type of the project's definitions -> the tags its runs carry (priority, job type, queue, timeout)
JOB_TAGS = {job.run_tags[JOB_TAG]: dict(job.run_tags) for job in project_defs.resolve_all_job_defs() if JOB_TAG in job.run_tags}

# the job types whose runs fetch from Upbit: their steps claim an upbit_api slot, as the candle assets do
FETCHING = {"market_status", "recommendations", "support_levels", "daily_candles", "history"}


_SECONDS = {"seconds": dg.Field(float, default_value=2.0)}


def _sleep(context: dg.OpExecutionContext) -> None:
    time.sleep(context.op_config["seconds"])


@dg.op(config_schema=_SECONDS)
def wait(context: dg.OpExecutionContext) -> None:
    _sleep(context)


@dg.op(config_schema=_SECONDS, pool="upbit_api")
def fetch(context: dg.OpExecutionContext) -> None:
    """Stands for a fetching step: holds an upbit_api slot while it waits."""
    _sleep(context)


@dg.op(config_schema={"megabytes": int})
def allocate(context: dg.OpExecutionContext) -> int:
    block = bytearray(context.op_config["megabytes"] * 1024 * 1024)
    return len(block)


@dg.op
def crash() -> None:
    """The run worker dies without reporting, as when the OS kills it (exit status of a SIGKILL)."""
    os._exit(137)


def _waiting_job(job_type: str) -> dg.JobDefinition:
    step = fetch.alias("wait") if job_type in FETCHING else wait

    @dg.job(name=f"{job_type}_job", tags=JOB_TAGS[job_type], executor_def=EXECUTOR)
    def _job() -> None:
        step()

    return _job


@dg.job(tags=run_tags(MARKET_STATUS.job_type, SETTINGS), executor_def=EXECUTOR)
def allocating_job() -> None:
    allocate()


@dg.job(tags=run_tags(MARKET_STATUS.job_type, SETTINGS), executor_def=EXECUTOR)
def crashing_job() -> None:
    crash()


@dg.asset(
    partitions_def=hourly_partitions,
    config_schema=_SECONDS,
    io_manager_key="postgres_io_manager",  # the other jobs' outputs stay with Dagster's default IO manager
    metadata={"write_mode": "replace", "partition_expr": "hour", "primary_key": ["hour", "row"]},
)
def stored_hour(context: dg.AssetExecutionContext) -> pd.DataFrame:
    """Waits, then stores ``STORED_ROWS`` rows of its hour through the project's IO manager, each naming the computing run."""
    _sleep(context)
    hour = context.partition_time_window.start
    return pd.DataFrame({"hour": [hour] * STORED_ROWS, "row": range(STORED_ROWS), "run_id": context.run_id})


def _storing_job(job_type):
    return dg.define_asset_job(
        f"storing_{job_type.name}_job", selection=[stored_hour], tags=run_tags(job_type, STORING), executor_def=run_executor(STORING)
    )


defs = dg.Definitions(
    assets=[stored_hour],
    jobs=[*(_waiting_job(job_type) for job_type in JOB_TAGS), allocating_job, crashing_job, _storing_job(MARKET_STATUS.job_type),
          _storing_job(RECOMMENDATIONS.job_type)],
    resources={"postgres_io_manager": build_resources(SETTINGS)["io_manager"]},
)
