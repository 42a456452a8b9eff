"""Pure partition logic and the pandera schemas: bad frames fail with messages that say what is wrong."""

from __future__ import annotations

import pandas as pd
import pytest

from dantaro_assets.lib.checks import pandera_check
from dantaro_assets.lib.upbit import FetchStats, interval
from dantaro_assets.lib.upbit.parsing import empty_quarantine
from dantaro_assets.markets.candles import (
    MissingUniverseError,
    coverage,
    keep_listed,
    universe_markets,
    window_days,
)
from dantaro_assets.markets.schemas import candles_schema, upbit_markets_schema

H10, H11 = pd.Timestamp("2025-09-15T10:00Z"), pd.Timestamp("2025-09-15T11:00Z")
DAY15 = pd.Timestamp("2025-09-15T00:00Z")
MINUTE = interval("minute1")


def _universe(days: list[str], markets: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"day": pd.Timestamp(d, tz="UTC"), "market": m} for d in days for m in markets])


def _candles(rows: list[tuple[str, str]], **overrides) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "market": [m for m, _ in rows],
            "candle_start": pd.to_datetime([t for _, t in rows], utc=True),
            "open": 100.0, "high": 110.0, "low": 90.0, "close": 105.0, "volume": 2.0, "value": 210.0,
        }
    )
    for column, (index, value) in overrides.items():
        frame.loc[index, column] = value
    return frame


def test_window_days_cover_a_range_crossing_midnight():
    days = window_days(pd.Timestamp("2025-09-15T22:00Z"), pd.Timestamp("2025-09-16T02:00Z"))
    assert list(days.strftime("%Y-%m-%d")) == ["2025-09-15", "2025-09-16"]
    assert len(window_days(H10, H11)) == 1 and len(window_days(DAY15, DAY15 + pd.Timedelta(days=1))) == 1


def test_missing_universe_day_is_a_clear_error():
    universe = _universe(["2025-09-15"], ["KRW-BTC"])
    assert universe_markets(universe, H10, H11) == ["KRW-BTC"]
    with pytest.raises(MissingUniverseError, match="no KRW universe stored for 2025-09-16: materialise upbit_markets"):
        universe_markets(universe, H10, pd.Timestamp("2025-09-16T01:00Z"))


def test_candles_keep_only_markets_listed_on_their_day():
    universe = pd.concat([_universe(["2025-09-15"], ["KRW-BTC", "KRW-NEW"]), _universe(["2025-09-16"], ["KRW-BTC"])])
    candles = _candles([("KRW-BTC", "2025-09-15T23:59"), ("KRW-NEW", "2025-09-15T23:59"), ("KRW-NEW", "2025-09-16T00:00"), ("KRW-BTC", "2025-09-16T00:00")])
    kept = keep_listed(candles, universe)
    assert list(zip(kept["market"], kept["candle_start"].dt.strftime("%d %H:%M"))) == [
        ("KRW-BTC", "15 23:59"), ("KRW-NEW", "15 23:59"), ("KRW-BTC", "16 00:00"),
    ]


def _stats(skipped=(), quarantined=()) -> FetchStats:
    q = pd.DataFrame({"market": list(quarantined), "candle_start": pd.Timestamp("2025-09-15T10:00Z"), "reason": "x"})
    return FetchStats(skipped_markets=list(skipped), quarantined=q if len(q) else empty_quarantine())


def test_coverage_of_an_hour_counts_answered_markets_not_traded_ones():
    markets = [f"KRW-C{i}" for i in range(10)]
    candles = _candles([("KRW-C0", "2025-09-15T10:00")])  # nine thin markets did not trade this hour
    result = coverage(set(candles["market"]), markets, _stats(), MINUTE, H10, H11, pd.Timestamp("2025-09-16T00:00Z"), 0.9)
    assert result.passed and result.metadata()["with_candles_share"] == 0.1


def test_coverage_fails_when_markets_were_skipped_or_wholly_quarantined():
    markets = [f"KRW-C{i}" for i in range(10)]
    candles = _candles([("KRW-C0", "2025-09-15T10:00")])
    stats = _stats(skipped=["KRW-C1"], quarantined=["KRW-C2"])
    result = coverage(set(candles["market"]), markets, stats, MINUTE, H10, H11, pd.Timestamp("2025-09-16T00:00Z"), 0.9)
    assert not result.passed and "only 8/10 markets answered (skipped 1, all rows quarantined 1)" in result.description


def test_coverage_fails_when_a_closed_window_has_no_candle_at_all():
    result = coverage(set(), ["KRW-BTC"], _stats(), MINUTE, H10, H11, pd.Timestamp("2025-09-16T00:00Z"), 0.9)
    assert not result.passed and "no market has a single candle" in result.description
    in_progress = coverage(set(), ["KRW-BTC"], _stats(), MINUTE, H10, H11, pd.Timestamp("2025-09-15T10:00:30Z"), 0.9)
    assert in_progress.passed, "nothing closed yet: an empty open hour is right"


def test_coverage_of_a_closed_day_needs_candles_for_most_markets():
    markets = [f"KRW-C{i}" for i in range(10)]
    candles = _candles([(f"KRW-C{i}", "2025-09-15T00:00") for i in range(5)])
    day = interval("minute60")
    result = coverage(set(candles["market"]), markets, _stats(), day, DAY15, DAY15 + pd.Timedelta(days=1), pd.Timestamp("2025-09-17T00:00Z"), 0.9)
    assert not result.passed and "only 5/10 markets have candles in a closed day" in result.description


def test_candle_schema_passes_good_candles():
    assert pandera_check(candles_schema(H10, H11), _candles([("KRW-BTC", "2025-09-15T10:00"), ("KRW-ETH", "2025-09-15T10:00")])).passed


@pytest.mark.parametrize(
    ("frame", "message"),
    [
        (_candles([("KRW-BTC", "2025-09-15T10:00")], high=(0, 100.0)), "high >= max(open, close)"),
        (_candles([("KRW-BTC", "2025-09-15T10:00")], low=(0, 101.0)), "low <= min(open, close)"),
        (_candles([("KRW-BTC", "2025-09-15T10:00")], open=(0, -1.0)), "greater_than(0)"),
        (_candles([("KRW-BTC", "2025-09-15T10:00")], volume=(0, -1.0)), "greater_than_or_equal_to(0)"),
        (_candles([("KRW-BTC", "2025-09-15T10:00"), ("KRW-BTC", "2025-09-15T10:00")]), "unique"),
        (_candles([("KRW-BTC", "2025-09-15T11:00")]), "< 2025-09-15T11:00:00+00:00 (partition end)"),
        (_candles([("BTC-ETH", "2025-09-15T10:00")]), "str_matches"),
        (_candles([("KRW-BTC", "2025-09-15T10:00")]).assign(extra=1), "column_in_schema"),
    ],
)
def test_candle_schema_fails_bad_frames_with_a_useful_message(frame, message):
    result = pandera_check(candles_schema(H10, H11), frame)
    assert not result.passed
    assert message in result.description + result.metadata["failure_cases"].value


def test_upbit_markets_schema_rejects_non_midnight_days_and_duplicates():
    frame = pd.DataFrame(
        {
            "day": pd.to_datetime(["2025-09-15T00:00Z", "2025-09-15T00:00Z", "2025-09-15T05:00Z"]),
            "market": ["KRW-BTC", "KRW-BTC", "KRW-ETH"],
            "korean_name": ["비트코인", "비트코인", "이더리움"],
            "english_name": ["Bitcoin", "Bitcoin", "Ethereum"],
            "warning": False,
            **{c: False for c in [
                "caution_price_fluctuations", "caution_trading_volume_soaring", "caution_deposit_amount_soaring",
                "caution_global_price_differences", "caution_concentration_of_small_accounts",
            ]},
        }
    )
    result = pandera_check(upbit_markets_schema(DAY15, DAY15 + pd.Timedelta(days=1)), frame)
    assert not result.passed
    cases = result.metadata["failure_cases"].value
    assert "midnight UTC" in cases and "unique" in result.description + cases
