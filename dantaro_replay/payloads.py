"""Upbit quotation JSON bodies built from a candle source, with Upbit's field names, order and types.

Field lists follow the recorded responses in ../shared/data/upbit/api_captures.json; the instruments
body (not recorded) follows docs.upbit.com's reference of ``GET /v1/orderbook/instruments`` (market,
quote_currency, tick_size as a decimal string, supported_levels).
"""

from __future__ import annotations

import math
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np

from dantaro_replay.core import (
    CAUTION_KEYS,
    DAY_MINUTES,
    Candles,
    CandleSource,
    MarketInfo,
    iso_seconds,
    tick_size,
)

KST = timezone(timedelta(hours=9))


def market_entry(info: MarketInfo, details: bool) -> dict:
    entry = {"market": info.market, "korean_name": info.korean_name, "english_name": info.english_name}
    if details:
        entry["market_event"] = {"warning": info.warning, "caution": dict(zip(CAUTION_KEYS, info.caution))}
    return entry


def candle_entries(market: str, candles: Candles, unit_minutes: int, prev_close: float | None) -> list[dict]:
    """Candles newest first. Day candles carry prev_closing_price/change_*; ``prev_close`` is the close
    before the oldest candle given (None: the market's first candle, compared with its own open)."""
    starts = candles.start
    utc_times = iso_seconds(starts).tolist()
    kst_times = iso_seconds(starts + 9 * 3600).tolist()
    opens, highs, lows, closes = (a.tolist() for a in (candles.open, candles.high, candles.low, candles.close))
    volumes = np.round(candles.volume, 8).tolist()
    values = candles.value.tolist()
    stamps = candles.last_trade_ms.tolist()
    entries = []
    for i in range(len(starts) - 1, -1, -1):
        entry = {
            "market": market,
            "candle_date_time_utc": utc_times[i],
            "candle_date_time_kst": kst_times[i],
            "opening_price": opens[i],
            "high_price": highs[i],
            "low_price": lows[i],
            "trade_price": closes[i],
            "timestamp": int(stamps[i]),
            "candle_acc_trade_price": values[i],
            "candle_acc_trade_volume": volumes[i],
        }
        if unit_minutes == DAY_MINUTES:
            previous = closes[i - 1] if i > 0 else (prev_close if prev_close is not None else opens[i])
            change = closes[i] - previous
            entry["prev_closing_price"] = previous
            entry["change_price"] = _clean(change)
            entry["change_rate"] = round(change / previous, 10) if previous else 0.0
        else:
            entry["unit"] = unit_minutes
        entries.append(entry)
    return entries


def _clean(x: float) -> float:
    """Drop binary noise from differences of tick-aligned prices (e.g. 0.30000000000000004)."""
    return float(f"{x:.10g}") if x else 0.0


def instrument_entry(source: CandleSource, market: str, now: float) -> dict:
    """``/v1/orderbook/instruments`` for one market: the order price unit at its last price (a decimal string,
    as Upbit sends it) and the grouping levels, multiples of it."""
    last = source.candles(market, DAY_MINUTES, now, 1, now)
    tick = float(tick_size(float(last.close[-1]) if len(last) else 1.0))
    text = format(Decimal(repr(tick)).normalize(), "f")
    levels = [format(Decimal(text) * factor, "f") for factor in (1, 10, 100)]
    return {"market": market, "quote_currency": market.split("-")[0], "tick_size": text, "supported_levels": levels}


def ticker_entry(source: CandleSource, market: str, now: float) -> dict:
    """``/v1/ticker`` for one market at ``now``: the UTC-day candle, the last trade, 24 h sums, 52-week extremes."""
    days = source.candles(market, DAY_MINUTES, now, 2, now)
    minutes = source.candles(market, 1, now, DAY_MINUTES, now).since(now - 86_400)
    if len(minutes) == 0:
        minutes = source.candles(market, 60, now, 25, now).since(now - 86_400)
    today_start = math.floor(now / 86_400) * 86_400
    if len(days) and days.start[-1] == today_start:
        today, yesterday_close = days.take(slice(-1, None)), (float(days.close[-2]) if len(days) > 1 else None)
    else:  # nothing traded yet today: Upbit shows the previous close, zero volume
        last_close = float(days.close[-1]) if len(days) else 0.0
        today = None
        yesterday_close = last_close
    last_ms = int(minutes.last_trade_ms[-1]) if len(minutes) else (int(days.last_trade_ms[-1]) if len(days) else int(now * 1000))
    trade_price = float(today.close[0]) if today is not None else yesterday_close
    prev_close = yesterday_close if yesterday_close is not None else (float(today.open[0]) if today is not None else trade_price)
    change = trade_price - prev_close
    rate = round(change / prev_close, 10) if prev_close else 0.0
    high52, high52_date, low52, low52_date = source.extremes_52w(market, now)
    today_date = datetime.fromtimestamp(today_start, tz=UTC).strftime("%Y-%m-%d")
    if today is not None and float(today.high[0]) > high52:
        high52, high52_date = float(today.high[0]), today_date
    if today is not None and (float(today.low[0]) < low52 or not low52_date):
        low52, low52_date = float(today.low[0]), today_date
    last_trade = datetime.fromtimestamp(last_ms / 1000, tz=UTC)
    last_trade_kst = last_trade.astimezone(KST)
    return {
        "market": market,
        "trade_date": last_trade.strftime("%Y%m%d"),
        "trade_time": last_trade.strftime("%H%M%S"),
        "trade_date_kst": last_trade_kst.strftime("%Y%m%d"),
        "trade_time_kst": last_trade_kst.strftime("%H%M%S"),
        "trade_timestamp": last_ms,
        "opening_price": float(today.open[0]) if today is not None else trade_price,
        "high_price": float(today.high[0]) if today is not None else trade_price,
        "low_price": float(today.low[0]) if today is not None else trade_price,
        "trade_price": trade_price,
        "prev_closing_price": prev_close,
        "change": "RISE" if change > 0 else "FALL" if change < 0 else "EVEN",
        "change_price": abs(_clean(change)),
        "change_rate": abs(rate),
        "signed_change_price": _clean(change),
        "signed_change_rate": rate,
        "trade_volume": round(float(minutes.volume[-1]) / 7, 8) if len(minutes) else 0.0,
        "acc_trade_price": float(today.value[0]) if today is not None else 0.0,
        "acc_trade_price_24h": float(minutes.value.sum()),
        "acc_trade_volume": round(float(today.volume[0]), 8) if today is not None else 0.0,
        "acc_trade_volume_24h": round(float(minutes.volume.sum()), 8),
        "highest_52_week_price": high52,
        "highest_52_week_date": high52_date,
        "lowest_52_week_price": low52,
        "lowest_52_week_date": low52_date,
        "timestamp": max(last_ms, int(now * 1000)),
    }
