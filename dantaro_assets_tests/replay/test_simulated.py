"""The simulated market: deterministic, on Upbit's ticks, BTC-correlated, clustered volatility, thin-coin gaps."""

from __future__ import annotations

from datetime import datetime, timezone

import httpx
import numpy as np
import pytest

from dantaro_assets.lib.tick_grid import krw_tick_size, off_grid
from dantaro_replay.core import DAY_MINUTES, Candles, tick_size
from dantaro_replay.simulated import SimulatedMarket

DAY = datetime(2025, 9, 2, tzinfo=timezone.utc).timestamp()
END = DAY + 86_400


def _day(market: SimulatedMarket, code: str, day_start: float = DAY) -> Candles:
    return market.candles(code, 1, day_start + 86_400, DAY_MINUTES, now=day_start + 10 * 86_400).since(day_start)


def _same(a: Candles, b: Candles) -> bool:
    return all(np.array_equal(getattr(a, name), getattr(b, name)) for name in a.__dataclass_fields__)


def test_deterministic_per_seed_and_independent_of_universe_size_and_request_order(simulated):
    small = SimulatedMarket(12, 7)
    later_first = _day(small, "KRW-DOGE", DAY + 86_400)  # a different request order
    assert _same(_day(simulated, "KRW-BTC"), _day(small, "KRW-BTC"))
    assert _same(_day(simulated, "KRW-DOGE"), _day(small, "KRW-DOGE"))
    assert _same(_day(simulated, "KRW-DOGE", DAY + 86_400), later_first)
    assert [s.info for s in simulated.specs[:12]] == [s.info for s in small.specs]
    other = SimulatedMarket(12, 8)
    assert not np.array_equal(_day(other, "KRW-BTC").close, _day(simulated, "KRW-BTC").close)


def test_served_candles_are_the_model(replay, simulated):
    replay.set_clock(datetime(2025, 9, 5, tzinfo=timezone.utc))
    served = httpx.get(f"{replay.url}/v1/candles/minutes/1",
                       params={"market": "KRW-ETH", "to": "2025-09-03T00:00:00Z", "count": 200}).json()
    model = _day(simulated, "KRW-ETH").take(slice(-200, None))
    assert [c["trade_price"] for c in served[::-1]] == model.close.tolist()
    assert [c["timestamp"] for c in served[::-1]] == model.last_trade_ms.tolist()


@pytest.fixture(scope="module")
def big() -> SimulatedMarket:
    return SimulatedMarket(250, 7)


def test_universe_names_and_anchor_prices(simulated, big):
    codes = [s.info.market for s in simulated.specs]
    assert codes[:4] == ["KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL"] and len(set(codes)) == 40
    assert len({s.info.market for s in big.specs}) == 250
    assert all(s.info.market.startswith("KRW-") and s.info.korean_name and s.info.english_name for s in big.specs)
    anchor = datetime(2025, 9, 1, tzinfo=timezone.utc).timestamp()
    first = simulated.candles("KRW-BTC", DAY_MINUTES, anchor + 86_400, 1, now=anchor + 86_400)
    assert abs(first.open[0] / 150_800_000 - 1) < 0.002


def test_prices_sit_on_upbit_ticks_and_candles_are_consistent(simulated):
    for spec in simulated.specs:
        day = _day(simulated, spec.info.market)
        for prices in (day.open, day.high, day.low, day.close):
            assert not off_grid(prices, krw_tick_size(prices)).any(), spec.info.market
        assert np.all(day.low > 0) and np.all(day.volume > 0)
        assert np.all(day.low <= np.minimum(day.open, day.close)) and np.all(day.high >= np.maximum(day.open, day.close))
        assert np.all(day.value >= day.low * day.volume * (1 - 1e-12)) and np.all(day.value <= day.high * day.volume * (1 + 1e-12))
        assert np.all(np.diff(day.start) > 0) and np.all(day.last_trade_ms // 60_000 == day.start // 60)


def test_returns_are_correlated_with_btc(simulated):
    hours = {s.info.market: simulated.candles(s.info.market, 60, END, 24 * 60, now=END) for s in simulated.specs}
    btc = hours["KRW-BTC"]
    correlations = []
    for code, series in hours.items():
        if code == "KRW-BTC":
            continue
        _, in_btc, in_alt = np.intersect1d(btc.start, series.start, return_indices=True)
        btc_r = np.diff(np.log(btc.close[in_btc]))
        alt_r = np.diff(np.log(series.close[in_alt]))
        correlations.append(np.corrcoef(btc_r, alt_r)[0, 1])
    assert np.mean(correlations) > 0.3
    assert np.mean(np.array(correlations) > 0) > 0.9


def test_volatility_clusters(simulated):
    days = simulated.candles("KRW-BTC", DAY_MINUTES, END, 1500, now=END)
    absolute = np.abs(np.diff(np.log(days.close)))
    lag1 = np.corrcoef(absolute[:-1], absolute[1:])[0, 1]
    assert lag1 > 0.05
    minutes = _day(simulated, "KRW-ETH")
    absolute = np.abs(np.diff(np.log(minutes.close)))
    assert np.corrcoef(absolute[:-1], absolute[1:])[0, 1] > 0.05


def test_thin_coins_have_no_trade_minutes_and_majors_almost_none(simulated, thin_market, big):
    assert len(_day(simulated, thin_market)) < 0.99 * DAY_MINUTES
    assert len(_day(simulated, "KRW-BTC")) > 0.995 * DAY_MINUTES
    missing = np.array([DAY_MINUTES - len(_day(big, s.info.market)) for s in big.specs])
    assert np.mean(missing > 0.1 * DAY_MINUTES) > 0.25  # the long tail of small listings is thin
    assert np.all(missing[:4] < 10)


def test_turnover_is_realistic(simulated):
    btc_turnover = _day(simulated, "KRW-BTC").value.sum()
    assert 5e10 < btc_turnover < 2e12
    totals = sorted(_day(simulated, s.info.market).value.sum() for s in simulated.specs)
    assert totals[0] > 1e7 and totals[-1] / totals[0] > 50


def test_market_events_flag_a_few_markets(replay):
    markets = httpx.get(f"{replay.url}/v1/market/all", params={"isDetails": "true"}).json()
    warned = [m["market"] for m in markets if m["market_event"]["warning"]]
    cautioned = [m["market"] for m in markets if any(m["market_event"]["caution"].values())]
    assert 1 <= len(warned) <= 6 and 2 <= len(cautioned) <= 12
    assert not {"KRW-BTC", "KRW-ETH", "KRW-XRP", "KRW-SOL"} & set(warned + cautioned)


@pytest.mark.parametrize("price, tick", [(150_803_000, 1000), (1_500_000, 1000), (700_000, 500), (279_500, 100),
                                         (60_000, 50), (12_000, 10), (7_000, 5), (3_867, 1), (681, 1), (28.04, 0.1),
                                         (5.311, 0.01), (0.5, 0.001)])
def test_tick_table_is_the_pipelines(price, tick):
    assert tick_size(price) == tick == krw_tick_size([price])[0]


def test_every_simulated_price_of_250_markets_is_on_the_pipelines_grid(big):
    """Minutes (a forming one included), hours and days of every market: each open, high, low and close is a
    grid float of Upbit's KRW table as the pipeline reads it (lib/tick_grid.py), so no price a pick is placed
    from sits between two ticks."""
    now = DAY + 13.5 * 3600 + 20  # 20 s into a minute: the last minute is forming
    for spec in big.specs:
        code = spec.info.market
        for unit, count in ((1, DAY_MINUTES), (60, 24 * 5), (DAY_MINUTES, 30)):
            candles = big.candles(code, unit, now + 60, count, now=now)
            for prices in (candles.open, candles.high, candles.low, candles.close):
                assert not off_grid(prices, krw_tick_size(prices)).any(), (code, unit, prices[off_grid(prices, krw_tick_size(prices))][:3])
