"""Named scorers: one contract, a per-market features DataFrame in and a 0-100 score Series out.

Every tick all scorers score the same eligible universe: the one ``DANTARO_SCORER`` names ranks the served
list, the others run in shadow (stored and graded, never served), so the evidence can say which idea carries
the signal. Each scorer's rule and why: docs/analyses.md, "Recommendations".
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd

BENCHMARK_MARKET = "KRW-BTC"
REVERSAL_HOURS = 4
RELATIVE_STRENGTH_HOURS = 24
WEIGHTS: dict[str, float] = {
    "trend": 0.25,
    "momentum": 0.20,
    "volume_surge": 0.15,
    "support_distance": 0.15,
    "resistance_distance": 0.15,
    "volatility": 0.10,
}
COMPONENTS = list(WEIGHTS)


@dataclass(frozen=True)
class Scorer:
    """A named ranking rule: ``score(features)`` is 0-100 per market (index), higher is a better buy, held
    ``horizon_hours`` (one of outcomes.HORIZONS, so its picks are graded at their horizon)."""

    name: str
    description: str
    score: Callable[[pd.DataFrame], pd.Series]
    horizon_hours: int


def _ramp(x: pd.Series, zero_at: float, full_at: float) -> pd.Series:
    """0 at ``zero_at``, 100 at ``full_at``, linear between, clipped (works in either direction)."""
    return (100.0 * (x - zero_at) / (full_at - zero_at)).clip(0.0, 100.0)


def _atr_pct(features: pd.DataFrame) -> pd.Series:
    return features["atr"] / features["price"]


def component_scores(features: pd.DataFrame) -> pd.DataFrame:
    """v1's six 0-100 components from per-market features (price, EMAs, RSI, ATR, surge, level distances)."""
    atr_pct = _atr_pct(features)
    above_fast = (features["price"] / features["ema20"] - 1.0) / atr_pct
    fast_over_slow = (features["ema20"] / features["ema50"] - 1.0) / atr_pct
    trend = 50.0 + 25.0 * (above_fast / 2.0).clip(-1, 1) + 25.0 * (fast_over_slow / 2.0).clip(-1, 1)
    rsi_level = (100.0 - 2.5 * (features["rsi"] - 60.0).abs()).clip(0.0, 100.0)
    rsi_rising = 50.0 + 5.0 * (features["rsi"] - features["rsi_3h_ago"]).clip(-10, 10)
    momentum = (0.7 * rsi_level + 0.3 * rsi_rising).clip(0.0, 100.0)
    support_atr = (features["price"] / features["support_high"] - 1.0) / atr_pct
    support = (100.0 - 25.0 * (support_atr.clip(lower=1.0) - 1.0)).clip(0.0, 100.0).fillna(0.0)
    resistance_atr = (features["resistance_low"] / features["price"] - 1.0) / atr_pct
    resistance = (100.0 * resistance_atr / 4.0).clip(0.0, 100.0).fillna(75.0)
    volatility = np.minimum(_ramp(atr_pct, 0.0005, 0.003), _ramp(atr_pct, 0.04, 0.015))
    return pd.DataFrame(
        {
            "trend": trend,
            "momentum": momentum,
            "volume_surge": volume_surge(features),
            "support_distance": support,
            "resistance_distance": resistance,
            "volatility": volatility,
        }
    )


def v1(features: pd.DataFrame) -> pd.Series:
    components = component_scores(features)
    return sum(WEIGHTS[c] * components[c] for c in COMPONENTS)


def volume_surge(features: pd.DataFrame) -> pd.Series:
    return (50.0 + 25.0 * np.log2(features["surge"].clip(lower=1e-9))).clip(0.0, 100.0)


def reversal(features: pd.DataFrame) -> pd.Series:
    moved = (features["price"] / features[f"close_{REVERSAL_HOURS}h_ago"] - 1.0) / _atr_pct(features)
    return (50.0 - 12.5 * moved).clip(0.0, 100.0).fillna(50.0)


def rs_btc(features: pd.DataFrame) -> pd.Series:
    returns = features["price"] / features[f"close_{RELATIVE_STRENGTH_HOURS}h_ago"] - 1.0
    benchmark = returns.get(BENCHMARK_MARKET, np.nan)
    if not np.isfinite(benchmark):
        benchmark = returns.median()
    ahead = (returns - benchmark) / _atr_pct(features)
    return (50.0 + 10.0 * ahead).clip(0.0, 100.0).fillna(50.0)


# Every scorer holds a day: the reach (how far the price gets as often as a plan at the 1.5 floor must win) is
# 0.47 ATR over 1 h and 0.93 ATR over 4 h, nearer than most stops under a zone times the floor: on the recorded
# markets 0 (1 h), 125 (4 h) and 956 (24 h) of 2,984 market-ticks had a placeable plan (bench/calibrate.py,
# docs/analyses.md "Horizon and reach"); reversal's evidence is at 24 h too.
HOLD_HOURS = 24
SCORERS: dict[str, Scorer] = {
    scorer.name: scorer
    for scorer in (
        Scorer("v1", "hand-weighted trend, momentum, volume, level distances and volatility", v1, HOLD_HOURS),
        Scorer("reversal", f"short-horizon reversal: the {REVERSAL_HOURS} h return in ATR units, reversed", reversal, HOLD_HOURS),
        Scorer("rs_btc", f"relative strength vs {BENCHMARK_MARKET}: {RELATIVE_STRENGTH_HOURS} h return ahead of it in ATR units", rs_btc,
               HOLD_HOURS),
        Scorer("volume_surge", "the last hour's turnover against the 24 h hourly mean, alone", volume_surge, HOLD_HOURS),
    )
}
FEATURE_LAGS = sorted({REVERSAL_HOURS, RELATIVE_STRENGTH_HOURS})  # hourly closes the challengers need


def served_first(name: str) -> list[str]:
    """Every scorer's name, the served one (``DANTARO_SCORER``) first; an unknown name is an error naming the known ones."""
    if name not in SCORERS:
        raise ValueError(f"DANTARO_SCORER={name!r} is not a scorer: one of {', '.join(SCORERS)}")
    return [name, *(other for other in SCORERS if other != name)]


def score_all(features: pd.DataFrame) -> pd.DataFrame:
    """Every scorer's score per market: one column per scorer name."""
    return pd.DataFrame({name: scorer.score(features) for name, scorer in SCORERS.items()}, index=features.index)
