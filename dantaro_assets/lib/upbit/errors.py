"""Typed Upbit errors: every failure names the endpoint and the market, never a silent None."""

from __future__ import annotations


class UpbitError(Exception):
    """A call to Upbit failed; ``endpoint`` and ``market`` say which call."""

    def __init__(self, message: str, *, endpoint: str, market: str | None = None, status: int | None = None) -> None:
        self.endpoint = endpoint
        self.market = market
        self.status = status
        where = f"{endpoint}" + (f" market={market}" if market else "")
        super().__init__(f"Upbit {where}: {message}" + (f" (HTTP {status})" if status else ""))


class UpbitIPBlockedError(UpbitError):
    """HTTP 418: Upbit blocked this IP; every process stops fetching until the block ends."""


class UpbitLimiterUnavailableError(UpbitError):
    """The shared rate limiter's Redis did not answer: nothing was sent to Upbit (the limiter fails closed)."""


class UpbitRateLimitError(UpbitError):
    """HTTP 429 persisted through every retry."""


class UpbitServerError(UpbitError):
    """HTTP 5xx persisted through every retry."""


class UpbitTransportError(UpbitError):
    """Timeouts or dropped connections persisted through every retry."""


class UpbitNotFoundError(UpbitError):
    """HTTP 404: unknown or delisted market code."""


class UpbitRequestError(UpbitError):
    """Another 4xx: the request itself is wrong (e.g. an invalid candle unit); retrying cannot help."""


class UpbitResponseError(UpbitError):
    """The body is not what the endpoint promises: malformed or truncated JSON, wrong shape, missing fields."""
