from decimal import Decimal

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib.tick_grid import grid_tick, krw_tick_size, off_grid, round_to_tick, to_grid

# docs.upbit.com "원화(KRW) 마켓 주문 가격 단위", in force since 2025-07-31: (price, tick) at and around
# every band edge.
DOCUMENTED = [
    (0.000009, "0.00000001"), (0.00001, "0.0000001"), (0.0001, "0.000001"), (0.001, "0.00001"),
    (0.01, "0.0001"), (0.1, "0.001"), (0.99, "0.001"), (1, "0.01"), (9.99, "0.01"), (10, "0.1"),
    (99.9, "0.1"), (100, "1"), (999, "1"), (1_000, "1"), (4_999, "1"), (5_000, "5"), (9_995, "5"),
    (10_000, "10"), (49_990, "10"), (50_000, "50"), (99_950, "50"), (100_000, "100"), (499_900, "100"),
    (500_000, "500"), (999_500, "500"), (1_000_000, "1000"), (1_999_000, "1000"), (2_000_000, "1000"),
    (150_000_000, "1000"),
]


def test_krw_tick_size_is_the_documented_table():
    prices = np.array([price for price, _ in DOCUMENTED])
    assert krw_tick_size(prices).tolist() == [float(tick) for _, tick in DOCUMENTED]
    assert np.isnan(krw_tick_size([np.nan, 0.0, -5.0])).all()
    assert krw_tick_size(pd.Series([3044.2])).tolist() == [1.0]


@pytest.mark.parametrize(
    ("price", "tick", "down", "up"),
    [
        (3044.2001859917, 1, 3044.0, 3045.0),
        (1.23, 0.01, 1.23, 1.23),  # 1.23 / 0.01 is 122.99999999999999 in floats
        (1.2345, 0.01, 1.23, 1.24),
        (0.3, 0.1, 0.3, 0.3),
        (7_777.0, 5, 7_775.0, 7_780.0),
        (0.000123456, 0.000001, 0.000123, 0.000124),
        (149_999_999.0, 1000, 149_999_000.0, 150_000_000.0),
        (1_234.5, 0.5, 1_234.5, 1_234.5),
    ],
)
def test_round_to_tick_is_exact_in_both_directions(price, tick, down, up):
    assert round_to_tick([price], tick, "down").tolist() == [down]
    assert round_to_tick([price], tick, "up").tolist() == [up]


def test_rounded_prices_are_the_decimal_literals_on_a_dense_grid():
    """Every price of a fine grid, nudged a little, lands on the float a decimal literal gives."""
    ticks = np.array([0.01, 0.001, 0.1, 0.0001])
    counts = np.arange(1, 5_001)
    for tick in ticks:
        prices = counts * tick + tick / 3
        exact = [float(Decimal(int(c)) * Decimal(repr(float(tick)))) for c in counts]
        assert round_to_tick(prices, tick, "down").tolist() == exact
        assert not off_grid(round_to_tick(prices, tick, "up"), tick).any()


def test_off_grid_flags_prices_that_are_not_grid_floats():
    prices = [1.23, 1.2300000000000002, 3044.2001859917, 3044.0, np.nan, 7_776.0]
    ticks = [0.01, 0.01, 1, 1, 1, 5]
    assert off_grid(prices, ticks).tolist() == [False, True, True, False, False, True]


def test_nan_and_bad_directions():
    assert np.isnan(round_to_tick([np.nan, 5.0], [1, np.nan], "down")).all()
    with pytest.raises(ValueError, match="direction"):
        round_to_tick([1.0], 1, "half-up")


def test_nearest_rounds_to_the_closer_tick_exactly():
    assert round_to_tick([28.04, 28.06, 5.311, 1.2349999], [0.1, 0.1, 0.01, 0.01], "nearest").tolist() == [28.0, 28.1, 5.31, 1.23]


def test_grid_tick_is_the_coarser_of_the_row_tick_and_the_table():
    """A price placed on a row's tick (the market's, at its price) keeps it, unless the table's tick at the price is coarser."""
    assert grid_tick([3044.2, 10_500.0, 0.5], 1.0).tolist() == [1.0, 10.0, 1.0]
    assert to_grid([3044.2, 10_504.0], [1.0, 1.0], "up").tolist() == [3045.0, 10_510.0]
