"""Upbit market data: the daily KRW universe, its order price units, 1-minute, 1-hour and 1-day candles, and order book tops.

Assets in ``assets.py``; its jobs, schedule and history sensor in ``jobs.py`` and ``history.py``, merged by ``definitions.build_defs``.
"""
