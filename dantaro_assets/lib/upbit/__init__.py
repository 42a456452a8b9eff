"""Upbit quotation API access: one rate-limited, validating client and its typed errors."""

from dantaro_assets.lib.upbit.client import FetchStats, UpbitClient
from dantaro_assets.lib.upbit.errors import (
    UpbitError,
    UpbitIPBlockedError,
    UpbitLimiterUnavailableError,
    UpbitNotFoundError,
    UpbitRateLimitError,
    UpbitRequestError,
    UpbitResponseError,
    UpbitServerError,
    UpbitTransportError,
)
from dantaro_assets.lib.upbit.parsing import (
    BOOK_COLUMNS,
    CANDLE_COLUMNS,
    CAUTION_FLAGS,
    INTERVALS,
    MARKET_COLUMNS,
    Interval,
    interval,
)

__all__ = [
    "BOOK_COLUMNS",
    "CANDLE_COLUMNS",
    "CAUTION_FLAGS",
    "INTERVALS",
    "MARKET_COLUMNS",
    "FetchStats",
    "Interval",
    "UpbitClient",
    "UpbitError",
    "UpbitIPBlockedError",
    "UpbitLimiterUnavailableError",
    "UpbitNotFoundError",
    "UpbitRateLimitError",
    "UpbitRequestError",
    "UpbitResponseError",
    "UpbitServerError",
    "UpbitTransportError",
    "interval",
]
