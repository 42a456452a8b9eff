"""The live page (``GET /``) in a real headless Chromium over the API served by uvicorn, real Postgres and Redis.

Candles, market status, support levels and picks are stored as runs store them: rows to Postgres through
the IO manager, then the publish step's compare-and-set in Redis, whose event the page hears over /events.
Debian's chromium is driven by Playwright (``harness.launch_chromium``).
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass

import dagster as dg
import httpx
import numpy as np
import pandas as pd
import psycopg
import pytest
from pydantic import SecretStr

from dantaro_assets.api.app import create_app
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager, WriteMode
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.partitions import hourly_partitions
from dantaro_assets.resources import build_snapshot_store
from dantaro_assets.settings import Settings
from dantaro_assets_tests.fixtures.servers import serve_http
from dantaro_assets_tests.harness import CHROMIUM, launch_chromium
from dantaro_assets_tests.lib.storage_data import MERGE_METADATA, write

UPDATE_WITHIN_MS = 2000  # the bound: a new snapshot is on the page within 2 s
ANALYSIS_METADATA = {"partition_expr": "as_of", "write_mode": WriteMode.REPLACE.value}
KEYS = {"market_status": ["as_of"], "support_levels": ["as_of", "market", "side", "rank"], "recommendations": ["as_of", "scorer", "market"]}
PRICES = {"KRW-BTC": 95_250_000.0, "KRW-ETH": 3_125_000.0, "KRW-XRP": 823.4}  # on Upbit's grid: ticks 1000, 1000, 0.1


def krw(value: float) -> str:
    """A price as the page writes it (ko-KR: thousands separators, the decimals the price has)."""
    return f"{value:,.8f}".rstrip("0").rstrip(".")


@pytest.fixture(scope="module")
def browser():
    """Debian's headless Chromium under Playwright; a clear skip without it, a failure in CI (CI=true)."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: apt-get install -y --no-install-recommends chromium (.ci/run does)"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        launched = launch_chromium(playwright)
        yield launched
        launched.close()


@pytest.fixture
def page(browser):
    """A fresh browser context's page, closed before the API stops (an open event stream would hold uvicorn's shutdown)."""
    context = browser.new_context(viewport={"width": 1440, "height": 1000}, locale="ko-KR", timezone_id="Asia/Seoul")
    yield context.new_page()
    context.close()


@dataclass
class Market:
    """The API over a schema and key prefix of its own, and the writes a run makes."""

    client: httpx.Client
    store: SnapshotStore
    io_manager: PostgresDataFrameIOManager
    scorer: str
    hour: str  # the partition the ticks are in
    start: pd.Timestamp
    token: str | None = None

    @property
    def url(self) -> str:
        return str(self.client.base_url)

    def tick(self, minutes: int) -> pd.Timestamp:
        return self.start + pd.Timedelta(minutes=minutes)

    def store_analysis(self, asset: str, frame: pd.DataFrame, **publish) -> None:
        """What an analysis run does: its rows to Postgres, then the newest published (an event)."""
        write(self.io_manager, frame, asset, partitions=(self.hour, self.hour), metadata={**ANALYSIS_METADATA, "primary_key": KEYS[asset]})
        self.store.publish(asset, frame, run_id=f"run-{uuid.uuid4().hex[:6]}", partition=self.hour, **publish)

    def store_candles(self, now: pd.Timestamp) -> None:
        """Three hours of 1-minute candles of every market up to ``now``, on each market's grid, and their hours."""
        times = pd.date_range(now.floor("h") - pd.Timedelta(hours=3), now.floor("min"), freq="1min", inclusive="left")
        frames = []
        for i, (market, price) in enumerate(PRICES.items()):
            tick = 0.1 if price < 1000 else 1000.0
            walk = price * (1 + np.cumsum(np.random.default_rng(i).normal(0, 0.0012, len(times))))
            close = np.round(walk / tick) * tick
            frames.append(pd.DataFrame({"market": market, "candle_start": times, "open": np.r_[close[0], close[:-1]], "close": close})
                          .assign(high=lambda f, t=tick: f[["open", "close"]].max(axis=1) + t, low=lambda f, t=tick: f[["open", "close"]].min(axis=1) - t,
                                  volume=2.0, value=lambda f: f["close"] * 2.0))
        minutes = pd.concat(frames, ignore_index=True)
        write(self.io_manager, minutes, "candles_1m", metadata=MERGE_METADATA)
        hours = minutes.groupby(["market", minutes["candle_start"].dt.floor("h")]).agg(
            open=("open", "first"), high=("high", "max"), low=("low", "min"), close=("close", "last"), volume=("volume", "sum"), value=("value", "sum"))
        write(self.io_manager, hours.reset_index(), "candles_1h", metadata=MERGE_METADATA)  # the chart's default interval

    def status(self, minute: int, regime: str, score: float) -> None:
        self.store_analysis("market_status", pd.DataFrame({
            "as_of": [self.tick(minute)], "regime": [regime], "score": [score], "markets": [212], "breadth_1h": [0.62], "breadth_day": [0.55],
            "median_return_1h_pct": [0.4123], "btc_price": [PRICES["KRW-BTC"]], "btc_return_1h_pct": [0.35], "summary": ["risk-on (score 66/100)"]}))

    def levels(self, minute: int) -> None:
        """Levels whose zones are stored off the grid: the API rounds them (bottoms down, tops up), the page shows the API's."""
        rows = []
        for market, price in PRICES.items():
            tick = 0.1 if price < 1000 else 1000.0
            for side, sign in (("support", -1), ("resistance", 1)):
                level = price * (1 + sign * 0.02)
                rows.append({"market": market, "side": side, "rank": 1, "price": price, "level": level, "zone_low": level * 0.9962,
                             "zone_high": level * 1.0041, "strength": 71.234, "tick_size": tick})
        self.store_analysis("support_levels", pd.DataFrame(rows).assign(as_of=self.tick(minute)), per_market=True)

    def picks(self, minute: int, markets: list[str], *, chance: bool) -> pd.DataFrame:
        rows = []
        for rank, market in enumerate(markets, start=1):
            price = PRICES[market]
            tick = 0.1 if price < 1000 else 1000.0
            rows.append({"scorer": self.scorer, "rank": rank, "market": market, "score": 80.0 - rank, "entry": price,
                         "target": price + 37 * tick, "stop": price - 19 * tick, "reward_risk": 37 / 19, "tick_size": tick,
                         "regime": "risk_on", "caution": ["price_fluctuations"] if market == "KRW-XRP" else []})
        frame = pd.DataFrame(rows).assign(as_of=self.tick(minute))
        if chance:
            frame = frame.assign(p_target_first=0.6234, expected_return_net=0.0123, horizon_hours=4,
                                 expires_at=self.tick(minute) + pd.Timedelta(hours=4))
        self.store_analysis("recommendations", frame)
        return frame


def serve_market(settings: Settings, pg_url: str) -> Iterator[Market]:
    """The API over a schema and key prefix of its own, with three hours of candles stored; the schema is dropped after."""
    own = f"page_{uuid.uuid4().hex[:6]}"
    postgres = PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}")
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"), postgres)
    now = pd.Timestamp.now(tz="UTC")
    hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())
    instance = dg.DagsterInstance.ephemeral()
    app = create_app(lambda: instance, store, 0, settings=settings)
    try:
        with instance, serve_http(app) as client:
            deadline = time.monotonic() + 10
            while not app.state.hub.subscribed.is_set():
                assert time.monotonic() < deadline, "the API did not subscribe to its events"
                time.sleep(0.02)
            token = settings.api_token.get_secret_value() if settings.api_token else None
            market = Market(client, store, PostgresDataFrameIOManager(postgres=postgres), settings.scorer, hour, now.floor("h"), token)
            market.store_candles(now)
            yield market
    finally:
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{postgres.db_schema}" CASCADE')


@pytest.fixture
def market(settings, pg_url, redis_client) -> Iterator[Market]:
    yield from serve_market(settings, pg_url)


@pytest.fixture
def guarded_market(settings, pg_url, redis_client) -> Iterator[Market]:
    yield from serve_market(settings.model_copy(update={"api_token": SecretStr("page-" + uuid.uuid4().hex)}), pg_url)


def cell(page, market: str, field: str) -> str:
    return page.inner_text(f'#picks-table tr[data-market="{market}"] td[data-field="{field}"]')


def test_the_page_shows_the_picks_at_the_api_s_prices_and_a_new_snapshot_within_2_s(market, page):
    market.status(0, "risk_on", 66.4)
    market.levels(0)
    market.picks(0, ["KRW-BTC", "KRW-ETH"], chance=False)
    served = market.client.get("/recommendations/latest").json()["rows"]
    levels = market.client.get("/support-levels/KRW-BTC").json()["rows"]

    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(market.url)
    page.wait_for_selector('#picks-table tr[data-market="KRW-ETH"]')
    for row in served:
        for field in ("entry", "target", "stop"):
            assert cell(page, row["market"], field) == krw(row[field]), (row["market"], field)
    assert "KRW-BTC" in cell(page, "KRW-BTC", "market") and cell(page, "KRW-BTC", "reward_risk") == "1.95 : 1"
    assert page.inner_text('#status [data-field="regime"]') == "위험 선호" and page.inner_text('#status [data-field="score"]') == "66 / 100"
    header = page.inner_text("#picks-table thead")
    assert "확률" not in header and "기한" not in header, "a snapshot without chances shows no empty columns"

    # the chart of the first pick: its candles, the plan's lines and the zones as the API rounded them
    page.wait_for_selector('#plan [data-field="stop"]')
    btc = served[0]
    assert page.inner_text('#plan [data-field="entry"]').endswith(krw(btc["entry"]))
    assert krw(btc["target"]) in page.inner_text('#plan [data-field="target"]')
    support = next(level for level in levels if level["side"] == "support")
    raw_low = PRICES["KRW-BTC"] * 0.98 * 0.9962
    assert support["zone_low"] == np.floor(raw_low / 1000) * 1000 != raw_low
    assert page.inner_text('#zones [data-field="support-1"]').endswith(f"{krw(support['zone_low'])} – {krw(support['zone_high'])}")
    assert page.is_hidden("#chart-empty") and page.locator("#chart canvas").count() > 0
    with page.expect_response(lambda r: "/candles/KRW-BTC?interval=15m&limit=200" in r.url and r.status == 200):
        page.click('#intervals [data-interval="15m"]')  # 15-minute candles, built from the stored minutes
    page.wait_for_selector('#intervals [data-interval="15m"][aria-pressed="true"]')
    assert page.locator("#live").get_attribute("data-state") == "live"

    # a newer snapshot with a new first pick and its chances: on the page within 2 s of its publish
    published = time.monotonic()
    newer = market.picks(5, ["KRW-XRP", "KRW-BTC"], chance=True)
    page.wait_for_selector('#picks-table tbody tr:first-child[data-market="KRW-XRP"]', timeout=UPDATE_WITHIN_MS)
    seen_after = time.monotonic() - published
    xrp = market.client.get("/recommendations/latest").json()["rows"][0]
    assert (xrp["market"], xrp["entry"]) == ("KRW-XRP", newer["entry"].iloc[0])
    assert [cell(page, "KRW-XRP", f) for f in ("entry", "target", "stop")] == [krw(xrp["entry"]), krw(xrp["target"]), krw(xrp["stop"])]
    assert cell(page, "KRW-XRP", "p_target_first") == "62%" and cell(page, "KRW-XRP", "expected_return_net") == "+1.23%"
    expires_kst = pd.Timestamp(xrp["expires_at"]).tz_convert("Asia/Seoul").strftime("%m. %d. %H:%M")  # the date too
    assert cell(page, "KRW-XRP", "expires_at") == f"{expires_kst}\n4시간" and cell(page, "KRW-XRP", "caution") == "가격 급등락"
    assert page.locator('#picks-table tr[data-market="KRW-ETH"]').count() == 0
    assert seen_after < UPDATE_WITHIN_MS / 1000
    assert errors == []


def test_with_a_token_the_page_asks_for_it_and_then_reads_and_listens_with_it(guarded_market, page):
    guarded_market.picks(0, ["KRW-ETH"], chance=False)
    assert guarded_market.client.get("/recommendations/latest").status_code == 401
    page.goto(guarded_market.url)  # the page itself holds no data: it is served without the token
    page.wait_for_selector("#token-form:not([hidden])")
    assert page.locator("#picks-table tbody tr").count() == 0

    page.fill("#token", guarded_market.token)
    page.click("#token-form button")
    page.wait_for_selector('#picks-table tr[data-market="KRW-ETH"]')
    page.wait_for_selector('#live[data-state="live"]')  # EventSource sends the page's cookie, it cannot send a header
    guarded_market.picks(5, ["KRW-XRP"], chance=False)
    page.wait_for_selector('#picks-table tr[data-market="KRW-XRP"]', timeout=UPDATE_WITHIN_MS)
