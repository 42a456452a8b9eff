"""Pandera schema of a market_status partition (built per partition window)."""

from __future__ import annotations

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats
from dantaro_assets.market_status.analysis import BTC_COLUMNS

_UTC = pd.DatetimeTZDtype("ns", "UTC")


def market_status_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """One row per tick inside [start, end); scores 0-100, shares 0-1, counts and amounts non-negative."""
    score = pa.Column("float64", pa.Check.in_range(0.0, 100.0), nullable=False)
    component = pa.Column("float64", pa.Check.in_range(0.0, 100.0), nullable=True)  # NaN: no data, counted as 50
    share = pa.Column("float64", pa.Check.in_range(0.0, 1.0), nullable=True)
    amount = pa.Column("float64", pa.Check.ge(0.0), nullable=True)
    signed = pa.Column("float64", nullable=True)
    columns = {
        "as_of": pa.Column(_UTC, [pa.Check.ge(start, error=f">= {start.isoformat()} (partition start)"),
                                  pa.Check.lt(end, error=f"< {end.isoformat()} (partition end)")], nullable=False, unique=True),
        "regime": pa.Column(str, pa.Check.isin(["risk_on", "neutral", "risk_off"]), nullable=False),
        "summary": pa.Column(str, pa.Check.str_length(min_value=1), nullable=False),
        "score": score, "score_breadth": component, "score_trend": component, "score_momentum": component,
        "score_calm": component,
        "markets": pa.Column("int64", pa.Check.ge(1, error="no market has a 60-minute return at this tick: are candles_1m "
                                                    "of this hour and the one before stored?"), nullable=False),
        "markets_warning": pa.Column("int64", pa.Check.ge(0), nullable=False),
        "markets_caution": pa.Column("int64", pa.Check.ge(0), nullable=False),
        "breadth_1h": share, "breadth_day": share,
        "median_return_1h_pct": signed, "dispersion_1h_pct": amount,
        "turnover_krw_1h": amount, "turnover_ratio_24h": amount,
        **{c: signed for c in BTC_COLUMNS},
        "btc_price": pa.Column("float64", pa.Check.gt(0.0), nullable=True),
        **{c: amount for c in ["btc_vol_1h_pct", "btc_vol_24h_pct", "btc_vol_annualised_pct"]},
    }
    return finite_floats(pa.DataFrameSchema(
        columns,
        checks=[
            pa.Check(lambda df: (df["markets_warning"] <= df["markets"]) & (df["markets_caution"] <= df["markets"]),
                     name="flagged markets <= markets"),
            pa.Check(lambda df: (df["regime"] == "risk_on") == (df["score"] >= 60.0)
                     if len(df) else pd.Series(dtype=bool), name="regime follows the score (risk_on iff score >= 60)"),
        ],
        strict=True,
        name="market_status",
    ))
