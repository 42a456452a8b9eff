"""Upbit's KRW price grid: the tick size a price must be a multiple of, and rounding onto it.

Upbit rejects an order off the pair's tick; the stored tick wins, :func:`krw_tick_size` (the documented KRW table)
is the fallback, and rounding is exact on the decimal grid (docs/analyses.md, "Tick sizes").
"""

from __future__ import annotations

from decimal import Decimal
from functools import cache
from typing import Literal

import numpy as np
import pandas as pd

# Lower bound of each band (KRW) and the band's tick, ascending; below the first bound: 1e-8.
_KRW_BOUNDS = np.array(
    [0.00001, 0.0001, 0.001, 0.01, 0.1, 1, 10, 100, 1_000, 5_000, 10_000, 50_000, 100_000, 500_000, 1_000_000],
    dtype=float,
)
_KRW_TICKS = np.array(
    [1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 0.01, 0.1, 1, 1, 5, 10, 50, 100, 500, 1_000],
    dtype=float,
)
_SNAP = 1e-9  # a tick count this close (relative) to a whole number is that number

Direction = Literal["down", "up", "nearest"]


def krw_tick_size(prices) -> np.ndarray:
    """Upbit's documented KRW tick for each price (NaN where the price is NaN or not positive)."""
    values = np.asarray(prices, dtype=float)
    ticks = _KRW_TICKS[np.searchsorted(_KRW_BOUNDS, values, side="right")]
    return np.where(np.isfinite(values) & (values > 0), ticks, np.nan)


@cache
def _tick_parts(tick: float) -> tuple[float, float]:
    """A tick as ``(mantissa, 10**k)``: integer mantissa, k >= 0, from its shortest repr (once per tick value)."""
    exponent = Decimal(repr(tick)).normalize().as_tuple().exponent
    k = max(0, -int(exponent))
    return float(int(Decimal(repr(tick)).scaleb(k))), 10.0**k


def _decimal_parts(ticks: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each tick as ``mantissa / 10**k`` (NaN where the tick is NaN or not positive)."""
    usable = np.isfinite(ticks) & (ticks > 0)
    distinct, where = np.unique(ticks[usable], return_inverse=True)
    parts = np.array([_tick_parts(float(t)) for t in distinct]).reshape(-1, 2)
    mantissa = np.full(ticks.shape, np.nan)
    scale = np.full(ticks.shape, np.nan)
    mantissa[usable], scale[usable] = parts[where, 0], parts[where, 1]
    return mantissa, scale


def round_to_tick(prices, ticks, direction: Direction) -> np.ndarray:
    """``prices`` moved onto their tick grid, ``"down"`` (floor), ``"up"`` (ceiling) or ``"nearest"``, as exact decimals.

    ``ticks`` is one tick or one per price. A price already on the grid is returned as the grid's
    float. NaN prices, and prices with a NaN or non-positive tick, give NaN.
    """
    if direction not in ("down", "up", "nearest"):
        raise ValueError(f"direction must be 'down', 'up' or 'nearest', got {direction!r}")
    values = np.asarray(prices, dtype=float)
    tick_array = np.broadcast_to(np.asarray(ticks, dtype=float), values.shape).copy()
    mantissa, scale = _decimal_parts(tick_array)
    with np.errstate(invalid="ignore", divide="ignore"):
        count = values * scale / mantissa
        nearest = np.round(count)
        on_grid = np.abs(count - nearest) <= _SNAP * np.maximum(1.0, np.abs(nearest))
        moved = {"down": np.floor, "up": np.ceil, "nearest": np.round}[direction](count)
        whole = np.where(on_grid, nearest, moved)
        return whole * mantissa / scale


def off_grid(prices, ticks) -> np.ndarray:
    """True where a price is not exactly a grid float of its tick (NaN prices are not off the grid)."""
    values = np.asarray(prices, dtype=float)
    snapped = round_to_tick(values, ticks, "down")
    return np.isfinite(values) & ~(snapped == values)


def grid_tick(prices, row_ticks) -> np.ndarray:
    """The tick each price must sit on when its row was placed on ``row_ticks`` (one per price, or one):
    the coarser of that and the documented tick at the price itself (a price beyond a band edge)."""
    return np.fmax(krw_tick_size(prices), np.broadcast_to(np.asarray(row_ticks, dtype=float), np.shape(prices)))


def to_grid(prices, row_ticks, direction: Direction) -> np.ndarray:
    """``prices`` rounded onto the grid of :func:`grid_tick`: how every price a person reads is placed."""
    return round_to_tick(prices, grid_tick(prices, row_ticks), direction)


def tick_for(prices: pd.Series, stored: pd.Series) -> np.ndarray:
    """The tick each price (indexed by market) must sit on: the coarser of the market's tick in ``stored``
    (index market) and the documented table's at the price. Upbit's ticks nest (a coarser tick is a
    multiple of every finer one), so a price on the coarser grid is placeable on both."""
    return grid_tick(prices.to_numpy(), stored.reindex(prices.index).to_numpy(dtype=float))
