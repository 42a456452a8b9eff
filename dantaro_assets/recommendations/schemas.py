"""Pandera schemas of the recommendations and their outcomes: what may be written, per partition window.

``summary_mismatches`` reads a pick's summary back and compares every figure it states with the field it
names: the blocking check, the tests and the quality report use it.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import pandera.pandas as pa

from dantaro_assets.lib.schemas import finite_floats
from dantaro_assets.lib.tick_grid import grid_tick, off_grid, tick_for
from dantaro_assets.recommendations.analysis import COMPONENTS, REGIMES
from dantaro_assets.recommendations.outcomes import HORIZONS
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.recommendations.trade_plan import BEST_ASK, LAST_TRADE

_UTC = pd.DatetimeTZDtype("ns", "UTC")
_MARKET = pa.Column(str, pa.Check.str_matches(r"^KRW-[A-Z0-9]+$"))
_SCORE = pa.Check.in_range(0.0, 100.0)
_SCORER = pa.Column(str, pa.Check.isin(list(SCORERS)))
_KEY = ["as_of", "scorer", "market"]
_HORIZON_HOURS = [int(span / pd.Timedelta(hours=1)) for span in HORIZONS.values()]


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


_NUMBER = r"[0-9][0-9,]*(?:\.[0-9]+)?"
_SIGNED = r"[+-][0-9]+\.[0-9]{2}"
_SUMMARY = re.compile(
    rf"^(?P<market>KRW-[A-Z0-9]+) (?P<score>[0-9]+) \((?P<regime>[a-z-]+) market(?:; caution: (?P<caution>[a-z ,]+))?\): "
    rf"buy (?P<entry>{_NUMBER}), target (?P<target>{_NUMBER}) \((?P<target_pct>{_SIGNED})%\) in (?P<hours>[0-9]+) h, "
    rf"(?P<chance>[0-9]+)% chance first, stop (?P<stop>{_NUMBER}) \((?P<stop_pct>{_SIGNED})%\), "
    rf"reward:risk (?P<reward_risk>[0-9]+\.[0-9]{{2}}), expected (?P<expected>{_SIGNED})% net of fees; "
    rf"(?:target at the (?P<reach_hours>[0-9]+) h reach \((?P<reach>[0-9.]+) ATR\), no resistance within it"
    rf"|target at resistance (?P<target_level>{_NUMBER})(?:, the [0-9]+(?:st|nd|rd|th) above the buy; the nearest, "
    rf"resistance (?P<nearest>{_NUMBER}) \((?P<nearest_pct>{_SIGNED})%\), is too near for the floor)?); "
    rf"(?:stop [0-9.]+ ATR under zone (?P<zone_low>{_NUMBER})-(?P<zone_high>{_NUMBER}), the zone the price trades in"
    rf"|stop [0-9.]+ ATR under support (?P<support_low>{_NUMBER})-(?P<support>{_NUMBER}) \((?P<support_pct>{_SIGNED})%\)"
    rf"|stop [0-9.]+ ATR under the buy, no support below); .+$"
)


def _value(text: str) -> float:
    return float(text.replace(",", ""))


def summary_mismatches(row: Mapping[str, Any]) -> list[str]:
    """What a pick's summary states that its fields do not: every price is the field it names (read at the tick's
    decimals, so an off-grid field cannot match), on the grid, resistances above the buy and supports below it;
    percentages, horizon, chance, reward:risk and expected return as the fields give them; the caution flags."""
    return summaries_mismatches([row])[0]


def summaries_mismatches(rows: Sequence[Mapping[str, Any]]) -> list[list[str]]:
    """:func:`summary_mismatches` of each row; the stated prices of every row go through the grid test at once."""
    found_wrong: list[list[str | int]] = []  # per row: a reason, or the index of a stated price still to test
    stated: list[tuple[float, float, str]] = []  # (price read, its row's tick, the reason if it is off the grid)
    for row in rows:
        found_wrong.append(_read_back(row, stated))
    prices = [price for price, _, _ in stated]
    off = off_grid(prices, grid_tick(prices, [tick for _, tick, _ in stated])) if stated else []
    return [[item if isinstance(item, str) else stated[item][2] for item in wrong if isinstance(item, str) or off[item]]
            for wrong in found_wrong]


def _read_back(row: Mapping[str, Any], stated: list[tuple[float, float, str]]) -> list[str | int]:
    """One row's mismatches; each price it states that equals its field is appended to ``stated`` for the grid test
    and stands in the list as its index there."""
    found = _SUMMARY.match(str(row["summary"]))
    if found is None:
        return ["summary does not read as a plan"]
    reasons = row["reasons"] if isinstance(row["reasons"], dict) else json.loads(row["reasons"])
    plan, entry, tick = reasons["plan"], float(row["entry"]), float(row["tick_size"])
    wrong: list[str | int] = []

    def same_price(group: str, field: str, value: Any) -> None:
        text = found.group(group)
        if text is None:
            return
        reason = f"{group} {text} is not {field} {value} on the grid"
        price = _value(text)
        if value is None or price != float(value):
            wrong.append(reason)
        else:
            wrong.append(len(stated))
            stated.append((price, tick, reason))

    def same_pct(group: str, value: float) -> None:
        if found.group(group) is not None and abs(float(found.group(group)) - 100.0 * (value / entry - 1.0)) > 0.005 + 1e-9:
            wrong.append(f"{group} {found.group(group)}% is not {100.0 * (value / entry - 1.0):.4f}%")

    # the score as a whole number, as the API's 2-decimal score still reads (72.495 stored, 72.50 served: "72")
    if found["market"] != row["market"] or abs(int(found["score"]) - row["score"]) > 0.5 + 0.005 or found["regime"] != row["regime"].replace("_", "-"):
        wrong.append("market, score or regime differ")
    stated_flags = [flag.replace(" ", "_") for flag in found["caution"].split(", ")] if found["caution"] else []
    if stated_flags != list(row["caution"]):
        wrong.append(f"caution {stated_flags} is not {list(row['caution'])}")
    for group in ("entry", "target", "stop"):
        same_price(group, group, row[group])
    same_pct("target_pct", float(row["target"]))
    same_pct("stop_pct", float(row["stop"]))
    if int(found["hours"]) != int(row["horizon_hours"]) or abs(int(found["chance"]) - 100.0 * row["p_target_first"]) > 0.5 + 0.005:
        wrong.append("horizon or chance differ")
    if abs(float(found["reward_risk"]) - row["reward_risk"]) > 0.005 + 1e-9:
        wrong.append("reward:risk differs")
    if abs(float(found["expected"]) - 100.0 * row["expected_return_net"]) > 0.005 + 1e-4:  # the API serves it to 6 decimals
        wrong.append("expected return differs")
    if found["reach_hours"] is not None and (int(found["reach_hours"]) != int(row["horizon_hours"])
                                             or abs(float(found["reach"]) - plan["reach_atr"]) > 0.05 + 1e-9):
        wrong.append("reach differs")
    same_price("target_level", "plan.target_level", plan["target_level"])
    same_price("nearest", "resistance_distance.resistance", reasons["resistance_distance"]["resistance"])
    same_pct("nearest_pct", _value(found["nearest"]) if found["nearest"] else entry)
    same_price("zone_low", "plan.zone_low", plan["zone_low"])
    same_price("zone_high", "plan.zone_high", plan["zone_high"])
    same_price("support_low", "support_distance.support_low", reasons["support_distance"]["support_low"])
    same_price("support", "support_distance.support", reasons["support_distance"]["support"])
    same_pct("support_pct", _value(found["support"]) if found["support"] else entry)
    for group in ("target_level", "nearest"):
        if found[group] is not None and not _value(found[group]) > entry:
            wrong.append(f"resistance {found[group]} is called above the buy {entry} but is not")
    if found["support"] is not None and not _value(found["support"]) < entry:
        wrong.append(f"support {found['support']} is called below the buy {entry} but is not")
    if found["zone_low"] is not None and not _value(found["zone_low"]) <= entry:
        wrong.append(f"the zone the price trades in starts at {found['zone_low']}, above the buy {entry}")
    return wrong


def _summaries_match(frame: pd.DataFrame) -> pd.Series:
    return pd.Series([not wrong for wrong in summaries_mismatches(frame.to_dict("records"))], index=frame.index, dtype=bool)


def _pick_columns(start: pd.Timestamp, end: pd.Timestamp) -> dict[str, pa.Column]:
    """A pick and its plan's prices: the columns recommendations and their outcomes share."""
    return {
        "as_of": _as_of(start, end),
        "scorer": _SCORER,
        "rank": pa.Column("int64", pa.Check.ge(1)),
        "market": _MARKET,
        "score": pa.Column(float, _SCORE),
        "entry": pa.Column(float, pa.Check.gt(0)),
        "target": pa.Column(float),
        "stop": pa.Column(float),
    }


def recommendations_schema(start: pd.Timestamp, end: pd.Timestamp, warned: pd.DataFrame,
                           min_reward_risk: float, max_spread_bps: float = math.inf) -> pa.DataFrameSchema:
    """Rows of one hourly partition; ``warned`` lists (as_of, market) pairs under Upbit's warning flag. An entry at the
    best ask carries its book's spread, at most ``max_spread_bps``; one from the last trade carries none."""
    warned_keys = pd.MultiIndex.from_frame(warned[["as_of", "market"]]) if len(warned) else None

    def not_warned(frame: pd.DataFrame) -> pd.Series:
        if warned_keys is None:
            return pd.Series(True, index=frame.index)
        return pd.Series(~pd.MultiIndex.from_frame(frame[["as_of", "market"]]).isin(warned_keys), index=frame.index)

    return finite_floats(pa.DataFrameSchema(
        {
            **_pick_columns(start, end),
            **{c: pa.Column(float, _SCORE) for c in COMPONENTS},
            "reasons": pa.Column(object, pa.Check(_json_object, element_wise=True, error="reasons must be a JSON object")),
            "summary": pa.Column(str, pa.Check.str_length(min_value=1)),
            "reward_risk": pa.Column(float, pa.Check.ge(min_reward_risk, error=f"reward:risk below the floor {min_reward_risk}")),
            "p_target_first": pa.Column(float, pa.Check.in_range(0.0, 1.0)),
            "expected_return_net": pa.Column(float, pa.Check.gt(0.0, error="a plan expected to lose money net of fees was listed")),
            "horizon_hours": pa.Column("int64", pa.Check.isin(_HORIZON_HOURS)),
            "expires_at": pa.Column(_UTC),
            "entry_from": pa.Column(str, pa.Check.isin([LAST_TRADE, BEST_ASK])),
            "spread_bps": pa.Column(float, [pa.Check.gt(0), pa.Check.le(max_spread_bps, error=f"spread wider than {max_spread_bps} bps")],
                                    nullable=True),
            "tick_size": pa.Column(float, pa.Check.gt(0)),
            "regime": pa.Column(str, pa.Check.isin(list(REGIMES))),
            "caution": pa.Column(object, pa.Check(_caution_list, element_wise=True, error="caution must be a list of flag names"),
                                 nullable=False),
        },
        checks=[
            pa.Check(_on_grid, name="prices_on_tick_grid", error="entry, target and stop must lie on Upbit's tick grid"),
            pa.Check(lambda f: (f["target"] - f["entry"]) >= f["reward_risk"] * (f["entry"] - f["stop"]) * (1 - 1e-9),
                     name="reward_risk_of_the_prices", error="reward_risk must be (target - entry) / (entry - stop)"),
            pa.Check(lambda f: (f["stop"] < f["entry"]) & (f["entry"] < f["target"]), name="stop_entry_target",
                     error="stop < entry < target must hold"),
            pa.Check(lambda f: f["spread_bps"].notna() == (f["entry_from"] == BEST_ASK), name="spread_with_book",
                     error="an entry at the best ask carries its book's spread_bps, one from the last trade none"),
            pa.Check(_ranks_are_one_to_n, name="rank_one_to_n", error="ranks must run 1..N by falling score within each as_of and scorer"),
            pa.Check(not_warned, name="no_warning_market", error="a market under Upbit's warning flag was recommended"),
            pa.Check(lambda f: f["expires_at"] == f["as_of"] + pd.to_timedelta(f["horizon_hours"], unit="h"), name="expires_at",
                     error="expires_at must be as_of + horizon_hours"),
            pa.Check(_summaries_match, name="summary_matches_fields",
                     error="every figure of the summary must be the field it names (summary_mismatches)"),
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
            **_pick_columns(start, end),
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
