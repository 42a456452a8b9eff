"""Snapshot rows as people read them: prices on the market's tick grid, percentages to 2 decimals.

Storage keeps full precision; only the API's answer is rounded, here, in the direction that never flatters a
buyer, so every level invariant the blocking check enforces holds in the answer too. ``unexpired`` drops
picks whose ``expires_at`` has passed.
"""

from __future__ import annotations

import math
from datetime import datetime
from typing import Any

import pandas as pd

from dantaro_assets.lib.tick_grid import krw_tick_size, round_to_tick
from dantaro_assets.support_levels.analysis import RANKING

PERCENT_DECIMALS = 2
SCORE_DECIMALS = 2
# Per asset: price fields rounded down, rounded up, and the row field naming the price that sets the tick.
_LEVEL_DOWN = {"support_levels": ("price", "level", "zone_low"), "market_status": ("btc_price", "btc_ema_20h")}
_LEVEL_UP = {"support_levels": ("zone_high",)}
_REASON_PRICES = {"trend": {"ema20": "down", "ema50": "down"}, "support_distance": {"support": "down", "support_low": "down"},
                  "resistance_distance": {"resistance": "down"},
                  "plan": {"target_level": "down", "zone_low": "down", "zone_high": "up"}}
_SCORES = ("score", "trend", "momentum", "volume_surge", "support_distance", "resistance_distance", "volatility",
           "strength", "score_breadth", "score_trend", "score_momentum", "score_calm", "reward_risk")
_FRACTIONS = {"p_target_first": 4, "expected_return_net": 6}  # 0.01 percentage point, as the summary states them
_BASIS_POINTS = ("spread_bps",)  # to 0.01 bp, like the percentages


def _tick(row: dict[str, Any], price: float) -> float:
    """The row's tick, or the coarser documented tick of ``price``'s band."""
    table = float(krw_tick_size([price])[0])
    stored = row.get("tick_size")
    return max(stored, table) if isinstance(stored, (int, float)) and stored > 0 else table


def _price(row: dict[str, Any], value: Any, direction: str) -> Any:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not math.isfinite(value) or value <= 0:
        return value
    return float(round_to_tick([value], _tick(row, value), direction)[0])


def _round(value: Any, decimals: int) -> Any:
    if isinstance(value, float) and math.isfinite(value):
        return round(value, decimals)
    return value


def _percentages(mapping: dict[str, Any]) -> dict[str, Any]:
    """Every ``*_pct`` field (and pct_above/pct_below) to 2 decimals, nested objects included."""
    out = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            out[key] = _percentages(value)
        elif key.endswith(("_pct", "_pct_h")) or key.startswith("pct_"):
            out[key] = _round(value, PERCENT_DECIMALS)
        else:
            out[key] = value
    return out


def _row(asset: str, row: dict[str, Any]) -> dict[str, Any]:
    row = _percentages(row)
    for key in _LEVEL_DOWN.get(asset, ()):
        if key in row:
            row[key] = _price(row, row[key], "down")
    for key in _LEVEL_UP.get(asset, ()):
        if key in row:
            row[key] = _price(row, row[key], "up")
    for key in _SCORES:
        if key in row:
            row[key] = _round(row[key], SCORE_DECIMALS)
    for key, decimals in _FRACTIONS.items():
        if key in row:
            row[key] = _round(row[key], decimals)
    for key in _BASIS_POINTS:
        if key in row:
            row[key] = _round(row[key], PERCENT_DECIMALS)
    reasons = row.get("reasons")
    if asset == "recommendations" and isinstance(reasons, dict):
        for part, directions in _REASON_PRICES.items():
            if isinstance(reasons.get(part), dict):
                reasons[part] = {k: (_price(row, v, directions[k]) if k in directions else v) for k, v in reasons[part].items()}
    return row


def for_people(asset: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with every row rounded for reading; support levels also say how they are ranked."""
    rounded = {**payload, "rows": [_row(asset, dict(row)) for row in payload.get("rows", [])]}
    if asset == "support_levels":
        rounded["ranking"] = RANKING
    return rounded


def unexpired(payload: dict[str, Any], now: datetime) -> dict[str, Any]:
    """The payload without the picks whose horizon ended by ``now`` (``expires_at``), and how many went (``expired``).

    A snapshot is replaced every few minutes while the pipeline runs; this only bites when it stopped, so
    the API never serves a plan past the hours it was made for.
    """
    rows = payload.get("rows", [])
    now = pd.Timestamp(now)
    live = [row for row in rows if row.get("expires_at") is None or pd.Timestamp(row["expires_at"]) > now]
    return {**payload, "rows": live, "expired": len(rows) - len(live)}
