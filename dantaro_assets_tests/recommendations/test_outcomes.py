"""Forward returns, universe benchmark, first hit and the summary, on hand-built minute candles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.recommendations.outcomes import (
    UPBIT_FEE,
    block_bootstrap,
    compute_outcomes,
    minute_grid,
    net_return,
    rank_ic,
    scorecard,
    summarise_outcomes,
)

T0 = pd.Timestamp("2025-09-10 12:00", tz="UTC")


def _candles(market: str, closes: list[float], start: pd.Timestamp = T0, drop: tuple[int, ...] = ()) -> pd.DataFrame:
    """Minute candles with open = previous close, high/low 0.1% around the body; ``drop`` leaves minutes out."""
    closes_a = np.asarray(closes, dtype=float)
    opens = np.concatenate([[closes_a[0]], closes_a[:-1]])
    frame = pd.DataFrame(
        {
            "market": market,
            "candle_start": pd.date_range(start, periods=len(closes_a), freq="1min"),
            "open": opens,
            "high": np.maximum(opens, closes_a) * 1.001,
            "low": np.minimum(opens, closes_a) * 0.999,
            "close": closes_a,
            "volume": 1.0,
            "value": closes_a,
        }
    )
    return frame.drop(index=list(drop)).reset_index(drop=True)


def _recs(rows: list[tuple]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["as_of", "rank", "market", "score", "entry", "target", "stop"]).assign(scorer="v1")


def test_net_return_pays_fee_on_both_legs():
    assert net_return(np.array([100.0]), np.array([100.0]))[0] == pytest.approx((1 - UPBIT_FEE) / (1 + UPBIT_FEE) - 1)
    assert net_return(np.array([100.0]), np.array([110.0]), fee=0.0)[0] == pytest.approx(0.10)


def test_price_at_a_quiet_minute_is_the_previous_close():
    candles = _candles("KRW-A", [100, 101, 102, 103], drop=(2,))
    grid = minute_grid(candles)
    prices = grid.price_at(pd.DatetimeIndex([T0 + pd.Timedelta(minutes=m) for m in (1, 2, 3, 4)]), pd.Series(["KRW-A"] * 4))
    # minute 2 is missing: its open is minute 1's close; minute 4 is the grid's end: the last close
    np.testing.assert_allclose(prices, [100, 101, 102, 103])


def test_a_market_quiet_since_before_the_minutes_carries_its_previous_close_in():
    """Minutes read from T0 only: KRW-B trades from minute 3 on, KRW-C never; both start at their last hourly close,
    exactly as the longer minute history they were before would have carried it."""
    candles = pd.concat([_candles("KRW-A", [100, 101, 102, 103, 104]), _candles("KRW-B", [50, 51], start=T0 + pd.Timedelta(minutes=3))])
    grid = minute_grid(candles, previous_close=pd.Series({"KRW-B": 49.0, "KRW-C": 7.0}))
    times = pd.DatetimeIndex([T0, T0 + pd.Timedelta(minutes=2), T0 + pd.Timedelta(minutes=4)])
    np.testing.assert_allclose(grid.price_at(times, pd.Series(["KRW-B"] * 3)), [49, 49, 50])
    np.testing.assert_allclose(grid.price_at(times, pd.Series(["KRW-C"] * 3)), [7, 7, 7])
    assert np.isnan(minute_grid(candles).price_at(times[:1], pd.Series(["KRW-B"]))).all()  # without it: no price yet


def test_returns_from_next_open_excess_over_universe_and_null_beyond_data():
    minutes = 5 * 60  # five hours: 1h and 4h known, 24h not yet
    rising = list(np.linspace(100, 130, minutes))
    flat = [50.0] * minutes
    candles = pd.concat([_candles("KRW-UP", rising), _candles("KRW-FLAT", flat)])
    as_of = T0 + pd.Timedelta(minutes=10)
    recs = _recs([(as_of, 1, "KRW-UP", 80.0, rising[9], 1e9, 1.0)])
    universe = pd.DataFrame({"as_of": [as_of, as_of], "market": ["KRW-UP", "KRW-FLAT"]})
    out = compute_outcomes(recs, candles, universe)
    row = out.iloc[0]
    assert row["entry_price"] == pytest.approx(rising[9])  # the open of minute 10 is minute 9's close
    assert row["return_1h"] == pytest.approx(net_return(np.array([rising[9]]), np.array([rising[69]]))[0])
    flat_net = (1 - UPBIT_FEE) / (1 + UPBIT_FEE) - 1
    assert row["universe_return_4h"] == pytest.approx((row["return_4h"] + flat_net) / 2)
    assert row["excess_1h"] == pytest.approx(row["return_1h"] - row["universe_return_1h"])
    assert np.isnan(row["return_24h"]) and np.isnan(row["excess_24h"])
    assert row["first_hit"] is None  # neither level reached and the 24 h are not complete yet


@pytest.mark.parametrize(
    ("path", "expected", "minutes"),
    [
        ([100, 101, 106, 90], "target", 3),  # high of minute 2 crosses 105
        ([100, 99, 94, 120], "stop", 3),  # low of minute 2 crosses 95
        ([100, 100, 100], None, np.nan),  # nothing yet, 24 h not complete
    ],
)
def test_first_hit(path, expected, minutes):
    candles = _candles("KRW-A", path)
    recs = _recs([(T0, 1, "KRW-A", 70.0, 100.0, 105.0, 95.0)])
    out = compute_outcomes(recs, candles, pd.DataFrame({"as_of": [T0], "market": ["KRW-A"]}))
    assert out.loc[0, "first_hit"] == expected
    np.testing.assert_equal(out.loc[0, "minutes_to_hit"], minutes)


def test_both_in_one_candle_counts_as_stop_and_full_quiet_day_as_neither():
    wide = _candles("KRW-A", [100, 100])
    wide.loc[1, ["high", "low"]] = [110.0, 90.0]
    recs = _recs([(T0, 1, "KRW-A", 70.0, 100.0, 105.0, 95.0)])
    universe = pd.DataFrame({"as_of": [T0], "market": ["KRW-A"]})
    assert compute_outcomes(recs, wide, universe).loc[0, "first_hit"] == "stop"
    quiet = _candles("KRW-A", [100.0] * (24 * 60 + 1))
    out = compute_outcomes(recs, quiet, universe)
    assert out.loc[0, "first_hit"] == "neither"
    assert not np.isnan(out.loc[0, "return_24h"])


def test_rank_ic_and_summary():
    as_of = [T0] * 4 + [T0 + pd.Timedelta(minutes=5)] * 4
    frame = pd.DataFrame(
        {
            "as_of": as_of,
            "score": [90, 80, 70, 60, 90, 80, 70, 60],
            "return_1h": [0.04, 0.03, 0.02, 0.01, 0.01, 0.02, 0.03, 0.04],
        }
    )
    ic = rank_ic(frame, "score", "return_1h")
    assert list(ic.round(6)) == [1.0, -1.0]
    outcomes = frame.assign(
        first_hit=["target", "stop", "neither", None] * 2,
        **{f"return_{h}": frame["return_1h"] for h in ("4h", "24h")},
        **{f"excess_{h}": frame["return_1h"] - 0.01 for h in ("1h", "4h", "24h")},
    )
    summary = summarise_outcomes(outcomes)
    assert summary["ticks"] == 2 and summary["resolved"] == 6
    assert summary["target_before_stop_rate"] == 0.5
    assert summary["mean_excess_1h"] == pytest.approx(0.015)
    assert summary["rank_ic_1h"] == 0.0


def test_scorecard_per_window_scorer_and_horizon():
    """Two scorers over 10 days of hourly ticks: the 7-day window sees only the last week, figures per scorer."""
    now = T0 + pd.Timedelta(days=10, hours=1)  # one hour after the newest tick: the windows end at that tick
    ticks = pd.date_range(T0 + pd.Timedelta(hours=1), now, freq="h", inclusive="left")
    rows = []
    for scorer, excess in (("v1", -0.01), ("reversal", 0.02)):
        for i, as_of in enumerate(ticks):
            for rank, market in enumerate(("KRW-A", "KRW-B", "KRW-C"), start=1):
                value = excess + 0.001 * (2 - rank) + (0.05 if as_of < now - pd.Timedelta(days=7) else 0.0)
                rows.append({"as_of": as_of, "scorer": scorer, "market": market, "score": 90.0 - rank,
                             "first_hit": "target" if scorer == "reversal" else ("stop" if i % 2 else None),
                             **{f"return_{h}": value for h in ("1h", "4h", "24h")},
                             **{f"excess_{h}": value for h in ("1h", "4h", "24h")}})
    outcomes = pd.DataFrame(rows)
    outcomes.loc[outcomes["as_of"] >= now - pd.Timedelta(hours=24), "excess_24h"] = np.nan  # 24 h not reached yet
    card = scorecard(outcomes).set_index(["window", "scorer", "horizon"])
    week = card.loc[("7d", "reversal", "1h")]
    assert week["picks"] == 3 * 7 * 24 and week["ticks"] == 7 * 24
    assert week["mean_excess"] == pytest.approx(0.02) and week["hit_rate"] == 1.0
    assert week["rank_ic"] == pytest.approx(1.0)  # a higher score always did better
    assert week["target_before_stop"] == 1.0
    assert card.loc[("7d", "v1", "1h"), "hit_rate"] == 0.0 and card.loc[("7d", "v1", "1h"), "target_before_stop"] == 0.0
    month = card.loc[("30d", "reversal", "1h")]
    assert month["picks"] == 3 * 10 * 24
    assert month["mean_excess"] == pytest.approx(0.02 + 0.05 * 3 / 10)  # the older 3 days were 5 points better
    assert month["excess_ci_low"] < month["mean_excess"] < month["excess_ci_high"]
    assert card.loc[("7d", "v1", "24h"), "picks"] == 3 * 6 * 24  # the last day's 24 h horizon is still open


def test_block_bootstrap_interval_covers_the_mean_and_needs_two_values():
    rng = np.random.default_rng(1)
    values = rng.normal(0.5, 1.0, 500)
    low, high = block_bootstrap(values, 10, rng)
    assert low < values.mean() < high and high - low < 0.5
    assert np.isnan(block_bootstrap(np.array([1.0, np.nan]), 4, rng)).all()
