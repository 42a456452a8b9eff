"""The job log's market count read from real runs' materialisation metadata (``api/job_log.py``)."""

from __future__ import annotations

import dagster as dg

from dantaro_assets.api.job_log import JobLog
from dantaro_assets.markets.jobs import HISTORY_TYPE
from dantaro_assets.recommendations.assets import RECOMMENDATIONS


@dg.asset(name="candles_1m")
def fetched_candles() -> dg.MaterializeResult:
    """A candle step that fetched every market of the universe over REST."""
    return dg.MaterializeResult(metadata={"markets_requested": 250, "markets_returned": 250})


@dg.asset(name="recommendations", deps=[fetched_candles])
def analysed() -> dg.MaterializeResult:
    """The analysis after it, which processed the markets that passed its floors."""
    return dg.MaterializeResult(metadata={"markets": 146, "picks": 20})


def test_a_run_counts_the_markets_its_analysis_processed_not_the_candles_it_fetched(instance):
    """The count must not depend on whether the candle step fetched (REST) or read the stream (0 fetched)."""
    analysis_run = dg.materialize([fetched_candles, analysed], instance=instance, tags=RECOMMENDATIONS.job_type.tags())
    fetch_only = dg.materialize([fetched_candles], instance=instance, tags=HISTORY_TYPE.tags())
    jobs = {entry["job_id"]: entry for entry in JobLog(instance).entries()}
    assert jobs[analysis_run.run_id]["symbols_processed"] == 146
    assert jobs[fetch_only.run_id]["symbols_processed"] == 250  # a run with no analysis: the markets its fetch returned
