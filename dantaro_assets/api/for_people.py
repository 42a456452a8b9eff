"""Snapshot rows as people read them: prices on the market's tick grid, percentages to 2 decimals.

Postgres and the Redis cache keep full precision (the record); only the API's answer is rounded, here.
Prices are rounded to the tick of their row (``tick_size``, the one the picks were placed on; the
documented KRW table at the row's price where a row has none), in the direction that never flatters
a buyer: a support or resistance level and a zone's bottom down, a zone's top up (zones only widen).
Entry, target and stop of a pick are on the grid already and stay as they are.
"""

from __future__ import annotations

import math
from typing import Any

from dantaro_assets.lib.tick_grid import krw_tick_size, round_to_tick
from dantaro_assets.support_levels.analysis import RANKING

PERCENT_DECIMALS = 2
SCORE_DECIMALS = 2
# Per asset: price fields rounded down, rounded up, and the row field naming the price that sets the tick.
_LEVEL_DOWN = {"support_levels": ("price", "level", "zone_low"), "market_status": ("btc_price", "btc_ema_20h")}
_LEVEL_UP = {"support_levels": ("zone_high",)}
_REASON_PRICES = {"trend": ("ema20", "ema50"), "support_distance": ("support",), "resistance_distance": ("resistance",),
                  "plan": ("target_level",)}
_SCORES = ("score", "trend", "momentum", "volume_surge", "support_distance", "resistance_distance", "volatility",
           "strength", "score_breadth", "score_trend", "score_momentum", "score_calm", "reward_risk")


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
    reasons = row.get("reasons")
    if asset == "recommendations" and isinstance(reasons, dict):
        for part, keys in _REASON_PRICES.items():
            if isinstance(reasons.get(part), dict):
                reasons[part] = {k: (_price(row, v, "down") if k in keys else v) for k, v in reasons[part].items()}
    return row


def for_people(asset: str, payload: dict[str, Any]) -> dict[str, Any]:
    """The payload with every row rounded for reading; support levels also say how they are ranked."""
    rounded = {**payload, "rows": [_row(asset, dict(row)) for row in payload.get("rows", [])]}
    if asset == "support_levels":
        rounded["ranking"] = RANKING
    return rounded
