"""A buy at the best ask under the last price: the levels of its plan and summary are taken on their side of the buy.

The scheduled run fetches the order books up to a minute after its tick; when the market fell meanwhile, the best ask
is under the tick's last price, which support_levels sides the zones at. The replay's simulated market (8 markets,
seed 7, as the ``small_replay`` server serves it) at such ticks called a support "below the buy" that was above it,
or said the buy traded in a zone that starts above it, and put the stop a hair under the entry: the blocking schema
check (``summary_mismatches``) failed the run and nothing was written. So the first-start test failed in CI started
at 23:10:58: tick 23:10, the book fetched a few seconds before 23:11 (at 23:19 no book was within a minute of a tick).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, book_at, ticks_at
from dantaro_assets.recommendations import analysis
from dantaro_assets.recommendations.analysis import LOOKBACK, RecommendationParams, compute_recommendations
from dantaro_assets.recommendations.schemas import summary_mismatches
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.recommendations.trade_plan import BEST_ASK
from dantaro_assets_tests.lib.candle_data import simulated_upstream
from dantaro_replay.payloads import book_sides
from dantaro_replay.simulated import SimulatedMarket

MARKETS = 8


def _books(sim: SimulatedMarket, fetched: pd.Timestamp) -> pd.DataFrame:
    """orderbook_top as the run stores it: each market's best ask and spread, fetched at ``fetched``."""
    rows = []
    for spec in sim.specs:
        asks, bids, _, _ = book_sides(sim, spec.info.market, fetched.timestamp(), 1)
        rows.append({"as_of": fetched, "market": spec.info.market, "best_ask": asks[0],
                     "spread_bps": 1e4 * (asks[0] - bids[0]) / ((asks[0] + bids[0]) / 2)})
    return pd.DataFrame(rows)


@pytest.mark.parametrize(("tick", "fetched_after_s", "market"), [
    # the first-start test's open hour in CI, started 23:10:58: 3 rows (x 26 columns, pandera's "78 failure(s)")
    ("2026-12-06 23:10", 57, "KRW-BTC"),  # the zone the price trades in started above the buy (196,956,000 > 196,913,000)
    ("2026-12-06 15:25", 30, "KRW-ETH"),  # the zone the price trades in started above the buy (13,595,000 > 13,594,000)
    ("2026-12-06 00:30", 59, "KRW-BTC"),  # the support called below the buy was above it (198,213,000 > 197,865,000)
])
def test_a_buy_under_the_last_price_says_what_its_fields_say(tick, fetched_after_s, market):
    """Every pick's summary is its fields; the market bought under its price has its stop under a zone below the buy
    (its old stop, under a zone above the buy, was a hair under the entry: a reward:risk the plan did not have)."""
    as_of = pd.Timestamp(tick, tz="UTC")
    upstream = simulated_upstream(MARKETS, as_of.floor("h"))
    ticks = pd.DatetimeIndex([as_of], name="as_of")
    books = _books(SimulatedMarket(MARKETS, seed=7), as_of + pd.Timedelta(seconds=fetched_after_s))
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=upstream["candles_1m"], candles_1h=upstream["candles_1h"],
                                     candles_1d=upstream["candles_1d"], upbit_markets=upstream["upbit_markets"],
                                     upbit_instruments=upstream["upbit_instruments"], orderbook_top=books)
    params = RecommendationParams(1e9, 1.5, tuple(SCORERS))
    picks, _ = compute_recommendations(inputs, ticks, params)
    assert (picks["entry_from"] == "best_ask").all()  # none at 23:10 now: BTC's stop under the support misses the floor
    wrong = {f"{r['scorer']} {r['market']}": summary_mismatches(r) for r in picks.to_dict("records")}
    assert {key: why for key, why in wrong.items() if why} == {}

    book = book_at(inputs.books, as_of, ticks_at(inputs.instruments, as_of))
    scored = analysis.recommend_at(inputs, as_of, params, entry=book["entry"], entry_from=BEST_ASK,
                                   spread_bps=book["spread_bps"]).scored.loc[market]
    entry = book["entry"][market]
    assert entry < scored["price"]  # the market fell between the tick's last minute and the book
    assert not scored["support_high"] >= entry and not scored["zone_low"] > entry  # NaN (none) or on the buy's side


def test_nearest_levels_are_taken_on_their_side_of_an_entry_under_the_price():
    """Sided at a price of 100, bought at 99: the support whose top (99.5) is not under the buy and the zone the
    price trades in that starts above the buy (99.2) are not the buy's; the stop goes under the support below it."""
    levels = pd.DataFrame({
        "market": ["KRW-A", "KRW-A", "KRW-B", "KRW-B", "KRW-B"],
        "side": ["support", "support", "support", "at_price", "resistance"],
        "zone_low": [95.0, 99.0, 97.0, 99.2, 102.0],
        "zone_high": [96.0, 99.5, 98.0, 100.5, 103.0],
    })
    out = analysis.nearest_levels(levels, pd.Series({"KRW-A": 99.0, "KRW-B": 99.0}))
    a, b = out.loc["KRW-A"], out.loc["KRW-B"]
    assert (a["support_low"], a["support_high"], a["stop_zone_low"], a["stop_zone"]) == (95.0, 96.0, 95.0, "support")
    assert np.isnan(b["zone_low"]) and (b["support_high"], b["stop_zone_low"], b["stop_zone"]) == (98.0, 97.0, "support")
    assert b["resistance_low"] == 102.0
