"""Dagster wiring of the recommendations and their outcomes: inputs, ticks, checks, metadata. Analysis lives elsewhere.

``recommendation_outcomes`` partition H grades the snapshots of hour H against the 25 hours after it, filled
in by later runs until it is final at H+25h.
"""

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import dagster as dg
import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, listed_at
from dantaro_assets.lib.checks import checked, pandera_check, schema_check_spec
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.lib.previews import latest_table
from dantaro_assets.lib.run_settings import RunSettings
from dantaro_assets.operations.analyses import Analysis, AnalysisRun
from dantaro_assets.partitions import days_back, freshness, hourly_partitions
from dantaro_assets.recommendations.analysis import (
    LOOKBACK,
    OUTCOMES_LOOKBACK,
    RecommendationParams,
    compute_recommendations,
    eligible_universe,
)
from dantaro_assets.recommendations.calibration import load_calibration
from dantaro_assets.recommendations.outcomes import (
    HIT_WINDOW,
    compute_outcomes,
    summarise_outcomes,
)
from dantaro_assets.recommendations.schemas import (
    outcomes_schema,
    recommendations_schema,
)
from dantaro_assets.recommendations.scorecard import (
    SCORECARD_SCHEMA,
    recent_outcomes,
    scorecard_report,
)
from dantaro_assets.recommendations.scorers import served_first
from dantaro_assets.recommendations.trade_plan import BEST_ASK, EXCLUDED, LAST_TRADE, NEGATIVE_EV

_KEY = ["as_of", "scorer", "market"]
_TABLE_COLUMNS = ["rank", "market", "score", "summary", "entry", "entry_from", "spread_bps", "target", "stop", "reward_risk",
                  "p_target_first", "expected_return_net", "expires_at", "regime", "caution"]


def recommendation_params(run_settings: RunSettings) -> RecommendationParams:
    """The analysis parameters under ``run_settings``: floors, the spread limit, every scorer with the served one first
    (the challengers in shadow), and the calibration table (DANTARO_CALIBRATION, else the shipped one)."""
    return RecommendationParams(run_settings.min_turnover_krw, run_settings.min_reward_risk, tuple(served_first(run_settings.scorer)),
                                max_spread_bps=run_settings.max_spread_bps,
                                calibration=load_calibration(Path(run_settings.calibration)) if run_settings.calibration
                                else load_calibration())


def _window(context: dg.AssetExecutionContext) -> tuple[pd.Timestamp, pd.Timestamp]:
    window = context.partition_time_window
    return pd.Timestamp(window.start).tz_convert("UTC"), pd.Timestamp(window.end).tz_convert("UTC")


def _warned(upbit_markets: pd.DataFrame, as_ofs: pd.DatetimeIndex) -> pd.DataFrame:
    """(as_of, market) pairs under the warning flag in the universe each tick uses (latest day <= as_of)."""
    pairs = []
    for as_of in as_ofs:
        listed = listed_at(upbit_markets, as_of)
        if listed is not None:
            pairs += [(as_of, market) for market in listed.index[listed["warning"].astype(bool)]]
    return pd.DataFrame(pairs, columns=["as_of", "market"]).astype({"as_of": "datetime64[ns, UTC]", "market": object})


def _schema(run: AnalysisRun) -> pa.DataFrameSchema:
    return recommendations_schema(run.start, run.end, _warned(run.inputs.universe, run.ticks), run.params.min_reward_risk,
                                  run.params.max_spread_bps)


# The metadata's universe counts of the newest tick, by the name each has in compute_recommendations' per-tick figures.
# "markets" is what the run processed (the job log's count): the eligible universe.
_COUNTS = {"universe_size": "eligible", "markets": "eligible", "listed": "listed", "excluded_warning": "excluded_warning",
           "excluded_turnover": "excluded_turnover", "excluded_history": "excluded_history", "excluded_spread": "excluded_spread",
           "excluded_reward_risk": "excluded_reward_risk", "excluded_negative_ev": "excluded_negative_ev"}


def _metadata(run: AnalysisRun, result: AnalysisResult) -> dict[str, Any]:
    latest = result.per_tick.iloc[-1] if len(result.per_tick) else None
    settings, instruments = run.run_settings, run.inputs.instruments
    served = result.frame[result.frame["scorer"] == settings.scorer]
    return {
        "latest_as_of": str(run.ticks[-1]) if len(run.ticks) else "none",
        **{name: int(latest[count]) if latest is not None else 0 for name, count in _COUNTS.items()},
        "excluded_spread_reason": f"the order book's spread is wider than DANTARO_MAX_SPREAD_BPS ({settings.max_spread_bps:g} bps)",
        "max_spread_bps": settings.max_spread_bps,
        "entry_from_best_ask": int((served["entry_from"] == BEST_ASK).sum()),  # the served picks of every tick
        "entry_from_last_trade": int((served["entry_from"] == LAST_TRADE).sum()),
        "excluded_reward_risk_reason": (f"no target within the horizon's reach offers {settings.min_reward_risk} reward:risk, "
                                        "or no room below the nearest resistance"),
        "excluded_negative_ev_reason": EXCLUDED[NEGATIVE_EV],
        "excluded_regime": int(latest["excluded_regime"]) if latest is not None else 0,
        "regime": str(latest["regime"]) if latest is not None else "none",
        "min_turnover_krw": settings.min_turnover_krw,
        "min_reward_risk": settings.min_reward_risk,
        "stored_tick_sizes": int(instruments["market"].nunique()) if instruments is not None else 0,
        "served_scorer": settings.scorer,
        "shadow_scorers": ", ".join(run.params.scorers[1:]),
        "latest_snapshot": latest_table(served, _TABLE_COLUMNS),
    }


RECOMMENDATIONS = Analysis(
    name="recommendations",
    description="Top KRW markets for short-term buying every cadence tick: 0-100 score, component scores, reasons, entry/target/stop; "
                "one list per scorer, the DANTARO_SCORER one served, the others in shadow.",
    job_description="Fetch the hour's 1-minute candles and the order books, then rank and publish coin recommendations.",
    lookback=LOOKBACK,
    primary_key=tuple(_KEY),
    cadence="recommendations_interval",
    priority=30,  # after market status (docs/operations.md: the worker's order)
    compute=compute_recommendations,
    params=recommendation_params,
    schema=_schema,
    metadata=_metadata,
    # the order book tops its job fetched at each tick: entries at the best ask. Optional: a backfill, or a run whose
    # fetch failed, has none, and its picks enter at the last trade.
    ins={"orderbook_top": dg.AssetIn(metadata={"optional": True})},
    also_fetch=("orderbook_top",),
)


@dg.asset(
    partitions_def=hourly_partitions,
    ins={
        "recommendations": dg.AssetIn(),
        # 1-minute candles from the minute lookback to the hit window's end (25 h after the hour)
        "candles_1m": dg.AssetIn(
            partition_mapping=dg.TimeWindowPartitionMapping(
                start_offset=-OUTCOMES_LOOKBACK.minute_hours, end_offset=int(HIT_WINDOW / pit.HOUR) + 1,
                allow_nonexistent_upstream_partitions=True,
            )
        ),
        "candles_1h": dg.AssetIn(partition_mapping=days_back(OUTCOMES_LOOKBACK.hourly_days)),
        "upbit_markets": dg.AssetIn(partition_mapping=days_back(OUTCOMES_LOOKBACK.universe_days)),
    },
    metadata={"partition_expr": "as_of", "primary_key": _KEY, "write_mode": WriteMode.REPLACE.value},
    check_specs=[schema_check_spec("recommendation_outcomes")],
    freshness_policy=freshness(3600),  # rescored every hour as horizons close
    group_name="analysis",
    kinds={"pandas", "postgres"},
    description="Net forward returns (1 h, 4 h, 24 h) of each scorer's recommendations of the hour vs the equal-weight universe, "
                "target/stop first hit, and the scorecard of every scorer over the last 7 and 30 days.",
)
def recommendation_outcomes(
    context: dg.AssetExecutionContext,
    postgres: PostgresResource,
    run_settings: RunSettings,
    recommendations: pd.DataFrame,
    candles_1m: pd.DataFrame,
    candles_1h: pd.DataFrame,
    upbit_markets: pd.DataFrame,
) -> Iterator:
    start, end = _window(context)
    as_ofs = pd.DatetimeIndex(recommendations["as_of"].drop_duplicates().sort_values())
    inputs = AnalysisInputs.assemble(OUTCOMES_LOOKBACK, as_ofs, candles_1m=candles_1m, candles_1h=candles_1h, upbit_markets=upbit_markets)
    universe = eligible_universe(inputs, as_ofs, run_settings.min_turnover_krw)
    outcomes = compute_outcomes(recommendations, candles_1m, universe, previous_close=_last_hourly_close(candles_1h, candles_1m))
    yield from checked(pandera_check(outcomes_schema(start, end), outcomes))
    summary = summarise_outcomes(outcomes[outcomes["scorer"] == run_settings.scorer])
    # the scorecard of every scorer over the stored outcomes, this partition's rows as just computed
    stored = recent_outcomes(postgres)
    stored = stored[(stored["as_of"] < start) | (stored["as_of"] >= end)]
    graded = [frame for frame in (stored, outcomes[stored.columns]) if len(frame)]
    card = scorecard_report(pd.concat(graded, ignore_index=True) if graded else stored, run_settings.scorer)
    data_end = candles_1m[pit.START].max() + pit.MINUTE if len(candles_1m) else None
    yield dg.Output(
        outcomes,
        metadata={
            **{k: (v if v is not None else "n/a") for k, v in summary.items()},
            "markets": int(outcomes["market"].nunique()),  # graded (the job log's count)
            "candles_until": str(data_end) if data_end is not None else "none",
            "final": bool(data_end is not None and data_end >= end + HIT_WINDOW),
            "served_scorer": run_settings.scorer,
            "scorecard": dg.MetadataValue.table([dg.TableRecord(row) for row in card["rows"]], schema=SCORECARD_SCHEMA),
        },
    )




def _last_hourly_close(candles_1h: pd.DataFrame, candles_1m: pd.DataFrame) -> pd.Series:
    """Each market's last stored hourly close before the first minute read: the price a market quiet since
    before the minute lookback carries into it (an hour's close is its last trade's)."""
    if candles_1m.empty:
        return pd.Series(dtype=float)
    before = candles_1h[candles_1h[pit.START] + pit.HOUR <= candles_1m[pit.START].min().floor("h")]
    return before.sort_values(pit.START).groupby(pit.MARKET)["close"].last()
