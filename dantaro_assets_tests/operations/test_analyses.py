"""An analysis declared once: its asset computes the stored ticks, checks them, stores them and says what it did."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator

import dagster as dg
import pandas as pd
import pandera.pandas as pa
import pytest

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, Lookback
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.markets import definitions as markets
from dantaro_assets.operations.analyses import Analysis
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.resources import build_resources, run_settings
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import materialise, store, universe
from dantaro_assets_tests.lib.storage_data import candles

HOUR = "2025-09-12-07:00"
MARKETS = ("KRW-BTC", "KRW-ETH")


def markets_with_a_price(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, floor: int) -> AnalysisResult:
    """How many markets have a price at each tick: a row for each tick with at least ``floor`` of them."""
    frame = pd.DataFrame({"as_of": ticks, "markets": pd.Series([len(inputs.history.price(t)) for t in ticks], dtype="int64")})
    return AnalysisResult(frame[frame["markets"] >= floor].reset_index(drop=True))


PRICED = Analysis(
    name="priced_markets",
    description="How many markets have a price at each tick.",
    job_description="Count the priced markets.",
    lookback=Lookback(minute_hours=1, hourly_days=1),
    primary_key=("as_of",),
    cadence="market_status_interval",
    priority=1,
    compute=markets_with_a_price,
    params=lambda _: 0,
    schema=lambda run: pa.DataFrameSchema({"as_of": pa.Column("datetime64[ns, UTC]"), "markets": pa.Column("int64", pa.Check.ge(0))}),
    metadata=lambda _, result: {"latest_markets": int(result.frame["markets"].iloc[-1]) if len(result.frame) else 0},
)


@pytest.fixture(scope="module")
def own_postgres(pg_url: str, settings) -> Iterator[PostgresResource]:
    """This module's own schema: no other test's candles carry a price into the lookback."""
    with own_schema(pg_url, f"{settings.db_schema}_analyses") as postgres:
        yield postgres


@pytest.fixture(scope="module")
def resources(own_postgres: PostgresResource, settings) -> dict[str, object]:
    return {"io_manager": PostgresDataFrameIOManager(postgres=own_postgres), "postgres": own_postgres, "run_settings": run_settings(settings)}


@pytest.fixture(scope="module")
def stored_day(resources) -> None:
    """The day's universe and an hour of the day before as candles_1h: what the analysis reads besides the minutes."""
    io_manager = resources["io_manager"]
    store(io_manager, "upbit_markets", universe(list(MARKETS), ["2025-09-12"]), partitions_def=daily_partitions, first="2025-09-12",
          last="2025-09-12")
    store(io_manager, "candles_1h", candles("2025-09-11-06:00", markets=MARKETS, minutes=1), partitions_def=daily_partitions,
          first="2025-09-11", last="2025-09-11")


def test_a_declared_analysis_is_an_asset_that_checks_stores_and_describes_its_ticks(stored_day, resources, own_postgres, settings):
    asset = PRICED.asset
    assert (asset.key.to_user_string(), PRICED.publish.key.to_user_string()) == ("priced_markets", "priced_markets_redis")
    assert [spec.name for spec in asset.check_specs] == ["schema"] and asset.group_names_by_key[asset.key] == "analysis"
    assert set(asset.keys_by_input_name) == {"candles_1m", "candles_1h", "upbit_markets"}  # from its lookback

    # two markets trade at 07:00 and 07:01: ticks every MARKET_STATUS_INTERVAL (120 s) up to the newest stored minute's end
    store(resources["io_manager"], "candles_1m", candles(HOUR, markets=MARKETS, minutes=2),
          partitions_def=hourly_partitions, first=HOUR, last=HOUR)
    result = materialise([asset], HOUR, resources)
    assert [check.passed for check in result.get_asset_check_evaluations()] == [True]
    metadata = result.asset_materializations_for_node("priced_markets")[0].metadata
    assert (metadata["ticks"].value, metadata["latest_markets"].value) == (2, 2)
    stored = own_postgres.read_frame(f"SELECT * FROM {own_postgres.table_name('priced_markets')} ORDER BY as_of")
    assert list(stored["as_of"]) == list(pd.date_range("2025-09-12 07:00", periods=2, freq=f"{settings.market_status_interval}s", tz="UTC"))
    assert list(stored["markets"]) == [2, 2]  # at 07:00 by their last stored hourly close, carried into the lookback


def test_an_hour_without_a_stored_minute_has_no_tick_and_reads_nothing(stored_day, resources):
    result = materialise([PRICED.asset], "2025-09-12-09:00", resources)
    metadata = result.asset_materializations_for_node("priced_markets")[0].metadata
    assert (metadata["ticks"].value, metadata["latest_markets"].value) == (0, 0)


def _stored(postgres: PostgresResource, hour: str) -> pd.DataFrame:
    window = hourly_partitions.time_window_for_partition_key(hour)
    return postgres.read_frame(f"SELECT * FROM {postgres.table_name('priced_markets')} WHERE as_of >= $1 AND as_of < $2 ORDER BY as_of",
                               (window.start, window.end))


def _store_minutes(resources, hour: str) -> None:
    store(resources["io_manager"], "candles_1m", candles(hour, markets=MARKETS, minutes=2), partitions_def=hourly_partitions, first=hour, last=hour)


def test_ticks_that_now_yield_no_row_empty_their_stored_hour(stored_day, resources, own_postgres):
    """A recomputation is the whole truth of its window: under a stricter floor every tick of the hour yields no row,
    and the hour's stored rows go (the asset asks the IO manager for the delete, which it refuses otherwise)."""
    hour, other = "2025-09-12-13:00", "2025-09-12-14:00"
    for each in (hour, other):
        _store_minutes(resources, each)
        assert materialise([PRICED.asset], each, resources).success
    assert len(_stored(own_postgres, hour)) == 2 and len(_stored(own_postgres, other)) == 2
    kept = _stored(own_postgres, other)

    stricter = dataclasses.replace(PRICED, params=lambda _: len(MARKETS) + 1)  # no tick has that many priced markets
    result = materialise([stricter.asset], hour, resources)

    metadata = result.asset_materializations_for_node("priced_markets")[0].metadata
    assert (metadata["ticks"].value, metadata["delete_window"].value, metadata["dagster/partition_row_count"].value) == (2, True, 0)
    assert _stored(own_postgres, hour).empty
    pd.testing.assert_frame_equal(_stored(own_postgres, other), kept)  # only its own window


def test_an_hour_without_a_tick_never_empties_what_is_stored(stored_day, resources, own_postgres):
    """No tick means no stored minute to compute from (candles removed, a restore without them): an empty frame then
    is no answer, so the stored rows stay and the step fails saying why."""
    hour = "2025-09-12-16:00"
    _store_minutes(resources, hour)
    assert materialise([PRICED.asset], hour, resources).success
    before = _stored(own_postgres, hour)
    assert len(before) == 2
    window = hourly_partitions.time_window_for_partition_key(hour)
    own_postgres.execute(f"DELETE FROM {own_postgres.table_name('candles_1m')} WHERE candle_start >= $1 AND candle_start < $2",
                         (window.start, window.end))

    result = materialise([PRICED.asset], hour, resources, raise_on_error=False)

    assert not result.success
    error = result.failure_data_for_node("priced_markets").error.to_string()
    assert "RefusedFrameError" in error and "an empty frame would delete the 2 row(s) stored in its window" in error
    pd.testing.assert_frame_equal(_stored(own_postgres, hour), before)


def test_an_input_beyond_the_lookback_is_read_and_fetched_first_by_the_analysis_job(settings):
    """``ins`` adds inputs to the asset (handed to ``AnalysisInputs.assemble`` by name), ``also_fetch`` the assets its job
    materialises between the hour's candles and it: the recommendations' order books, declared so."""
    with_books = dataclasses.replace(PRICED, ins={"orderbook_top": dg.AssetIn(metadata={"optional": True})}, also_fetch=("orderbook_top",))
    assert set(with_books.asset.keys_by_input_name) == {"candles_1m", "candles_1h", "upbit_markets", "orderbook_top"}
    definitions = dg.Definitions.merge(markets.build_defs(settings), with_books.definitions(settings),
                                       dg.Definitions(resources=build_resources(settings)))
    job = definitions.resolve_job_def("priced_markets_job")
    assert set(job.graph.node_dict) == {"candles_1m", "orderbook_top", "priced_markets", "priced_markets_redis"}
    upstream = job.graph.dependency_structure.input_to_upstream_outputs_for_node("priced_markets")
    assert {i.input_name: {o.node_name for o in outputs} for i, outputs in upstream.items()}["orderbook_top"] == {"orderbook_top"}
