"""The project's definitions plus a one-step job that does nothing, for bench/launchers.py.

The no-op job's run worker pays the import of the real code location, as a market status run does, and
nothing else, so what it times is the launcher's overhead; market_status_job, from the project's own
definitions, is the real run whose tick-to-Redis each launcher is measured on.
"""

import dagster as dg

from dantaro_assets.definitions import defs as project_defs
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.operations.jobs import run_executor, run_tags
from dantaro_assets.settings import load_settings

_SETTINGS = load_settings()  # this file is a code location of its own: its entry point reads them


@dg.op
def tick() -> None:
    """Nothing: the run's cost is its launch and start-up."""


@dg.job(tags=run_tags(MARKET_STATUS.job_type, _SETTINGS), executor_def=run_executor(_SETTINGS))
def tick_job() -> None:
    tick()


defs = dg.Definitions.merge(project_defs, dg.Definitions(jobs=[tick_job]))
