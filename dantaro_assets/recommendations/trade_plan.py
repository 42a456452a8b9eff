"""Entry, target and stop of a pick: from the levels the summary names, on Upbit's price grid, worth the risk.

A pick is a plan a trader can place: a limit buy at ``entry``, a take-profit at ``target``, a stop at
``stop``. Rules, per market (vectorised):

- entry = the last traded price before as_of, rounded **up** to the tick (a buyer pays at least that);
- target = the nearest reported resistance above the price (its zone's bottom, or the level when the
  price is inside the zone) whose placed price offers the reward:risk floor, rounded **down**; the
  summary names it, and the nearer resistance it lies beyond when it is not the nearest; no resistance
  above: entry + 3 ATR;
- stop = half an ATR under the bottom of the nearest support zone below (the one the summary names),
  rounded **down**; no support below: entry - 2 ATR.

Every rounding moves against the pick (a dearer entry, a nearer target, a farther stop), so the
reward:risk ``(target - entry) / (entry - stop)`` computed on the placed prices is never better than
the unrounded one, and the floor (``DANTARO_MIN_REWARD_RISK``) is checked on the placed prices.

Tick: the entry's ``tick_size`` is Upbit's tick for the market at as_of (``upbit_instruments``, the
newest day <= as_of) or, where none is stored, the documented KRW table's tick at the price (the
coarser of the two when both exist). Target and stop use the entry's tick, or the documented tick of
their own band where that is coarser (a target beyond a band edge). Upbit's ticks nest (each coarser
tick is a multiple of every finer one), so a price on the coarser grid is placeable on the finer one:
every price of a pick sits on ``tick_for(price, tick_size)``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dantaro_assets.lib.tick_grid import round_to_tick, tick_for

TARGET_DEFAULT_ATR = 3.0  # no resistance above: the target is the entry plus this many ATR
STOP_BELOW_SUPPORT_ATR = 0.5  # the stop sits this many ATR under the nearest support zone ...
STOP_DEFAULT_ATR = 2.0  # ... or this many ATR under the entry when there is no support below
# Why a market cannot be recommended although it scored: the ``excluded`` values.
NO_ROOM = "no_room"  # the target is not above the entry on the grid (price at or inside a resistance)
BELOW_FLOOR = "reward_risk_below_floor"  # (target - entry) / (entry - stop) < the floor
NO_STOP = "no_stop"  # the stop would be at or below zero


def resistance_targets(levels: pd.DataFrame, price: pd.Series) -> pd.DataFrame:
    """Every reported resistance above the price as a target candidate: (market, target_level, order), nearest first.

    A resistance is referenced by its zone's bottom, or by the level when the price is inside the zone
    (the same reference ``nearest_levels`` gives the summary); order 1 is the nearest.
    """
    above = levels[(levels["side"] == "resistance")].assign(price=lambda f: f["market"].map(price))
    above = above[above["level"] > above["price"]]
    reference = above["zone_low"].where(above["zone_low"] > above["price"], above["level"])
    out = pd.DataFrame({"market": above["market"], "target_level": reference}).sort_values(["market", "target_level"])
    out["order"] = out.groupby("market").cumcount() + 1
    return out.reset_index(drop=True)


def plan_trades(features: pd.DataFrame, targets: pd.DataFrame, stored_ticks: pd.Series,
                min_reward_risk: float) -> pd.DataFrame:
    """Entry/target/stop on the grid, reward:risk and the exclusion reason (None = recommendable), per market.

    ``features`` (index market) needs ``price``, ``atr`` and ``support_low`` (NaN without a support
    below); ``targets`` is :func:`resistance_targets`. The target is the nearest resistance whose placed
    price offers the floor; a market with resistances none of which does is excluded (its nearest is
    reported), one without any resistance above targets entry + 3 ATR.
    """
    price, atr = features["price"], features["atr"]
    entry_tick = pd.Series(tick_for(price, stored_ticks), index=features.index)
    entry = pd.Series(round_to_tick(price, entry_tick, "up"), index=features.index)
    has_support = features["support_low"].notna()
    raw_stop = (features["support_low"] - STOP_BELOW_SUPPORT_ATR * atr).where(has_support, entry - STOP_DEFAULT_ATR * atr)
    raw_stop = raw_stop.clip(lower=0.0)
    stop = pd.Series(round_to_tick(raw_stop, tick_for(raw_stop, entry_tick), "down"), index=features.index)

    candidates = targets[targets["market"].isin(features.index)]
    fallback = features.index.difference(candidates["market"].unique())
    candidates = pd.concat([
        candidates,
        pd.DataFrame({"market": fallback, "target_level": (entry + TARGET_DEFAULT_ATR * atr).reindex(fallback).to_numpy(),
                      "order": 0}),
    ], ignore_index=True)
    level = pd.Series(candidates["target_level"].to_numpy(), index=candidates["market"].to_numpy())
    placed = round_to_tick(level, tick_for(level, entry_tick), "down")
    candidate_entry = entry.reindex(level.index).to_numpy()
    candidate_stop = stop.reindex(level.index).to_numpy()
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = (placed - candidate_entry) / (candidate_entry - candidate_stop)
    candidates = candidates.assign(target=placed, reward_risk=ratio, passes=ratio >= min_reward_risk)
    # per market: the nearest passing candidate, else the nearest one (reported, excluded)
    chosen = (candidates.sort_values(["market", "passes", "order"], ascending=[True, False, True])
              .drop_duplicates("market").set_index("market").reindex(features.index))
    target = chosen["target"]
    reward_risk = chosen["reward_risk"]
    excluded = np.select(
        [target <= entry, (stop <= 0) | (stop >= entry), ~(reward_risk >= min_reward_risk)],
        [NO_ROOM, NO_STOP, BELOW_FLOOR],
        default=None,
    )
    order = chosen["order"].astype(int)
    return pd.DataFrame({
        "entry": entry,
        "target": target,
        "stop": stop,
        "reward_risk": reward_risk,
        "tick_size": entry_tick,
        "target_level": chosen["target_level"],
        "target_order": order,
        "stop_from": np.where(has_support, "support", "2_atr"),
        "excluded": pd.Series(excluded, index=features.index, dtype=object),
    }, index=features.index)
