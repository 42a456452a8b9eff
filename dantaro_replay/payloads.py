"""Upbit quotation JSON bodies built from a candle source, with Upbit's field names, order and types.

Field lists follow the recorded responses (../shared/data/upbit/api_captures.json); the bodies never
recorded (instruments, order book) follow docs.upbit.com's reference.
"""

from __future__ import annotations

import math
import zlib
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
    round_to_tick,
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


BOOK_UNITS = 30  # units of a book Upbit serves unless ``count`` (1..30) asks for fewer
# Modelled, not recorded (no order book was ever captured): the spread a book opens with, in bps of the
# price, is 6 bps for a market trading 10 bn KRW a day and grows as 1 / sqrt(turnover) (19 bps at 1 bn,
# 60 at 100 M), log-normally scattered, capped at 300 bps; it is at least one tick, so Upbit's grid sets
# the floor (a 1 KRW tick is 67 bps of a 150 KRW coin). Each level holds ~3 % of an hour's turnover.
_SPREAD_BPS_AT_10BN = 6.0
_SPREAD_BPS_CAP = 300.0
_LEVEL_SHARE_OF_HOUR = 0.03


def book_sides(source: CandleSource, market: str, now: float, units: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(ask prices, bid prices, ask sizes, bid sizes), best first, of ``market``'s book at ``now``.

    Consistent with the candles: the last trade (the newest minute's close as ``/v1/candles`` shows it at
    ``now``) is the best bid or the best ask (the side it hit), the other side a spread away on Upbit's
    grid; the spread widens as the market's last 24 h turnover shrinks. Deterministic per (market, second): ``units``
    (Upbit's ``count``) only cuts the same book shorter.
    """
    minute = source.candles(market, 1, now, 1, now)
    last_candle = minute if len(minute) else source.candles(market, DAY_MINUTES, now, 1, now)
    last = float(last_candle.close[-1]) if len(last_candle) else 1.0
    hourly_krw = max(float(source.candles(market, 60, now, 24, now).since(now - 86_400).value.sum()) / 24.0, 1e4)
    rng = np.random.default_rng([zlib.crc32(market.encode()), int(now)])
    spread_bps = min(_SPREAD_BPS_CAP, _SPREAD_BPS_AT_10BN * math.sqrt(1e10 / (24.0 * hourly_krw)) * math.exp(0.35 * rng.standard_normal()))
    tick = float(tick_size(last))
    gap = max(1, round(spread_bps * 1e-4 * last / tick))
    if rng.random() < 0.5:  # the last trade hit the bid: the ask is a spread above it
        best_bid, best_ask = last, float(round_to_tick(last + gap * tick, "up"))
    else:
        best_ask, best_bid = last, float(round_to_tick(max(last - gap * tick, tick), "down"))
    asks, bids = [best_ask], [best_bid]
    for _ in range(units - 1):
        asks.append(float(round_to_tick(asks[-1] + float(tick_size(asks[-1])))))
        below = float(tick_size(bids[-1] * (1 - 1e-6)))  # the tick of the band just under a band edge
        bids.append(max(float(round_to_tick(bids[-1] - below)), float(tick_size(0.0))))
    depth = np.exp(0.6 * rng.standard_normal((2, BOOK_UNITS))) * np.linspace(1.0, 2.0, BOOK_UNITS)  # the same book whatever count
    krw = hourly_krw * _LEVEL_SHARE_OF_HOUR * depth[:, :units]
    ask_prices, bid_prices = np.array(asks), np.array(bids)
    return ask_prices, bid_prices, np.maximum(np.round(krw[0] / ask_prices, 8), 1e-8), np.maximum(np.round(krw[1] / bid_prices, 8), 1e-8)


def orderbook_entry(source: CandleSource, market: str, now: float, units: int) -> dict:
    """``/v1/orderbook`` for one market at ``now``: ``units`` levels, best first, ``total_*_size`` over them."""
    asks, bids, ask_sizes, bid_sizes = book_sides(source, market, now, units)
    return {
        "market": market,
        "timestamp": int(now * 1000),
        "total_ask_size": round(float(ask_sizes.sum()), 8),
        "total_bid_size": round(float(bid_sizes.sum()), 8),
        "orderbook_units": [{"ask_price": a, "bid_price": b, "ask_size": x, "bid_size": y}
                            for a, b, x, y in zip(asks.tolist(), bids.tolist(), ask_sizes.tolist(), bid_sizes.tolist())],
        "level": 0,
    }
