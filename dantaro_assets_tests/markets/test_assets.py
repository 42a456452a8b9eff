"""Materialising the Upbit assets with the real IO manager (Postgres) against the recorded replay server."""

from __future__ import annotations

import logging
import re
import time

import dagster as dg
import httpx
import pandas as pd
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.lib.upbit import BOOK_COLUMNS, CANDLE_COLUMNS, MARKET_COLUMNS, UpbitClient
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.markets.assets import (
    candles_1d,
    candles_1h,
    candles_1m,
    orderbook_top,
    upbit_instruments,
    upbit_markets,
)
from dantaro_assets.markets.seen import SeenStore, StreamHealth, Window
from dantaro_assets.operations.analyses import MINUTES_FROM_STREAM
from dantaro_assets.resources import run_settings
from dantaro_assets_tests.lib.candle_data import always_failing_schema

RECORDED = ["KRW-BTC", "KRW-ETH", "KRW-SOL", "KRW-XRP"]
assets = dg.load_assets_from_modules([market_assets])


@pytest.fixture
def resources(recorded_replay, io_resources, redis_resource):
    upbit = UpbitClient(base_url=recorded_replay.url, redis=redis_resource, backoff_seconds=0.05)
    yield {**io_resources, "upbit": upbit}
    upbit.close()


def _read(postgres_resource, table: str, column: str, start: str, end: str) -> pd.DataFrame:
    """The stored rows of ``[start, end)``; none when the table was never written."""
    qualified = f"{postgres_resource.db_schema}.{table}"
    if postgres_resource.read_frame("SELECT to_regclass($1) IS NULL AS absent", (qualified,))["absent"].all():
        return pd.DataFrame()
    sql = f"SELECT * FROM {postgres_resource.table_name(table)} WHERE {column} >= $1 AND {column} < $2 ORDER BY 1, 2, 3"
    frame = postgres_resource.read_arrow(sql, (pd.Timestamp(start), pd.Timestamp(end))).to_pandas()
    return frame.assign(**{column: pd.to_datetime(frame[column], utc=True).astype("datetime64[ns, UTC]")})


def _recorded_hour(upbit_data_dir, start: str, end: str) -> pd.DataFrame:
    frame = pd.read_parquet(upbit_data_dir / "candles_1m.parquet").rename(columns={"candle_start_utc": "candle_start"})
    frame = frame[(frame["candle_start"] >= pd.Timestamp(start)) & (frame["candle_start"] < pd.Timestamp(end))]
    return frame.sort_values(["market", "candle_start"], ignore_index=True)


def _materialize(selection, partition: str | None, resources, **kwargs) -> dg.ExecuteInProcessResult:
    return dg.materialize(assets, selection=selection, partition_key=partition, resources=resources, **kwargs)


def test_upbit_markets_stores_the_day_universe(resources, postgres_resource):
    result = _materialize([upbit_markets], "2025-09-15", resources)
    assert result.success
    stored = _read(postgres_resource, "upbit_markets", "day", "2025-09-15T00:00Z", "2025-09-16T00:00Z")
    assert sorted(stored["market"]) == RECORDED and list(stored.columns) == ["day", *MARKET_COLUMNS]
    assert (stored["day"] == pd.Timestamp("2025-09-15T00:00Z")).all()
    assert all(e.passed for e in result.get_asset_check_evaluations())


def test_upbit_instruments_stores_each_markets_tick_size_for_the_day(resources, postgres_resource):
    """Ticks from /v1/orderbook/instruments (served by the replay at each market's price): BTC and ETH trade in
    the millions (1,000 KRW), SOL in the hundreds of thousands (100), XRP in the thousands (1)."""
    assert _materialize([upbit_markets], "2025-09-15", resources).success
    result = _materialize([upbit_instruments], "2025-09-15", resources)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    stored = _read(postgres_resource, "upbit_instruments", "day", "2025-09-15T00:00Z", "2025-09-16T00:00Z")
    assert dict(zip(stored["market"], stored["tick_size"])) == {"KRW-BTC": 1000.0, "KRW-ETH": 1000.0, "KRW-SOL": 100.0, "KRW-XRP": 1.0}
    metadata = result.asset_materializations_for_node("upbit_instruments")[0].metadata
    assert metadata["markets"].value == 4 and metadata["unanswered"].value == 0


def test_an_empty_instruments_answer_keeps_the_stored_tick_sizes(resources, postgres_resource, recorded_replay):
    assert _materialize([upbit_markets], "2025-09-16", resources).success
    assert _materialize([upbit_instruments], "2025-09-16", resources).success
    before = _read(postgres_resource, "upbit_instruments", "day", "2025-09-16T00:00Z", "2025-09-17T00:00Z")
    assert len(before) == 4
    recorded_replay.inject("empty", path="/v1/orderbook/instruments", count=None, variant="list")
    _materialize([upbit_instruments], "2025-09-16", resources, raise_on_error=False)
    after = _read(postgres_resource, "upbit_instruments", "day", "2025-09-16T00:00Z", "2025-09-17T00:00Z")
    pd.testing.assert_frame_equal(after, before)


def test_upbit_instruments_without_the_days_universe_fail_with_a_clear_message(resources):
    result = _materialize([upbit_instruments], "2025-09-04", resources, raise_on_error=False)
    assert not result.success
    assert "materialise upbit_markets first" in result.failure_data_for_node("upbit_instruments").error.to_string()


BOOK_HOUR = "2025-10-04-01:00"  # the recorded minutes end at 01:19; the replay's clock is set inside the hour


def _books(postgres_resource) -> pd.DataFrame:
    return _read(postgres_resource, "orderbook_top", "as_of", "2025-10-04T00:00Z", "2025-10-04T02:00Z")


def test_orderbook_top_stores_the_books_fetched_in_the_hour_and_adds_later_fetches(resources, postgres_resource, recorded_replay):
    """as_of is when the books were fetched on Upbit's clock (the Date header); a later fetch adds its rows, none replaced."""
    assert _materialize([upbit_markets], "2025-10-04", resources).success
    recorded_replay.set_clock("2025-10-04T01:10:20Z")
    result = _materialize([orderbook_top], BOOK_HOUR, resources)
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    stored = _books(postgres_resource)
    assert list(stored.columns) == ["as_of", *BOOK_COLUMNS] and sorted(stored["market"]) == RECORDED
    assert (stored["as_of"] == pd.Timestamp("2025-10-04T01:10:20Z")).all()
    served = {b["market"]: b["orderbook_units"][0] for b in httpx.get(f"{recorded_replay.url}/v1/orderbook",
                                                                        params={"markets": ",".join(RECORDED)}).json()}
    for row in stored.itertuples():
        assert (row.best_ask, row.best_bid, row.ask_size, row.bid_size) == tuple(served[row.market][k] for k in
                                                                                 ("ask_price", "bid_price", "ask_size", "bid_size"))
        assert row.spread_bps == pytest.approx(1e4 * (row.best_ask - row.best_bid) / ((row.best_ask + row.best_bid) / 2))
    meta = result.asset_materializations_for_node("orderbook_top")[0].metadata
    assert {k: meta[k].value for k in ("fetched", "markets_requested", "markets_returned", "unanswered", "books_stored", "requests", "http_429")} == {
        "fetched": "ok", "markets_requested": 4, "markets_returned": 4, "unanswered": 0, "books_stored": 4, "requests": 1, "http_429": 0}
    recorded_replay.set_clock("2025-10-04T01:15:20Z")
    assert _materialize([orderbook_top], BOOK_HOUR, resources).success
    again = _books(postgres_resource)
    assert len(again) == 8 and set(again["as_of"]) == {pd.Timestamp("2025-10-04T01:10:20Z"), pd.Timestamp("2025-10-04T01:15:20Z")}
    pd.testing.assert_frame_equal(again[again["as_of"] == stored["as_of"].iloc[0]].reset_index(drop=True), stored)


def test_orderbook_top_of_an_hour_past_on_upbits_clock_stores_nothing_and_says_so(resources, postgres_resource, recorded_replay):
    """Upbit keeps no order book history: a run of an earlier hour (a backfill, a finalising run) adds nothing."""
    assert _materialize([upbit_markets], "2025-10-04", resources).success
    recorded_replay.set_clock("2025-10-04T01:10:20Z")
    before = _books(postgres_resource)
    result = _materialize([orderbook_top], "2025-10-04-00:00", resources)
    assert result.success
    meta = result.asset_materializations_for_node("orderbook_top")[0].metadata
    assert meta["books_stored"].value == 0 and "outside the partition's hour" in meta["not_stored"].value
    pd.testing.assert_frame_equal(_books(postgres_resource), before)


@pytest.mark.parametrize(("kind", "variant", "message"), [
    ("bad_book", "crossed_book", r"crossed book \(best ask at or below the best bid\): KRW-BTC"),
    ("bad_book", "infinite_price", r"non-finite price or size \(Infinity\): KRW-BTC"),
    ("malformed", None, "malformed JSON"),
    ("500", None, "HTTP 500"),
])
def test_a_bad_order_book_answer_stores_no_book_and_says_why_without_failing_the_step(resources, postgres_resource, recorded_replay,
                                                                                      kind, variant, message):
    """The book is an enhancement of the picks' entry: an Upbit error (after the client's retries) is no book this
    run, named in the metadata and the run log, never a failed step that would cost the job its recommendations."""
    assert _materialize([upbit_markets], "2025-10-04", resources).success
    recorded_replay.set_clock("2025-10-04T01:10:20Z")
    assert _materialize([orderbook_top], BOOK_HOUR, resources).success
    before = _books(postgres_resource)
    recorded_replay.set_clock("2025-10-04T01:20:20Z")
    recorded_replay.inject(kind, path="/v1/orderbook", count=None, variant=variant)
    with dg.DagsterInstance.ephemeral() as instance:
        result = _materialize([orderbook_top], BOOK_HOUR, resources, instance=instance)
        warnings = [e.user_message for e in instance.all_logs(result.run_id) if e.level == logging.WARNING]
    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    meta = result.asset_materializations_for_node("orderbook_top")[0].metadata
    fetched = meta["fetched"].value
    assert fetched.startswith("failed: Upbit /v1/orderbook market=KRW-BTC,KRW-ETH,KRW-SOL,KRW-XRP") and re.search(message, fetched), fetched
    assert meta["books_stored"].value == 0 and "not_stored" not in meta
    assert any("the picks enter at the last trade" in m and fetched in m for m in warnings), warnings
    pd.testing.assert_frame_equal(_books(postgres_resource), before)


def test_recorded_hour_round_trips_exactly_into_candles_1m(resources, postgres_resource, upbit_data_dir):
    assert _materialize([upbit_markets], "2025-09-15", resources).success
    result = _materialize([candles_1m], "2025-09-15-10:00", resources)
    assert result.success
    stored = _read(postgres_resource, "candles_1m", "candle_start", "2025-09-15T10:00Z", "2025-09-15T11:00Z")
    recorded = _recorded_hour(upbit_data_dir, "2025-09-15T10:00Z", "2025-09-15T11:00Z")
    assert list(stored.columns) == CANDLE_COLUMNS and len(stored) == 240
    pd.testing.assert_frame_equal(stored.drop(columns="value"), recorded, check_exact=True)
    # The recorded 1m file has no KRW turnover; the replay derives it as volume x mean(OHLC).
    pd.testing.assert_series_equal(stored["value"], recorded["volume"] * recorded[["open", "high", "low", "close"]].mean(axis=1), check_names=False, rtol=1e-12)
    meta = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert {k: meta[k].value for k in ("markets_requested", "markets_returned", "candles", "requests", "http_429", "gaps")} == {
        "markets_requested": 4, "markets_returned": 4, "candles": 240, "requests": 4, "http_429": 0, "gaps": 0,
    }
    assert {e.check_name: e.passed for e in result.get_asset_check_evaluations()} == {"schema": True, "coverage": True}


def test_a_backfill_range_is_one_run_paging_200_candles_a_request(resources, postgres_resource, upbit_data_dir):
    assert _materialize([upbit_markets], "2025-09-15", resources).success
    tags = {"dagster/asset_partition_range_start": "2025-09-15-12:00", "dagster/asset_partition_range_end": "2025-09-15-14:00"}
    result = _materialize([candles_1m], None, resources, tags=tags)
    assert result.success
    meta = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert meta["requests"].value == 4, "three hours of one market (180 candles) are one request"
    stored = _read(postgres_resource, "candles_1m", "candle_start", "2025-09-15T12:00Z", "2025-09-15T15:00Z")
    recorded = _recorded_hour(upbit_data_dir, "2025-09-15T12:00Z", "2025-09-15T15:00Z")
    pd.testing.assert_frame_equal(stored.drop(columns="value"), recorded, check_exact=True)


def test_candles_without_the_days_universe_fail_with_a_clear_message(resources):
    result = _materialize([candles_1h], "2025-09-03", resources, raise_on_error=False)
    assert not result.success
    failure = result.failure_data_for_node("candles_1h").error
    assert "no KRW universe stored for 2025-09-03: materialise upbit_markets" in failure.to_string()


def test_delisted_market_is_skipped_and_fails_coverage_so_nothing_is_written(resources, postgres_resource):
    @dg.asset(name="upbit_markets", partitions_def=upbit_markets.partitions_def, metadata=upbit_markets.metadata_by_key[upbit_markets.key])
    def universe_with_a_delisted_market() -> pd.DataFrame:
        return pd.DataFrame(
            {"day": pd.Timestamp("2025-09-16T00:00Z"), "market": [*RECORDED, "KRW-GONE"], "korean_name": "코인", "english_name": "Coin"}
            | {c: False for c in MARKET_COLUMNS[3:]}
        )

    assert dg.materialize([universe_with_a_delisted_market], partition_key="2025-09-16", resources=resources).success
    result = dg.materialize(
        [universe_with_a_delisted_market, candles_1m], selection=[candles_1m], partition_key="2025-09-16-10:00", resources=resources, raise_on_error=False
    )
    assert not result.success, "a failed blocking check fails the step, so nothing downstream runs"
    assert not result.asset_materializations_for_node("candles_1m")
    failure = result.failure_data_for_node("candles_1m").user_failure_data
    assert failure.metadata["skipped_markets"].value == "KRW-GONE" and failure.metadata["markets_returned"].value == 4
    checks = {e.check_name: e for e in result.get_asset_check_evaluations()}
    assert checks["schema"].passed and not checks["coverage"].passed
    assert "only 4/5 markets answered (skipped 1" in checks["coverage"].description
    assert _read(postgres_resource, "candles_1m", "candle_start", "2025-09-16T10:00Z", "2025-09-16T11:00Z").empty


def test_quarantined_candles_are_reported_and_never_stored(resources, postgres_resource, recorded_replay):
    assert _materialize([upbit_markets], "2025-09-17", resources).success
    recorded_replay.inject("bad_candle", path="/v1/candles/*", count=1, variant="high_low", market="KRW-ETH")
    result = _materialize([candles_1m], "2025-09-17-10:00", resources)
    meta = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert meta["quarantined"].value == 1 and "high below low" in meta["quarantine"].value
    stored = _read(postgres_resource, "candles_1m", "candle_start", "2025-09-17T10:00Z", "2025-09-17T11:00Z")
    assert len(stored) == 239 and (stored["high"] >= stored["low"]).all()


def _stored_hour(postgres_resource, hour: str) -> pd.DataFrame:
    start = pd.Timestamp(hour)
    return _read(postgres_resource, "candles_1m", "candle_start", start.isoformat(), (start + pd.Timedelta(hours=1)).isoformat())


def _store_hour(resources, postgres_resource, day: str, hour: str) -> pd.DataFrame:
    """Materialise the day's universe and the hour's candles; return what is stored."""
    assert _materialize([upbit_markets], day, resources).success
    assert _materialize([candles_1m], f"{day}-{hour}", resources).success
    stored = _stored_hour(postgres_resource, f"{day}T{hour}Z")
    assert len(stored) == 240
    return stored


def test_an_empty_reply_for_one_market_keeps_its_stored_candles(resources, postgres_resource, recorded_replay):
    before = _store_hour(resources, postgres_resource, "2025-09-18", "10:00")
    recorded_replay.inject("empty", market="KRW-BTC", count=None)
    result = _materialize([candles_1m], "2025-09-18-10:00", resources)

    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    meta = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert (meta["candles"].value, meta["write_mode"].value, meta["rows_written"].value) == (180, "merge", 0)
    after = _stored_hour(postgres_resource, "2025-09-18T10:00Z")
    pd.testing.assert_frame_equal(after, before)
    assert (after["market"] == "KRW-BTC").sum() == 60


def test_an_empty_reply_for_every_market_fails_coverage_and_writes_nothing(resources, postgres_resource, recorded_replay):
    before = _store_hour(resources, postgres_resource, "2025-09-19", "10:00")
    recorded_replay.inject("empty", path="/v1/candles/*", count=None)
    result = _materialize([candles_1m], "2025-09-19-10:00", resources, raise_on_error=False)

    assert not result.success
    error = result.failure_data_for_node("candles_1m").error.to_string()
    assert "coverage check failed, nothing written (stored rows unchanged): coverage: no market has a single candle" in error
    checks = {e.check_name: e.passed for e in result.get_asset_check_evaluations()}
    assert checks == {"schema": True, "coverage": False}, "the failed evaluation is recorded for the UI"
    assert not result.asset_materializations_for_node("candles_1m")
    pd.testing.assert_frame_equal(_stored_hour(postgres_resource, "2025-09-19T10:00Z"), before)


def test_quarantined_candles_keep_the_stored_good_rows(resources, postgres_resource, recorded_replay):
    before = _store_hour(resources, postgres_resource, "2025-09-21", "10:00")
    recorded_replay.inject("bad_candle", path="/v1/candles/*", count=None, variant="high_low", market="KRW-ETH")
    result = _materialize([candles_1m], "2025-09-21-10:00", resources)

    assert result.success
    meta = result.asset_materializations_for_node("candles_1m")[0].metadata
    assert meta["quarantined"].value == 1 and "KRW-ETH" in meta["quarantine"].value
    pd.testing.assert_frame_equal(_stored_hour(postgres_resource, "2025-09-21T10:00Z"), before)


def test_a_market_whose_every_row_is_quarantined_keeps_its_stored_candle(resources, postgres_resource, recorded_replay, settings):
    def stored_day() -> pd.DataFrame:
        return _read(postgres_resource, "candles_1d", "candle_start", "2025-09-18T00:00Z", "2025-09-19T00:00Z")

    assert _materialize([upbit_markets], "2025-09-18", resources).success
    assert _materialize([candles_1d], "2025-09-18", resources).success
    before = stored_day()
    assert sorted(before["market"]) == RECORDED
    # One market of four below the default 0.9 coverage would block the write (as tested above); with
    # a threshold that lets one market in four go unanswered, as one in 250 does by default, the run is
    # green and the merge must keep that market's stored candle.
    lenient = {**resources, "run_settings": run_settings(settings.model_copy(update={"min_coverage": 0.7}))}
    recorded_replay.inject("bad_candle", path="/v1/candles/days", count=None, variant="high_low", market="KRW-ETH")
    result = _materialize([candles_1d], "2025-09-18", lenient)

    assert result.success and all(e.passed for e in result.get_asset_check_evaluations())
    meta = result.asset_materializations_for_node("candles_1d")[0].metadata
    assert (meta["candles"].value, meta["quarantined"].value) == (3, 1)
    pd.testing.assert_frame_equal(stored_day(), before)


def test_a_forming_candle_stored_earlier_is_replaced_by_the_closed_one(resources, postgres_resource, recorded_replay, upbit_data_dir):
    assert _materialize([upbit_markets], "2025-09-25", resources).success
    recorded_replay.set_clock("2025-09-25T10:30:30")
    assert _materialize([candles_1m], "2025-09-25-10:00", resources).success
    assert len(_stored_hour(postgres_resource, "2025-09-25T10:00Z")) == 4 * 30, "the hour so far; 10:30 was forming"

    forming = _recorded_hour(upbit_data_dir, "2025-09-25T10:30Z", "2025-09-25T10:31Z").query("market == 'KRW-BTC'")
    forming = forming.assign(close=forming["open"], high=forming["open"], low=forming["open"], volume=0.001, value=1.0)

    @dg.asset(name="candles_1m", partitions_def=candles_1m.partitions_def, metadata=candles_1m.metadata_by_key[candles_1m.key])
    def writer_that_kept_a_forming_candle() -> pd.DataFrame:
        return forming.reset_index(drop=True)

    assert dg.materialize([writer_that_kept_a_forming_candle], partition_key="2025-09-25-10:00", resources=resources).success
    stored = _stored_hour(postgres_resource, "2025-09-25T10:00Z")
    assert len(stored) == 121 and stored.loc[stored["candle_start"] == pd.Timestamp("2025-09-25T10:30Z"), "volume"].tolist() == [0.001]

    recorded_replay.reset()  # the clock back at the end of the recording: the hour has closed
    assert _materialize([candles_1m], "2025-09-25-10:00", resources).success
    stored = _stored_hour(postgres_resource, "2025-09-25T10:00Z")
    recorded = _recorded_hour(upbit_data_dir, "2025-09-25T10:00Z", "2025-09-25T11:00Z")
    pd.testing.assert_frame_equal(stored.drop(columns="value"), recorded, check_exact=True)


def test_a_failing_universe_check_keeps_the_stored_universe(resources, postgres_resource, monkeypatch):
    assert _materialize([upbit_markets], "2025-09-28", resources).success
    before = _read(postgres_resource, "upbit_markets", "day", "2025-09-28T00:00Z", "2025-09-29T00:00Z")
    monkeypatch.setattr(market_assets, "upbit_markets_schema", always_failing_schema)
    result = _materialize([upbit_markets], "2025-09-28", resources, raise_on_error=False)
    assert not result.success and [e.passed for e in result.get_asset_check_evaluations()] == [False]
    assert "schema check failed, nothing written (stored rows unchanged)" in result.failure_data_for_node("upbit_markets").error.to_string()
    pd.testing.assert_frame_equal(_read(postgres_resource, "upbit_markets", "day", "2025-09-28T00:00Z", "2025-09-29T00:00Z"), before)


def test_every_upbit_step_is_pooled_retried_keyed_and_checked(settings):
    definitions = build_definitions(settings.model_copy(update={"run_retries": 5}))
    for job_name in ("daily_candles_job", "candles_1m_job", "market_status_job", "recommendations_job", "support_levels_job"):
        # a job's op_retry_policy (DANTARO_RUN_RETRIES) applies to its steps without a policy of their own
        policy = definitions.resolve_job_def(job_name).op_retry_policy
        assert (policy.max_retries, policy.backoff, policy.jitter) == (5, dg.Backoff.EXPONENTIAL, dg.Jitter.PLUS_MINUS), job_name
    assert all(asset.op.retry_policy is None for asset in assets)  # so every fetch takes the job's retries
    for analysis in ("market_status", "recommendations", "support_levels"):  # an analysis keeps its own: none
        assert definitions.resolve_assets_def(analysis).op.retry_policy.max_retries == 0, analysis
    keys = {"upbit_markets": ("day", ["day", "market"]), "upbit_instruments": ("day", ["day", "market"]),
            "orderbook_top": ("as_of", ["as_of", "market"])}
    for asset in assets:
        name = asset.key.to_user_string()
        assert asset.op.pool == "upbit_api", name
        meta = asset.specs_by_key[asset.key].metadata
        assert (meta["partition_expr"], meta["primary_key"]) == keys.get(name, ("candle_start", ["market", "candle_start"])), name
        assert meta["write_mode"] == (WriteMode.REPLACE if name == "upbit_markets" else WriteMode.MERGE), name
        assert all(spec.blocking for spec in asset.check_specs), name
    # a backfill run pages at most 4 x 200 of a partitioning's finest candles per market, so it stays inside
    # the run timeout; the daily assets share one policy (daily_candles_job runs them together), and the order
    # books the recommendations job's candles_1m one
    assert {a.key.to_user_string(): a.backfill_policy.max_partitions_per_run for a in assets} == {
        "upbit_markets": 33, "upbit_instruments": 33, "candles_1m": 13, "candles_1h": 33, "candles_1d": 33, "orderbook_top": 13,
    }
    # the order books are fetched by the recommendations job only, beside the hour's candles
    assert definitions.resolve_job_def("recommendations_job").graph.node_dict.keys() == {
        "candles_1m", "orderbook_top", "recommendations", "recommendations_redis"}
    assert all("orderbook_top" not in definitions.resolve_job_def(job).graph.node_dict
               for job in ("daily_candles_job", "candles_1m_job", "market_status_job", "support_levels_job"))



def test_candles_1m_reads_the_stream_when_its_run_config_says_so_whatever_the_tags(resources, redis_resource, postgres_resource,
                                                                                    recorded_replay, settings):
    """The source is run config: the analysis jobs set ``stream`` (shown in the launchpad); any other run is ``rest``,
    even one tagged as an analysis job's run."""
    hour = "2025-09-15-21:00"
    start = pd.Timestamp("2025-09-15T21:00Z").timestamp()
    assert _materialize([upbit_markets], "2025-09-15", resources).success
    seen = SeenStore(postgres_resource)
    now = time.time()
    seen.publish(StreamHealth(now, now, now, True), [Window(int(start), int(start) + 3600, frozenset(RECORDED), "stream")])
    try:
        recorded_replay.reset_stats()
        tagged = _materialize([candles_1m], hour, resources, tags=MARKET_STATUS.job_type.tags())
        meta = tagged.asset_materializations_for_node("candles_1m")[0].metadata
        assert (meta["source"].value, meta["requests"].value) == ("rest", 4)

        streamed = _materialize([candles_1m], hour, resources, run_config=MINUTES_FROM_STREAM)
        meta = streamed.asset_materializations_for_node("candles_1m")[0].metadata
        assert (meta["source"].value, meta["requests"].value, meta["markets_fetched"].value) == ("stream", 0, 0)
        assert recorded_replay.stats()["groups"]["candles"]["requests"] == 4  # the tagged run's only
    finally:
        seen.clear()

    definitions = build_definitions(settings)
    for job in ("market_status_job", "support_levels_job", "recommendations_job"):
        config = definitions.resolve_job_def(job).partitioned_config.get_run_config_for_partition_key(hour)
        assert config["ops"]["candles_1m"]["config"] == {"source": "stream"}, job
    history = definitions.resolve_job_def("candles_1m_job").partitioned_config.get_run_config_for_partition_key(hour)
    assert "candles_1m" not in history.get("ops", {})  # the history sensor's runs: rest, the default


def test_the_open_days_daily_candles_cost_no_request_and_its_hourly_ones_do(io_resources, redis_resource, small_replay, postgres_resource):
    """Candles are stored closed: the open day holds no closed 1-day candle, so its hourly refresh asks Upbit
    nothing for candles_1d (250 requests an hour saved for 250 markets), while its closed hours are fetched."""
    upbit = UpbitClient(base_url=small_replay.url, redis=redis_resource, backoff_seconds=0.05)
    resources = {**io_resources, "upbit": upbit}
    today = pd.Timestamp.now(tz="UTC").strftime("%Y-%m-%d")
    try:
        assert _materialize([upbit_markets], today, resources).success
        daily = _materialize([candles_1d], today, resources)
        assert daily.success and all(e.passed for e in daily.get_asset_check_evaluations())
        meta = daily.asset_materializations_for_node("candles_1d")[0].metadata
        assert (meta["requests"].value, meta["candles"].value, meta["markets_requested"].value) == (0, 0, 8)
        if pd.Timestamp.now(tz="UTC").hour >= 1:  # a closed hour exists from 01:00 on
            hourly = _materialize([candles_1h], today, resources).asset_materializations_for_node("candles_1h")[0].metadata
            assert hourly["requests"].value >= 8 and hourly["candles"].value > 0
    finally:
        upbit.close()
