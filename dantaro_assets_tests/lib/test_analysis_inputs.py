"""The analysis contract's shared pieces: ticks, the universe of a tick's day, flags, lookbacks and their mappings."""

from __future__ import annotations

from datetime import datetime, timezone

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.lib.analysis_inputs import (
    BOOK_DELAY,
    CAUTION_FLAGS,
    AnalysisInputs,
    Lookback,
    book_at,
    flags,
    latest_day,
    listed_at,
    stored_ticks,
    tick_times,
)
from dantaro_assets.lib.previews import latest_table
from dantaro_assets.lib.upbit import MARKET_COLUMNS
from dantaro_assets.partitions import analysis_ins, daily_partitions, days_back, hourly_partitions
from dantaro_assets_tests.lib.storage_data import candles

HOUR = pd.Timedelta(hours=1)


def ts(text: str) -> pd.Timestamp:
    return pd.Timestamp(text, tz="UTC")


def _minutes(until: str) -> pd.DataFrame:
    """One market's stored minutes from 09:00 up to (not including) ``until``."""
    starts = pd.date_range(ts("2025-09-01 09:00"), ts(until), freq="1min", inclusive="left")
    return pd.DataFrame({"market": "KRW-A", "candle_start": starts, "value": 1.0})


def test_ticks_of_a_closed_hour_the_open_hour_and_a_future_hour():
    hour = ts("2025-09-01 10:00")
    closed = tick_times(hour, hour + HOUR, 120)
    assert len(closed) == 30 and closed[0] == hour and closed[-1] == ts("2025-09-01 10:58")
    assert list(tick_times(hour, hour + HOUR, 900, reached=ts("2025-09-01 10:31:10"))) == [
        hour, ts("2025-09-01 10:15"), ts("2025-09-01 10:30")]
    assert tick_times(hour, hour + HOUR, 120, reached=ts("2025-09-01 09:59:59")).empty


def test_stored_ticks_stop_at_the_newest_stored_minute_and_at_the_wall_clock():
    """One rule for every analysis: a tick is computed once the minutes before it are stored, never ahead of now."""
    hour, now = ts("2025-09-01 10:00"), datetime(2025, 9, 1, 10, 47, 30, tzinfo=timezone.utc)
    complete = _minutes("2025-09-01 11:00")
    assert len(stored_ticks(hour, hour + HOUR, 120, complete, now=datetime(2025, 9, 1, 12, tzinfo=timezone.utc))) == 30
    assert list(stored_ticks(hour, hour + HOUR, 900, complete, now=now).strftime("%H:%M")) == ["10:00", "10:15", "10:30", "10:45"]
    # the minutes end at 10:29: 10:30 needs 10:29 stored, 10:45 waits for the next run
    assert list(stored_ticks(hour, hour + HOUR, 900, _minutes("2025-09-01 10:29"), now=now).strftime("%H:%M")) == ["10:00", "10:15"]
    assert list(stored_ticks(hour, hour + HOUR, 900, _minutes("2025-09-01 10:30"), now=now).strftime("%H:%M")) == ["10:00", "10:15", "10:30"]
    assert stored_ticks(hour, hour + HOUR, 900, complete.iloc[:0], now=now).empty  # nothing stored: not even 10:00
    assert stored_ticks(hour + HOUR, hour + 2 * HOUR, 900, complete, now=now).empty  # an hour still ahead


def test_the_universe_of_a_tick_is_its_latest_day_at_or_before_it():
    day = ts("2025-09-10")
    universe = pd.DataFrame({"day": [day, day, day + pd.Timedelta(days=1)], "market": ["KRW-A", "KRW-B", "KRW-A"],
                             "warning": [True, False, False], "caution_price_fluctuations": [False, True, False]})
    assert listed_at(universe, day - pd.Timedelta(minutes=1)) is None and listed_at(universe.iloc[:0], day) is None
    assert list(listed_at(universe, day + pd.Timedelta(hours=23)).index) == ["KRW-A", "KRW-B"]
    assert list(listed_at(universe, day + pd.Timedelta(days=3)).index) == ["KRW-A"]
    days = latest_day(universe["day"], pd.DatetimeIndex([day - HOUR, day, day + 30 * HOUR]))
    assert days[0] is pd.NaT and list(days[1:]) == [day, day + pd.Timedelta(days=1)]
    flagged = flags(listed_at(universe, day))  # caution columns the frame lacks count as not set
    assert flagged.to_dict("index") == {"KRW-A": {"warning": True, "caution": False}, "KRW-B": {"warning": False, "caution": True}}


def test_caution_flags_are_the_universe_columns():
    assert set(CAUTION_FLAGS) <= set(MARKET_COLUMNS) and len(CAUTION_FLAGS) == 5
    assert all(flag.startswith("caution_") for flag in CAUTION_FLAGS)


def test_days_back_maps_an_hour_onto_its_day_and_the_days_before():
    mapping = days_back(2)
    subset = hourly_partitions.empty_subset().with_partition_keys(["2025-09-10-05:00"])
    upstream = mapping.get_upstream_mapped_partitions_result_for_partitions(subset, hourly_partitions, daily_partitions)
    assert sorted(upstream.partitions_subset.get_partition_keys()) == ["2025-09-08", "2025-09-09", "2025-09-10"]


def test_a_lookback_gives_the_assets_inputs_and_the_widest_covers_them_all():
    ins = analysis_ins(Lookback(minute_hours=2, hourly_days=14, daily_days=2, instruments=True))
    assert list(ins) == ["candles_1m", "candles_1h", "candles_1d", "upbit_markets", "upbit_instruments"]
    assert ins["candles_1m"].partition_mapping == dg.TimeWindowPartitionMapping(start_offset=-2, end_offset=0,
                                                                                allow_nonexistent_upstream_partitions=True)
    assert ins["upbit_instruments"].metadata == {"optional": True}
    assert list(analysis_ins(Lookback(minute_hours=2, hourly_days=5))) == ["candles_1m", "candles_1h", "upbit_markets"]
    widest = Lookback.covering(Lookback(2, 5), Lookback(1, 14, 2, instruments=True))
    assert widest == Lookback(minute_hours=2, hourly_days=14, daily_days=2, universe_days=1, instruments=True)


def test_inputs_span_the_ticks_and_a_partition_without_a_tick_has_no_history_to_read():
    minutes = candles("2025-09-01-09:00", minutes=60)
    inputs = AnalysisInputs.assemble(Lookback(minute_hours=2, hourly_days=1), pd.DatetimeIndex([ts("2025-09-01 10:00")]),
                                     candles_1m=minutes, candles_1h=minutes.iloc[:0], upbit_markets=pd.DataFrame())
    assert inputs.history.minutes_start == ts("2025-09-01 08:00") and len(inputs.history.price(ts("2025-09-01 10:00"))) == 2
    none = AnalysisInputs.assemble(Lookback(minute_hours=2, hourly_days=1), pd.DatetimeIndex([], tz="UTC"),
                                   candles_1m=minutes, candles_1h=minutes.iloc[:0], upbit_markets=pd.DataFrame())
    for reading in ("history", "turnover"):  # no tick is invented to read around
        with pytest.raises(ValueError, match="no tick to read candles for"):
            getattr(none, reading)


def test_latest_table_shows_only_the_newest_snapshot():
    frame = pd.DataFrame({"as_of": pd.to_datetime(["2025-09-01 10:00", "2025-09-01 10:15", "2025-09-01 10:15"], utc=True),
                          "market": ["KRW-A", "KRW-A", "KRW-B"], "level": [1.0, 2.0, 3.0]})
    text = latest_table(frame, ["market", "level"]).value
    assert "as_of 2025-09-01 10:15 UTC, 2 row(s)" in text and "KRW-B" in text and "| 1 " not in text
    assert "no snapshot" in latest_table(frame.iloc[:0], ["market"]).value


def test_a_ticks_book_is_the_first_fetched_within_a_minute_after_it_its_ask_on_the_grid():
    tick = pd.Timestamp("2025-10-09T10:05Z")
    books = pd.DataFrame({
        "as_of": [tick - pd.Timedelta(seconds=1), tick + pd.Timedelta(seconds=20), tick + pd.Timedelta(seconds=40),
                  tick + pd.Timedelta(seconds=40), tick + BOOK_DELAY],
        "market": ["KRW-A", "KRW-A", "KRW-A", "KRW-B", "KRW-C"],
        "best_ask": [100.0, 1234.0, 1240.0, 5.311, 7.0],
        "spread_bps": [1.0, 8.1, 8.0, 18.8, 14.0],
    })
    book = book_at(books, tick, pd.Series({"KRW-B": 0.01}))
    # A: the book of 10:05:20 (10:04:59 is before the tick, 10:05:40 later); B's ask rounded up onto its stored
    # tick of 0.01; C fetched a minute after the tick: too late for it
    assert book.to_dict("index") == {"KRW-A": {"entry": 1234.0, "spread_bps": 8.1}, "KRW-B": {"entry": 5.32, "spread_bps": 18.8}}
    assert book_at(None, tick, pd.Series(dtype=float)).empty and book_at(books, tick + pd.Timedelta(hours=1), pd.Series(dtype=float)).empty
