"""Upbit JSON -> validated DataFrames in Dantaro's column contract, vectorised.

A response of the wrong shape is a typed error for the whole call; a candle that is individually wrong is
quarantined with its reason, so one bad row neither sinks the fetch nor reaches storage.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import pandas as pd

from dantaro_assets.lib.upbit.errors import UpbitResponseError

CANDLE_COLUMNS = ["market", "candle_start", "open", "high", "low", "close", "volume", "value"]
PRICE_COLUMNS = ["open", "high", "low", "close"]
_CANDLE_FIELDS = {
    "opening_price": "open",
    "high_price": "high",
    "low_price": "low",
    "trade_price": "close",
    "candle_acc_trade_volume": "volume",
    "candle_acc_trade_price": "value",
}
_CAUTIONS = {
    "PRICE_FLUCTUATIONS": "caution_price_fluctuations",
    "TRADING_VOLUME_SOARING": "caution_trading_volume_soaring",
    "DEPOSIT_AMOUNT_SOARING": "caution_deposit_amount_soaring",
    "GLOBAL_PRICE_DIFFERENCES": "caution_global_price_differences",
    "CONCENTRATION_OF_SMALL_ACCOUNTS": "caution_concentration_of_small_accounts",
}
CAUTION_FLAGS = list(_CAUTIONS.values())  # the universe's caution columns, one per Upbit caution kind
MARKET_COLUMNS = ["market", "korean_name", "english_name", "warning", *CAUTION_FLAGS]


@dataclass(frozen=True)
class Interval:
    """A candle width with pyupbit's name (``minute1``, ``minute60``, ``day``) and Upbit's path."""

    name: str
    path: str
    width: timedelta

    @property
    def freq(self) -> str:
        return f"{int(self.width.total_seconds())}s"


_MINUTE_UNITS = (1, 3, 5, 10, 15, 30, 60, 240)
INTERVALS: dict[str, Interval] = {
    **{f"minute{u}": Interval(f"minute{u}", f"/v1/candles/minutes/{u}", timedelta(minutes=u)) for u in _MINUTE_UNITS},
    "day": Interval("day", "/v1/candles/days", timedelta(days=1)),
}


def interval(name: str) -> Interval:
    """Look up an interval by pyupbit's name; a wrong name says which ones exist."""
    try:
        return INTERVALS[name]
    except KeyError:
        raise ValueError(f"unknown candle interval {name!r}; one of {', '.join(INTERVALS)}") from None


def records(payload: object, *, endpoint: str, market: str | None = None) -> pd.DataFrame:
    """A JSON array of objects as a frame; anything else is an UpbitResponseError."""
    if not isinstance(payload, list):
        raise UpbitResponseError(f"expected a JSON array, got {type(payload).__name__}: {str(payload)[:200]}", endpoint=endpoint, market=market)
    if not all(isinstance(item, dict) for item in payload):
        raise UpbitResponseError("expected an array of JSON objects", endpoint=endpoint, market=market)
    return pd.DataFrame.from_records(payload)


def _require(frame: pd.DataFrame, fields: list[str], *, endpoint: str, market: str | None) -> None:
    missing = [f for f in fields if f not in frame.columns]
    if missing and len(frame):
        raise UpbitResponseError(f"field(s) {', '.join(missing)} missing from every row", endpoint=endpoint, market=market)


def _numeric(column: pd.Series) -> pd.Series:
    """Float values; NaN where the JSON value is missing, NaN, a string, a bool or anything non-numeric (inf stays inf)."""
    if pd.api.types.is_bool_dtype(column):
        return pd.Series(np.nan, index=column.index)
    if pd.api.types.is_numeric_dtype(column):
        return column.astype("float64")
    is_number = column.map(lambda v: isinstance(v, (int, float)) and not isinstance(v, bool))
    return pd.to_numeric(column.where(is_number), errors="coerce").astype("float64")


def empty_candles() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in CANDLE_COLUMNS})
    frame["market"] = frame["market"].astype(object)
    frame["candle_start"] = pd.Series(dtype="datetime64[ns, UTC]")
    return frame


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({"market": pd.Series(dtype=object), "candle_start": pd.Series(dtype="datetime64[ns, UTC]"), "reason": pd.Series(dtype=object)})


def parse_candle_page(payload: object, *, market: str, interval: Interval, to: pd.Timestamp, endpoint: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """One page of ``/v1/candles/...`` -> (good candles, quarantined rows with reasons)."""
    raw = records(payload, endpoint=endpoint, market=market)
    if raw.empty:
        return empty_candles(), empty_quarantine()
    _require(raw, ["market", "candle_date_time_utc", *_CANDLE_FIELDS], endpoint=endpoint, market=market)
    frame = pd.DataFrame(
        {
            "market": raw["market"],
            "candle_start": pd.to_datetime(raw["candle_date_time_utc"], format="%Y-%m-%dT%H:%M:%S", errors="coerce", utc=True),
            **{ours: _numeric(raw[theirs]) for theirs, ours in _CANDLE_FIELDS.items()},
        }
    )
    prices = frame[PRICE_COLUMNS]
    start = frame["candle_start"]
    rules = [
        (frame["market"] != market, f"market is not {market}"),
        (start.isna(), "missing or unparseable candle_date_time_utc"),
        *((frame[c].isna(), f"missing or non-numeric {theirs}") for theirs, c in _CANDLE_FIELDS.items()),
        *((np.isinf(frame[c]), f"non-finite {theirs} (Infinity)") for theirs, c in _CANDLE_FIELDS.items()),
        ((prices <= 0).any(axis=1), "price not positive"),
        ((frame[["volume", "value"]] < 0).any(axis=1), "negative volume or value"),
        (frame["high"] < frame["low"], "high below low"),
        (frame["high"] < prices[["open", "close"]].max(axis=1), "high below open or close"),
        (frame["low"] > prices[["open", "close"]].min(axis=1), "low above open or close"),
        (start.notna() & (start != start.dt.floor(interval.freq)), f"candle_date_time_utc not on the {interval.name} grid"),
        (start >= to, f"candle at or after the exclusive to={to.isoformat()}"),
    ]
    reason = pd.Series(np.select([mask.to_numpy() for mask, _ in rules], [text for _, text in rules], default=""), index=frame.index)
    bad = reason != ""
    quarantined = frame.loc[bad, ["market", "candle_start"]].assign(reason=reason[bad], market=market)
    return frame.loc[~bad].reset_index(drop=True), quarantined.reset_index(drop=True)


def split_duplicates(candles: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Keep one copy of identical duplicates; quarantine every copy of conflicting ones."""
    key = ["market", "candle_start"]
    duplicated = candles.duplicated(key, keep=False)
    if not duplicated.any():
        return candles, empty_quarantine()
    distinct = candles[duplicated].drop_duplicates()
    conflicting_keys = distinct[distinct.duplicated(key, keep=False)][key].drop_duplicates()
    flagged = candles[key].merge(conflicting_keys, on=key, how="left", indicator=True)["_merge"].eq("both").to_numpy()
    extra_copy = candles.duplicated(keep="first").to_numpy() & ~flagged
    quarantined = pd.concat(
        [
            candles.loc[flagged, key].assign(reason="duplicate candle_start with conflicting values"),
            candles.loc[extra_copy, key].assign(reason="duplicate candle_start (identical copy dropped)"),
        ]
    )
    kept = candles.loc[~flagged & ~extra_copy]
    return kept.reset_index(drop=True), quarantined.reset_index(drop=True)


def parse_markets(payload: object, *, endpoint: str) -> pd.DataFrame:
    """``/v1/market/all?isDetails=true`` -> KRW markets with the warning flag and the five caution flags."""
    raw = records(payload, endpoint=endpoint)
    _require(raw, ["market", "korean_name", "english_name"], endpoint=endpoint, market=None)
    if raw.empty:
        raise UpbitResponseError("empty market list", endpoint=endpoint)
    krw = raw[raw["market"].astype(str).str.startswith("KRW-")].reset_index(drop=True)
    if krw.empty:
        raise UpbitResponseError("no KRW market in the market list", endpoint=endpoint)
    if "market_event" not in krw.columns or not krw["market_event"].map(lambda e: isinstance(e, dict)).all():
        raise UpbitResponseError("market_event missing (was isDetails=true honoured?)", endpoint=endpoint)
    events = pd.json_normalize(krw["market_event"].tolist())
    flags = {"warning": "warning", **{f"caution.{k}": v for k, v in _CAUTIONS.items()}}
    missing = [k for k in flags if k not in events.columns]
    if missing:
        raise UpbitResponseError(f"market_event lacks {', '.join(missing)}", endpoint=endpoint)
    wrong = [k for k in flags if not events[k].map(lambda v: isinstance(v, bool)).all()]
    if wrong:
        raise UpbitResponseError(f"market_event flag(s) {', '.join(wrong)} not all booleans", endpoint=endpoint)
    frame = pd.concat([krw[["market", "korean_name", "english_name"]], events[list(flags)].rename(columns=flags).astype(bool)], axis=1)
    if frame["market"].duplicated().any():
        raise UpbitResponseError(f"duplicate market codes {sorted(frame.loc[frame['market'].duplicated(), 'market'])}", endpoint=endpoint)
    return frame[MARKET_COLUMNS]


INSTRUMENT_COLUMNS = ["market", "tick_size"]


def _tick(value: object) -> float:
    """A tick size as Upbit sends it (a decimal string such as "0.01"; a number is accepted) -> float, NaN if not positive."""
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return float("nan")
    try:
        tick = float(value)
    except ValueError:
        return float("nan")
    return tick if np.isfinite(tick) and tick > 0 else float("nan")


def parse_instruments(payload: object, *, endpoint: str, markets: list[str]) -> pd.DataFrame:
    """``/v1/orderbook/instruments`` -> one row per asked market with its order price unit (``tick_size``)."""
    label = ",".join(markets)
    raw = records(payload, endpoint=endpoint, market=label)
    _require(raw, ["market", "tick_size"], endpoint=endpoint, market=label)
    if raw.empty:
        return pd.DataFrame({"market": pd.Series(dtype=object), "tick_size": pd.Series(dtype=float)})
    frame = pd.DataFrame({"market": raw["market"].astype(str), "tick_size": raw["tick_size"].map(_tick)})
    bad = frame.loc[frame["tick_size"].isna(), "market"]
    if len(bad):
        raise UpbitResponseError(f"tick_size missing or not a positive number for {', '.join(sorted(bad))}", endpoint=endpoint, market=label)
    unasked = sorted(set(frame["market"]) - set(markets))
    if unasked:
        raise UpbitResponseError(f"markets not asked for: {', '.join(unasked)}", endpoint=endpoint, market=label)
    if frame["market"].duplicated().any():
        raise UpbitResponseError(f"duplicate markets {sorted(frame.loc[frame['market'].duplicated(), 'market'])}", endpoint=endpoint, market=label)
    return frame[INSTRUMENT_COLUMNS]


BOOK_COLUMNS = ["market", "book_time", "best_ask", "best_bid", "ask_size", "bid_size", "total_ask_size", "total_bid_size", "spread_bps"]
_UNIT_FIELDS = ["ask_price", "bid_price", "ask_size", "bid_size"]


def empty_books() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="float64") for c in BOOK_COLUMNS})
    return frame.astype({"market": object, "book_time": "datetime64[ns, UTC]"})


def _first_unit(units: object) -> dict:
    """The first (best) unit of ``orderbook_units`` and, to check it is the best, the lowest ask and highest bid."""
    if not isinstance(units, list) or not units or not all(isinstance(u, dict) for u in units):
        return {}
    first = dict(units[0])
    asks = [u.get("ask_price") for u in units]
    bids = [u.get("bid_price") for u in units]
    if all(isinstance(p, (int, float)) and not isinstance(p, bool) for p in asks + bids):
        first["lowest_ask"], first["highest_bid"] = min(asks), max(bids)
    return first


def parse_orderbook(payload: object, *, endpoint: str, markets: list[str]) -> pd.DataFrame:
    """``/v1/orderbook`` -> the top of each asked market's book: best ask and bid with their sizes, the book's time,
    and ``spread_bps``, the spread in basis points of the mid price.

    A book that cannot give a price a buyer could get is an error for the call naming the market(s): no
    ``orderbook_units``, a missing, non-numeric or non-finite price or size, a price not positive, a size
    negative, a first unit that is not the best, or a crossed book (best ask at or below the best bid).
    """
    label = ",".join(markets)
    raw = records(payload, endpoint=endpoint, market=label)
    if raw.empty:
        return empty_books()
    _require(raw, ["market", "timestamp", "total_ask_size", "total_bid_size", "orderbook_units"], endpoint=endpoint, market=label)
    first = pd.DataFrame.from_records([_first_unit(units) for units in raw["orderbook_units"]], index=raw.index,
                                      columns=[*_UNIT_FIELDS, "lowest_ask", "highest_bid"])
    stamp = _numeric(raw["timestamp"])
    frame = pd.DataFrame({
        "market": raw["market"].astype(str),
        "book_time": pd.to_datetime(stamp.where(np.isfinite(stamp)), unit="ms", utc=True),
        "best_ask": _numeric(first["ask_price"]),
        "best_bid": _numeric(first["bid_price"]),
        "ask_size": _numeric(first["ask_size"]),
        "bid_size": _numeric(first["bid_size"]),
        "total_ask_size": _numeric(raw["total_ask_size"]),
        "total_bid_size": _numeric(raw["total_bid_size"]),
    })
    unasked = sorted(set(frame["market"]) - set(markets))
    if unasked:
        raise UpbitResponseError(f"markets not asked for: {', '.join(unasked)}", endpoint=endpoint, market=label)
    if frame["market"].duplicated().any():
        raise UpbitResponseError(f"duplicate markets {sorted(frame.loc[frame['market'].duplicated(), 'market'])}", endpoint=endpoint, market=label)
    numbers = frame[BOOK_COLUMNS[2:-1]]
    rules = [
        (first[_UNIT_FIELDS].isna().all(axis=1), "no orderbook_units"),
        (numbers.isna().any(axis=1) | frame["book_time"].isna(), "a missing or non-numeric price, size or timestamp"),
        (np.isinf(numbers).any(axis=1), "a non-finite price or size (Infinity)"),
        ((frame[["best_ask", "best_bid"]] <= 0).any(axis=1), "a price not positive"),
        ((frame[["ask_size", "bid_size", "total_ask_size", "total_bid_size"]] < 0).any(axis=1), "a negative size"),
        ((first["lowest_ask"] < frame["best_ask"]) | (first["highest_bid"] > frame["best_bid"]), "a first unit that is not the best"),
        (frame["best_ask"] <= frame["best_bid"], "a crossed book (best ask at or below the best bid)"),
    ]
    for bad, reason in rules:
        if bad.any():
            shown = ", ".join(f"{row.market} (ask {row.best_ask}, bid {row.best_bid})" for row in frame[bad].head(5).itertuples())
            raise UpbitResponseError(f"{reason}: {shown}", endpoint=endpoint, market=label)
    return frame.assign(spread_bps=spread_bps(frame["best_ask"], frame["best_bid"]))[BOOK_COLUMNS].reset_index(drop=True)


def spread_bps(best_ask: pd.Series, best_bid: pd.Series) -> pd.Series:
    """The spread in basis points of the mid price: what crossing it costs, as a share of the price."""
    return 1e4 * (best_ask - best_bid) / ((best_ask + best_bid) / 2.0)
