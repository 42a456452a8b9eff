"""Short-term buy recommendations: documented scoring rules over point-in-time candles, vectorised over markets.

Every tick ``as_of`` sees only candles closed before it (``candle_start + interval <= as_of``): the
stored closed hours, the hours storage does not hold yet rebuilt from 1-minute candles, and the
forming hour of the closed minutes so far (dantaro_assets.lib.point_in_time). All indicators are on
that hourly series, last ``HOURLY_BARS`` bars per market, so a snapshot never depends on how much
older history happened to be loaded.

Scoring: every named scorer of dantaro_assets.recommendations.scorers scores the eligible universe
(``v1``'s components are kept with every pick); each scorer's top N get entry, target, stop and reasons,
and the rows carry the scorer's name. ``DANTARO_SCORER`` names the served one, the rest run in shadow.

Entry, target and stop come from the nearest support and resistance
the summary names, on Upbit's price grid (dantaro_assets.recommendations.trade_plan); a market whose
placed prices offer less than ``min_reward_risk`` reward per unit of risk is not recommended.
The market's regime at ``as_of`` (market_status's rule on the same candles) gates the list
(``REGIME_POLICY``) and is stated in every row and summary.

Universe: KRW markets of the latest ``upbit_markets`` day <= as_of, without the ``warning`` flag,
with at least ``min_turnover_krw`` traded over the 24 h before as_of (closed hours from candles_1h,
the hours since the minute lookback's start from 1-minute candles: ``analysis_inputs.Turnover``),
and with at least ``MIN_HISTORY_BARS`` hourly bars (EMA50 needs them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import NamedTuple

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import CAUTION_FLAGS, AnalysisInputs, AnalysisResult, Lookback, listed_at
from dantaro_assets.lib.tick_grid import ticks_at
from dantaro_assets.market_status import analysis as market_status
from dantaro_assets.recommendations import trade_plan
from dantaro_assets.recommendations.scorers import (
    COMPONENTS,
    FEATURE_LAGS,
    component_scores,
    score_all,
)
from dantaro_assets.support_levels import analysis as support_levels

HOURLY_BARS = 240
MIN_HISTORY_BARS = 50
TOP_N = 20
TURNOVER_WINDOW = pd.Timedelta(hours=24)
SURGE_WINDOW = pd.Timedelta(hours=1)
DEFAULT_MIN_REWARD_RISK = 1.5  # DANTARO_MIN_REWARD_RISK's default
DEFAULT_SCORERS = ("v1",)
_UTC = pd.DatetimeTZDtype("ns", "UTC")
RECOMMENDATION_COLUMNS = [
    "as_of", "scorer", "rank", "market", "score", *COMPONENTS, "reasons", "summary", "entry", "target", "stop", "reward_risk",
    "tick_size", "regime", "caution",
]  # fmt: skip


_LEVEL_PARAMS, _STATUS_PARAMS = support_levels.LevelParams(), market_status.StatusParams()


@dataclass(frozen=True)
class RecommendationParams:
    """The universe floor, the list's length, the placed prices' floor, the scorers, and the levels and regime
    rules the picks use (support levels' and market status' own parameters)."""

    min_turnover_krw: float  # DANTARO_MIN_TURNOVER_KRW
    min_reward_risk: float = DEFAULT_MIN_REWARD_RISK
    top_n: int = TOP_N
    scorers: tuple[str, ...] = DEFAULT_SCORERS  # the first ranks the served list (``excluded_regime`` counts it)
    levels: support_levels.LevelParams = _LEVEL_PARAMS
    status: market_status.StatusParams = _STATUS_PARAMS

    @property
    def lookback(self) -> Lookback:
        return lookback(self.levels, self.status)


def lookback(levels: support_levels.LevelParams = _LEVEL_PARAMS, status: market_status.StatusParams = _STATUS_PARAMS) -> Lookback:
    """The levels' and the regime's reach, and daily bars of the day before and the one before it. The 24 h
    turnover reads no day of minutes: its closed hours come from candles_1h (``analysis_inputs.Turnover``)."""
    return Lookback.covering(levels.lookback, status.lookback, Lookback(minute_hours=2, hourly_days=0, daily_days=2))


@dataclass(frozen=True)
class RegimePolicy:
    """What a regime does to the list: at most ``max_picks`` picks, each scoring at least ``min_score``."""

    max_picks: int
    min_score: float


RISK_OFF_MAX_PICKS = 3
# From the recorded markets (bench/regime.py, README "Recommendations"): in risk_off hours the top pick
# trailed the universe at 1 h, 4 h and 24 h and the score's rank IC was negative at every horizon, so
# risk_off cuts the list to a shortlist; a higher score floor would lean on a score that ranked the
# wrong way there, and an empty list would leave the API serving the previous (older) snapshot.
REGIME_POLICY: dict[str, RegimePolicy] = {
    "risk_on": RegimePolicy(max_picks=TOP_N, min_score=0.0),
    "neutral": RegimePolicy(max_picks=TOP_N, min_score=0.0),
    "unknown": RegimePolicy(max_picks=TOP_N, min_score=0.0),
    "risk_off": RegimePolicy(max_picks=RISK_OFF_MAX_PICKS, min_score=0.0),
}


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
    excluded_reward_risk: int = 0  # eligible, but its placed target/stop offer less than the floor (or no room)
    excluded_regime: int = 0  # recommendable, but left out by the regime's policy


class TickResult(NamedTuple):
    """One tick's recommendations: each scorer's top N, every eligible market's scores and trade plan, the
    universe counts and the support levels the plans come from."""

    picks: pd.DataFrame
    scored: pd.DataFrame
    counts: UniverseCounts
    levels: pd.DataFrame


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


def nearest_levels(levels: pd.DataFrame, price: pd.Series) -> pd.DataFrame:
    """Per market: the nearest support zone below the price and the nearest resistance above.

    ``levels`` is support_levels' output (side, level, zone_low, zone_high; zones clipped at the
    price). A resistance is referenced by its zone's bottom, or by the level itself when the price is
    already inside the zone (``trade_plan.resistance_targets``): the summary names the nearest, and the
    pick's target is it or, when it is too near for the reward:risk floor, a farther one.
    """
    frame = levels.assign(price=levels[pit.MARKET].map(price))
    supports = frame[(frame["side"] == "support") & (frame["level"] < frame["price"])]
    support = supports.sort_values("level").groupby(pit.MARKET)[["zone_low", "zone_high"]].last()
    targets = trade_plan.resistance_targets(levels, price)
    resistance = targets[targets["order"] == 1].set_index(pit.MARKET)["target_level"]
    out = pd.DataFrame(index=price.index)
    out["support_low"] = support["zone_low"].reindex(price.index)
    out["support_high"] = support["zone_high"].reindex(price.index).clip(upper=price)
    out["resistance_low"] = resistance.reindex(price.index)
    return out


def _price_text(value: float, tick: float) -> str:
    """A price as people read it: thousands separated, as many decimals as the tick has."""
    decimals = max(0, -int(np.floor(np.log10(tick)))) if np.isfinite(tick) and tick > 0 else 2
    return f"{value:,.{decimals}f}"


def _ordinal(n: int) -> str:
    return {1: "1st", 2: "2nd", 3: "3rd"}.get(n, f"{n}th")


def _reasons_and_summary(picks: pd.DataFrame, regime: str) -> tuple[list[dict], list[str]]:
    """Machine-readable reasons (a JSON object: jsonb in Postgres, nested in the Redis payload) and one human
    line per pick naming the levels its target and stop come from: only for the top N, so a loop is fine."""
    reasons, summaries = [], []
    for market, row in picks.iterrows():
        atr_pct = row["atr"] / row["price"]
        support_pct = 100.0 * (row["price"] / row["support_high"] - 1.0) if pd.notna(row["support_high"]) else None
        resistance_pct = 100.0 * (row["resistance_low"] / row["price"] - 1.0) if pd.notna(row["resistance_low"]) else None
        target_pct = 100.0 * (row["target"] / row["entry"] - 1.0)
        stop_pct = 100.0 * (row["stop"] / row["entry"] - 1.0)
        detail = {
            "trend": {"score": _r(row["trend"]), "price": row["price"], "ema20": _r(row["ema20"]), "ema50": _r(row["ema50"])},
            "momentum": {"score": _r(row["momentum"]), "rsi14": _r(row["rsi"]), "rsi14_change_3h": _r(row["rsi"] - row["rsi_3h_ago"])},
            "volume_surge": {"score": _r(row["volume_surge"]), "ratio": _r(row["surge"]), "turnover_24h_krw": _r(row["turnover_24h"])},
            "support_distance": {"score": _r(row["support_distance"]), "support": _r(row["support_high"]), "pct_above": _r(support_pct)},
            "resistance_distance": {"score": _r(row["resistance_distance"]), "resistance": _r(row["resistance_low"]), "pct_below": _r(resistance_pct)},
            "volatility": {"score": _r(row["volatility"]), "atr14_pct": _r(100.0 * atr_pct)},
            "plan": {"target_level": _r(row["target_level"]), "target_resistance": int(row["target_order"]) or None,
                     "stop_from": row["stop_from"], "target_pct": _r(target_pct),
                     "stop_pct": _r(stop_pct), "reward_risk": _r(row["reward_risk"]), "tick_size": row["tick_size"],
                     "regime": regime},
        }  # fmt: skip
        json.dumps(detail, allow_nan=False)  # raises on NaN/inf: every figure must be a real number or None
        reasons.append(detail)
        trend = "uptrend above EMA20" if row["price"] > row["ema20"] and row["ema20"] > row["ema50"] else (
            "above EMA20" if row["price"] > row["ema20"] else "below EMA20")
        direction = "rising" if row["rsi"] > row["rsi_3h_ago"] else "falling"
        tick = row["tick_size"]
        parts = [trend, f"RSI {row['rsi']:.0f} {direction}", f"volume {row['surge']:.1f}x"]
        parts.append(f"support {_price_text(row['support_high'], tick)} ({support_pct:.2f}% below)" if support_pct is not None
                     else "no support below")
        parts.append(f"resistance {_price_text(row['resistance_low'], tick)} ({resistance_pct:.2f}% above)"
                     if resistance_pct is not None else "no resistance above")
        order = int(row["target_order"])
        target_note = ("that resistance" if order == 1 else "3 ATR, no resistance above" if order == 0
                       else f"the {_ordinal(order)} resistance, {_price_text(row['target_level'], tick)}")
        stop_note = "under that support zone" if row["stop_from"] == "support" else "2 ATR, no support below"
        plan = (f"buy {_price_text(row['entry'], tick)}, target {_price_text(row['target'], tick)} ({target_pct:+.2f}%, "
                f"{target_note}), stop {_price_text(row['stop'], tick)} ({stop_pct:+.2f}%, {stop_note}), "
                f"reward:risk {row['reward_risk']:.2f}")
        summaries.append(f"{market} {row['score']:.0f} ({regime.replace('_', '-')} market): " + ", ".join(parts) + "; " + plan)
    return reasons, summaries


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def recommend_at(inputs: AnalysisInputs, as_of: pd.Timestamp, params: RecommendationParams,
                 regime: str | None = None) -> TickResult:
    """One tick: each of ``params.scorers``' top-N recommendations, every eligible market's scores and trade
    plan, the counts and the support levels.

    ``regime`` is the market's regime at as_of when the caller has it (computed from the inputs otherwise).
    The scores frame has v1's components and one ``score_<name>`` column per scorer of ``SCORERS``; the
    counts' ``excluded_regime`` is the first scorer's.
    """
    universe, counts = universe_at(inputs, as_of, params.min_turnover_krw)
    every_hour = inputs.history.hourly(as_of)
    hourly = every_hour[every_hour[pit.MARKET].isin(universe.index)]
    if hourly.empty:
        counts.excluded_history += len(universe)
        return TickResult(_empty_recommendations(), pd.DataFrame(), counts, support_levels.empty_levels())
    features = hourly_features(hourly).reindex(universe.index)
    enough = features["bars"].fillna(0) >= MIN_HISTORY_BARS
    counts.excluded_history = int((~enough).sum())
    counts.eligible = int(enough.sum())
    features, universe = features[enough], universe[enough]
    if features.empty:
        return TickResult(_empty_recommendations(), pd.DataFrame(), counts, support_levels.empty_levels())
    price = features["close"].rename("price")
    features = features.assign(price=price, turnover_24h=universe["turnover_24h"])
    last_hour = inputs.turnover.between(as_of - SURGE_WINDOW, as_of).reindex(features.index)
    features["surge"] = last_hour / (features["turnover_24h"] / 24.0)
    daily = inputs.history.daily(as_of, every_hour)
    levels = support_levels.levels_at(hourly[hourly[pit.MARKET].isin(features.index)], daily, price, as_of, params.levels)
    features = features.join(nearest_levels(levels, price))
    scored = features.join(component_scores(features))
    plans = trade_plan.plan_trades(scored, trade_plan.resistance_targets(levels, price),
                                   ticks_at(inputs.instruments, as_of), params.min_reward_risk)
    scored = scored.join(plans)
    scored = scored.join(score_all(features).add_prefix("score_")).join(universe.reindex(columns=CAUTION_FLAGS, fill_value=False))
    counts.excluded_reward_risk = int(scored["excluded"].notna().sum())
    regime = regime_at(inputs, as_of, params.status) if regime is None else regime
    placeable = scored[scored["excluded"].isna()]
    picks = [_top(placeable.assign(score=placeable[f"score_{name}"]), as_of, params.top_n, regime, scorer=name)
             for name in params.scorers]
    counts.excluded_regime = min(len(placeable), params.top_n) - len(picks[0])
    return TickResult(pd.concat(picks, ignore_index=True), scored, counts, levels)


def _top(scored: pd.DataFrame, as_of: pd.Timestamp, top_n: int, regime: str, *, scorer: str) -> pd.DataFrame:
    """Rank by ``scorer``'s score (ties by market code, for determinism), apply the regime's policy, explain the top N."""
    policy = REGIME_POLICY.get(regime, REGIME_POLICY["neutral"])
    ranked = scored.sort_index().sort_values("score", ascending=False, kind="stable")
    ranked = ranked[ranked["score"] >= policy.min_score].head(min(top_n, policy.max_picks))
    reasons, summaries = _reasons_and_summary(ranked, regime)
    flags = ranked[CAUTION_FLAGS].astype(bool).to_numpy()
    cautions = [[f.removeprefix("caution_") for f, on in zip(CAUTION_FLAGS, row) if on] for row in flags]
    out = pd.DataFrame(
        {
            "as_of": as_of,
            "scorer": scorer,
            "rank": np.arange(1, len(ranked) + 1, dtype=np.int64),
            "market": ranked.index.to_numpy(),
            "score": ranked["score"].round(4).to_numpy(),
            **{c: ranked[c].round(4).to_numpy() for c in COMPONENTS},
            "reasons": reasons,
            "summary": summaries,
            "entry": ranked["entry"].to_numpy(),
            "target": ranked["target"].to_numpy(),
            "stop": ranked["stop"].to_numpy(),
            "reward_risk": ranked["reward_risk"].to_numpy(),
            "tick_size": ranked["tick_size"].to_numpy(),
            "regime": regime,
            "caution": pd.Series(cautions, dtype=object),
        }
    )
    return out[RECOMMENDATION_COLUMNS] if len(out) else _empty_recommendations()


def _empty_recommendations() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in RECOMMENDATION_COLUMNS})
    return frame.astype({"as_of": "datetime64[ns, UTC]", "scorer": object, "rank": "int64", "market": object, "reasons": object,
                         "summary": object, "regime": object, "caution": object})


def compute_recommendations(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, params: RecommendationParams) -> AnalysisResult:
    """Recommendations of each of ``params.scorers`` for every tick (one partition), and per tick the universe
    counts and the regime."""
    counts_columns = ["as_of", *UniverseCounts.__dataclass_fields__, "regime"]
    if len(ticks) == 0:
        return AnalysisResult(_empty_recommendations(), pd.DataFrame(columns=counts_columns))
    frames, counts = [], []
    for as_of in ticks:
        regime = regime_at(inputs, as_of, params.status)
        tick = recommend_at(inputs, as_of, params, regime=regime)
        frames.append(tick.picks)
        counts.append({"as_of": as_of, **asdict(tick.counts), "regime": regime})
    non_empty = [f for f in frames if not f.empty]
    recommendations = pd.concat(non_empty, ignore_index=True) if non_empty else _empty_recommendations()
    return AnalysisResult(recommendations, pd.DataFrame(counts, columns=counts_columns))
