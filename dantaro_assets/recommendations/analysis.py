"""Short-term buy recommendations: documented scoring rules over point-in-time candles, vectorised over markets.

Each tick sees only candles closed before it; every named scorer ranks the eligible universe, the top N get a
placeable plan with its measured chance and expected return, and the regime gates the list. The universe
rule, scoring and plans: docs/analyses.md, "Recommendations".
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import CAUTION_FLAGS, AnalysisInputs, AnalysisResult, Lookback, book_at, listed_at, ticks_at
from dantaro_assets.market_status import analysis as market_status
from dantaro_assets.recommendations import trade_plan
from dantaro_assets.recommendations.calibration import Calibration, load_calibration
from dantaro_assets.recommendations.scorers import (
    COMPONENTS,
    FEATURE_LAGS,
    SCORERS,
    component_scores,
    score_all,
)
from dantaro_assets.support_levels import analysis as support_levels

HOURLY_BARS = 240
MIN_HISTORY_BARS = 50
TOP_N = 20
TURNOVER_WINDOW = pd.Timedelta(hours=24)
SURGE_WINDOW = pd.Timedelta(hours=1)
_UTC = pd.DatetimeTZDtype("ns", "UTC")
RECOMMENDATION_COLUMNS = [
    "as_of", "scorer", "rank", "market", "score", *COMPONENTS, "reasons", "summary", "entry", "target", "stop", "reward_risk",
    "p_target_first", "expected_return_net", "horizon_hours", "expires_at", "entry_from", "spread_bps", "tick_size", "regime", "caution",
]  # fmt: skip


_LEVEL_PARAMS, _STATUS_PARAMS = support_levels.LevelParams(), market_status.StatusParams()


@dataclass(frozen=True)
class RecommendationParams:
    """The universe floor, the placed prices' floor and the scorers (the settings' values: they have no default
    here), the list's length, the calibration table, and the levels and regime rules the picks use (support
    levels' and market status' own parameters)."""

    min_turnover_krw: float  # DANTARO_MIN_TURNOVER_KRW
    min_reward_risk: float  # DANTARO_MIN_REWARD_RISK
    scorers: tuple[str, ...]  # every one ranks its list; the first's counts are the tick's (DANTARO_SCORER first)
    top_n: int = TOP_N
    max_spread_bps: float = math.inf  # DANTARO_MAX_SPREAD_BPS: a market whose book is wider is not recommended
    calibration: Calibration = field(default_factory=load_calibration)
    levels: support_levels.LevelParams = _LEVEL_PARAMS
    status: market_status.StatusParams = _STATUS_PARAMS

    @property
    def lookback(self) -> Lookback:
        return lookback(self.levels, self.status)


def lookback(levels: support_levels.LevelParams = _LEVEL_PARAMS, status: market_status.StatusParams = _STATUS_PARAMS) -> Lookback:
    """The levels' and the regime's reach, and daily bars of the day before and the one before it. The 24 h
    turnover reads no day of minutes: its closed hours come from candles_1h (``analysis_inputs.Turnover``)."""
    return Lookback.covering(levels.lookback, status.lookback, Lookback(minute_hours=2, hourly_days=0, daily_days=2))


REGIMES = ("risk_on", "neutral", "risk_off", "unknown")  # market_status's, and unknown without a 60-minute return
RISK_OFF_MAX_PICKS = 3
# From the recorded markets (bench/regime.py, docs/analyses.md "Recommendations"): in risk_off hours the top pick
# trailed the universe at 1 h, 4 h and 24 h and the score's rank IC was negative at every horizon, so
# risk_off cuts the list to a shortlist. No score floor: a floor would lean on a score that ranked the
# wrong way there, and an empty list would leave the API serving the previous (older) snapshot.
REGIME_MAX_PICKS: dict[str, int] = {"risk_off": RISK_OFF_MAX_PICKS}  # other regimes: top_n


LOOKBACK = lookback()
# The outcomes' benchmark universe is the recommendations' (the same 24 h turnover rule): candles_1h of
# the day before for the closed hours, 1-minute candles from the same minute lookback.
OUTCOMES_LOOKBACK = Lookback(minute_hours=LOOKBACK.minute_hours, hourly_days=1)


@dataclass
class UniverseCounts:
    """How the tradable universe of one tick came about: the materialisation's counts."""

    listed: int = 0
    excluded_warning: int = 0
    excluded_turnover: int = 0
    excluded_history: int = 0
    eligible: int = 0
    excluded_spread: int = 0  # eligible, but its book's spread is wider than max_spread_bps
    excluded_reward_risk: int = 0  # eligible, but no target within reach offers the floor (or no room, no stop)
    excluded_negative_ev: int = 0  # placeable, but plans like it lost money net of fees (the first scorer's)
    excluded_regime: int = 0  # recommendable, but left out by the regime's policy


class TickResult(NamedTuple):
    """One tick's recommendations: each scorer's top N, every eligible market's features and scores, the trade
    plan of every eligible market per horizon (column ``horizon``), the universe counts and the support levels
    the plans come from."""

    picks: pd.DataFrame
    scored: pd.DataFrame
    counts: UniverseCounts
    levels: pd.DataFrame
    plans: pd.DataFrame


def regime_at(inputs: AnalysisInputs, as_of: pd.Timestamp, params: market_status.StatusParams = _STATUS_PARAMS) -> str:
    """The market's regime at as_of by market_status's rule (``unknown`` when no 60-minute return exists)."""
    try:
        status = market_status.compute_market_status(inputs, pd.DatetimeIndex([as_of]), params).frame
    except ValueError:  # the minutes do not reach 60 minutes before the tick
        return "unknown"
    return str(status["regime"].iloc[0]) if len(status) and status["markets"].iloc[0] > 0 else "unknown"


def universe_at(inputs: AnalysisInputs, as_of: pd.Timestamp, min_turnover_krw: float) -> tuple[pd.DataFrame, UniverseCounts]:
    """Listed markets of the latest day <= as_of that pass the warning and turnover filters, and the counts."""
    listed = listed_at(inputs.universe, as_of)
    if listed is None:
        return inputs.universe.iloc[:0].set_index(pit.MARKET).assign(turnover_24h=pd.Series(dtype=float)), UniverseCounts()
    # KRW traded over the 24 h before as_of, scaled up from the hours actually stored (a fresh install)
    hours = inputs.turnover.hours_stored(as_of - TURNOVER_WINDOW, as_of)
    traded = inputs.turnover.between(as_of - TURNOVER_WINDOW, as_of).reindex(listed.index).fillna(0.0) * (24.0 / hours)
    listed = listed.assign(turnover_24h=traded)
    warning = listed["warning"].astype(bool)
    thin = ~warning & (traded < min_turnover_krw)
    counts = UniverseCounts(listed=len(listed), excluded_warning=int(warning.sum()), excluded_turnover=int(thin.sum()))
    return listed[~warning & ~thin], counts


def eligible_universe(inputs: AnalysisInputs, as_ofs: pd.DatetimeIndex, min_turnover_krw: float) -> pd.DataFrame:
    """(as_of, market) pairs passing the warning and turnover filters: the benchmark universe of the outcomes.

    The history filter (``MIN_HISTORY_BARS`` hourly bars) is left out: it needs the hourly series and
    only drops markets listed in the last two days.
    """
    if len(as_ofs) == 0:
        return pd.DataFrame({"as_of": pd.Series(dtype=_UTC), "market": pd.Series(dtype=object)})
    frames = [pd.DataFrame({"as_of": as_of, "market": universe_at(inputs, as_of, min_turnover_krw)[0].index})
              for as_of in as_ofs]
    return pd.concat(frames, ignore_index=True).astype({"as_of": _UTC, "market": object})


def _last_rows(frame: pd.DataFrame, lag: int = 0) -> np.ndarray:
    """Index of each market's last row (``lag`` rows earlier, or -1 if the market is shorter)."""
    starts = indicators.group_starts(frame[pit.MARKET])
    last = starts[1:] - 1 - lag
    return np.where(last >= starts[:-1], last, -1)


def hourly_features(hourly: pd.DataFrame) -> pd.DataFrame:
    """Indicator values at the newest (possibly forming) hour of each market, indexed by market."""
    bars = hourly.groupby(pit.MARKET, sort=False).tail(HOURLY_BARS).reset_index(drop=True)
    ema20 = indicators.ema(bars, 20).to_numpy()
    ema50 = indicators.ema(bars, 50).to_numpy()
    rsi = indicators.rsi(bars, 14).to_numpy()
    atr = indicators.atr(bars, 14).to_numpy()
    last, earlier = _last_rows(bars), _last_rows(bars, lag=3)
    take = lambda values, rows: np.where(rows >= 0, values[np.clip(rows, 0, None)], np.nan)
    sizes = np.diff(indicators.group_starts(bars[pit.MARKET]))
    return pd.DataFrame(
        {
            "bars": sizes,
            "close": take(bars["close"].to_numpy(), last),
            "ema20": take(ema20, last),
            "ema50": take(ema50, last),
            "rsi": take(rsi, last),
            "rsi_3h_ago": take(rsi, earlier),
            "atr": take(atr, last),
            **{f"close_{lag}h_ago": take(bars["close"].to_numpy(), _last_rows(bars, lag=lag)) for lag in FEATURE_LAGS},
        },
        index=pd.Index(bars[pit.MARKET].to_numpy()[np.clip(last, 0, None)], name=pit.MARKET),
    )


def nearest_levels(levels: pd.DataFrame, entry: pd.Series) -> pd.DataFrame:
    """Per market: the nearest support zone below the entry, the zone the price trades in (where it starts at or
    under the entry), the zone the stop goes under (that one, else the support), and the nearest resistance zone's
    bottom above the entry.

    ``levels`` is support_levels' output (side ``support`` / ``at_price`` / ``resistance``, zones on the grid),
    sided at the last price. The plan is placed at the entry, which is the best ask when a book was fetched after
    the tick and can lie under that price (it fell meanwhile): every level is taken on its side of the entry, as
    the resistances are, so the stop goes under a zone below the buy and the summary says so truly.
    """
    buy = levels[pit.MARKET].map(entry)

    def zone(side: str, keep: pd.Series, pick: str) -> pd.DataFrame:
        rows = levels[(levels["side"] == side) & keep].sort_values("zone_low")
        return rows.groupby(pit.MARKET)[["zone_low", "zone_high"]].agg(pick).reindex(entry.index)

    support = zone("support", levels["zone_high"] < buy, "last")
    inside = zone("at_price", levels["zone_low"] <= buy, "first")
    targets = trade_plan.resistance_targets(levels, entry)
    resistance = targets[targets["order"] == 1].set_index(pit.MARKET)["target_level"]
    in_zone = inside["zone_low"].notna()
    return pd.DataFrame({
        "support_low": support["zone_low"], "support_high": support["zone_high"],
        "zone_low": inside["zone_low"], "zone_high": inside["zone_high"],
        "stop_zone_low": inside["zone_low"].where(in_zone, support["zone_low"]),
        "stop_zone": np.where(in_zone, "at_price", np.where(support["zone_low"].notna(), "support", None)),
        "resistance_low": resistance.reindex(entry.index),
    }, index=entry.index)


def _price_text(value: float, tick: float) -> str:
    """A price as people read it: thousands separated, as many decimals as the tick has."""
    decimals = max(0, -int(np.floor(np.log10(tick)))) if np.isfinite(tick) and tick > 0 else 2
    return f"{value:,.{decimals}f}"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _pct(value: float, reference: float) -> float:
    return 100.0 * (value / reference - 1.0)


STOP_NOTE_ATR = f"{trade_plan.STOP_BELOW_SUPPORT_ATR:g}"


def plan_summary(market: str, row: pd.Series, regime: str, cautions: list[str]) -> str:
    """One line a trader reads: the plan first (every price the field's, on the grid; horizon, chance, expected
    return), then the levels its target and stop come from (each named on its side of the buy), then the market.

    ``parse_summary`` (recommendations/schemas.py) reads it back; the blocking check compares it with the fields.
    """
    tick, entry = row["tick_size"], row["entry"]
    price = lambda value: _price_text(value, tick)  # noqa: E731
    flags = f"; caution: {', '.join(c.replace('_', ' ') for c in cautions)}" if cautions else ""
    plan = (f"buy {price(entry)}, target {price(row['target'])} ({_pct(row['target'], entry):+.2f}%) in {row['horizon_hours']} h, "
            f"{100 * row['p_target_first']:.0f}% chance first, stop {price(row['stop'])} ({_pct(row['stop'], entry):+.2f}%), "
            f"reward:risk {row['reward_risk']:.2f}, expected {100 * row['expected_return_net']:+.2f}% net of fees")
    order = int(row["target_order"])
    if order == 0:
        target_note = f"target at the {row['horizon_hours']} h reach ({row['reach_atr']:.1f} ATR), no resistance within it"
    else:
        target_note = f"target at resistance {price(row['target_level'])}"
        if order > 1:
            target_note += (f", the {_ordinal(order)} above the buy; the nearest, resistance {price(row['resistance_low'])} "
                            f"({_pct(row['resistance_low'], entry):+.2f}%), is too near for the floor")
    if row["stop_from"] == "at_price":
        stop_note = (f"stop {STOP_NOTE_ATR} ATR under zone {price(row['zone_low'])}-{price(row['zone_high'])}, "
                     "the zone the price trades in")
    elif row["stop_from"] == "support":
        stop_note = (f"stop {STOP_NOTE_ATR} ATR under support {price(row['support_low'])}-{price(row['support_high'])} "
                     f"({_pct(row['support_high'], entry):+.2f}%)")
    else:
        stop_note = f"stop {trade_plan.STOP_DEFAULT_ATR:g} ATR under the buy, no support below"
    trend = "uptrend above EMA20" if row["price"] > row["ema20"] and row["ema20"] > row["ema50"] else (
        "above EMA20" if row["price"] > row["ema20"] else "below EMA20")
    direction = "rising" if row["rsi"] > row["rsi_3h_ago"] else "falling"
    return (f"{market} {row['score']:.0f} ({regime.replace('_', '-')} market{flags}): {plan}; {target_note}; {stop_note}; "
            f"{trend}, RSI {row['rsi']:.0f} {direction}, volume {row['surge']:.1f}x")


def _reasons(picks: pd.DataFrame, regime: str) -> list[dict]:
    """Machine-readable reasons (a JSON object: jsonb in Postgres, nested in the Redis payload): only for the top N,
    so a loop is fine. Level prices are the levels' own (on the grid)."""
    reasons = []
    for _, row in picks.iterrows():
        entry = row["entry"]
        support_pct = _pct(row["price"], row["support_high"]) if pd.notna(row["support_high"]) else None
        resistance_pct = _pct(row["resistance_low"], row["price"]) if pd.notna(row["resistance_low"]) else None
        detail = {
            "trend": {"score": _r(row["trend"]), "price": row["price"], "ema20": _r(row["ema20"]), "ema50": _r(row["ema50"])},
            "momentum": {"score": _r(row["momentum"]), "rsi14": _r(row["rsi"]), "rsi14_change_3h": _r(row["rsi"] - row["rsi_3h_ago"])},
            "volume_surge": {"score": _r(row["volume_surge"]), "ratio": _r(row["surge"]), "turnover_24h_krw": _r(row["turnover_24h"])},
            "support_distance": {"score": _r(row["support_distance"]), "support": _price(row["support_high"]),
                                 "support_low": _price(row["support_low"]), "pct_above": _r(support_pct)},
            "resistance_distance": {"score": _r(row["resistance_distance"]), "resistance": _price(row["resistance_low"]),
                                    "pct_below": _r(resistance_pct)},
            "volatility": {"score": _r(row["volatility"]), "atr14_pct": _r(100.0 * row["atr"] / row["price"])},
            "plan": {"target_level": _price(row["target_level"]), "target_resistance": int(row["target_order"]) or None,
                     "stop_from": row["stop_from"], "zone_low": _price(row["zone_low"]), "zone_high": _price(row["zone_high"]),
                     "target_pct": _r(_pct(row["target"], entry)), "stop_pct": _r(_pct(row["stop"], entry)),
                     "target_atr": _r(row["target_atr"]), "stop_atr": _r(row["stop_atr"]), "reach_atr": _r(row["reach_atr"]),
                     "reward_risk": _r(row["reward_risk"]), "tick_size": row["tick_size"], "regime": regime},
        }  # fmt: skip
        json.dumps(detail, allow_nan=False)  # raises on NaN/inf: every figure must be a real number or None
        reasons.append(detail)
    return reasons


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def _price(value: float | None) -> float | None:
    """A price as stored (on the grid already): unrounded, None where there is none."""
    return None if value is None or not np.isfinite(value) else float(value)


def recommend_at(inputs: AnalysisInputs, as_of: pd.Timestamp, params: RecommendationParams,
                 regime: str | None = None, entry: pd.Series | None = None, entry_from: str | None = None,
                 spread_bps: pd.Series | None = None) -> TickResult:
    """One tick: each of ``params.scorers``' top-N recommendations, every eligible market's scores and trade
    plan per horizon, the counts and the support levels.

    ``regime`` is the market's regime at as_of when the caller has it (computed from the inputs otherwise);
    ``entry`` the price a buyer can get per market where known, named ``entry_from`` (``trade_plan.entry_prices``), and
    ``spread_bps`` its book's spread: a market wider than ``params.max_spread_bps`` is not recommended. The scores
    frame has v1's components and one ``score_<name>`` column per scorer of ``SCORERS``; the counts'
    ``excluded_negative_ev`` and ``excluded_regime`` are the first scorer's.
    """
    universe, counts = universe_at(inputs, as_of, params.min_turnover_krw)
    every_hour = inputs.history.hourly(as_of)
    hourly = every_hour[every_hour[pit.MARKET].isin(universe.index)]
    if hourly.empty:
        counts.excluded_history += len(universe)
        return TickResult(_empty_recommendations(), pd.DataFrame(), counts, support_levels.empty_levels(), pd.DataFrame())
    features = hourly_features(hourly).reindex(universe.index)
    enough = features["bars"].fillna(0) >= MIN_HISTORY_BARS
    counts.excluded_history = int((~enough).sum())
    counts.eligible = int(enough.sum())
    features, universe = features[enough], universe[enough]
    spread = (spread_bps if spread_bps is not None else pd.Series(dtype=float)).reindex(features.index)
    wide = spread > params.max_spread_bps
    counts.excluded_spread = int(wide.sum())
    features, universe = features[~wide].assign(spread_bps=spread[~wide]), universe[~wide]
    if features.empty:
        return TickResult(_empty_recommendations(), pd.DataFrame(), counts, support_levels.empty_levels(), pd.DataFrame())
    price = features["close"].rename("price")
    features = features.assign(price=price, turnover_24h=universe["turnover_24h"])
    last_hour = inputs.turnover.between(as_of - SURGE_WINDOW, as_of).reindex(features.index)
    features["surge"] = last_hour / (features["turnover_24h"] / 24.0)
    daily = inputs.history.daily(as_of, every_hour)
    stored_ticks = ticks_at(inputs.instruments, as_of)
    levels = support_levels.levels_at(hourly[hourly[pit.MARKET].isin(features.index)], daily, price, as_of, params.levels, stored_ticks)
    features = features.join(nearest_levels(levels, trade_plan.entry_prices(price, stored_ticks, entry, entry_from)["entry"]))
    scored = features.join(component_scores(features))
    scored = scored.join(score_all(features).add_prefix("score_")).join(universe.reindex(columns=CAUTION_FLAGS, fill_value=False))
    regime = regime_at(inputs, as_of, params.status) if regime is None else regime
    plans = {}
    for horizon in sorted({SCORERS[name].horizon_hours for name in params.scorers}):
        reach = params.calibration.reach_atr(horizon, params.min_reward_risk)
        plans[horizon] = trade_plan.plan_trades(scored, levels, stored_ticks, params.min_reward_risk, reach, entry,
                                                entry_from).assign(horizon_hours=horizon)
    placeable = pd.concat([scored.join(plan[plan["excluded"].isna()], how="inner").assign(scorer=name)
                           for name, plan in ((name, plans[SCORERS[name].horizon_hours]) for name in params.scorers)])
    placeable = placeable.assign(**_expected(params.calibration, placeable, regime))  # by position: a market repeats per scorer
    picks = []
    for number, name in enumerate(params.scorers):
        plan = plans[SCORERS[name].horizon_hours]
        mine = placeable[placeable["scorer"] == name]
        profitable = mine[mine["expected_return_net"] > 0]
        listed = _top(profitable.assign(score=profitable[f"score_{name}"]), as_of, params.top_n, regime, scorer=name)
        picks.append(listed)
        if number == 0:
            counts.excluded_reward_risk = int(plan["excluded"].notna().sum())
            counts.excluded_negative_ev = len(mine) - len(profitable)
            counts.excluded_regime = min(len(profitable), params.top_n) - len(listed)
    every_plan = pd.concat([plan.rename_axis(pit.MARKET).reset_index() for plan in plans.values()], ignore_index=True)
    return TickResult(pd.concat(picks, ignore_index=True), scored, counts, levels, every_plan)


def _expected(calibration: Calibration, plans: pd.DataFrame, regime: str) -> dict[str, np.ndarray]:
    """``p_target_first`` and ``expected_return_net`` of placeable plans as their ``scorer`` would list them (one
    lookup for every scorer's plans: a plan's chance depends on the scorer that ranks it)."""
    if plans.empty:
        return {"p_target_first": np.array([]), "expected_return_net": np.array([])}
    expected = calibration.expected_return(plans.reset_index(drop=True).assign(horizon=plans["horizon_hours"].to_numpy(),
                                                                               regime=regime))
    return {column: expected[column].to_numpy() for column in expected}


def _top(scored: pd.DataFrame, as_of: pd.Timestamp, top_n: int, regime: str, *, scorer: str) -> pd.DataFrame:
    """Rank by ``scorer``'s score (ties by market code, for determinism), apply the regime's cap, explain the top N."""
    ranked = scored.sort_index().sort_values("score", ascending=False, kind="stable")
    ranked = ranked.head(min(top_n, REGIME_MAX_PICKS.get(regime, top_n)))
    flags = ranked[CAUTION_FLAGS].astype(bool).to_numpy()
    cautions = [[f.removeprefix("caution_") for f, on in zip(CAUTION_FLAGS, row) if on] for row in flags]
    summaries = [plan_summary(market, row, regime, flagged) for (market, row), flagged in zip(ranked.iterrows(), cautions)]
    out = pd.DataFrame(
        {
            "as_of": as_of,
            "scorer": scorer,
            "rank": np.arange(1, len(ranked) + 1, dtype=np.int64),
            "market": ranked.index.to_numpy(),
            "score": ranked["score"].round(4).to_numpy(),
            **{c: ranked[c].round(4).to_numpy() for c in COMPONENTS},
            "reasons": _reasons(ranked, regime),
            "summary": summaries,
            "entry": ranked["entry"].to_numpy(),
            "target": ranked["target"].to_numpy(),
            "stop": ranked["stop"].to_numpy(),
            "reward_risk": ranked["reward_risk"].to_numpy(),
            "p_target_first": ranked["p_target_first"].to_numpy(),
            "expected_return_net": ranked["expected_return_net"].to_numpy(),
            "horizon_hours": ranked["horizon_hours"].to_numpy(np.int64),
            "expires_at": as_of + pd.to_timedelta(ranked["horizon_hours"].to_numpy(np.int64), unit="h"),
            "entry_from": ranked["entry_from"].to_numpy(object),
            "spread_bps": ranked["spread_bps"].to_numpy(float),
            "tick_size": ranked["tick_size"].to_numpy(),
            "regime": regime,
            "caution": pd.Series(cautions, dtype=object),
        }
    )
    return out[RECOMMENDATION_COLUMNS] if len(out) else _empty_recommendations()


def _empty_recommendations() -> pd.DataFrame:
    return _NO_RECOMMENDATIONS.copy()


_NO_RECOMMENDATIONS = pd.DataFrame({c: pd.Series(dtype=float) for c in RECOMMENDATION_COLUMNS}).astype(
    {"as_of": "datetime64[ns, UTC]", "scorer": object, "rank": "int64", "market": object, "reasons": object, "summary": object,
     "horizon_hours": "int64", "expires_at": "datetime64[ns, UTC]", "entry_from": object, "regime": object, "caution": object})


def recommend_from_books(inputs: AnalysisInputs, as_of: pd.Timestamp, params: RecommendationParams, regime: str) -> TickResult:
    """``recommend_at`` entering at the best ask of the books stored for the tick (the last trades where none)."""
    book = book_at(inputs.books, as_of, ticks_at(inputs.instruments, as_of))
    return recommend_at(inputs, as_of, params, regime=regime, entry=book["entry"], entry_from=trade_plan.BEST_ASK,
                        spread_bps=book["spread_bps"])


def compute_recommendations(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, params: RecommendationParams) -> AnalysisResult:
    """Recommendations of each of ``params.scorers`` for every tick (one partition), and per tick the universe
    counts and the regime."""
    counts_columns = ["as_of", *UniverseCounts.__dataclass_fields__, "regime"]
    if len(ticks) == 0:
        return AnalysisResult(_empty_recommendations(), pd.DataFrame(columns=counts_columns))
    frames, counts = [], []
    for as_of in ticks:
        regime = regime_at(inputs, as_of, params.status)
        tick = recommend_from_books(inputs, as_of, params, regime)
        frames.append(tick.picks)
        counts.append({"as_of": as_of, **asdict(tick.counts), "regime": regime})
    non_empty = [f for f in frames if not f.empty]
    recommendations = pd.concat(non_empty, ignore_index=True) if non_empty else _empty_recommendations()
    return AnalysisResult(recommendations, pd.DataFrame(counts, columns=counts_columns))
