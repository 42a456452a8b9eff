"""Scoring rules, universe filters, point-in-time behaviour and determinism of the recommendations."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, Lookback, Turnover, tick_times
from dantaro_assets.lib.tick_grid import krw_tick_size, off_grid, tick_for
from dantaro_assets.recommendations import analysis
from dantaro_assets.recommendations.analysis import (
    COMPONENTS,
    RecommendationParams,
    compute_recommendations,
)
from dantaro_assets.recommendations.outcomes import net_return
from dantaro_assets.recommendations.schemas import summary_mismatches
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets_tests.lib.candle_data import with_future_bars

from .conftest import END, FAVOURABLE, flat_calibration, inputs_of

MIN_TURNOVER = 1e7
FLOOR = 1.5
HOUR = END - pd.Timedelta(hours=5)
TICKS = tick_times(HOUR, HOUR + pd.Timedelta(hours=1), 300)
PARAMS = RecommendationParams(MIN_TURNOVER, FLOOR, ("v1",), calibration=FAVOURABLE)


def _run(market, ticks=TICKS, candles_1m=None, candles_1h=None, candles_1d=None, top_n=analysis.TOP_N,
         min_reward_risk=FLOOR, calibration=FAVOURABLE):
    inputs = inputs_of(market, ticks, candles_1m, candles_1h, candles_1d)
    return compute_recommendations(inputs, ticks, RecommendationParams(MIN_TURNOVER, min_reward_risk, ("v1",), top_n=top_n,
                                                                       calibration=calibration))


@pytest.fixture(scope="module")
def partition(market):
    return _run(market)


def test_snapshot_shape_and_invariants(partition, market):
    recs, counts = partition
    assert set(recs["as_of"]) == set(TICKS)  # every tick has markets offering the floor in this market
    for _, tick in recs.groupby("as_of"):
        assert list(tick["rank"]) == list(range(1, len(tick) + 1))
        assert tick["score"].is_monotonic_decreasing
    assert recs["score"].between(0, 100).all()
    assert recs[COMPONENTS].stack().between(0, 100).all()
    assert ((recs["stop"] < recs["entry"]) & (recs["entry"] < recs["target"])).all()
    assert "KRW-M000" not in set(recs["market"])  # warning
    assert "KRW-M002" not in set(recs["market"])  # thin turnover
    assert all(flags == ["price_fluctuations"] for flags in recs.loc[recs["market"] == "KRW-M001", "caution"])
    assert all(flags == [] for flags in recs.loc[recs["market"] != "KRW-M001", "caution"])
    assert list(counts["as_of"]) == list(TICKS)
    assert (counts["excluded_warning"] == 1).all() and (counts["excluded_turnover"] == 1).all()
    assert (counts["eligible"] == market.upbit_markets["market"].nunique() - 2).all()
    picked = recs.groupby("as_of").size().reindex(counts["as_of"]).to_numpy()
    assert (picked == counts["eligible"] - counts["excluded_reward_risk"] - counts["excluded_negative_ev"]
            - counts["excluded_regime"]).all()
    assert counts["excluded_reward_risk"].sum() > 0  # the floor bites in this market
    reasons = recs["reasons"].iloc[0]
    assert set(reasons) == {*COMPONENTS, "plan"}
    first = recs.iloc[0]
    assert first["summary"].startswith(f"{first['market']} {first['score']:.0f} ({first['regime'].replace('_', '-')} market")
    assert (recs["horizon_hours"] == SCORERS["v1"].horizon_hours).all() and (recs["entry_from"] == "last_trade").all()
    assert (recs["expires_at"] == recs["as_of"] + pd.Timedelta(hours=SCORERS["v1"].horizon_hours)).all()
    assert (recs["regime"] == recs["as_of"].map(counts.set_index("as_of")["regime"])).all()


def test_entry_is_the_last_price_before_as_of_rounded_up_to_the_tick(partition, market):
    recs, _ = partition
    row = recs.iloc[-1]
    minutes = market.candles_1m
    before = minutes[(minutes["market"] == row["market"]) & (minutes["candle_start"] < row["as_of"])]
    last = before.sort_values("candle_start")["close"].iloc[-1]
    assert row["reasons"]["trend"]["price"] == last
    assert row["entry"] == np.ceil(last / row["tick_size"]) * row["tick_size"]


def test_top_n_keeps_the_best(market, partition):
    recs, _ = partition
    top3, _ = _run(market, ticks=TICKS[:1], top_n=3)
    first = recs[recs["as_of"] == TICKS[0]].head(3).reset_index(drop=True)
    pd.testing.assert_frame_equal(top3, first)


@pytest.mark.parametrize("tick", [0, 7, 11])
def test_point_in_time_truncating_at_as_of_changes_nothing(market, partition, tick):
    """Candles that were not closed at as_of (and later ones) must not affect the snapshot."""
    as_of = TICKS[tick]
    m1 = market.candles_1m[market.candles_1m["candle_start"] + pd.Timedelta(minutes=1) <= as_of]
    h1 = market.candles_1h[market.candles_1h["candle_start"] + pd.Timedelta(hours=1) <= as_of]
    d1 = market.candles_1d[market.candles_1d["candle_start"] + pd.Timedelta(days=1) <= as_of]
    truncated, _ = _run(market, ticks=TICKS[tick : tick + 1], candles_1m=m1, candles_1h=h1, candles_1d=d1)
    full = partition[0][partition[0]["as_of"] == as_of].reset_index(drop=True)
    assert len(full) > 0
    pd.testing.assert_frame_equal(truncated, full)


@pytest.mark.parametrize("tick", [0, 11])
def test_stored_hours_and_days_after_the_tick_change_nothing(market, partition, tick):
    """Storage also holding hours from the tick's hour on and days from its day on (tenfold prices): the same
    snapshot, so nothing reads a stored bar that had not closed at as_of."""
    as_of = TICKS[tick]
    h1 = market.candles_1h[market.candles_1h["candle_start"] + pit.HOUR <= as_of]
    d1 = market.candles_1d[market.candles_1d["candle_start"] + pit.DAY <= as_of]
    leaky, _ = _run(market, ticks=TICKS[tick : tick + 1], candles_1h=with_future_bars(h1, as_of.floor("h"), pit.HOUR, count=6),
                    candles_1d=with_future_bars(d1, as_of.floor("D"), pit.DAY))
    full = partition[0][partition[0]["as_of"] == as_of].reset_index(drop=True)
    assert len(full) > 0
    pd.testing.assert_frame_equal(leaky, full)


def test_missing_stored_hours_are_rebuilt_from_minutes(market, partition):
    """Hours storage does not hold yet (the two closed hours of the minute lookback, today's candles_1h not
    fetched) come from the minutes: same snapshot."""
    h1 = market.candles_1h[market.candles_1h["candle_start"] < HOUR - pd.Timedelta(hours=analysis.LOOKBACK.minute_hours)]
    recs, _ = _run(market, candles_1h=h1)
    pd.testing.assert_frame_equal(recs, partition[0])


def test_recomputing_gives_identical_rows(market, partition):
    again, _ = _run(market)
    pd.testing.assert_frame_equal(again, partition[0])


def test_no_eligible_market_gives_an_empty_frame_with_the_columns(market):
    recs, counts = compute_recommendations(inputs_of(market, TICKS[:1]), TICKS[:1], RecommendationParams(1e30, FLOOR, ("v1",)))
    assert recs.empty and list(recs.columns) == analysis.RECOMMENDATION_COLUMNS
    tick = counts.iloc[0]
    assert tick["eligible"] == 0 and tick["excluded_turnover"] == tick["listed"] - tick["excluded_warning"]


def test_nearest_levels():
    """The nearest support below, the zone the price trades in (the stop's zone when there is one) and the nearest
    resistance above the entry (a resistance at or under the entry is not above it)."""
    levels = pd.DataFrame(
        {
            "market": ["KRW-A"] * 4 + ["KRW-B"] * 3,
            "side": ["support", "support", "resistance", "resistance", "support", "at_price", "resistance"],
            "level": [95.0, 98.0, 100.5, 104.0, 40.0, 50.0, 51.0],
            "zone_low": [94.0, 97.5, 100.2, 103.0, 39.0, 49.0, 50.5],
            "zone_high": [96.0, 98.5, 101.0, 105.0, 41.0, 50.3, 52.0],
        }
    )
    entry = pd.Series({"KRW-A": 100.0, "KRW-B": 50.5})
    out = analysis.nearest_levels(levels, entry)
    a, b = out.loc["KRW-A"], out.loc["KRW-B"]
    assert (a["support_low"], a["support_high"], a["stop_zone_low"], a["stop_zone"]) == (97.5, 98.5, 97.5, "support")
    assert a["resistance_low"] == 100.2 and np.isnan(a["zone_low"])
    assert (b["support_high"], b["zone_low"], b["zone_high"], b["stop_zone_low"], b["stop_zone"]) == (41.0, 49.0, 50.3, 49.0, "at_price")
    assert np.isnan(b["resistance_low"])  # 50.5 is the entry: not above it


def test_recorded_upbit_candles(upbit_data_dir):
    """Real candles (4 markets): a full hour of snapshots, point-in-time against candles cut at the last tick."""
    m1 = pd.read_parquet(upbit_data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
    h1 = pd.read_parquet(upbit_data_dir / "candles_1h.parquet").rename(columns={"candle_start_utc": "candle_start"})
    for frame in (m1, h1):  # the recorded 1m/1h files carry no turnover: derive it as the replay server does
        frame["value"] = frame["volume"] * frame[["open", "high", "low", "close"]].mean(axis=1)
    hour = pd.Timestamp("2025-09-20 14:00", tz="UTC")
    m1 = m1[(m1["candle_start"] >= hour - pd.Timedelta(hours=25)) & (m1["candle_start"] < hour + pd.Timedelta(hours=2))]
    daily = pit.resample_bars(h1, pit.DAY)
    universe = pd.DataFrame({"day": hour.floor("D"), "market": sorted(m1["market"].unique()), "warning": False})
    universe = universe.assign(**{flag: False for flag in analysis.CAUTION_FLAGS})
    ticks = tick_times(hour, hour + pd.Timedelta(hours=1), 300)
    params = RecommendationParams(1e9, FLOOR, ("v1",), calibration=FAVOURABLE)

    def run(m1, h1, daily, ticks):
        inputs = AnalysisInputs.assemble(analysis.LOOKBACK, ticks, candles_1m=m1, candles_1h=h1, candles_1d=daily, upbit_markets=universe)
        return compute_recommendations(inputs, ticks, params)

    recs, counts = run(m1, h1, daily, ticks)
    assert (counts["eligible"] == 4).all()
    assert len(recs) == (4 - counts["excluded_reward_risk"] - counts["excluded_negative_ev"] - counts["excluded_regime"]).sum() > 0
    assert ((recs["stop"] < recs["entry"]) & (recs["entry"] < recs["target"])).all()
    assert_placeable(recs, FLOOR)
    last = ticks[-1]
    cut, _ = run(m1[m1["candle_start"] < last], h1[h1["candle_start"] + pit.HOUR <= last], daily[daily["candle_start"] + pit.DAY <= last],
                 ticks[-1:])
    pd.testing.assert_frame_equal(cut, recs[recs["as_of"] == last].reset_index(drop=True))


def assert_placeable(recs: pd.DataFrame, floor: float) -> None:
    """Every price of every pick is on Upbit's grid and the placed prices offer the floor."""
    for column in ("entry", "target", "stop"):
        prices = pd.Series(recs[column].to_numpy(), index=recs["market"].to_numpy())
        ticks = tick_for(prices, pd.Series(recs["tick_size"].to_numpy(), index=recs["market"].to_numpy()))
        assert not off_grid(prices.to_numpy(), ticks).any(), recs.loc[off_grid(prices.to_numpy(), ticks), column]
        assert (ticks >= krw_tick_size(prices.to_numpy())).all()
    assert ((recs["target"] - recs["entry"]) / (recs["entry"] - recs["stop"]) >= floor).all()
    assert np.allclose(recs["reward_risk"], (recs["target"] - recs["entry"]) / (recs["entry"] - recs["stop"]))


def test_every_price_of_every_pick_is_on_the_grid_and_offers_the_floor(partition):
    recs, _ = partition
    assert_placeable(recs, FLOOR)
    assert (recs["entry"] >= recs["reasons"].map(lambda r: r["trend"]["price"])).all()  # entry rounded up


def test_rounding_never_flatters_the_pick(partition):
    """Placed prices against the levels they come from: target at or below its resistance, stop at or below
    half an ATR under its support zone, entry at or above the price."""
    recs, _ = partition
    plan = recs["reasons"].map(lambda r: r["plan"])
    nearest = plan.map(lambda p: p["target_resistance"] == 1)
    resistance = recs["reasons"].map(lambda r: r["resistance_distance"]["resistance"])
    assert (recs.loc[nearest, "target"] <= resistance[nearest] + 1e-4).all()
    assert (recs["target"] <= plan.map(lambda p: p["target_level"]) + 1e-4).all()
    assert (recs["target"] > recs["entry"]).all()


def test_every_summary_states_the_plan_as_the_fields_give_it(partition):
    """Each summary read back (summary_mismatches) against its row: prices, percentages, horizon, chance, expected
    return, caution flags, and the levels it names on their side of the buy."""
    recs, _ = partition
    assert {row["market"]: summary_mismatches(row) for row in recs.to_dict("records") if summary_mismatches(row)} == {}
    flagged = recs[recs["market"] == "KRW-M001"]
    assert len(flagged) and flagged["summary"].str.contains("; caution: price fluctuations): ", regex=False).all()
    assert recs["summary"].str.contains(" in 24 h, ", regex=False).all() and recs["summary"].str.contains("% chance first", regex=False).all()


def test_a_summary_that_disagrees_with_its_fields_is_caught(partition):
    row = partition[0].iloc[0].to_dict()
    assert summary_mismatches(row) == []
    assert summary_mismatches({**row, "target": row["target"] + row["tick_size"]})  # the field moved, the text did not
    assert summary_mismatches({**row, "caution": ["price_fluctuations"]} if not row["caution"] else {**row, "caution": []})
    assert summary_mismatches({**row, "summary": row["summary"].replace(" in 24 h,", " in 4 h,")})


def test_targets_lie_within_the_horizons_reach(market):
    """A reach of 1 ATR: no target farther than 1 ATR above the entry (plus a tick: the entry rounds up);
    a market without a resistance inside the reach targets the reach."""
    recs, _ = _run(market, ticks=TICKS[:3], min_reward_risk=1.0, calibration=flat_calibration(reach_atr=1.0))
    assert len(recs)
    atr = recs["reasons"].map(lambda r: r["volatility"]["atr14_pct"] / 100 * r["trend"]["price"])
    assert (recs["target"] - recs["entry"] <= atr * 1.0 + recs["tick_size"]).all()
    at_reach = recs["reasons"].map(lambda r: r["plan"]["target_resistance"] is None)
    assert at_reach.any() and recs.loc[at_reach, "summary"].str.contains("target at the 24 h reach (1.0 ATR)", regex=False).all()


def test_chance_and_expected_return_come_from_the_table(partition):
    """A flat table (6 of 10 plans reached the target first, 3 the stop, 1 neither at no gain): every pick carries
    that chance and the expected return of its own prices net of the fee on both legs."""
    recs, _ = partition
    np.testing.assert_allclose(recs["p_target_first"], 0.6, rtol=1e-12)
    expected = (0.6 * net_return(recs["entry"], recs["target"]) + 0.3 * net_return(recs["entry"], recs["stop"])
                + 0.1 * net_return(recs["entry"], recs["entry"]))
    np.testing.assert_allclose(recs["expected_return_net"], expected, rtol=1e-12)


def test_plans_expected_to_lose_are_not_listed_and_are_counted(market, partition):
    """No plan reached the target first: none pays, none is listed, every placeable one is counted."""
    recs, counts = _run(market, ticks=TICKS[:2], calibration=flat_calibration(target=0, stop=9, neither=1))
    assert recs.empty and list(recs.columns) == analysis.RECOMMENDATION_COLUMNS
    base = partition[1].iloc[:2]
    assert (counts["excluded_negative_ev"] == base["eligible"] - base["excluded_reward_risk"]).all()
    assert (counts["excluded_negative_ev"] > 0).all()


def test_an_entry_price_per_market_replaces_the_last_trade_and_says_so(market, partition):
    """An order book's best ask (on the grid) is the entry where given; the other markets keep the last trade."""
    recs = partition[0][partition[0]["as_of"] == TICKS[0]]
    chosen = recs["market"].iloc[0]
    ask = recs["entry"].iloc[0] + recs["tick_size"].iloc[0]
    tick = analysis.recommend_at(inputs_of(market, TICKS[:1]), TICKS[0], PARAMS, entry=pd.Series({chosen: ask}), entry_from="best_ask")
    plans = tick.plans.set_index("market")
    assert plans.loc[chosen, "entry"] == ask and plans.loc[chosen, "entry_from"] == "best_ask"
    assert (plans.drop(index=chosen)["entry_from"] == "last_trade").all()
    with pytest.raises(ValueError, match="entry_from"):
        analysis.recommend_at(inputs_of(market, TICKS[:1]), TICKS[0], PARAMS, entry=pd.Series({chosen: ask}))


def test_a_stored_tick_coarser_than_the_table_is_used(market):
    """upbit_instruments' tick wins where it is coarser: a 100 KRW tick puts every price on hundreds."""
    instruments = pd.DataFrame({"day": market.upbit_markets["day"], "market": market.upbit_markets["market"],
                                "tick_size": 100.0})
    recs, _ = compute_recommendations(inputs_of(market, TICKS[:2], instruments=instruments), TICKS[:2], PARAMS)
    assert len(recs) and (recs["tick_size"] == 100.0).all()
    assert ((recs[["entry", "target", "stop"]] % 100.0) == 0).all().all()
    assert_placeable(recs, FLOOR)
    assert {row["market"]: summary_mismatches(row) for row in recs.to_dict("records") if summary_mismatches(row)} == {}


def test_a_risk_off_market_gets_a_shortlist_counted_and_said(market):
    inputs = inputs_of(market, TICKS[:1])
    normal, _, normal_counts, _, _ = analysis.recommend_at(inputs, TICKS[0], PARAMS, regime="neutral")
    off, _, counts, _, _ = analysis.recommend_at(inputs, TICKS[0], PARAMS, regime="risk_off")
    assert len(normal) > analysis.RISK_OFF_MAX_PICKS and normal_counts.excluded_regime == 0
    assert len(off) == analysis.RISK_OFF_MAX_PICKS and counts.excluded_regime == len(normal) - len(off)
    assert list(off["market"]) == list(normal["market"].head(len(off)))
    assert (off["regime"] == "risk_off").all() and off["summary"].str.contains("(risk-off market)", regex=False).all()


def test_a_higher_floor_excludes_more_and_every_pick_meets_it(market, partition):
    recs, counts = _run(market, ticks=TICKS[:3], min_reward_risk=3.0)
    base = partition[1].iloc[:3]
    assert (counts["excluded_reward_risk"] >= base["excluded_reward_risk"]).all()
    assert counts["excluded_reward_risk"].sum() > base["excluded_reward_risk"].sum()
    assert_placeable(recs, 3.0)


def test_turnover_of_a_partly_stored_window_is_scaled_to_24_hours_not_read_as_a_quiet_day():
    """A fresh install stores only the last hours: 6 h at 1e8 KRW/h (4 closed hours, 2 of minutes) is a 2.4e9 KRW day."""
    as_of = pd.Timestamp("2026-01-02T12:00Z")
    minutes = pd.date_range(as_of - pd.Timedelta(hours=6), as_of, freq="1min", inclusive="left")
    candles = pd.DataFrame({"market": "KRW-AAA", "candle_start": minutes, "value": 1e8 / 60, "open": 1.0, "high": 1.0,
                            "low": 1.0, "close": 1.0, "volume": 1.0})
    hours = pit.resample_bars(candles[candles["candle_start"] < as_of - pd.Timedelta(hours=2)], pit.HOUR)
    markets = pd.DataFrame({"day": [pd.Timestamp("2026-01-02T00:00Z")], "market": ["KRW-AAA"], "warning": [False]})
    inputs = AnalysisInputs.assemble(Lookback(minute_hours=2, hourly_days=1), pd.DatetimeIndex([as_of]),
                                     candles_1m=candles[candles["candle_start"] >= as_of - pd.Timedelta(hours=2)], candles_1h=hours,
                                     upbit_markets=markets)

    universe, counts = analysis.universe_at(inputs, as_of, min_turnover_krw=1e9)

    assert inputs.turnover.hours_stored(as_of - analysis.TURNOVER_WINDOW, as_of) == 6.0
    assert universe.loc["KRW-AAA", "turnover_24h"] == pytest.approx(2.4e9)
    assert counts.excluded_turnover == 0


def _minute_sum(candles_1m: pd.DataFrame, start: pd.Timestamp, end: pd.Timestamp) -> pd.Series:
    inside = candles_1m[(candles_1m["candle_start"] >= start) & (candles_1m["candle_start"] < end)]
    return inside.groupby("market")["value"].sum()


def _hours_and_minutes(candles_1m: pd.DataFrame, candles_1h: pd.DataFrame, ticks: pd.DatetimeIndex) -> Turnover:
    """The turnover as a tick reads it: candles_1h before the minute lookback, 1-minute candles of the lookback only."""
    minutes_start = ticks[0].floor("h") - analysis.LOOKBACK.minute_hours * pit.HOUR
    return Turnover(candles_1m[candles_1m["candle_start"] >= minutes_start], candles_1h, minutes_start, ticks[-1],
                    hours_start=ticks[0] - analysis.TURNOVER_WINDOW)


@pytest.mark.parametrize("source", ["simulated", "recorded"])
def test_hours_plus_minutes_turnover_equals_the_minute_sum(market, upbit_data_dir, source):
    """The hour+minute turnover equals the 1-minute sum over the same window: the 24 h window of every tick at
    an hour boundary, the last hour's (volume surge) and every window from the first whole hour on, at every
    5-minute tick of an hour. Simulated: the conftest market; recorded: real Upbit minutes, hours rolled up
    from them (the recorded 1h file carries no KRW turnover)."""
    if source == "simulated":
        m1, h1, hour = market.candles_1m, market.candles_1h, HOUR
    else:
        m1 = pd.read_parquet(upbit_data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
        m1["value"] = m1["volume"] * m1[["open", "high", "low", "close"]].mean(axis=1)
        h1, hour = pit.resample_bars(m1, pit.HOUR), pd.Timestamp("2025-09-20 14:00", tz="UTC")
    ticks = tick_times(hour, hour + pit.HOUR, 300)
    turnover = _hours_and_minutes(m1, h1, ticks)
    for as_of in ticks:
        start = as_of - analysis.TURNOVER_WINDOW
        windows = [(start.ceil("h"), as_of), (as_of - analysis.SURGE_WINDOW, as_of)] + ([(start, as_of)] if start == start.ceil("h") else [])
        for begin, end in windows:
            expected = _minute_sum(m1, begin, end)
            got = turnover.between(begin, end).reindex(expected.index)
            np.testing.assert_allclose(got.to_numpy(), expected.to_numpy(), rtol=1e-9, err_msg=f"{as_of} [{begin}, {end})")
        # inside the oldest hour the 24 h window takes its share of that hour: between the two whole-hour sums
        within = turnover.between(start, as_of).reindex(expected.index)
        low, high = _minute_sum(m1, start.ceil("h"), as_of), _minute_sum(m1, start.floor("h"), as_of)
        assert ((within >= low.reindex(within.index) * (1 - 1e-9)) & (within <= high.reindex(within.index) * (1 + 1e-9))).all()


def test_the_universe_is_the_one_the_minute_sum_gives(market):
    """Every tick of the hour: the same eligible markets, whether the 24 h turnover is summed over minutes or
    taken from closed hours plus the recent minutes (the oldest hour pro rata)."""
    inputs = inputs_of(market, TICKS)
    for as_of in TICKS:
        minute_sum = _minute_sum(market.candles_1m, as_of - analysis.TURNOVER_WINDOW, as_of)
        listed = market.upbit_markets[market.upbit_markets["day"] == as_of.floor("D")].set_index("market")
        expected = listed.index[~listed["warning"] & (minute_sum.reindex(listed.index).fillna(0.0) >= MIN_TURNOVER)]
        universe, _ = analysis.universe_at(inputs, as_of, MIN_TURNOVER)
        assert list(universe.index) == list(expected)
