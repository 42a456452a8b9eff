"""The project's definitions plus a one-step job that does nothing, for bench/launchers.py.

The no-op job's run worker pays the import of the real code location, as a market status run does, and
nothing else, so what it times is the launcher's overhead; market_status_job, from the project's own
definitions, is the real run whose tick-to-Redis each launcher is measured on.
"""

import dagster as dg

from dantaro_assets.definitions import defs as project_defs
from dantaro_assets.operations.limits import job_tags, memory_limited_executor


@dg.op
def tick() -> None:
    """Nothing: the run's cost is its launch and start-up."""


@dg.job(tags=job_tags("market_status"), executor_def=memory_limited_executor)
def tick_job() -> None:
    tick()


defs = dg.Definitions.merge(project_defs, dg.Definitions(jobs=[tick_job]))
