"""UpbitClient: the one way Dantaro talks to Upbit's quotation API.

Plain httpx (docs/upbit.md says why not pyupbit or upbit-sdk): every call passes the shared rate limiter,
has a timeout, retries what may pass, stops every process on 418, and returns validated frames or raises
a typed error naming the endpoint and market.
"""

from __future__ import annotations

import collections
import json
import logging
import random
import re
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import dagster as dg
import httpx
import pandas as pd
from pydantic import Field, PrivateAttr

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.tls import tls_context
from dantaro_assets.lib.upbit import errors, parsing
from dantaro_assets.lib.upbit.rate_limit import (
    DEFAULT_STORE_WAIT_SECONDS,
    DEFAULT_WINDOW_SECONDS,
    IPBlocked,
    LimiterUnavailable,
    LocalRateLimiter,
    RateLimiter,
    RedisRateLimiter,
    parse_remaining_req,
)
from dantaro_assets.settings import Settings

log = logging.getLogger(__name__)
_SETTING_DEFAULTS = Settings.model_fields

MAX_CANDLES_PER_REQUEST = 200
_MAX_BACKOFF_SECONDS = 8.0
_INTERRUPTS = (KeyboardInterrupt, dg.DagsterExecutionInterruptedError)
# Set once this process's run is being stopped (terminated, or past its timeout): no request starts after it.
_STOPPING = threading.Event()
_STOP_REASON = {"why": "the run is being stopped"}
# a run in one of these is being stopped from outside (terminated, or failed by run monitoring)
_STOPPED_STATUSES = {dg.DagsterRunStatus.CANCELING, dg.DagsterRunStatus.CANCELED, dg.DagsterRunStatus.FAILURE}


class FetchStopped(dg.Failure):
    """The run was stopped while fetching; its requests were abandoned. Never retried: a stop is final."""

    def __init__(self, description: str) -> None:
        super().__init__(description=description, allow_retries=False)


def stop_fetches(reason: str | None = None) -> None:
    """Stop every fetch of this process: requests in flight are abandoned, none starts again.

    ``reason`` (the first one given) is what the fetches' ``FetchStopped`` says, e.g. the run's timeout.
    """
    if not _STOPPING.is_set() and reason:
        _STOP_REASON["why"] = reason
    _STOPPING.set()


def _stopped(interrupt: BaseException | None = None) -> FetchStopped:
    """The error a fetch raises once the run is being stopped (an interrupt is Dagster's termination signal)."""
    stop_fetches()
    cause = f" ({type(interrupt).__name__})" if interrupt is not None else ""
    return FetchStopped(f"{_STOP_REASON['why']}{cause}: Upbit requests in flight were abandoned")


@dataclass
class FetchStats:
    """What one fetch cost and found; the fetching assets publish it as materialisation metadata."""

    markets_requested: int = 0
    markets_returned: int = 0
    candles: int = 0
    gaps: int = 0
    requests: int = 0
    http_429: int = 0
    retries: int = 0
    seconds: float = 0.0
    skipped_markets: list[str] = field(default_factory=list)
    quarantined: pd.DataFrame = field(default_factory=parsing.empty_quarantine)
    server_time: pd.Timestamp | None = None  # earliest server clock among the answers (candle_ranges)

    def metadata(self) -> dict[str, Any]:
        """Dagster metadata: the counts, plus the skipped markets and quarantine reasons when any."""
        meta: dict[str, Any] = {
            "markets_requested": self.markets_requested,
            "markets_returned": self.markets_returned,
            "candles": self.candles,
            "gaps": self.gaps,
            "requests": self.requests,
            "http_429": self.http_429,
            "retries": self.retries,
            "seconds": round(self.seconds, 3),
            "quarantined": len(self.quarantined),
            "skipped_markets": ", ".join(self.skipped_markets) or "none",
        }
        if len(self.quarantined):
            shown = self.quarantined.head(50).astype(str)
            meta["quarantine"] = dg.MetadataValue.md(shown.to_markdown(index=False))
        return meta


class _Counters:
    """Thread-safe request accounting for one fetch."""

    def __init__(self) -> None:
        self.requests = 0
        self.http_429 = 0
        self.retries = 0
        self.server_time: pd.Timestamp | None = None
        self._lock = threading.Lock()

    def add(self, *, requests: int = 0, http_429: int = 0, retries: int = 0) -> None:
        with self._lock:
            self.requests += requests
            self.http_429 += http_429
            self.retries += retries

    def saw(self, server_time: pd.Timestamp) -> None:
        with self._lock:
            self.server_time = server_time if self.server_time is None else min(self.server_time, server_time)


@dataclass(frozen=True)
class _Answer:
    payload: Any
    server_time: pd.Timestamp


class UpbitClient(dg.ConfigurableResource):
    """Upbit quotation API (market list, order price units, order books, candles) under the IP-wide rate limit.

    ``redis`` holds the limiter shared by every process. When it does not answer, nothing is sent:
    a request waits up to ``store_wait_seconds`` for it, then raises ``UpbitLimiterUnavailableError``.
    Only a client built without any ``redis`` keeps the limit in this process alone (with a warning).
    """

    # resources.py sets these from the settings; a client built without them (tests, benches) takes the settings' defaults
    base_url: str = Field(description="Upbit API or the replay server (UPBIT_BASE_URL)")
    timeout: float = Field(default=_SETTING_DEFAULTS["upbit_api_timeout"].default, description="seconds per request (UPBIT_API_TIMEOUT)")
    max_retries: int = Field(default=_SETTING_DEFAULTS["upbit_max_retries"].default,
                             description="retries after the first attempt on 429, 5xx, timeouts (UPBIT_MAX_RETRIES)")
    requests_per_second: int = Field(default=_SETTING_DEFAULTS["upbit_requests_per_second"].default,
                                     description="per-group budget shared by all processes (UPBIT_REQUESTS_PER_SECOND)")
    max_symbols_per_batch: int = Field(default=_SETTING_DEFAULTS["max_symbols_per_batch"].default,
                                       description="markets per orderbook/instruments request (MAX_SYMBOLS_PER_BATCH)")
    max_concurrency: int = Field(default=10, description="requests in flight at once from this process")
    backoff_seconds: float = Field(default=0.5, description="first retry delay; doubles per attempt, with jitter")
    block_seconds: float = Field(default=300.0, description="how long a 418 stops every process when Upbit gives no Retry-After")
    window_seconds: float = Field(default=DEFAULT_WINDOW_SECONDS,
        description="Upbit's 1 s window plus clock-tick margin; a slot is held until this long after the answer")
    store_wait_seconds: float = Field(
        default=DEFAULT_STORE_WAIT_SECONDS,
        description="seconds a request waits for an unreachable limiter Redis (sending nothing) before failing",
    )
    redis: RedisResource | None = None

    _http: httpx.Client | None = PrivateAttr(default=None)
    _limiter: RateLimiter | None = PrivateAttr(default=None)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)
    _run: tuple[dg.DagsterInstance, str] | None = PrivateAttr(default=None)

    # --- lifecycle -------------------------------------------------------------------------
    def setup_for_execution(self, context: dg.InitResourceContext) -> None:
        if context.instance is not None and context.run is not None:
            self._run = (context.instance, context.run.run_id)

    def _ensure_run_goes_on(self) -> None:
        """Refuse to fetch for a run being stopped: a step retried after the stop's interrupt must not fetch again."""
        if _STOPPING.is_set():
            raise _stopped()
        if self._run is not None:
            instance, run_id = self._run
            run = instance.get_run_by_id(run_id)
            if run is not None and run.status in _STOPPED_STATUSES:
                raise _stopped()

    def _session(self) -> tuple[httpx.Client, RateLimiter]:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(
                    base_url=self.base_url,
                    timeout=self.timeout,
                    headers={"Accept": "application/json"},  # never an Origin header: Upbit limits those harder
                    verify=tls_context(),
                    limits=httpx.Limits(max_connections=self.max_concurrency, max_keepalive_connections=self.max_concurrency),
                )
                # A request cannot be in flight much longer than its timeouts (connect, then read).
                flight = 3 * self.timeout
                if self.redis is not None:  # reachable or not: the shared limiter fails closed
                    self._limiter = RedisRateLimiter(self.redis.client(), self.redis.prefix, self.requests_per_second,
                                                     self.window_seconds, flight, self.store_wait_seconds)
                else:
                    log.warning("no Redis configured: Upbit rate limit enforced in this process only, not across processes")
                    self._limiter = LocalRateLimiter(self.requests_per_second, self.window_seconds, flight)
            assert self._limiter is not None
            return self._http, self._limiter

    def close(self) -> None:
        with self._lock:
            if self._http is not None:
                self._http.close()
                self._http = None
                self._limiter = None

    def teardown_after_execution(self, context: dg.InitResourceContext) -> None:
        self.close()

    # --- one request ----------------------------------------------------------------------
    def _get(self, path: str, params: dict[str, Any], *, group: str, market: str | None, counters: _Counters) -> _Answer:
        """One GET with limiter, timeout, retries and typed errors."""
        http, limiter = self._session()
        for attempt in range(self.max_retries + 1):
            if _STOPPING.is_set():
                raise _stopped()
            try:
                token = limiter.acquire(group)
            except IPBlocked as exc:
                raise errors.UpbitIPBlockedError(f"IP blocked by Upbit, all fetching stopped: {exc}", endpoint=path, market=market, status=418) from None
            except LimiterUnavailable as exc:
                raise errors.UpbitLimiterUnavailableError(str(exc), endpoint=path, market=market) from None
            counters.add(requests=1, retries=1 if attempt else 0)
            answer = "error"  # no HTTP answer: a timeout or a dropped connection
            try:
                response = http.get(path, params=params)
                answer = str(response.status_code)
            except _INTERRUPTS as interrupt:  # a call on the run's main thread (markets) receives the interrupt itself
                raise _stopped(interrupt) from None  # the interrupt is named in the message
            except httpx.TimeoutException as exc:
                failure: errors.UpbitError = errors.UpbitTransportError(
                    f"timed out after {self.timeout} s ({type(exc).__name__})", endpoint=path, market=market)
            except httpx.TransportError as exc:
                failure = errors.UpbitTransportError(f"connection failed: {type(exc).__name__}: {exc}", endpoint=path, market=market)
            else:
                failure = self._check(response, path, market, group, limiter, counters)
                if failure is None:
                    return _Answer(self._json(response, path, market), _server_time(response))
            finally:
                limiter.release(group, token, f"{path} {answer}")
            if attempt == self.max_retries:
                raise failure
            delay = min(_MAX_BACKOFF_SECONDS, self.backoff_seconds * 2**attempt) * random.uniform(0.5, 1.5)
            log.info("%s; retry %d/%d in %.2f s", failure, attempt + 1, self.max_retries, delay)
            if _STOPPING.wait(delay):
                raise _stopped()
        raise AssertionError("unreachable")

    def _check(self, response: httpx.Response, path: str, market: str | None, group: str, limiter: RateLimiter,
               counters: _Counters) -> errors.UpbitError | None:
        """None for a 200; the retryable failure for 429/5xx; raises what retrying cannot fix."""
        status = response.status_code
        if parse_remaining_req(response.headers.get("Remaining-Req")) == 0:
            limiter.exhaust(group)
        if status == 200:
            return None
        detail = _error_message(response)
        if status == 418:
            seconds = _block_seconds(response, detail) or self.block_seconds
            limiter.block(seconds, f"Upbit blocked this IP (HTTP 418 on {path}): {detail}")
            raise errors.UpbitIPBlockedError(f"IP blocked, all fetching stopped for {seconds:.0f} s: {detail}", endpoint=path, market=market, status=418)
        if status == 429:
            counters.add(http_429=1)
            limiter.exhaust(group)
            return errors.UpbitRateLimitError(f"rate limited: {detail}", endpoint=path, market=market, status=status)
        if status >= 500:
            return errors.UpbitServerError(detail, endpoint=path, market=market, status=status)
        if status == 404:
            raise errors.UpbitNotFoundError(detail, endpoint=path, market=market, status=status)
        raise errors.UpbitRequestError(detail, endpoint=path, market=market, status=status)

    @staticmethod
    def _json(response: httpx.Response, path: str, market: str | None) -> Any:
        try:
            return json.loads(response.content)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.UpbitResponseError(f"malformed JSON ({exc}): {response.content[:120]!r}", endpoint=path, market=market, status=200) from None

    # --- public calls -----------------------------------------------------------------------
    def markets(self) -> pd.DataFrame:
        """The KRW universe now: market, korean_name, english_name, warning and the five caution flags."""
        self._ensure_run_goes_on()
        path = "/v1/market/all"
        answer = self._get(path, {"isDetails": "true"}, group="market", market=None, counters=_Counters())
        return parsing.parse_markets(answer.payload, endpoint=path)

    def instruments(self, markets: list[str]) -> pd.DataFrame:
        """Each market's order price unit now (``tick_size``), ``max_symbols_per_batch`` markets a request."""
        frames = self._batched("/v1/orderbook/instruments", markets, {}, parsing.parse_instruments, _Counters())
        return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=parsing.INSTRUMENT_COLUMNS)

    def orderbook(self, markets: list[str]) -> tuple[pd.DataFrame, FetchStats]:
        """The top of each market's order book now (``parsing.BOOK_COLUMNS``: best ask and bid, their sizes, the
        book's time), ``max_symbols_per_batch`` markets a request, one unit each (``count=1``; ``level`` unsent, so
        prices are on the order price unit). ``stats.server_time`` is the earliest server clock among the answers:
        when the books were fetched, on Upbit's clock. A market Upbit leaves out is counted, not an error."""
        counters = _Counters()
        began = time.monotonic()
        frames = self._batched("/v1/orderbook", markets, {"count": 1}, parsing.parse_orderbook, counters)
        books = pd.concat([parsing.empty_books(), *frames], ignore_index=True)
        stats = FetchStats(markets_requested=len(markets), markets_returned=len(books), requests=counters.requests,
                           http_429=counters.http_429, retries=counters.retries, seconds=time.monotonic() - began,
                           server_time=counters.server_time)
        return books, stats

    def _batched(self, path: str, markets: list[str], params: dict[str, Any], parse, counters: _Counters) -> list[pd.DataFrame]:
        """``path`` of the orderbook group for ``markets``, ``max_symbols_per_batch`` a request, concurrently, each
        answer parsed by ``parse(payload, endpoint=, markets=)``."""
        self._ensure_run_goes_on()
        batches = [markets[i : i + self.max_symbols_per_batch] for i in range(0, len(markets), self.max_symbols_per_batch)]

        def fetch(batch: list[str]) -> pd.DataFrame:
            answer = self._get(path, {"markets": ",".join(batch), **params}, group="orderbook", market=",".join(batch), counters=counters)
            counters.saw(answer.server_time)
            return parse(answer.payload, endpoint=path, markets=batch)

        return self._parallel(fetch, batches)

    def candles(self, markets: list[str], interval: str, start: datetime, end: datetime) -> tuple[pd.DataFrame, FetchStats]:
        """Closed candles with ``start <= candle_start < end`` for every market, fetched concurrently.

        Pages go newest first, 200 candles a request, ``to`` exclusive and UTC. A candle still
        forming by the server's clock (its ``Date`` header) is dropped. A market Upbit answers 404
        for (delisted) is skipped and listed in the stats; any other failure raises.
        """
        return self.candle_ranges({market: [(start, end)] for market in markets}, interval)

    def candle_ranges(self, ranges: dict[str, list[tuple[datetime, datetime]]], interval: str) -> tuple[pd.DataFrame, FetchStats]:
        """``candles`` over ranges of their own per market (a repair of what the stream missed): one
        request per range of up to 200 candles. ``stats.server_time`` is the earliest server clock
        among the answers, so every candle ending by then was closed when it was fetched."""
        self._ensure_run_goes_on()
        spec = parsing.interval(interval)
        # A range whose first candle has not closed yet holds nothing storable (candles are stored closed):
        # no request for it, which spares the open day's 1-day candles a request per market every hour.
        closed_by = pd.Timestamp.now(tz="UTC") - spec.width
        items = [(market, _utc(start), _utc(end)) for market, spans in ranges.items() for start, end in spans if _utc(start) <= closed_by]
        counters = _Counters()
        skipped: set[str] = set()
        began = time.monotonic()

        def fetch(item: tuple[str, pd.Timestamp, pd.Timestamp]) -> tuple[pd.DataFrame, pd.DataFrame, int]:
            market, window_start, window_end = item
            try:
                good, bad = self._market_candles(market, spec, window_start, window_end, counters)
            except errors.UpbitNotFoundError:
                log.warning("%s: Upbit answers 404 (delisted or unknown); skipped", market)
                skipped.add(market)
                return parsing.empty_candles(), parsing.empty_quarantine(), 0
            return good, bad, count_gaps(good, spec, window_start)

        results = self._parallel(fetch, items)
        candles = pd.concat([parsing.empty_candles(), *(r[0] for r in results)], ignore_index=True)
        candles, duplicates = parsing.split_duplicates(candles)
        quarantined = pd.concat([parsing.empty_quarantine(), duplicates, *(r[1] for r in results)], ignore_index=True)
        candles = candles.sort_values(["market", "candle_start"], ignore_index=True)
        stats = FetchStats(
            markets_requested=len(ranges),
            markets_returned=int(candles["market"].nunique()),
            candles=len(candles),
            gaps=sum(r[2] for r in results),
            requests=counters.requests,
            http_429=counters.http_429,
            retries=counters.retries,
            seconds=time.monotonic() - began,
            skipped_markets=sorted(skipped),
            quarantined=quarantined,
            server_time=counters.server_time,
        )
        return candles, stats

    def _market_candles(
        self, market: str, spec: parsing.Interval, start: pd.Timestamp, end: pd.Timestamp, counters: _Counters
    ) -> tuple[pd.DataFrame, pd.DataFrame]:
        """Page one market backwards from ``end`` to ``start``.

        The next ``to`` is the earlier of the oldest candle received and ``to - count * width``:
        right whether Upbit counts ``count`` candles (skipping no-trade gaps) or ``count`` slots.
        """
        pages: list[pd.DataFrame] = []
        rejected: list[pd.DataFrame] = []
        to = end
        while to > start:
            count = min(MAX_CANDLES_PER_REQUEST, -(-(to - start) // spec.width))
            params = {"market": market, "to": to.strftime("%Y-%m-%dT%H:%M:%SZ"), "count": count}
            answer = self._get(spec.path, params, group="candles", market=market, counters=counters)
            counters.saw(answer.server_time)
            good, bad = parsing.parse_candle_page(answer.payload, market=market, interval=spec, to=to, endpoint=spec.path)
            closed = good["candle_start"] + spec.width <= answer.server_time
            pages.append(good[closed & (good["candle_start"] >= start)])
            rejected.append(bad[~(bad["candle_start"] < start)])  # a bad row before the window is not this window's
            oldest = good["candle_start"].min() if len(good) else to
            to = min(oldest, to - count * spec.width)
        return pd.concat(pages, ignore_index=True), pd.concat(rejected, ignore_index=True)

    def _parallel(self, fetch, items: list) -> list:
        """Run ``fetch`` over items on up to ``max_concurrency`` threads; the first error stops the rest.

        The threads are daemons and are never joined: when the run is interrupted (terminated, or past
        its timeout) this returns at once with ``FetchStopped``, and requests still in flight are
        abandoned (their connections close when the run worker exits) instead of holding the run for
        up to a request timeout times every retry.
        """
        if not items:
            return []
        results: list = [None] * len(items)
        queue = collections.deque(enumerate(items))
        failures: list[BaseException] = []
        done = threading.Event()
        lock = threading.Lock()
        left = [len(items)]

        def work() -> None:
            while not done.is_set():
                try:
                    index, item = queue.popleft()
                except IndexError:
                    return
                try:
                    results[index] = fetch(item)
                except BaseException as exc:  # noqa: BLE001 - handed to the caller's thread below
                    failures.append(exc)
                    done.set()
                    return
                with lock:
                    left[0] -= 1
                    if left[0] == 0:
                        done.set()

        for number in range(min(self.max_concurrency, len(items))):
            threading.Thread(target=work, name=f"upbit-{number}", daemon=True).start()
        try:
            done.wait()
        except _INTERRUPTS as interrupt:
            raise _stopped(interrupt) from None  # the interrupt is named in the message
        if failures:
            raise failures[0]
        return results


def count_gaps(candles: pd.DataFrame, spec: parsing.Interval, start: pd.Timestamp) -> int:
    """Missing slots between the window start and each market's newest candle (no-trade periods)."""
    if candles.empty:
        return 0
    newest = candles.groupby("market")["candle_start"].agg(["max", "size"])
    slots = (newest["max"] - start.ceil(spec.freq)) // spec.width + 1
    return int((slots - newest["size"]).clip(lower=0).sum())


def _utc(value: datetime) -> pd.Timestamp:
    stamp = pd.Timestamp(value)
    return stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")


def _server_time(response: httpx.Response) -> pd.Timestamp:
    """The server's clock (Date header) decides which candle is still forming; ours if absent."""
    header = response.headers.get("Date")
    if header:
        try:
            return pd.Timestamp(parsedate_to_datetime(header)).tz_convert("UTC")
        except (TypeError, ValueError):
            pass
    return pd.Timestamp(datetime.now(UTC))


def _block_seconds(response: httpx.Response, detail: str) -> float | None:
    """How long a 418 lasts: ``Retry-After``, else Upbit's message "blocked for N seconds"."""
    try:
        return float(response.headers["Retry-After"])
    except (KeyError, ValueError):
        match = re.search(r"blocked for (\d+) seconds", detail)
        return float(match.group(1)) if match else None


def _error_message(response: httpx.Response) -> str:
    """Upbit's ``{"error": {"name", "message"}}`` (name is an int or a string), else the raw text."""
    try:
        error = response.json().get("error", {})
        return f"{error.get('name')}: {error.get('message')}"
    except (ValueError, AttributeError):
        return response.text[:200] or response.reason_phrase
