"""Rows as people read them: a pick past its horizon is not served; level rows stored on the grid are served as stored."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd

from dantaro_assets.api.for_people import for_people, unexpired


def test_picks_past_their_horizon_are_dropped_and_counted():
    payload = {"asset": "recommendations", "as_of": "2026-03-10T11:00:00Z", "rows": [
        {"market": "KRW-XRP", "expires_at": "2026-03-11T11:00:00Z"},
        {"market": "KRW-ETH", "expires_at": "2026-03-10T15:00:00Z"},
        {"market": "KRW-SOL"},  # stored before picks carried a horizon: kept
    ]}
    later = unexpired(payload, datetime(2026, 3, 10, 15, 0, tzinfo=UTC))
    assert [r["market"] for r in later["rows"]] == ["KRW-XRP", "KRW-SOL"] and later["expired"] == 1
    assert unexpired(payload, datetime(2026, 3, 12, tzinfo=UTC))["expired"] == 2
    assert payload["rows"][1]["market"] == "KRW-ETH"  # the snapshot itself is untouched


def test_level_prices_on_the_grid_are_served_as_stored():
    """The analyses place levels on the row's grid (bottoms down, tops up): the API's rounding changes nothing,
    so zones a tick apart stay a tick apart."""
    rows = pd.DataFrame({"as_of": pd.Timestamp("2026-03-10T11:00:00Z"), "market": "KRW-XRP", "side": ["support", "support"],
                         "rank": [1, 2], "price": 3044.0, "level": [3030.0, 3012.0], "zone_low": [3021.0, 3001.0],
                         "zone_high": [3033.0, 3020.0], "tick_size": 1.0}).to_dict("records")
    served = for_people("support_levels", {"rows": rows})["rows"]
    assert [(r["level"], r["zone_low"], r["zone_high"]) for r in served] == [(3030.0, 3021.0, 3033.0), (3012.0, 3001.0, 3020.0)]


def test_a_picks_spread_is_served_to_a_hundredth_of_a_basis_point_and_its_absence_as_null():
    rows = [{"market": "KRW-XRP", "entry": 3985.0, "tick_size": 1.0, "entry_from": "best_ask", "spread_bps": 2.509725177616262},
            {"market": "KRW-ETH", "entry": 6367000.0, "tick_size": 1000.0, "entry_from": "last_trade", "spread_bps": None}]
    served = for_people("recommendations", {"rows": rows})["rows"]
    assert [(r["entry_from"], r["spread_bps"]) for r in served] == [("best_ask", 2.51), ("last_trade", None)]
