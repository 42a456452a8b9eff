"""A one-step job in a code location that imports the project's definitions, for bench/launchers.py.

The import is the point: a run worker pays it on start-up, as a market status run does; the step itself
does nothing, so what is timed is the launcher's overhead.
"""

import dagster as dg

import dantaro_assets.definitions  # noqa: F401  (the start-up cost of the real code location)
from dantaro_assets.operations.limits import job_tags, memory_limited_executor


@dg.op
def tick() -> None:
    """Nothing: the run's cost is its launch and start-up."""


@dg.job(tags=job_tags("market_status"), executor_def=memory_limited_executor)
def tick_job() -> None:
    tick()


defs = dg.Definitions(jobs=[tick_job])
