"""market_status: an hourly partition of snapshots, one every MARKET_STATUS_INTERVAL seconds."""

from collections.abc import Iterator

import dagster as dg
import pandas as pd

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, stored_ticks
from dantaro_assets.lib.checks import checked, pandera_check, schema_check_spec
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.market_status.analysis import LOOKBACK, StatusParams, compute_market_status
from dantaro_assets.market_status.schemas import market_status_schema
from dantaro_assets.partitions import analysis_ins, freshness, hourly_backfill, hourly_partitions
from dantaro_assets.settings import get_settings

_SETTINGS = get_settings()
PARAMS = StatusParams()


@dg.asset(
    partitions_def=hourly_partitions,
    backfill_policy=hourly_backfill,  # its job's candles_1m step's: one policy per job
    ins=analysis_ins(LOOKBACK),
    metadata={
        "partition_expr": "as_of",
        "primary_key": ["as_of"],
        "write_mode": WriteMode.REPLACE.value,
    },
    check_specs=[schema_check_spec("market_status")],
    freshness_policy=freshness(_SETTINGS.market_status_interval),
    group_name="analysis",
    kinds={"pandas", "postgres"},
    description=("Whole-market regime every MARKET_STATUS_INTERVAL s: breadth, KRW turnover, dispersion, BTC trend and "
                 "volatility, 0-100 score with its components (README: Market status)."),
)
def market_status(context: dg.AssetExecutionContext, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame,
                  upbit_markets: pd.DataFrame) -> Iterator:
    window = context.partition_time_window
    start = pd.Timestamp(window.start)
    ticks = stored_ticks(window.start, window.end, _SETTINGS.market_status_interval, candles_1m)
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=candles_1m, candles_1h=candles_1h, upbit_markets=upbit_markets)
    frame = compute_market_status(inputs, ticks, PARAMS)
    yield from checked(pandera_check(market_status_schema(start, pd.Timestamp(window.end)), frame))
    yield dg.Output(frame, metadata={
        "ticks": len(frame),
        "markets": int(frame["markets"].iloc[-1]) if len(frame) else 0,
        "latest_regime": frame["regime"].iloc[-1] if len(frame) else "none",
        "latest_score": float(frame["score"].iloc[-1]) if len(frame) else float("nan"),
        "latest": _latest_markdown(frame),
    })


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
