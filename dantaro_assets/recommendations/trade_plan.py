"""Entry, target and stop of a pick: from the levels the summary names, on Upbit's price grid, within reach, worth the risk.

Every rounding moves against the pick, so the reward:risk floor is checked on the prices a trader places;
the rules and the ticks used: docs/analyses.md, "A plan a trader can place" and "Tick sizes".
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dantaro_assets.lib.tick_grid import round_to_tick, tick_for

STOP_BELOW_SUPPORT_ATR = 0.5  # the stop sits this many ATR under the zone below the price ...
STOP_DEFAULT_ATR = 2.0  # ... or this many ATR under the entry when there is none
LAST_TRADE = "last_trade"  # ``entry_from`` of an entry made from the last trade
BEST_ASK = "best_ask"  # ``entry_from`` of an entry at the order book's best ask
# Why a market cannot be recommended although it scored: the ``excluded`` values.
NO_ROOM = "no_room"  # the target is not above the entry on the grid
BELOW_FLOOR = "reward_risk_below_floor"  # no target within reach offers (target - entry) / (entry - stop) >= the floor
NO_STOP = "no_stop"  # the stop would be at or below zero
NEGATIVE_EV = "expected_return_not_positive"  # placeable, but plans like it lost money net of fees (calibration)
EXCLUDED = {
    NO_ROOM: "no room: the target is not above the entry on the grid",
    BELOW_FLOOR: "no target within the horizon's reach offers the reward:risk floor",
    NO_STOP: "the stop would be at or below zero",
    NEGATIVE_EV: "plans like it lost money net of fees (calibration table)",
}


def resistance_targets(levels: pd.DataFrame, entry: pd.Series) -> pd.DataFrame:
    """Every resistance zone above the entry as a target candidate: (market, target_level, order), nearest first.

    A resistance is referenced by its zone's bottom (on the grid); order 1 is the nearest.
    """
    above = levels[levels["side"] == "resistance"]
    above = above[above["zone_low"] > above["market"].map(entry)]
    out = pd.DataFrame({"market": above["market"], "target_level": above["zone_low"]}).sort_values(["market", "target_level"])
    out["order"] = out.groupby("market").cumcount() + 1
    return out.reset_index(drop=True)


def entry_prices(price: pd.Series, stored_ticks: pd.Series, entry: pd.Series | None = None,
                 entry_from: str | None = None) -> pd.DataFrame:
    """Entry, its tick and where it came from, per market: ``entry`` where given (named ``entry_from``, e.g.
    ``best_ask``; a price on the market's grid), else the last price rounded up (``last_trade``)."""
    if entry is not None and not entry_from:
        raise ValueError("an entry price per market needs entry_from, the name of where it comes from")
    tick = pd.Series(tick_for(price, stored_ticks), index=price.index)
    last = pd.Series(round_to_tick(price, tick, "up"), index=price.index)
    given = (entry if entry is not None else pd.Series(dtype=float)).reindex(price.index)
    return pd.DataFrame({"entry": given.fillna(last), "tick_size": tick,
                         "entry_from": np.where(given.notna(), entry_from, LAST_TRADE)}, index=price.index)


def plan_trades(features: pd.DataFrame, levels: pd.DataFrame, stored_ticks: pd.Series, min_reward_risk: float,
                reach_atr: float, entry: pd.Series | None = None, entry_from: str | None = None) -> pd.DataFrame:
    """Entry/target/stop on the grid, reward:risk, distances in ATR and the exclusion reason (None = placeable), per market.

    ``features`` (index market) needs ``price``, ``atr`` and ``stop_zone_low`` (the bottom of the zone the
    stop goes under, NaN without one); ``levels`` are support_levels' rows. The target is the nearest
    resistance within ``reach_atr`` x ATR whose placed price offers the floor; a market whose resistances
    within reach offer none is excluded (its nearest is reported), one without a resistance within reach
    targets the reach.
    """
    price, atr = features["price"], features["atr"]
    placed = entry_prices(price, stored_ticks, entry, entry_from)
    entry_price, entry_tick = placed["entry"], placed["tick_size"]
    has_zone = features["stop_zone_low"].notna()
    raw_stop = (features["stop_zone_low"] - STOP_BELOW_SUPPORT_ATR * atr).where(has_zone, entry_price - STOP_DEFAULT_ATR * atr)
    raw_stop = raw_stop.clip(lower=0.0)
    stop = pd.Series(round_to_tick(raw_stop, tick_for(raw_stop, entry_tick), "down"), index=features.index)
    reach = entry_price + reach_atr * atr

    candidates = resistance_targets(levels, entry_price)
    candidates = candidates[candidates["market"].isin(features.index)]
    candidates = candidates[candidates["target_level"] <= candidates["market"].map(reach)]
    fallback = features.index.difference(candidates["market"].unique())
    candidates = pd.concat([
        candidates,
        pd.DataFrame({"market": fallback, "target_level": reach.reindex(fallback).to_numpy(), "order": 0}),
    ], ignore_index=True)
    level = pd.Series(candidates["target_level"].to_numpy(), index=candidates["market"].to_numpy())
    target_prices = round_to_tick(level, tick_for(level, entry_tick), "down")
    candidate_entry = entry_price.reindex(level.index).to_numpy()
    candidate_stop = stop.reindex(level.index).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (target_prices - candidate_entry) / (candidate_entry - candidate_stop)
    candidates = candidates.assign(target=target_prices, reward_risk=ratio, passes=ratio >= min_reward_risk)
    # per market: the nearest passing candidate, else the nearest one (reported, excluded)
    chosen = (candidates.sort_values(["market", "passes", "order"], ascending=[True, False, True])
              .drop_duplicates("market").set_index("market").reindex(features.index))
    target, reward_risk = chosen["target"], chosen["reward_risk"]
    excluded = np.select(
        [target <= entry_price, (stop <= 0) | (stop >= entry_price), ~(reward_risk >= min_reward_risk)],
        [NO_ROOM, NO_STOP, BELOW_FLOOR],
        default=None,
    )
    atr_pct = atr / entry_price
    return pd.DataFrame({
        "entry": entry_price,
        "target": target,
        "stop": stop,
        "reward_risk": reward_risk,
        "tick_size": entry_tick,
        "entry_from": placed["entry_from"],
        "target_level": chosen["target_level"],
        "target_order": chosen["order"].astype(int),
        "target_atr": (target / entry_price - 1.0) / atr_pct,
        "stop_atr": (1.0 - stop / entry_price) / atr_pct,
        "reach_atr": reach_atr,
        "stop_from": np.where(has_zone, features["stop_zone"], "2_atr"),
        "excluded": pd.Series(excluded, index=features.index, dtype=object),
    }, index=features.index)
