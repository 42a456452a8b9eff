"""Upbit market data: the daily KRW universe, its order price units, 1-minute, 1-hour and 1-day candles, and order book tops.

Its jobs, schedule and history sensor are in ``jobs.py`` and ``history.py``, merged by ``definitions.build_defs``.
"""

from dantaro_assets.markets.assets import (
    candles_1d,
    candles_1h,
    candles_1m,
    orderbook_top,
    upbit_instruments,
    upbit_markets,
)

assets = [upbit_markets, upbit_instruments, candles_1m, candles_1h, candles_1d, orderbook_top]

__all__ = ["assets", "candles_1d", "candles_1h", "candles_1m", "orderbook_top", "upbit_instruments", "upbit_markets"]
