"""support_levels: an hourly partition of per-market levels, one snapshot every SUPPORT_LEVELS_INTERVAL seconds."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, stored_ticks
from dantaro_assets.lib.checks import checked, pandera_check, schema_check_spec
from dantaro_assets.lib.point_in_time import MARKET
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.lib.previews import latest_table
from dantaro_assets.partitions import analysis_ins, freshness, hourly_backfill, hourly_partitions
from dantaro_assets.settings import get_settings
from dantaro_assets.support_levels.analysis import LOOKBACK, LevelParams, compute_support_levels
from dantaro_assets.support_levels.schemas import support_levels_schema

_SETTINGS = get_settings()
PARAMS = LevelParams()
PREVIEW_MARKETS = 5


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill,  # its job's candles_1m step's: one policy per job
    ins=analysis_ins(LOOKBACK),
    metadata={
        "partition_expr": "as_of",
        "primary_key": ["as_of", "market", "side", "rank"],
        "write_mode": WriteMode.REPLACE.value,
    },
    check_specs=[schema_check_spec("support_levels")],
    freshness_policy=freshness(_SETTINGS.support_levels_interval),
    group_name="analysis",
    kinds={"pandas", "postgres"},
    description=("Nearest supports and resistances per market every SUPPORT_LEVELS_INTERVAL s: swing-point clusters, "
                 "volume profile nodes and floor pivots in ATR-scaled zones (README: Support levels)."),
)
def support_levels(context: dg.AssetExecutionContext, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame,
                   candles_1d: pd.DataFrame, upbit_markets: pd.DataFrame, upbit_instruments: pd.DataFrame) -> Iterator:
    window = context.partition_time_window
    start, end = pd.Timestamp(window.start), pd.Timestamp(window.end)
    ticks = stored_ticks(start, end, _SETTINGS.support_levels_interval, candles_1m)
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=candles_1m, candles_1h=candles_1h, candles_1d=candles_1d,
                                     upbit_markets=upbit_markets, upbit_instruments=upbit_instruments)
    frame = compute_support_levels(inputs, ticks, PARAMS)
    yield from checked(pandera_check(support_levels_schema(start, end, PARAMS.per_side), frame))
    yield dg.Output(frame, metadata={
        "ticks": len(ticks),
        "markets": int(frame[MARKET].nunique()),
        "levels": len(frame),
        "supports": int((frame["side"] == "support").sum()),
        "resistances": int((frame["side"] == "resistance").sum()),
        "latest": latest_table(_top_markets(frame, inputs), ["market", "side", "rank", "price", "level", "zone_low",
                                                              "zone_high", "strength", "touches", "pivot"], rows=30),
    })


def _top_markets(frame: pd.DataFrame, inputs: AnalysisInputs) -> pd.DataFrame:
    """The newest snapshot's levels of the markets with the most KRW turnover in the minute lookback."""
    turnover = inputs.history.minutes.groupby(MARKET)["value"].sum().sort_values(ascending=False)
    top = turnover.index[:PREVIEW_MARKETS]
    return frame[frame[MARKET].isin(top)].sort_values([MARKET, "side", "rank"], ascending=[True, False, True])
