"""UpbitClient against the replay server over real HTTP: data, paging, and every fault it can inject."""

from __future__ import annotations

import logging
import uuid
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.upbit import (
    BOOK_COLUMNS,
    CANDLE_COLUMNS,
    UpbitClient,
    UpbitIPBlockedError,
    UpbitResponseError,
    UpbitServerError,
    UpbitTransportError,
)
from dantaro_assets.lib.upbit.rate_limit import answer_counts

CLOCK = datetime(2026, 3, 2, 10, 30, tzinfo=timezone.utc)
HOUR = (pd.Timestamp("2026-03-02T09:00Z"), pd.Timestamp("2026-03-02T10:00Z"))
MARKETS = ["KRW-BTC", "KRW-ETH", "KRW-XRP"]


@pytest.fixture
def client_factory(replay, settings):
    """Clients on the replay server; each test gets its own limiter keys, so blocks never leak."""
    prefix = f"{settings.redis_prefix}:{uuid.uuid4().hex[:6]}"
    made: list[UpbitClient] = []

    def make(**fields) -> UpbitClient:
        fields = {"base_url": replay.url, "backoff_seconds": 0.05, "redis": RedisResource(url=settings.redis_url, prefix=prefix)} | fields
        client = UpbitClient(**fields)
        made.append(client)
        return client

    replay.set_clock(CLOCK)
    yield make
    for client in made:
        client.close()


def _requests(replay, group: str = "candles") -> int:
    return replay.stats()["groups"].get(group, {}).get("requests", 0)


def test_markets_are_krw_with_flags(client_factory, replay):
    frame = client_factory().markets()
    assert len(frame) == 40 and frame["market"].str.startswith("KRW-").all()
    assert frame["warning"].dtype == bool and frame.filter(like="caution_").dtypes.eq(bool).all()
    assert replay.stats()["groups"]["market"]["origin"] == 0, "never an Origin header"


def test_instruments_are_batched(client_factory, replay):
    markets = list(client_factory().markets()["market"])
    frame = client_factory(max_symbols_per_batch=15).instruments(markets)
    assert sorted(frame["market"]) == sorted(markets)
    assert _requests(replay, "orderbook") == 3
    assert frame["tick_size"].gt(0).all()


def test_order_books_are_batched_under_the_rate_limit_and_timed_by_the_server(client_factory, replay):
    """40 markets, 3 a request: 14 requests of the orderbook group, never more than 10 in a second, no 429; the
    books' time is the server's clock (the replay's Date header)."""
    markets = list(client_factory().markets()["market"])
    books, stats = client_factory(max_symbols_per_batch=3).orderbook(markets)
    assert list(books.columns) == BOOK_COLUMNS and sorted(books["market"]) == sorted(markets)
    assert (books["best_ask"] > books["best_bid"]).all() and (books["spread_bps"] > 0).all()
    assert (stats.markets_requested, stats.markets_returned, stats.requests, stats.http_429) == (40, 40, 14, 0)
    assert stats.server_time == pd.Timestamp(CLOCK) and (books["book_time"] == pd.Timestamp(CLOCK)).all()
    group = replay.stats()["groups"]["orderbook"]
    assert (group["requests"], group["too_many"]) == (14, 0) and group["max_per_second"] <= 10


@pytest.mark.parametrize("variant", ["crossed_book", "infinite_price", "no_units"])
def test_a_book_no_buyer_could_use_is_a_typed_error_naming_the_market(client_factory, replay, variant):
    replay.inject("bad_book", path="/v1/orderbook", variant=variant)
    with pytest.raises(UpbitResponseError, match=r"/v1/orderbook market=KRW-BTC,KRW-ETH.*KRW-BTC \(ask"):
        client_factory().orderbook(["KRW-BTC", "KRW-ETH"])
    assert _requests(replay, "orderbook") == 1  # bad data is not retried


def test_order_book_server_errors_are_retried_then_raise_naming_the_batch(client_factory, replay):
    replay.inject("500", path="/v1/orderbook", count=None)
    with pytest.raises(UpbitServerError, match=r"/v1/orderbook market=KRW-BTC,KRW-ETH.*HTTP 500"):
        client_factory(max_retries=2).orderbook(["KRW-BTC", "KRW-ETH"])
    assert replay.stats()["faults_fired"].get("500") == 3


def test_candles_of_a_window_are_whole_in_window_and_in_contract(client_factory, replay):
    candles, stats = client_factory().candles(MARKETS, "minute1", *HOUR)
    assert list(candles.columns) == CANDLE_COLUMNS
    assert candles["candle_start"].between(HOUR[0], HOUR[1], inclusive="left").all()
    assert not candles.duplicated(["market", "candle_start"]).any()
    assert (stats.markets_requested, stats.markets_returned, stats.requests, stats.http_429) == (3, 3, 3, 0)
    assert stats.candles == len(candles) and stats.gaps == 3 * 60 - len(candles)


def test_the_forming_candle_is_never_returned(client_factory, replay):
    replay.set_clock(None)  # real time: the server serves the minute in progress
    now = pd.Timestamp.now(tz="UTC")
    candles, _ = client_factory().candles(["KRW-BTC"], "minute1", now.floor("h") - pd.Timedelta(hours=1), now.floor("h") + pd.Timedelta(hours=1))
    assert len(candles)
    assert (candles["candle_start"] + pd.Timedelta(minutes=1)).max() <= pd.Timestamp.now(tz="UTC")


def test_the_forming_candle_by_the_servers_clock_is_dropped(client_factory, replay):
    replay.set_clock("2026-03-02T09:30:30Z")  # the server serves 09:30 as it forms; its Date header says 09:30:30
    candles, _ = client_factory().candles(["KRW-BTC", "KRW-ETH"], "minute1", *HOUR)
    assert candles["candle_start"].max() == pd.Timestamp("2026-03-02T09:29Z")


def test_long_windows_page_200_candles_per_request(client_factory, replay):
    start = HOUR[1] - pd.Timedelta(days=1)
    candles, stats = client_factory().candles(["KRW-BTC"], "minute1", start, HOUR[1])
    assert stats.requests == 8  # ceil(1440 / 200)
    assert candles["candle_start"].min() >= start and candles["candle_start"].is_monotonic_increasing
    first_half, _ = client_factory().candles(["KRW-BTC"], "minute1", start, start + pd.Timedelta(hours=7))
    pd.testing.assert_frame_equal(first_half, candles[candles["candle_start"] < start + pd.Timedelta(hours=7)].reset_index(drop=True))


@pytest.mark.parametrize(("kind", "fields"), [("429", {}), ("500", {}), ("503", {}), ("drop", {}), ("latency", {"seconds": 1.5})])
def test_transient_faults_are_retried(client_factory, replay, kind, fields):
    replay.inject(kind, path="/v1/candles/*", count=2, **fields)
    candles, stats = client_factory(timeout=0.5).candles(MARKETS, "minute1", *HOUR)
    assert stats.markets_returned == 3 and stats.retries == 2
    assert stats.http_429 == (2 if kind == "429" else 0)
    reference, _ = client_factory().candles(MARKETS, "minute1", *HOUR)
    pd.testing.assert_frame_equal(candles, reference)


def test_persistent_server_errors_raise_naming_endpoint_and_market(client_factory, replay):
    replay.inject("500", path="/v1/candles/*", count=None, market="KRW-ETH")
    with pytest.raises(UpbitServerError, match=r"/v1/candles/minutes/1 market=KRW-ETH.*HTTP 500"):
        client_factory(max_retries=2).candles(MARKETS, "minute1", *HOUR)
    assert replay.stats()["faults_fired"].get("500") == 3


def test_418_stops_this_process_and_every_other_one_sharing_redis(client_factory, replay):
    replay.inject("418", path="/v1/candles/*", count=1, seconds=5)
    client = client_factory()
    with pytest.raises(UpbitIPBlockedError, match="blocked"):
        client.candles(MARKETS, "minute1", *HOUR)
    before = _requests(replay, "market")
    other = client_factory()  # another process's client: same Redis keys, new connection
    with pytest.raises(UpbitIPBlockedError, match="IP blocked"):
        other.markets()
    assert _requests(replay, "market") == before, "a blocked IP sends nothing"


def test_every_answer_is_tallied_by_endpoint_and_status_in_redis_for_every_process(client_factory, replay, redis_client):
    """/metrics reads these tallies: each process's client adds to the same hash."""
    replay.inject("429", path="/v1/candles/*", count=2)
    one = client_factory()
    one.candles(MARKETS, "minute1", *HOUR)  # 3 requests answered, 2 of them retried after a 429
    other = client_factory()  # another process's client: same Redis keys
    other.markets()
    replay.inject("418", path="/v1/candles/*", count=1, seconds=5)
    with pytest.raises(UpbitIPBlockedError):
        other.candles(["KRW-BTC"], "minute1", *HOUR)
    assert answer_counts(redis_client, one.redis.prefix) == {
        ("/v1/candles/minutes/1", "200"): 3, ("/v1/candles/minutes/1", "429"): 2, ("/v1/candles/minutes/1", "418"): 1,
        ("/v1/market/all", "200"): 1,
    }


@pytest.mark.parametrize("kind", ["malformed", "empty_body"])
def test_malformed_json_is_a_typed_error(client_factory, replay, kind):
    if kind == "empty_body":
        replay.inject("empty", path="/v1/candles/*", count=1, variant="body")
    else:
        replay.inject(kind, path="/v1/candles/*", count=1)
    with pytest.raises(UpbitResponseError, match=r"/v1/candles/minutes/1 market=KRW-BTC: malformed JSON"):
        client_factory().candles(["KRW-BTC"], "minute1", *HOUR)


def test_truncated_body_is_retried_then_a_typed_error(client_factory, replay):
    replay.inject("truncated", path="/v1/candles/*", count=1)
    _, stats = client_factory().candles(["KRW-BTC"], "minute1", *HOUR)
    assert stats.retries == 1 and stats.markets_returned == 1
    replay.inject("truncated", path="/v1/candles/*", count=None)
    with pytest.raises(UpbitTransportError, match=r"market=KRW-BTC: connection failed"):
        client_factory(max_retries=1).candles(["KRW-BTC"], "minute1", *HOUR)


@pytest.mark.parametrize(
    ("variant", "reason"),
    [
        ("high_low", "high below low"),
        ("missing_field", "missing or non-numeric trade_price"),
        ("negative_price", "price not positive"),
        ("duplicate_timestamp", "duplicate candle_start (identical copy dropped)"),
    ],
)
def test_bad_candles_are_quarantined_and_the_rest_kept(client_factory, replay, variant, reason):
    reference, _ = client_factory().candles(["KRW-BTC"], "minute1", *HOUR)
    replay.inject("bad_candle", path="/v1/candles/*", count=1, variant=variant)
    candles, stats = client_factory().candles(["KRW-BTC"], "minute1", *HOUR)
    assert stats.quarantined["reason"].tolist() == [reason]
    spoiled = reference["candle_start"].max()  # the fault spoils the newest candle of the page
    expected = reference if variant == "duplicate_timestamp" else reference[reference["candle_start"] != spoiled]
    pd.testing.assert_frame_equal(candles, expected.reset_index(drop=True))
    assert stats.metadata()["quarantined"] == 1 and reason in stats.metadata()["quarantine"].value


def test_delisted_market_is_skipped_and_recorded(client_factory, replay):
    candles, stats = client_factory().candles(["KRW-BTC", "KRW-GONE"], "minute1", *HOUR)
    assert stats.skipped_markets == ["KRW-GONE"] and set(candles["market"]) == {"KRW-BTC"}
    assert stats.metadata()["skipped_markets"] == "KRW-GONE"


def test_empty_array_is_a_market_without_candles(client_factory, replay):
    replay.inject("empty", path="/v1/candles/*", count=1, variant="list", market="KRW-ETH")
    candles, stats = client_factory().candles(MARKETS, "minute1", *HOUR)
    assert set(candles["market"]) == {"KRW-BTC", "KRW-XRP"} and stats.markets_returned == 2
    assert stats.quarantined.empty and not stats.skipped_markets


def test_without_redis_the_limit_holds_in_process_with_a_warning(client_factory, replay, caplog):
    with caplog.at_level(logging.WARNING):
        _, stats = client_factory(redis=None).candles(MARKETS, "minute1", *HOUR)
    assert "this process only" in caplog.text and stats.markets_returned == 3


def test_day_candles_are_utc_days(client_factory, replay):
    start = pd.Timestamp("2026-02-20T00:00Z")
    candles, _ = client_factory().candles(["KRW-BTC"], "day", start, start + timedelta(days=10))
    assert len(candles) == 10 and (candles["candle_start"] == candles["candle_start"].dt.floor("D")).all()
