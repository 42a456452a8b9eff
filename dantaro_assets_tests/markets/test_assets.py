"""Materialising the Upbit assets with the real IO manager (Postgres) against the recorded replay server."""

from __future__ import annotations

import time

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.lib.postgres_io import WriteMode
from dantaro_assets.lib.upbit import CANDLE_COLUMNS, MARKET_COLUMNS, UpbitClient
from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.markets.assets import (
    candles_1d,
    candles_1h,
    candles_1m,
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
    for asset in assets:
        name = asset.key.to_user_string()
        assert asset.op.pool == "upbit_api", name
        meta = asset.specs_by_key[asset.key].metadata
        daily_listing = name in ("upbit_markets", "upbit_instruments")
        assert meta["partition_expr"] == ("day" if daily_listing else "candle_start")
        assert meta["primary_key"] == (["day", "market"] if daily_listing else ["market", "candle_start"])
        assert meta["write_mode"] == (WriteMode.REPLACE if name == "upbit_markets" else WriteMode.MERGE), name
        assert all(spec.blocking for spec in asset.check_specs), name
    # a backfill run pages at most 4 x 200 of a partitioning's finest candles per market, so it stays inside
    # the run timeout; the daily assets share one policy (daily_candles_job runs them together)
    assert {a.key.to_user_string(): a.backfill_policy.max_partitions_per_run for a in assets} == {
        "upbit_markets": 33, "upbit_instruments": 33, "candles_1m": 13, "candles_1h": 33, "candles_1d": 33,
    }



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
