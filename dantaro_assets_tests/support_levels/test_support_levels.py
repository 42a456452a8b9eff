"""support_levels: the method on known shapes and real candles, point-in-time ticks, checks, materialisation."""

from __future__ import annotations

import dataclasses

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, tick_times
from dantaro_assets.lib.checks import pandera_check
from dantaro_assets.lib.tick_grid import to_grid
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.support_levels.analysis import (
    COLUMNS,
    LOOKBACK,
    SNAPSHOT_COLUMNS,
    LevelParams,
    compute_support_levels,
    hold_the_price,
    levels_at,
    side_at_price,
)
from dantaro_assets.support_levels.assets import SUPPORT_LEVELS
from dantaro_assets.support_levels.schemas import level_breaches, support_levels_schema
from dantaro_assets_tests.lib.candle_data import (
    always_failing_schema,
    materialise,
    real_candles,
    store,
    universe,
    with_future_bars,
)

HOUR = pd.Timestamp("2025-09-24 09:00", tz="UTC")
PARTITION = "2025-09-24-09:00"
MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-XRP"]
PARTITIONS_START = pd.Timestamp(daily_partitions.start)


def _triangle_market(market: str, low: float, high: float, hours: int, end: pd.Timestamp) -> pd.DataFrame:
    """Hourly bars bouncing between ``low`` and ``high`` every 12 hours (closing mid-range at the end)."""
    times = pd.date_range(end=end - pit.HOUR, periods=hours, freq="1h")
    phase = np.abs((np.arange(hours) % 24) - 12) / 12.0  # 1 at the top, 0 at the bottom
    close = low + (high - low) * phase
    frame = pd.DataFrame({"market": market, "candle_start": times, "open": close, "close": close,
                          "high": close + 0.2, "low": close - 0.2, "volume": 10.0})
    frame["value"] = frame["close"] * frame["volume"]
    return frame


def test_range_bound_market_has_support_at_the_floor_and_resistance_at_the_ceiling():
    as_of = pd.Timestamp("2025-09-10 06:00", tz="UTC")
    hourly = _triangle_market("KRW-AAA", 100.0, 110.0, 24 * 20, as_of)
    daily = pd.DataFrame({"market": ["KRW-AAA"], "candle_start": [as_of.floor("D") - pd.Timedelta(days=1)],
                          "open": [105.0], "high": [110.2], "low": [99.8], "close": [104.0], "volume": [1.0], "value": [1.0]})
    levels = levels_at(hourly, daily, pd.Series({"KRW-AAA": 105.0}), as_of)
    assert list(levels.columns) == COLUMNS
    support = levels[levels["side"] == "support"]
    resistance = levels[levels["side"] == "resistance"]
    floor = support.loc[support["touches"].idxmax()]
    ceiling = resistance.loc[resistance["touches"].idxmax()]
    days = LevelParams().lookback_hours // 24  # one bottom and one top a day inside the lookback
    assert floor["zone_low"] <= 99.8 <= floor["zone_high"] and floor["touches"] >= days - 1
    assert ceiling["zone_low"] <= 110.2 <= ceiling["zone_high"] and ceiling["touches"] >= days - 1
    assert floor["strength"] == support["strength"].max() >= 60
    assert ceiling["strength"] == resistance["strength"].max() >= 60
    p = (110.2 + 99.8 + 104.0) / 3
    pivots = levels.dropna(subset=["pivot"])
    assert any("P" in names.split(",") and lo <= p <= hi
               for names, lo, hi in pivots[["pivot", "zone_low", "zone_high"]].itertuples(index=False))
    assert floor["reasons"]["swing_touches"] == floor["touches"] and floor["reasons"]["last_touch"].endswith("Z")


def test_zones_never_overlap_or_touch_and_merged_levels_keep_their_strength(levels):
    for _, tick in levels.groupby(["as_of", "market"]):
        zones = tick.sort_values("zone_low")
        assert (zones["zone_low"].to_numpy()[1:] > zones["zone_high"].to_numpy()[:-1]).all()
    assert pandera_check(support_levels_schema(HOUR, HOUR + pit.HOUR), levels).passed
    assert levels["reasons"].map(lambda r: r["merged_zones"] >= 1).all()


def test_overlapping_zones_merge_into_the_strongest_level():
    """Three supports whose zones chain into each other and one apart: two levels; the merged one keeps the
    strongest member's level and strength, the union of the zones, the summed touches and every pivot."""
    from dantaro_assets.support_levels.analysis import merge_overlapping

    levels = pd.DataFrame({
        "market": "KRW-AAA", "side": ["support", "support", "support", "support", "resistance"],
        "level": [90.0, 93.0, 95.0, 80.0, 110.0], "zone_low": [89.0, 92.0, 94.5, 79.0, 109.0],
        "zone_high": [92.5, 95.0, 96.0, 81.0, 111.0], "strength": [40.0, 70.0, 30.0, 50.0, 60.0],
        "touches": [2, 3, 1, 1, 4], "last_touch": [5, 9, 7, 1, 3], "pivot_mask": [1, 0, 2, 0, 0],
        "volume_share": 0.1, "node": None, "atr": 1.0, "price": 100.0,
    })
    merged = merge_overlapping(levels).set_index("level")
    assert sorted(merged.index) == [80.0, 93.0, 110.0]
    top = merged.loc[93.0]
    assert (top["zone_low"], top["zone_high"], top["strength"], top["touches"]) == (89.0, 96.0, 70.0, 6)
    assert (top["last_touch"], top["pivot"], top["merged"]) == (9, "P,R1", 3)
    assert merged.loc[80.0, "merged"] == 1 and merged.loc[110.0, "strength"] == 60.0


def test_pivots_follow_the_floor_trader_formulas():
    as_of = pd.Timestamp("2025-09-10 06:00", tz="UTC")
    hourly = _triangle_market("KRW-AAA", 1000.0, 1001.0, 24 * 3, as_of)  # narrow range: pivots stand alone
    h, l, c = 1100.0, 900.0, 1050.0
    daily = pd.DataFrame({"market": ["KRW-AAA"], "candle_start": [as_of.floor("D") - pd.Timedelta(days=1)],
                          "open": [1000.0], "high": [h], "low": [l], "close": [c], "volume": [1.0], "value": [1.0]})
    levels = levels_at(hourly, daily, pd.Series({"KRW-AAA": 1000.5}), as_of, LevelParams(per_side=10))
    by_pivot = levels.dropna(subset=["pivot"]).set_index("pivot")["level"]
    p = (h + l + c) / 3
    expected = {"P": p, "R1": 2 * p - l, "S1": 2 * p - h, "R2": p + (h - l), "S2": p - (h - l),
                "R3": h + 2 * (p - l), "S3": l - 2 * (h - p)}
    for name, value in expected.items():  # on the 1 KRW grid: the pivot rounded down
        assert by_pivot[name] == np.floor(value), name
    assert (levels.dropna(subset=["pivot"])["strength"] >= 20).all()  # a lone pivot is still reported


@pytest.fixture(scope="module")
def candles(upbit_data_dir):
    minutes = real_candles(upbit_data_dir, "1m")
    start = HOUR - pd.Timedelta(hours=LOOKBACK.minute_hours)
    minutes = minutes[(minutes["candle_start"] >= start) & (minutes["candle_start"] < HOUR + pit.HOUR)].reset_index(drop=True)
    day = HOUR.floor("D")
    hours = real_candles(upbit_data_dir, "1h")
    first_day = max(day - pd.Timedelta(days=LOOKBACK.hourly_days), PARTITIONS_START)  # storage holds nothing earlier
    hours = hours[(hours["candle_start"] >= first_day) & (hours["candle_start"] < HOUR - pit.HOUR)]
    days = real_candles(upbit_data_dir, "1d")
    days = days[(days["candle_start"] >= day - pd.Timedelta(days=1)) & (days["candle_start"] < day)]
    markets = universe(MARKETS, ["2025-09-23", "2025-09-24"], warning=("KRW-XRP",), caution=("KRW-SOL",))
    return minutes, hours.reset_index(drop=True), days.reset_index(drop=True), markets


def _levels(minutes, hours, days, markets, ticks):
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=minutes, candles_1h=hours, candles_1d=days, upbit_markets=markets)
    return compute_support_levels(inputs, ticks).frame


@pytest.fixture(scope="module")
def levels(candles):
    return _levels(*candles, tick_times(HOUR, HOUR + pit.HOUR, 900))


def test_real_candles_give_up_to_three_levels_each_side_at_each_quarter_hour(levels):
    assert list(levels.columns) == SNAPSHOT_COLUMNS
    assert sorted(levels["as_of"].unique()) == list(tick_times(HOUR, HOUR + pit.HOUR, 900))
    counts = levels.groupby(["as_of", "market", "side"]).size()
    sided = counts.drop("at_price", level="side", errors="ignore")
    assert sided.max() <= 3 and len(sided) == 4 * 4 * 2
    assert (counts.xs("at_price", level="side") == 1).all() if "at_price" in counts.index.get_level_values("side") else True
    assert pandera_check(support_levels_schema(HOUR, HOUR + pit.HOUR), levels).passed
    assert levels.loc[levels["market"] == "KRW-XRP", "warning"].all() and not levels.loc[levels["market"] != "KRW-XRP", "warning"].any()
    assert levels.loc[levels["market"] == "KRW-SOL", "caution"].all() and not levels.loc[levels["market"] != "KRW-SOL", "caution"].any()
    btc = levels[(levels["market"] == "KRW-BTC") & (levels["as_of"] == HOUR)]
    # ETH/BTC pivots exist only where a daily candle does (BTC and ETH in the recorded daily file).
    assert btc["pivot"].notna().any()


def test_levels_do_not_change_when_later_candles_are_cut_off(candles, levels):
    minutes, hours, days, markets = candles
    for as_of in levels["as_of"].unique():
        as_of = pd.Timestamp(as_of)
        cut = _levels(minutes[minutes["candle_start"] < as_of], hours[hours["candle_start"] + pit.HOUR <= as_of],
                      days, markets, pd.DatetimeIndex([as_of]))
        expected = levels[levels["as_of"] == as_of].reset_index(drop=True)
        pd.testing.assert_frame_equal(cut, expected)


def test_stored_hours_and_days_after_the_tick_change_nothing(candles, levels):
    """Stored hours from each tick's hour on and days from its day on (tenfold prices) leave every tick's levels
    as they are: a leak through stored hourly or daily candles fails here."""
    minutes, hours, days, markets = candles
    for as_of in pd.DatetimeIndex(levels["as_of"].unique()):
        leaky = _levels(minutes, with_future_bars(hours, as_of.floor("h"), pit.HOUR, count=6),
                        with_future_bars(days, as_of.floor("D"), pit.DAY), markets, pd.DatetimeIndex([as_of]))
        pd.testing.assert_frame_equal(leaky, levels[levels["as_of"] == as_of].reset_index(drop=True))


def test_hours_missing_from_storage_are_built_from_minutes(candles, levels):
    """candles_1h lags: hours 07:00-08:00 come from the 1-minute lookback and give the same levels.

    Only the turnover differs a little: the recorded 1h file has no KRW turnover and the stand-in
    (hour close x hour volume) is not the sum of the minutes' close x volume.
    """
    minutes, hours, days, markets = candles
    lagging = hours[hours["candle_start"] < HOUR - 2 * pit.HOUR]
    assert len(lagging) < len(hours)
    built = _levels(minutes, lagging, days, markets, tick_times(HOUR, HOUR + pit.HOUR, 900))
    # reasons repeat the compared columns, rounded: a 1e-5 turnover difference can flip a digit there.
    pd.testing.assert_frame_equal(built.drop(columns="reasons"), levels.drop(columns="reasons"), check_exact=False, rtol=1e-4)


def _bad(frame: pd.DataFrame, column: str, value) -> pd.DataFrame:
    bad = frame.copy()
    bad.loc[bad.index[0], column] = value
    return bad


def _swap_first_two(frame: pd.DataFrame) -> pd.DataFrame:
    """Rank 1 and rank 2 of the first market's supports trade places (their levels and zones)."""
    bad = frame.copy()
    columns = ["level", "zone_low", "zone_high", "distance_pct"]
    bad.loc[[0, 1], columns] = bad.loc[[1, 0], columns].to_numpy()
    assert list(bad.loc[[0, 1], "rank"]) == [1, 2] and bad.loc[0, "market"] == bad.loc[1, "market"]
    return bad


def _touch_first_two(frame: pd.DataFrame) -> pd.DataFrame:
    """The first market's rank-2 support zone reaches up to its rank-1 zone's bottom: they touch on the grid."""
    bad = frame.copy()
    bad.loc[1, "zone_high"] = bad.loc[0, "zone_low"]
    return bad


def _first(frame: pd.DataFrame, side: str) -> int:
    return int(frame.index[frame["side"] == side][0])


def _widen_deepest_support(frame: pd.DataFrame) -> pd.DataFrame:
    """The first market's deepest support zone reaches 3 ATR further down (still on the grid)."""
    bad = frame.copy()
    row = bad[(bad["market"] == bad.loc[0, "market"]) & (bad["as_of"] == bad.loc[0, "as_of"]) & (bad["side"] == "support")].index[-1]
    bad.loc[row, "zone_low"] = to_grid([bad.loc[row, "zone_low"] - 3 * bad.loc[row, "atr"]], bad.loc[row, "tick_size"], "down")[0]
    return bad


def _set(frame: pd.DataFrame, side: str, column: str, value) -> pd.DataFrame:
    bad = frame.copy()
    row = _first(bad, side)
    bad.loc[row, column] = value(bad.loc[row]) if callable(value) else value
    return bad


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda f: _set(f, "support", "zone_high", lambda r: r["price"]), "a support zone reaches the price"),
        (lambda f: _set(f, "resistance", "zone_low", lambda r: r["price"]), "a resistance zone reaches the price"),
        (lambda f: _set(f, "support", "side", "at_price"), "an at_price zone does not contain the price"),
        (lambda f: _set(f, "support", "zone_high", lambda r: f.loc[_first(f, "resistance"), "zone_low"]), "reaches a resistance zone"),
        (lambda f: _set(f, "support", "level", lambda r: r["level"] + r["tick_size"] / 3), "off Upbit's tick grid"),
        (_widen_deepest_support, "wider than 1.5 ATR"),
        (lambda f: _bad(f, "zone_low", f.loc[f.index[0], "level"] * 1.01), "zone_low <= level <= zone_high"),
        (lambda f: _bad(f, "strength", 120.0), "in_range"),
        (lambda f: _bad(f, "volume_share", -0.1), "in_range"),
        (lambda f: _bad(f, "as_of", HOUR - pit.MINUTE), "partition start"),
        (lambda f: pd.concat([f, f.head(1)], ignore_index=True), "unique"),
        (_swap_first_two, "rank 1 is the nearest"),
        (_touch_first_two, "zones of a market overlap or touch on the tick grid"),
    ],
)
def test_schema_check_names_what_is_wrong(levels, change, message):
    supports = levels[levels["side"] == "support"].reset_index(drop=True)
    frame = pd.concat([supports, levels[levels["side"] != "support"]], ignore_index=True)
    result = pandera_check(support_levels_schema(HOUR, HOUR + pit.HOUR), change(frame))
    assert not result.passed
    assert message in result.description + str(result.metadata["failure_cases"].value)


def test_materialise_over_postgres_and_redis_is_repeatable_and_a_failed_check_changes_nothing(
    candles, io_resources, snapshot_store, postgres_resource
):
    minutes, hours, days, markets = candles
    io_manager = io_resources["io_manager"]
    first_hour = hourly_partitions.get_partition_key_for_timestamp(minutes["candle_start"].min().timestamp())
    store(io_manager, "candles_1m", minutes, partitions_def=hourly_partitions, first=first_hour, last=PARTITION)
    store(io_manager, "candles_1h", hours, partitions_def=daily_partitions, first="2025-09-01", last="2025-09-24")
    store(io_manager, "candles_1d", days, partitions_def=daily_partitions, first="2025-09-23", last="2025-09-24")
    store(io_manager, "upbit_markets", markets, partitions_def=daily_partitions, first="2025-09-23", last="2025-09-24")

    def run() -> pd.DataFrame:
        result = materialise([SUPPORT_LEVELS.asset, SUPPORT_LEVELS.publish], PARTITION, io_resources)
        assert [c.passed for c in result.get_asset_check_evaluations()] == [True]
        metadata = result.asset_materializations_for_node("support_levels")[0].metadata
        assert metadata["ticks"].value == 4 and metadata["markets"].value == 4
        assert "KRW-BTC" in metadata["latest"].value
        published = result.asset_materializations_for_node("support_levels_redis")[0].metadata
        assert (published["markets"].value, published["ttl_seconds"].value) == (4, 1800)
        table = postgres_resource.table_name("support_levels")
        return postgres_resource.read_frame(f"SELECT * FROM {table} ORDER BY as_of, market, side, rank")

    first = run()
    assert len(first) == len(_levels(*candles, tick_times(HOUR, HOUR + pit.HOUR, 900)))
    assert isinstance(first["reasons"].iloc[0], str | dict)
    btc = snapshot_store.cached("support_levels", "KRW-BTC")
    assert btc["as_of"] == "2025-09-24T09:45:00Z" and {r["market"] for r in btc["rows"]} == {"KRW-BTC"}
    assert snapshot_store.cached("support_levels")["as_of"] == "2025-09-24T09:45:00Z"
    pd.testing.assert_frame_equal(first, run())
    published = snapshot_store.cached("support_levels", "KRW-BTC")

    failing = dataclasses.replace(SUPPORT_LEVELS, schema=always_failing_schema)
    failed = materialise([failing.asset, failing.publish], PARTITION, io_resources, raise_on_error=False)
    assert not failed.success and [c.passed for c in failed.get_asset_check_evaluations()] == [False]
    assert "schema check failed, nothing written (stored rows unchanged)" in str(failed.failure_data_for_node("support_levels").error)
    table = postgres_resource.table_name("support_levels")
    pd.testing.assert_frame_equal(postgres_resource.read_frame(f"SELECT * FROM {table} ORDER BY as_of, market, side, rank"), first)
    assert failed.asset_materializations_for_node("support_levels_redis") == []  # the publish step never ran
    assert snapshot_store.cached("support_levels", "KRW-BTC") == published


def test_all_markets_at_once_equal_one_market_at_a_time(candles):
    """The vectorised method never mixes markets: each market alone gives its own rows exactly."""
    minutes, hours, days, _markets = candles
    as_of = HOUR + pd.Timedelta(minutes=30)
    history = AnalysisInputs.assemble(LOOKBACK, pd.DatetimeIndex([as_of]), candles_1m=minutes, candles_1h=hours, candles_1d=days,
                                      upbit_markets=_markets).history
    hourly, price = history.hourly(as_of), history.price(as_of)
    daily = history.daily(as_of, hourly)
    together = levels_at(hourly, daily, price, as_of)
    alone = pd.concat([levels_at(hourly[hourly["market"] == m], daily[daily["market"] == m], price.loc[[m]], as_of)
                       for m in MARKETS], ignore_index=True)
    pd.testing.assert_frame_equal(together, alone)


def test_a_markets_levels_do_not_depend_on_the_markets_beside_it_when_its_low_is_two_equal_prices():
    """Two bars at the market's low whose typical price is one number in decimals but two in floating point
    ((17.0 + 16.8 + 16.8) / 3 and (16.9 + 16.8 + 16.9) / 3): a pivot zone under the range takes the turnover at the
    low either way, whatever the market's place among the others (the 106th of 250 simulated markets once took one
    bar alone and two beside the rest, and its first support moved a tick)."""
    as_of = pd.Timestamp("2025-09-10 06:00", tz="UTC")
    market = "KRW-ZZZ"  # last of the markets, as the 106th of 250 was: where the markets' shared sort key is coarsest
    own = _triangle_market(market, 17.5, 20.0, 24 * 8, as_of)
    for row, (high, low, close) in zip((10, 40), ((17.0, 16.8, 16.8), (16.9, 16.8, 16.9)), strict=True):
        own.loc[row, ["open", "high", "low", "close"]] = [close, high, low, close]
    own["value"] = own["close"] * own["volume"]
    others = [_triangle_market(f"KRW-A{i:02}", 100.0 + i, 110.0 + i, 24 * 8, as_of) for i in range(15)]
    yesterday = as_of.floor("D") - pd.Timedelta(days=1)
    daily = pd.DataFrame({"market": [market, *(f"KRW-A{i:02}" for i in range(15))], "candle_start": yesterday, "open": 15.0,
                          "high": 20.0, "low": 12.0, "close": 14.0, "volume": 1.0, "value": 1.0})  # P 15.33, S1 10.67: under the range
    price = pd.Series({market: 18.0, **{f"KRW-A{i:02}": 105.0 + i for i in range(15)}})
    together = levels_at(pd.concat([*others, own], ignore_index=True), daily, price, as_of)
    alone = levels_at(own, daily[daily["market"] == market], price.loc[[market]], as_of)
    assert alone["pivot"].notna().any(), "the pivot zone under the range is reported"
    pd.testing.assert_frame_equal(together[together["market"] == market].reset_index(drop=True), alone)


def test_a_zone_ending_between_an_off_grid_price_and_its_rounding_is_widened_over_the_price():
    """A market's stored tick (1 KRW) coarser than its price's band: 100.4 rounds to 100 / 101. A zone topping at
    100 is neither below the rounded-down price nor above the rounded-up one, so it is at_price and must hold
    100.4 (a first start served none of its 250 markets' levels: "an at_price zone does not contain the price")."""
    levels = pd.DataFrame({"as_of": [HOUR] * 3, "market": ["KRW-X"] * 3, "price": [100.4] * 3, "tick_size": [1.0] * 3,
                           "atr": [4.0] * 3, "zone_low": [93.0, 98.0, 103.0], "zone_high": [95.0, 100.0, 105.0],
                           "level": [94.0, 99.0, 104.0]})
    levels["side"] = side_at_price(levels)
    assert levels["side"].tolist() == ["support", "at_price", "resistance"]
    assert level_breaches(levels)["at_price_outside"].tolist() == [False, True, False]
    held = hold_the_price(levels)
    assert held[["zone_low", "zone_high"]].to_numpy().tolist() == [[93.0, 95.0], [98.0, 101.0], [103.0, 105.0]]
    assert not level_breaches(held).to_numpy().any()
