"""The named scorers: each rule on hand-made features, one contract, and every scorer's list per tick."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib.analysis_inputs import tick_times
from dantaro_assets.recommendations import analysis, scorers
from dantaro_assets.recommendations.scorers import (
    COMPONENTS,
    SCORERS,
    WEIGHTS,
    component_scores,
    score_all,
    served_first,
)

from .conftest import END, FAVOURABLE, inputs_of


def _features(**columns) -> pd.DataFrame:
    """Two or three markets, ATR% = 1 %, everything neutral unless given."""
    n = len(next(iter(columns.values()))) if columns else 2
    base = {
        "price": [100.0] * n, "ema20": [100.0] * n, "ema50": [100.0] * n, "atr": [1.0] * n, "rsi": [60.0] * n,
        "rsi_3h_ago": [60.0] * n, "surge": [1.0] * n, "support_high": [np.nan] * n, "resistance_low": [np.nan] * n,
        "close_4h_ago": [100.0] * n, "close_24h_ago": [100.0] * n,
    }
    index = columns.pop("index", [f"KRW-M{i}" for i in range(n)])
    return pd.DataFrame(base | columns, index=pd.Index(index, name="market"))


def test_weights_sum_to_one():
    assert sum(WEIGHTS.values()) == pytest.approx(1.0)


def test_v1_components_on_hand_made_features():
    features = _features(
        ema20=[100.0, 98.0], ema50=[100.0, 96.0], rsi=[60.0, 80.0], surge=[1.0, 4.0],
        support_high=[100 / 1.01, 90.0],  # 1 ATR above support / 11 ATR above
        resistance_low=[np.nan, 102.0],  # none above / 2 ATR of room
    )
    scores = component_scores(features)
    flat, hot = scores.iloc[0], scores.iloc[1]
    expected_flat = {"trend": 50, "momentum": 0.7 * 100 + 0.3 * 50, "volume_surge": 50, "support_distance": 100,
                     "resistance_distance": 75, "volatility": 100}
    expected_hot = {"trend": 100, "momentum": 0.7 * 50 + 0.3 * 100, "volume_surge": 100, "support_distance": 0,
                    "resistance_distance": 50, "volatility": 100}
    assert flat[COMPONENTS].to_dict() == pytest.approx(expected_flat)
    assert hot[COMPONENTS].to_dict() == pytest.approx(expected_hot)
    assert scorers.v1(features).iloc[0] == pytest.approx(sum(WEIGHTS[c] * expected_flat[c] for c in COMPONENTS))


def test_reversal_buys_what_fell_over_four_hours():
    # 4 ATR down (price 100 from 104.17: -4 %), flat, 2 ATR up, and no close 4 h ago (a new listing): neutral
    features = _features(close_4h_ago=[100 / 0.96, 100.0, 100 / 1.02, np.nan])
    assert scorers.reversal(features).tolist() == pytest.approx([100.0, 50.0, 25.0, 50.0])


def test_relative_strength_is_measured_against_btc_or_else_the_median():
    # BTC +1 %; M1 +6 % (5 ATR ahead), M2 -1.5 % (2.5 ATR behind)
    features = _features(close_24h_ago=[100 / 1.01, 100 / 1.06, 100 / 0.985], index=["KRW-BTC", "KRW-M1", "KRW-M2"])
    assert scorers.rs_btc(features).tolist() == pytest.approx([50.0, 100.0, 25.0])
    without_btc = features.drop("KRW-BTC")  # median of +6 % and -1.5 % is +2.25 %: 3.75 ATR either side
    assert scorers.rs_btc(without_btc).tolist() == pytest.approx([87.5, 12.5])


def test_volume_surge_alone():
    assert scorers.volume_surge(_features(surge=[4.0, 0.25, 1.0])).tolist() == pytest.approx([100.0, 0.0, 50.0])


def test_every_scorer_keeps_the_contract():
    rng = np.random.default_rng(3)
    n = 50
    features = _features(
        price=rng.uniform(50, 150, n), ema20=rng.uniform(50, 150, n), ema50=rng.uniform(50, 150, n),
        atr=rng.uniform(0.01, 5, n), rsi=rng.uniform(0, 100, n), rsi_3h_ago=rng.uniform(0, 100, n),
        surge=rng.lognormal(0, 2, n), support_high=rng.uniform(40, 60, n), resistance_low=rng.uniform(150, 200, n),
        close_4h_ago=rng.uniform(50, 150, n), close_24h_ago=rng.uniform(50, 150, n),
    )
    scores = score_all(features)
    assert list(scores.columns) == list(SCORERS)
    assert scores.index.equals(features.index)
    assert scores.notna().all(axis=None) and scores.stack().between(0, 100).all()


def test_served_first_orders_and_refuses_unknown_names():
    assert served_first("reversal") == ["reversal", *(n for n in SCORERS if n != "reversal")]
    with pytest.raises(ValueError, match="DANTARO_SCORER='nope' is not a scorer: one of v1, "):
        served_first("nope")


def test_every_scorer_ranks_its_own_list(market):
    """Each scorer's picks are the top of the placeable universe (reward:risk floor met) by that scorer's score,
    ranked 1..N, as many for every scorer (the regime's policy caps them alike)."""
    ticks = tick_times(END - pd.Timedelta(hours=3), END - pd.Timedelta(hours=2), 1800)
    inputs = inputs_of(market, ticks)
    params = analysis.RecommendationParams(1e7, 1.5, tuple(SCORERS), top_n=4, calibration=FAVOURABLE)
    picks, scored, _, _, plans = analysis.recommend_at(inputs, ticks[-1], params)
    assert set(picks["scorer"]) == set(SCORERS)
    placeable = scored.loc[plans.loc[plans["excluded"].isna(), "market"]]
    sizes = picks.groupby("scorer").size()
    assert sizes.nunique() == 1 and 1 <= sizes.iloc[0] <= 4
    for name, mine in picks.groupby("scorer"):
        assert mine["rank"].tolist() == list(range(1, len(mine) + 1))
        best = placeable[f"score_{name}"].sort_index().sort_values(ascending=False, kind="stable").head(len(mine))
        assert mine["market"].tolist() == best.index.tolist()
        assert mine["score"].to_numpy() == pytest.approx(best.to_numpy(), abs=1e-4)
    alone = analysis.RecommendationParams(1e7, 1.5, ("v1",), top_n=4, calibration=FAVOURABLE)
    served, _ = analysis.compute_recommendations(inputs_of(market, ticks[-1:]), ticks[-1:], alone)
    v1 = picks[picks["scorer"] == "v1"].reset_index(drop=True)
    pd.testing.assert_frame_equal(served, v1)  # shadow scorers do not change a scorer's list
