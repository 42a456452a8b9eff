"""Pandera schemas of the recommendations and their outcomes: what may be written, per partition window."""

from __future__ import annotations

import json

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats
from dantaro_assets.lib.tick_grid import off_grid, tick_for
from dantaro_assets.recommendations.analysis import COMPONENTS, REGIME_POLICY
from dantaro_assets.recommendations.outcomes import HORIZONS
from dantaro_assets.recommendations.scorers import SCORERS

_UTC = pd.DatetimeTZDtype("ns", "UTC")
_MARKET = pa.Column(str, pa.Check.str_matches(r"^KRW-[A-Z0-9]+$"))
_SCORE = pa.Check.in_range(0.0, 100.0)
_SCORER = pa.Column(str, pa.Check.isin(list(SCORERS)))
_KEY = ["as_of", "scorer", "market"]


def _as_of(start: pd.Timestamp, end: pd.Timestamp) -> pa.Column:
    return pa.Column(_UTC, [pa.Check.ge(start, error=f"as_of before the window start {start}"),
                            pa.Check.lt(end, error=f"as_of at or after the window end {end}")])


def _json_object(value: object) -> bool:
    """A dict that serialises to strict JSON (no NaN or infinity)."""
    try:
        return isinstance(value, dict) and bool(json.dumps(value, allow_nan=False))
    except (TypeError, ValueError):
        return False


def _ranks_are_one_to_n(frame: pd.DataFrame) -> pd.Series:
    """Within each tick and scorer, ranks are 1..N with no gaps or repeats, in descending score order."""
    ordered = frame.sort_values(["as_of", "scorer", "rank"], kind="stable")
    expected = ordered.groupby(["as_of", "scorer"]).cumcount() + 1
    falling = ordered.groupby(["as_of", "scorer"])["score"].diff().fillna(0.0) <= 1e-9
    return ((ordered["rank"] == expected) & falling).reindex(frame.index)


def _caution_list(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(flag, str) and flag for flag in value)


def _on_grid(frame: pd.DataFrame) -> pd.Series:
    """Entry, target and stop are each a grid float of their tick (the row's ``tick_size`` at the entry's price,
    the coarser documented tick beyond a band edge): prices Upbit accepts."""
    stored = pd.Series(frame["tick_size"].to_numpy(), index=frame.index)
    ok = pd.Series(True, index=frame.index)
    for column in ("entry", "target", "stop"):
        prices = pd.Series(frame[column].to_numpy(), index=frame.index)
        ok &= ~off_grid(prices.to_numpy(), tick_for(prices, stored))
    return ok


def recommendations_schema(start: pd.Timestamp, end: pd.Timestamp, warned: pd.DataFrame,
                           min_reward_risk: float) -> pa.DataFrameSchema:
    """Rows of one hourly partition; ``warned`` lists (as_of, market) pairs under Upbit's warning flag."""
    warned_keys = pd.MultiIndex.from_frame(warned[["as_of", "market"]]) if len(warned) else None

    def not_warned(frame: pd.DataFrame) -> pd.Series:
        if warned_keys is None:
            return pd.Series(True, index=frame.index)
        return pd.Series(~pd.MultiIndex.from_frame(frame[["as_of", "market"]]).isin(warned_keys), index=frame.index)

    return finite_floats(pa.DataFrameSchema(
        {
            "as_of": _as_of(start, end),
            "scorer": _SCORER,
            "rank": pa.Column("int64", pa.Check.ge(1)),
            "market": _MARKET,
            "score": pa.Column(float, _SCORE),
            **{c: pa.Column(float, _SCORE) for c in COMPONENTS},
            "reasons": pa.Column(object, pa.Check(_json_object, element_wise=True, error="reasons must be a JSON object")),
            "summary": pa.Column(str, pa.Check.str_length(min_value=1)),
            "entry": pa.Column(float, pa.Check.gt(0)),
            "target": pa.Column(float),
            "stop": pa.Column(float),
            "reward_risk": pa.Column(float, pa.Check.ge(min_reward_risk, error=f"reward:risk below the floor {min_reward_risk}")),
            "tick_size": pa.Column(float, pa.Check.gt(0)),
            "regime": pa.Column(str, pa.Check.isin(list(REGIME_POLICY))),
            "caution": pa.Column(object, pa.Check(_caution_list, element_wise=True, error="caution must be a list of flag names"),
                                 nullable=False),
        },
        checks=[
            pa.Check(_on_grid, name="prices_on_tick_grid", error="entry, target and stop must lie on Upbit's tick grid"),
            pa.Check(lambda f: (f["target"] - f["entry"]) >= f["reward_risk"] * (f["entry"] - f["stop"]) * (1 - 1e-9),
                     name="reward_risk_of_the_prices", error="reward_risk must be (target - entry) / (entry - stop)"),
            pa.Check(lambda f: (f["stop"] < f["entry"]) & (f["entry"] < f["target"]), name="stop_entry_target",
                     error="stop < entry < target must hold"),
            pa.Check(_ranks_are_one_to_n, name="rank_one_to_n", error="ranks must run 1..N by falling score within each as_of and scorer"),
            pa.Check(not_warned, name="no_warning_market", error="a market under Upbit's warning flag was recommended"),
        ],
        unique=_KEY,
        strict=True,
        ordered=False,
        coerce=False,
        name="recommendations",
    ))


def outcomes_schema(start: pd.Timestamp, end: pd.Timestamp) -> pa.DataFrameSchema:
    """Rows of one hourly outcomes partition: returns are fractions (> -100 %), first hit one of the known values."""
    returns = {
        f"{kind}_{label}": pa.Column(float, pa.Check.gt(-1.0), nullable=True)
        for label in HORIZONS for kind in ("return", "universe_return")
    }
    excess = {f"excess_{label}": pa.Column(float, nullable=True) for label in HORIZONS}
    return finite_floats(pa.DataFrameSchema(
        {
            "as_of": _as_of(start, end),
            "scorer": _SCORER,
            "rank": pa.Column("int64", pa.Check.ge(1)),
            "market": _MARKET,
            "score": pa.Column(float, _SCORE),
            "entry": pa.Column(float, pa.Check.gt(0)),
            "target": pa.Column(float),
            "stop": pa.Column(float),
            "entry_price": pa.Column(float, pa.Check.gt(0), nullable=True),
            **returns,
            **excess,
            "first_hit": pa.Column(object, pa.Check.isin(["target", "stop", "neither"]), nullable=True),
            "minutes_to_hit": pa.Column(float, pa.Check.in_range(1, 24 * 60), nullable=True),
        },
        unique=_KEY,
        strict=True,
        name="recommendation_outcomes",
    ))
