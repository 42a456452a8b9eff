"""An analysis declared once: its asset computes the stored ticks, checks them, stores them and says what it did."""

from __future__ import annotations

from collections.abc import Iterator

import pandas as pd
import pandera.pandas as pa
import pytest

from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult, Lookback
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.operations.analyses import Analysis
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.resources import run_settings
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import materialise, store, universe
from dantaro_assets_tests.lib.storage_data import candles

HOUR = "2025-09-12-07:00"
MARKETS = ("KRW-BTC", "KRW-ETH")


def markets_with_a_price(inputs: AnalysisInputs, ticks: pd.DatetimeIndex, _params: None) -> AnalysisResult:
    return AnalysisResult(pd.DataFrame({"as_of": ticks, "markets": pd.Series([len(inputs.history.price(t)) for t in ticks], dtype="int64")}))


PRICED = Analysis(
    name="priced_markets",
    description="How many markets have a price at each tick.",
    job_description="Count the priced markets.",
    lookback=Lookback(minute_hours=1, hourly_days=1),
    primary_key=("as_of",),
    cadence="market_status_interval",
    compute=markets_with_a_price,
    params=lambda _: None,
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
