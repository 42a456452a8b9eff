"""Pandera schema of a support_levels partition (built per partition window)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats

_UTC = pd.DatetimeTZDtype("ns", "UTC")


def support_levels_schema(start: pd.Timestamp, end: pd.Timestamp, per_side: int = 3) -> pa.DataFrameSchema:
    """Levels of every tick in [start, end): supports below the price below resistances, levels inside their zones."""
    positive = pa.Column("float64", pa.Check.gt(0.0), nullable=False)
    return finite_floats(pa.DataFrameSchema(
        {
            "as_of": pa.Column(_UTC, [pa.Check.ge(start, error=f">= {start.isoformat()} (partition start)"),
                                      pa.Check.lt(end, error=f"< {end.isoformat()} (partition end)")], nullable=False),
            "market": pa.Column(str, pa.Check.str_matches(r"^KRW-[A-Z0-9]+$"), nullable=False),
            "side": pa.Column(str, pa.Check.isin(["support", "resistance"]), nullable=False),
            "rank": pa.Column("int64", pa.Check.in_range(1, per_side), nullable=False),
            "price": positive,
            "level": positive,
            "zone_low": pa.Column("float64", nullable=False),
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
            pa.Check(lambda df: (df["side"] != "support") | (df["level"] < df["price"]), name="supports below the price"),
            pa.Check(lambda df: (df["side"] != "resistance") | (df["level"] > df["price"]), name="resistances above the price"),
            pa.Check(lambda df: _ranked_by_distance(df), name="rank 1 is the nearest level of its side"),
            pa.Check(lambda df: _zones_apart(df), name="zones of one side never overlap"),
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


def _zones_apart(frame: pd.DataFrame) -> pd.Series:
    """Within (as_of, market, side), each zone starts at or above the top of the zone below it."""
    ordered = frame.sort_values(["as_of", "market", "side", "zone_low"])
    below_top = ordered.groupby([ordered["as_of"], ordered["market"], ordered["side"]])["zone_high"].shift()
    return (below_top.isna() | (ordered["zone_low"] >= below_top)).reindex(frame.index)
