"""Entries a buyer can get: the recommendations job's order book fetch (the replay over HTTP) feeds the picks' entry.

The replay's simulated market (40 markets, seed 7) is stored as the candle assets would store it up to the tick
H:05, the replay's clock frozen 20 s after it; ``orderbook_top`` and ``recommendations`` are materialised together
as the job runs them, through the real IO manager. Tick H:05 enters at its book's best ask with the spread stored,
tick H:00 (no book fetched within a minute after it) and the hour before (a backfill) at the last trade.
"""

from __future__ import annotations

import json

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.tick_grid import off_grid, tick_for
from dantaro_assets.lib.upbit import UpbitClient
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.markets.assets import orderbook_top
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.resources import build_snapshot_store, run_settings
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import simulated_upstream, store

HOUR = pd.Timestamp("2025-10-09 10:00", tz="UTC")
TICK = HOUR + pd.Timedelta(minutes=5)  # the minutes are stored up to it, as when the H:05 run starts
CLOCK = TICK + pd.Timedelta(seconds=20)  # when that run fetches the books
PARTITION, EARLIER = HOUR.strftime("%Y-%m-%d-%H:%M"), (HOUR - pit.HOUR).strftime("%Y-%m-%d-%H:%M")
recommendations, recommendations_redis = RECOMMENDATIONS.asset, RECOMMENDATIONS.publish
PARTITIONS = {"candles_1m": hourly_partitions, "candles_1h": daily_partitions, "candles_1d": daily_partitions,
              "upbit_markets": daily_partitions, "upbit_instruments": daily_partitions}


@pytest.fixture(scope="module")
def postgres_resource(pg_url, settings):
    with own_schema(pg_url, f"{settings.db_schema}_entry_books") as resource:
        yield resource


@pytest.fixture(scope="module")
def stored_history(postgres_resource) -> dict[str, pd.DataFrame]:
    """The replay's 40 markets as the candle assets hold them when the H:05 run starts: minutes up to H:05 (the
    whole hour's returned, for a test to store more of it)."""
    io_manager = PostgresDataFrameIOManager(postgres=postgres_resource)
    upstream = simulated_upstream(40, HOUR)
    for name, frame in upstream.items():
        if name == "candles_1m":
            frame = frame[frame["candle_start"] < TICK]
        column = "day" if name.startswith("upbit_") else "candle_start"
        partitions_def = PARTITIONS[name]
        first = partitions_def.get_partition_key_for_timestamp(frame[column].min().timestamp())
        last = partitions_def.get_partition_key_for_timestamp(frame[column].max().timestamp())
        store(io_manager, name, frame, partitions_def=partitions_def, first=first, last=last)
    return upstream


@pytest.fixture
def resources(stored_history, postgres_resource, redis_resource, replay, settings):
    """The job's resources, the Upbit client on the replay with its clock frozen 20 s after the tick."""
    replay.set_clock(CLOCK.isoformat())
    upbit = UpbitClient(base_url=replay.url, redis=redis_resource, backoff_seconds=0.05)

    def make(**overrides) -> dict:
        chosen = settings.model_copy(update=overrides)
        return {"io_manager": PostgresDataFrameIOManager(postgres=postgres_resource), "postgres": postgres_resource,
                "redis": redis_resource, "upbit": upbit, "run_settings": run_settings(chosen),
                "snapshots": build_snapshot_store(chosen, redis_resource, postgres_resource)}

    yield make
    upbit.close()


def _run(resources: dict, selection: list, partition: str = PARTITION, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize([*dg.load_assets_from_modules([market_assets]), recommendations, recommendations_redis], selection=selection,
                          partition_key=partition, resources=resources, **kwargs)


def _table(postgres: PostgresResource, name: str, order: str) -> pd.DataFrame:
    if postgres.read_frame("SELECT to_regclass($1) IS NULL AS absent", (f"{postgres.db_schema}.{name}",))["absent"].all():
        return pd.DataFrame()
    frame = postgres.read_frame(f"SELECT * FROM {postgres.table_name(name)} ORDER BY {order}")
    for column in ("reasons", "caution"):
        if column in frame and len(frame) and isinstance(frame[column].iloc[0], str):
            frame[column] = frame[column].map(json.loads)
    return frame


@pytest.fixture
def with_books(resources, postgres_resource):
    """The H:05 run with the default spread limit: books fetched and stored, then the picks of H:00 and H:05."""
    result = _run(resources(), [orderbook_top, recommendations, recommendations_redis])
    assert result.success and all(check.passed for check in result.get_asset_check_evaluations())
    return result, _table(postgres_resource, "recommendations", "as_of, scorer, rank"), _table(postgres_resource, "orderbook_top", "as_of, market")


def test_the_ticks_book_sets_the_entry_at_the_best_ask_with_its_spread(with_books, settings):
    result, picks, books = with_books
    assert (books["as_of"] == CLOCK).sum() == 40  # every market's book, as fetched by this run
    assert set(picks["as_of"]) == {HOUR, TICK}
    at_tick, before = picks[picks["as_of"] == TICK], picks[picks["as_of"] == HOUR]
    assert len(at_tick) and len(before)
    assert (at_tick["entry_from"] == "best_ask").all() and (before["entry_from"] == "last_trade").all()
    assert before["spread_bps"].isna().all()
    book = books[books["as_of"] == CLOCK].set_index("market").loc[at_tick["market"]]
    assert (at_tick["entry"].to_numpy() == book["best_ask"].to_numpy()).all()  # on Upbit's grid already
    assert (at_tick["spread_bps"].to_numpy() == book["spread_bps"].to_numpy()).all()
    assert (at_tick["spread_bps"] <= settings.max_spread_bps).all()
    # reward:risk and the plan's distances are the placed prices' from that entry
    assert ((at_tick["target"] - at_tick["entry"]) / (at_tick["entry"] - at_tick["stop"]) >= at_tick["reward_risk"] * (1 - 1e-9)).all()
    prices = at_tick["entry"]
    assert not off_grid(prices.to_numpy(), tick_for(prices.set_axis(at_tick["market"]), at_tick.set_index("market")["tick_size"])).any()
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    served = at_tick[at_tick["scorer"] == settings.scorer]
    assert metadata["entry_from_best_ask"].value == len(served)
    assert metadata["entry_from_last_trade"].value == (before["scorer"] == settings.scorer).sum()
    assert metadata["max_spread_bps"].value == settings.max_spread_bps
    assert result.asset_materializations_for_node("recommendations_redis")[0].metadata["rows"].value == len(served)


def test_the_served_snapshot_says_where_each_entry_came_from(with_books, resources, settings):
    """The Redis payload the API serves carries entry_from and spread_bps (a number, null without a book)."""
    _, picks, _ = with_books
    served = picks[(picks["as_of"] == TICK) & (picks["scorer"] == settings.scorer)]
    rows = resources()["snapshots"].cached("recommendations")["rows"]
    assert [(r["market"], r["entry"], r["entry_from"]) for r in rows] == list(zip(served["market"], served["entry"], served["entry_from"]))
    assert [r["spread_bps"] for r in rows] == pytest.approx(list(served["spread_bps"]), rel=1e-9)  # JSON keeps 10 digits


def test_a_pick_whose_book_is_wider_than_the_limit_is_not_served_and_is_counted(with_books, resources, postgres_resource, replay):
    _, picks, books = with_books
    at_tick = picks[picks["as_of"] == TICK]
    widest = at_tick.loc[at_tick["spread_bps"].idxmax()]
    limit = float(books["spread_bps"][books["spread_bps"] < widest["spread_bps"]].max())  # just under the widest pick's spread
    wider = books[(books["as_of"] == CLOCK) & (books["spread_bps"] > limit)]["market"]
    result = _run(resources(max_spread_bps=limit), [recommendations, recommendations_redis])
    assert result.success and all(check.passed for check in result.get_asset_check_evaluations())
    again = _table(postgres_resource, "recommendations", "as_of, scorer, rank")
    tick = again[again["as_of"] == TICK]
    assert widest["market"] not in set(tick["market"]) and not set(tick["market"]) & set(wider)
    assert (tick["spread_bps"] <= limit).all()
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    assert metadata["excluded_spread"].value == len(wider) >= 1  # of the latest tick, H:05, among its eligible markets
    assert f"DANTARO_MAX_SPREAD_BPS ({limit:g} bps)" in metadata["excluded_spread_reason"].value
    pd.testing.assert_frame_equal(again[again["as_of"] == HOUR].reset_index(drop=True),
                                  picks[picks["as_of"] == HOUR].reset_index(drop=True))  # no book, nothing excluded


def test_a_recomputation_reuses_the_stored_books_even_after_a_later_fetch(with_books, resources, postgres_resource, replay):
    """The H:10 run fetches again; tick H:05 still uses the first book fetched within a minute after it."""
    _, picks, _ = with_books
    replay.set_clock((TICK + pd.Timedelta(minutes=5, seconds=20)).isoformat())
    assert _run(resources(), [orderbook_top]).success
    assert _table(postgres_resource, "orderbook_top", "as_of, market")["as_of"].nunique() == 2
    assert _run(resources(), [recommendations]).success
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendations", "as_of, scorer, rank"), picks)


def test_a_backfill_without_book_history_enters_at_the_last_trade_and_says_so(with_books, resources, postgres_resource):
    """The hour before: Upbit keeps no book history, so the books step stores nothing and every pick says last_trade."""
    result = _run(resources(), [orderbook_top, recommendations], partition=EARLIER)
    assert result.success
    assert result.asset_materializations_for_node("orderbook_top")[0].metadata["books_stored"].value == 0
    picks = _table(postgres_resource, "recommendations", "as_of, scorer, rank")
    earlier = picks[picks["as_of"] < HOUR]
    assert len(earlier) and (earlier["entry_from"] == "last_trade").all() and earlier["spread_bps"].isna().all()
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    assert (metadata["entry_from_best_ask"].value, metadata["excluded_spread"].value) == (0, 0)


def test_a_failed_book_fetch_leaves_the_picks_at_the_last_trade_and_says_why(with_books, stored_history, resources, postgres_resource,
                                                                            replay, settings):
    """Upbit answering /v1/orderbook badly costs the run its books, not its picks: the H:15 run succeeds, stores no
    book, its tick's picks enter at the last trade and are published, and the books step names the failure."""
    _, picks, books = with_books
    later = TICK + pd.Timedelta(minutes=10)  # no book fetched for it (an earlier test's run fetched H:10's)
    minutes = stored_history["candles_1m"]
    store(PostgresDataFrameIOManager(postgres=postgres_resource), "candles_1m", minutes[minutes["candle_start"] < later],
          partitions_def=hourly_partitions, first=PARTITION, last=PARTITION)  # the stream stored H:05..H:15 (a merge)
    replay.set_clock((later + pd.Timedelta(seconds=20)).isoformat())
    replay.inject("bad_book", path="/v1/orderbook", count=None, variant="crossed_book")
    result = _run(resources(), [orderbook_top, recommendations, recommendations_redis])
    assert result.success and all(check.passed for check in result.get_asset_check_evaluations())
    fetched = result.asset_materializations_for_node("orderbook_top")[0].metadata["fetched"].value
    assert fetched.startswith("failed: Upbit /v1/orderbook") and "crossed book" in fetched, fetched
    pd.testing.assert_frame_equal(_table(postgres_resource, "orderbook_top", "as_of, market"), books)  # no book stored
    again = _table(postgres_resource, "recommendations", "as_of, scorer, rank")
    at_later = again[again["as_of"] == later]
    assert len(at_later) and (at_later["entry_from"] == "last_trade").all() and at_later["spread_bps"].isna().all()
    pd.testing.assert_frame_equal(again[again["as_of"] <= TICK].reset_index(drop=True), picks)  # H:00 and H:05 as computed
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    served = again[(again["as_of"] >= HOUR) & (again["scorer"] == settings.scorer)]  # the partition's
    assert metadata["latest_as_of"].value == str(later)
    assert metadata["entry_from_last_trade"].value == (served["entry_from"] == "last_trade").sum() > 0
    assert metadata["entry_from_best_ask"].value == (served["entry_from"] == "best_ask").sum()  # earlier ticks', from stored books
    rows = resources()["snapshots"].cached("recommendations")["rows"]
    assert rows and {r["entry_from"] for r in rows} == {"last_trade"} and all(r["spread_bps"] is None for r in rows)
