"""support_levels: an hourly partition of per-market levels, one snapshot every SUPPORT_LEVELS_INTERVAL seconds."""

from __future__ import annotations

from typing import Any

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult
from dantaro_assets.lib.point_in_time import MARKET
from dantaro_assets.lib.previews import latest_table
from dantaro_assets.operations.analyses import Analysis, AnalysisRun
from dantaro_assets.support_levels.analysis import LOOKBACK, LevelParams, compute_support_levels
from dantaro_assets.support_levels.schemas import support_levels_schema

PARAMS = LevelParams()
PREVIEW_MARKETS = 5


def _schema(run: AnalysisRun) -> pa.DataFrameSchema:
    return support_levels_schema(run.start, run.end, run.params.per_side)


def _metadata(run: AnalysisRun, result: AnalysisResult) -> dict[str, Any]:
    frame = result.frame
    return {
        "markets": int(frame[MARKET].nunique()),
        "levels": len(frame),
        "supports": int((frame["side"] == "support").sum()),
        "resistances": int((frame["side"] == "resistance").sum()),
        "latest": latest_table(_top_markets(frame, run.inputs), ["market", "side", "rank", "price", "level", "zone_low",
                                                                  "zone_high", "strength", "touches", "pivot"], rows=30),
    }


def _top_markets(frame: pd.DataFrame, inputs: AnalysisInputs) -> pd.DataFrame:
    """The newest snapshot's levels of the markets with the most KRW turnover in the minute lookback."""
    if frame.empty:  # no tick: nothing was read
        return frame
    turnover = inputs.history.minutes.groupby(MARKET)["value"].sum().sort_values(ascending=False)
    top = turnover.index[:PREVIEW_MARKETS]
    return frame[frame[MARKET].isin(top)].sort_values([MARKET, "side", "rank"], ascending=[True, False, True])


SUPPORT_LEVELS = Analysis(
    name="support_levels",
    description=("Nearest supports and resistances per market every SUPPORT_LEVELS_INTERVAL s: swing-point clusters, "
                 "volume profile nodes and floor pivots in ATR-scaled zones (docs: Analyses, Support levels)."),
    job_description="Fetch the hour's 1-minute candles, then compute and publish support/resistance levels.",
    lookback=LOOKBACK,
    primary_key=("as_of", "market", "side", "rank"),
    cadence="support_levels_interval",
    priority=20,  # after recommendations (docs/operations.md: the worker's order)
    compute=compute_support_levels,
    params=lambda _: PARAMS,
    schema=_schema,
    metadata=_metadata,
    per_market=True,
)
