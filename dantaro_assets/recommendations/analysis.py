"""Short-term buy recommendations: documented scoring rules over point-in-time candles, vectorised over markets.

Every tick ``as_of`` sees only candles closed before it (``candle_start + interval <= as_of``): the
stored closed hours, the hours storage does not hold yet rebuilt from 1-minute candles, and the
forming hour of the closed minutes so far (dantaro_assets.lib.point_in_time). All indicators are on
that hourly series, last ``HOURLY_BARS`` bars per market, so a snapshot never depends on how much
older history happened to be loaded.

Scoring: every named scorer of dantaro_assets.recommendations.scorers scores the eligible universe
(``v1``'s components are kept with every pick); each scorer's top N get entry, target, stop and reasons,
and the rows carry the scorer's name. ``DANTARO_SCORER`` names the served one, the rest run in shadow.

Entry is the last traded price before ``as_of``; target is the
bottom of the nearest resistance zone at least 1 ATR above it (entry + 3 ATR when none); stop is
half an ATR below the bottom of the nearest support zone under it (entry - 2 ATR when none).

Universe: KRW markets of the latest ``upbit_markets`` day <= as_of, without the ``warning`` flag,
with at least ``min_turnover_krw`` traded over the 24 h before as_of, and with at least
``MIN_HISTORY_BARS`` hourly bars (EMA50 needs them).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import pandas as pd

from dantaro_assets.lib import indicators
from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.recommendations.scorers import (
    COMPONENTS,
    FEATURE_LAGS,
    component_scores,
    score_all,
)

HOURLY_BARS = 240
MIN_HISTORY_BARS = 50
TOP_N = 20
TURNOVER_WINDOW = pd.Timedelta(hours=24)
SURGE_WINDOW = pd.Timedelta(hours=1)
TARGET_MIN_ATR = 1.0  # a target is a resistance at least this many ATR above the entry ...
TARGET_DEFAULT_ATR = 3.0  # ... else the entry plus this many ATR
STOP_BELOW_SUPPORT_ATR = 0.5  # the stop sits this many ATR under the nearest support zone ...
STOP_DEFAULT_ATR = 2.0  # ... or this many ATR under the entry when there is no support below
DEFAULT_SCORERS = ("v1",)
_UTC = pd.DatetimeTZDtype("ns", "UTC")
CAUTION_FLAGS = [
    "caution_price_fluctuations",
    "caution_trading_volume_soaring",
    "caution_deposit_amount_soaring",
    "caution_global_price_differences",
    "caution_concentration_of_small_accounts",
]
RECOMMENDATION_COLUMNS = [
    "as_of", "scorer", "rank", "market", "score", *COMPONENTS, "reasons", "summary", "entry", "target", "stop", "caution",
]  # fmt: skip

# support_levels.analysis.compute_support_levels(hourly, daily, price, as_of) or a stand-in with its columns.
LevelFinder = Callable[[pd.DataFrame, pd.DataFrame, pd.Series, pd.Timestamp], pd.DataFrame]


@dataclass
class UniverseCounts:
    """How the tradable universe of one tick came about: the materialisation's counts."""

    listed: int = 0
    excluded_warning: int = 0
    excluded_turnover: int = 0
    excluded_history: int = 0
    eligible: int = 0


@dataclass(frozen=True)
class Turnover:
    """Cumulative KRW turnover per market on a minute grid: any window's sum is two lookups."""

    cumsum: pd.DataFrame  # minute x market; one zero row before the first minute
    stored_from: pd.Timestamp | None = None  # the first stored minute: before it, "nothing traded" is unknown

    @classmethod
    def from_candles(cls, candles_1m: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> Turnover:
        """Turnover grid over [start, end); minutes without a candle traded nothing."""
        inside = candles_1m[(candles_1m[pit.START] >= start) & (candles_1m[pit.START] < end)]
        value = inside.pivot(index=pit.START, columns=pit.MARKET, values="value")
        grid = pd.date_range(start - pit.MINUTE, end, freq=pit.MINUTE, inclusive="left")
        return cls(value.reindex(grid).fillna(0.0).cumsum(), inside[pit.START].min() if len(inside) else None)

    def between(self, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
        """KRW traded per market over [start, end), both inside the grid."""
        return self.cumsum.loc[end - pit.MINUTE] - self.cumsum.loc[start - pit.MINUTE]

    def hours_stored(self, start: pd.Timestamp, end: pd.Timestamp) -> float:
        """Hours of [start, end) that stored minutes cover (at least 1): a fresh install or a gap in
        storage leaves the start of a 24 h window unknown, and its sum must not read as a quiet day."""
        begin = start if self.stored_from is None else max(start, self.stored_from)
        return max((end - begin) / pd.Timedelta(hours=1), 1.0)


@dataclass
class TickInputs:
    """Everything of a partition that does not depend on the tick: computed once, sampled per tick."""

    history: pit.CandleHistory
    markets: pd.DataFrame
    turnover: Turnover = field(repr=False)

    @classmethod
    def prepare(cls, candles_1m: pd.DataFrame, candles_1h: pd.DataFrame, candles_1d: pd.DataFrame,
                markets: pd.DataFrame, first_tick: pd.Timestamp, last_tick: pd.Timestamp) -> TickInputs:
        """Candle history from 24 h before the first tick (the turnover window) to the last tick."""
        minutes_start = (first_tick - TURNOVER_WINDOW).floor("h")
        return cls(
            history=pit.CandleHistory(candles_1m, candles_1h, candles_1d, minutes_start, last_tick),
            markets=markets,
            turnover=Turnover.from_candles(candles_1m, minutes_start, last_tick),
        )


def universe_at(markets: pd.DataFrame, turnover: Turnover, as_of: pd.Timestamp,
                min_turnover_krw: float) -> tuple[pd.DataFrame, UniverseCounts]:
    """Listed markets of the latest day <= as_of that pass the warning and turnover filters, and the counts."""
    listed = markets[markets["day"] <= as_of]
    if listed.empty:
        return listed.set_index("market").assign(turnover_24h=pd.Series(dtype=float)), UniverseCounts()
    listed = listed[listed["day"] == listed["day"].max()].set_index("market")
    # KRW traded over the 24 h before as_of, scaled up from the hours actually stored (a fresh install)
    hours = turnover.hours_stored(as_of - TURNOVER_WINDOW, as_of)
    traded = turnover.between(as_of - TURNOVER_WINDOW, as_of).reindex(listed.index).fillna(0.0) * (24.0 / hours)
    listed = listed.assign(turnover_24h=traded)
    warning = listed["warning"].astype(bool)
    thin = ~warning & (traded < min_turnover_krw)
    counts = UniverseCounts(listed=len(listed), excluded_warning=int(warning.sum()), excluded_turnover=int(thin.sum()))
    return listed[~warning & ~thin], counts


def eligible_universe(candles_1m: pd.DataFrame, markets: pd.DataFrame, as_ofs: pd.DatetimeIndex,
                      min_turnover_krw: float) -> pd.DataFrame:
    """(as_of, market) pairs passing the warning and turnover filters: the benchmark universe of the outcomes.

    The history filter (``MIN_HISTORY_BARS`` hourly bars) is left out: it needs the hourly series and
    only drops markets listed in the last two days.
    """
    if len(as_ofs) == 0:
        return pd.DataFrame({"as_of": pd.Series(dtype=_UTC), "market": pd.Series(dtype=object)})
    turnover = Turnover.from_candles(candles_1m, as_ofs[0] - TURNOVER_WINDOW, as_ofs[-1])
    frames = [pd.DataFrame({"as_of": as_of, "market": universe_at(markets, turnover, as_of, min_turnover_krw)[0].index})
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


def nearest_levels(levels: pd.DataFrame, price: pd.Series, atr: pd.Series) -> pd.DataFrame:
    """Per market: the nearest support zone below the price, the nearest resistance above, and the target level.

    ``levels`` is support_levels' output (side, level, zone_low, zone_high; zones clipped at the
    price). A resistance is referenced by its zone's bottom, or by the level itself when the price is
    already inside the zone. The target is the nearest resistance at least ``TARGET_MIN_ATR`` ATR
    above the price: a closer one would not pay the fees and the stop's risk.
    """
    frame = levels.assign(price=levels[pit.MARKET].map(price), atr=levels[pit.MARKET].map(atr))
    supports = frame[(frame["side"] == "support") & (frame["level"] < frame["price"])]
    resistances = frame[(frame["side"] == "resistance") & (frame["level"] > frame["price"])]
    support = supports.sort_values("level").groupby(pit.MARKET)[["zone_low", "zone_high"]].last()
    reference = resistances["zone_low"].where(resistances["zone_low"] > resistances["price"], resistances["level"])
    resistance = reference.groupby(resistances[pit.MARKET]).min()
    far_enough = reference >= resistances["price"] + TARGET_MIN_ATR * resistances["atr"]
    target = reference[far_enough].groupby(resistances.loc[far_enough, pit.MARKET]).min()
    out = pd.DataFrame(index=price.index)
    out["support_low"] = support["zone_low"].reindex(price.index)
    out["support_high"] = support["zone_high"].reindex(price.index).clip(upper=price)
    out["resistance_low"] = resistance.reindex(price.index)
    out["target_level"] = target.reindex(price.index)
    return out


def _reasons_and_summary(picks: pd.DataFrame) -> tuple[list[dict], list[str]]:
    """Machine-readable reasons (a JSON object: jsonb in Postgres, nested in the Redis payload) and one human
    line per pick: only for the top N, so a loop is fine."""
    reasons, summaries = [], []
    for market, row in picks.iterrows():
        atr_pct = row["atr"] / row["price"]
        support_pct = 100.0 * (row["price"] / row["support_high"] - 1.0) if pd.notna(row["support_high"]) else None
        resistance_pct = 100.0 * (row["resistance_low"] / row["price"] - 1.0) if pd.notna(row["resistance_low"]) else None
        detail = {
            "trend": {"score": _r(row["trend"]), "price": row["price"], "ema20": _r(row["ema20"]), "ema50": _r(row["ema50"])},
            "momentum": {"score": _r(row["momentum"]), "rsi14": _r(row["rsi"]), "rsi14_change_3h": _r(row["rsi"] - row["rsi_3h_ago"])},
            "volume_surge": {"score": _r(row["volume_surge"]), "ratio": _r(row["surge"]), "turnover_24h_krw": _r(row["turnover_24h"])},
            "support_distance": {"score": _r(row["support_distance"]), "support": _r(row["support_high"]), "pct_above": _r(support_pct)},
            "resistance_distance": {"score": _r(row["resistance_distance"]), "resistance": _r(row["resistance_low"]), "pct_below": _r(resistance_pct)},
            "volatility": {"score": _r(row["volatility"]), "atr14_pct": _r(100.0 * atr_pct)},
        }  # fmt: skip
        json.dumps(detail, allow_nan=False)  # raises on NaN/inf: every figure must be a real number or None
        reasons.append(detail)
        trend = "uptrend above EMA20" if row["price"] > row["ema20"] and row["ema20"] > row["ema50"] else (
            "above EMA20" if row["price"] > row["ema20"] else "below EMA20")
        direction = "rising" if row["rsi"] > row["rsi_3h_ago"] else "falling"
        parts = [trend, f"RSI {row['rsi']:.0f} {direction}", f"volume {row['surge']:.1f}x"]
        parts.append(f"{support_pct:.1f}% above support" if support_pct is not None else "no support below")
        parts.append(f"{resistance_pct:.1f}% to resistance" if resistance_pct is not None else "no resistance above")
        summaries.append(f"{market} {row['score']:.0f}: " + ", ".join(parts))
    return reasons, summaries


def _r(value: float | None) -> float | None:
    return None if value is None or not np.isfinite(value) else round(float(value), 4)


def recommend_at(inputs: TickInputs, as_of: pd.Timestamp, find_levels: LevelFinder, *, min_turnover_krw: float,
                 top_n: int = TOP_N, scorers: Sequence[str] = DEFAULT_SCORERS) -> tuple[pd.DataFrame, pd.DataFrame, UniverseCounts]:
    """One tick: (each of ``scorers``' top-N recommendations, every eligible market's features and scores, counts).

    The scores frame has v1's components and one ``score_<name>`` column per scorer of ``SCORERS``.
    """
    universe, counts = universe_at(inputs.markets, inputs.turnover, as_of, min_turnover_krw)
    every_hour = inputs.history.hourly(as_of)
    hourly = every_hour[every_hour[pit.MARKET].isin(universe.index)]
    if hourly.empty:
        counts.excluded_history += len(universe)
        return _empty_recommendations(), pd.DataFrame(), counts
    features = hourly_features(hourly).reindex(universe.index)
    enough = features["bars"].fillna(0) >= MIN_HISTORY_BARS
    counts.excluded_history = int((~enough).sum())
    counts.eligible = int(enough.sum())
    features, universe = features[enough], universe[enough]
    if features.empty:
        return _empty_recommendations(), pd.DataFrame(), counts
    price = features["close"].rename("price")
    features = features.assign(price=price, turnover_24h=universe["turnover_24h"])
    last_hour = inputs.turnover.between(as_of - SURGE_WINDOW, as_of).reindex(features.index)
    features["surge"] = last_hour / (features["turnover_24h"] / 24.0)
    daily = inputs.history.daily(as_of, every_hour)
    levels = find_levels(hourly[hourly[pit.MARKET].isin(features.index)], daily, price, as_of)
    features = features.join(nearest_levels(levels, price, features["atr"]))
    scored = features.join(component_scores(features))
    scored = scored.join(score_all(features).add_prefix("score_")).join(universe[CAUTION_FLAGS])
    picks = [_top(scored.assign(score=scored[f"score_{name}"]), as_of, top_n, scorer=name) for name in scorers]
    return pd.concat(picks, ignore_index=True), scored, counts


def _top(scored: pd.DataFrame, as_of: pd.Timestamp, top_n: int, *, scorer: str) -> pd.DataFrame:
    """Rank by ``scorer``'s score (ties by market code, for determinism), set entry/target/stop, explain the top N."""
    ranked = scored.sort_index().sort_values("score", ascending=False, kind="stable").head(top_n)
    atr = ranked["atr"]
    entry = ranked["price"]
    target = ranked["target_level"].fillna(entry + TARGET_DEFAULT_ATR * atr)
    stop = (ranked["support_low"] - STOP_BELOW_SUPPORT_ATR * atr).fillna(entry - STOP_DEFAULT_ATR * atr)
    reasons, summaries = _reasons_and_summary(ranked)
    caution = ranked[CAUTION_FLAGS].astype(bool)
    caution_text = caution.apply(lambda row: ",".join(f.removeprefix("caution_") for f in CAUTION_FLAGS if row[f]), axis=1)
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
            "entry": entry.to_numpy(),
            "target": target.to_numpy(),
            "stop": stop.to_numpy(),
            "caution": caution_text.reindex(ranked.index).fillna("").to_numpy() if len(ranked) else [],
        }
    )
    return out[RECOMMENDATION_COLUMNS]


def _empty_recommendations() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype=float) for c in RECOMMENDATION_COLUMNS})
    return frame.astype({"as_of": "datetime64[ns, UTC]", "scorer": object, "rank": "int64", "market": object, "reasons": object,
                         "summary": object, "caution": object})


def compute_recommendations(candles_1m: pd.DataFrame, candles_1h: pd.DataFrame, candles_1d: pd.DataFrame,
                            markets: pd.DataFrame, as_ofs: pd.DatetimeIndex, find_levels: LevelFinder, *,
                            min_turnover_krw: float, top_n: int = TOP_N,
                            scorers: Sequence[str] = DEFAULT_SCORERS) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recommendations of each of ``scorers`` for every tick in ``as_ofs`` (one partition) and the universe counts per tick."""
    counts_columns = ["as_of", *UniverseCounts.__dataclass_fields__]
    if len(as_ofs) == 0:
        return _empty_recommendations(), pd.DataFrame(columns=counts_columns)
    inputs = TickInputs.prepare(candles_1m, candles_1h, candles_1d, markets, as_ofs[0], as_ofs[-1])
    frames, counts = [], []
    for as_of in as_ofs:
        picks, _, tick_counts = recommend_at(inputs, as_of, find_levels, min_turnover_krw=min_turnover_krw, top_n=top_n,
                                             scorers=scorers)
        frames.append(picks)
        counts.append({"as_of": as_of, **asdict(tick_counts)})
    non_empty = [f for f in frames if not f.empty]
    recommendations = pd.concat(non_empty, ignore_index=True) if non_empty else _empty_recommendations()
    return recommendations, pd.DataFrame(counts, columns=counts_columns)
