"""market_status: an hourly partition of snapshots, one every MARKET_STATUS_INTERVAL seconds."""

from __future__ import annotations

from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.analysis_inputs import AnalysisResult
from dantaro_assets.market_status.analysis import LOOKBACK, StatusParams, compute_market_status
from dantaro_assets.market_status.schemas import market_status_schema
from dantaro_assets.operations.analyses import Analysis, AnalysisRun

PARAMS = StatusParams()


def _schema(run: AnalysisRun) -> pa.DataFrameSchema:
    return market_status_schema(run.start, run.end)


def _metadata(_: AnalysisRun, result: AnalysisResult) -> dict[str, Any]:
    frame = result.frame
    return {
        "markets": int(frame["markets"].iloc[-1]) if len(frame) else 0,
        "latest_regime": frame["regime"].iloc[-1] if len(frame) else "none",
        "latest_score": float(frame["score"].iloc[-1]) if len(frame) else float("nan"),
        "latest": _latest_markdown(frame),
    }


def _latest_markdown(frame: pd.DataFrame) -> dg.MetadataValue:
    """The newest snapshot, one line per component, for the Dagster UI."""
    if frame.empty:
        return dg.MetadataValue.md("_no snapshot: the hour has no tick yet_")
    latest = frame.iloc[-1]
    rows = "\n".join(f"| {name} | {_format(value)} |" for name, value in latest.items())
    return dg.MetadataValue.md("| component | value |\n|---|---|\n" + rows)


def _format(value: object) -> str:
    if isinstance(value, pd.Timestamp):
        return value.strftime("%Y-%m-%d %H:%M UTC")
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1e6 else f"{value:,.0f}"
    return str(value)


MARKET_STATUS = Analysis(
    name="market_status",
    description=("Whole-market regime every MARKET_STATUS_INTERVAL s: breadth, KRW turnover, dispersion, BTC trend and "
                 "volatility, 0-100 score with its components (docs: Analyses, Market status)."),
    job_description="Fetch the hour's 1-minute candles, then compute and publish market status snapshots.",
    lookback=LOOKBACK,
    primary_key=("as_of",),
    cadence="market_status_interval",
    priority=40,  # first of all runs (docs/operations.md: the worker's order)
    compute=compute_market_status,
    params=lambda _: PARAMS,
    schema=_schema,
    metadata=_metadata,
)
