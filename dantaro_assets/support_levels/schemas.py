"""Pandera schema of a support_levels partition (built per partition window), and the level invariants it enforces.

``level_breaches`` states the invariants once, row by row; the blocking check, the API's tests and the
quality report all count with it, on stored rows and on the rows the API serves.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats
from dantaro_assets.lib.tick_grid import grid_tick, off_grid, to_grid
from dantaro_assets.support_levels.analysis import MAX_ZONE_ATR, SIDES

_UTC = pd.DatetimeTZDtype("ns", "UTC")
# name -> what a breaching row does wrong (the check's error and the quality report's key)
INVARIANTS = {
    "zone_overlaps": "zones of a market overlap or touch on the tick grid",
    "supports_above_price": "a support zone reaches the price (supports lie entirely below it)",
    "resistances_below_price": "a resistance zone reaches the price (resistances lie entirely above it)",
    "at_price_outside": "an at_price zone does not contain the price",
    "crossed_levels": "a support zone reaches a resistance zone of its market",
    "off_grid": "a level price is off Upbit's tick grid",
    "too_wide": f"a zone is wider than {MAX_ZONE_ATR} ATR (plus a tick each side from the rounding)",
}


def level_breaches(frame: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per invariant (``INVARIANTS``), True where the row breaks it.

    ``frame`` holds rows of one or more ticks with ``as_of, market, side, price, level, zone_low,
    zone_high, atr, tick_size``; the price is read as a person sees it: on the grid (down for a support's
    comparison, up for a resistance's).
    """
    ticks = frame["tick_size"].to_numpy(float)
    price, low, high = (frame[c].to_numpy(float) for c in ("price", "zone_low", "zone_high"))
    side = frame["side"].to_numpy()
    keys = [frame["as_of"], frame["market"]]
    ordered = frame.sort_values(["as_of", "market", "zone_low"], kind="stable")
    top_below = ordered.groupby(["as_of", "market"])["zone_high"].cummax().groupby([ordered["as_of"], ordered["market"]]).shift()
    lowest_resistance = frame["zone_low"].where(frame["side"] == "resistance").groupby(keys).transform("min")
    highest_support = frame["zone_high"].where(frame["side"] == "support").groupby(keys).transform("max")
    prices_off = np.zeros(len(frame), bool)
    for column in ("level", "zone_low", "zone_high"):
        values = frame[column].to_numpy(float)
        prices_off |= off_grid(values, grid_tick(values, ticks))
    slack = grid_tick(low, ticks) + grid_tick(high, ticks)
    return pd.DataFrame({
        "zone_overlaps": (ordered["zone_low"] <= top_below).reindex(frame.index).to_numpy(),
        "supports_above_price": (side == "support") & ~(high < to_grid(price, ticks, "down")),
        "resistances_below_price": (side == "resistance") & ~(low > to_grid(price, ticks, "up")),
        "at_price_outside": (side == "at_price") & ~((low <= price) & (price <= high)),
        "crossed_levels": ((side == "support") & (high >= lowest_resistance.to_numpy()))
                          | ((side == "resistance") & (low <= highest_support.to_numpy())),
        "off_grid": prices_off,
        "too_wide": high - low > MAX_ZONE_ATR * frame["atr"].to_numpy(float) + slack,
    }, index=frame.index)


def _invariant(name: str) -> pa.Check:
    return pa.Check(lambda df: ~level_breaches(df)[name], name=name, error=INVARIANTS[name])


def support_levels_schema(start: pd.Timestamp, end: pd.Timestamp, per_side: int = 3) -> pa.DataFrameSchema:
    """Levels of every tick in [start, end): on the grid, apart, at their side of the price, levels inside their zones."""
    positive = pa.Column("float64", pa.Check.gt(0.0), nullable=False)
    return finite_floats(pa.DataFrameSchema(
        {
            "as_of": pa.Column(_UTC, [pa.Check.ge(start, error=f">= {start.isoformat()} (partition start)"),
                                      pa.Check.lt(end, error=f"< {end.isoformat()} (partition end)")], nullable=False),
            "market": pa.Column(str, pa.Check.str_matches(r"^KRW-[A-Z0-9]+$"), nullable=False),
            "side": pa.Column(str, pa.Check.isin(list(SIDES)), nullable=False),
            "rank": pa.Column("int64", pa.Check.in_range(1, per_side), nullable=False),
            "price": positive,
            "level": positive,
            "zone_low": pa.Column("float64", pa.Check.ge(0.0), nullable=False),
            "zone_high": positive,
            "strength": pa.Column("float64", pa.Check.in_range(0.0, 100.0), nullable=False),
            "touches": pa.Column("int64", pa.Check.ge(0), nullable=False),
            "volume_share": pa.Column("float64", pa.Check.in_range(0.0, 1.0), nullable=False),
            "pivot": pa.Column(object, nullable=True),
            "distance_pct": pa.Column("float64", nullable=False),
            "atr": positive,
            "warning": pa.Column(bool, nullable=False),
            "caution": pa.Column(bool, nullable=False),
            "tick_size": positive,
            "reasons": pa.Column(object, pa.Check(lambda s: s.map(lambda r: isinstance(r, dict)), name="reasons is an object"),
                                 nullable=False),
        },
        checks=[
            pa.Check(lambda df: (df["zone_low"] <= df["level"]) & (df["level"] <= df["zone_high"]),
                     name="zone_low <= level <= zone_high"),
            pa.Check(lambda df: _ranked_by_distance(df), name="rank 1 is the nearest level of its side"),
            pa.Check(lambda df: (df["side"] != "at_price") | (df["rank"] == 1), name="one at_price zone per market"),
            *(_invariant(name) for name in INVARIANTS),
        ],
        unique=["as_of", "market", "side", "rank"],
        strict=True,
        name="support_levels",
    ))


def _ranked_by_distance(frame: pd.DataFrame) -> pd.Series:
    """Within (as_of, market, side), distance from the price grows with the rank."""
    ordered = frame.sort_values(["as_of", "market", "side", "rank"])
    distance = (ordered["level"] - ordered["price"]).abs()
    previous = distance.groupby([ordered["as_of"], ordered["market"], ordered["side"]]).shift()
    return (previous.isna() | (distance >= previous)).reindex(frame.index)
