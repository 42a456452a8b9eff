"""Over many markets every level and every pick keeps its invariants, as stored and as the API serves it.

The replay's simulated market (250 markets) materialised through Dagster into Postgres: support_levels and
recommendations of one hourly partition with their publish steps, read back from the tables and from the
snapshots; and the recorded Upbit candles over a day of ticks (the pure functions the assets call). Every
stored row and every served row (``for_people``'s rounding) is checked: the level invariants
(support_levels/schemas.py ``level_breaches``) and every summary against its fields (``summaries_mismatches``).
"""

from __future__ import annotations

import json

import pandas as pd
import pytest

from dantaro_assets.api.for_people import for_people
from dantaro_assets.lib import point_in_time as pit
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, tick_times
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets.recommendations.analysis import LOOKBACK, RecommendationParams, compute_recommendations
from dantaro_assets.recommendations.assets import RECOMMENDATIONS
from dantaro_assets.recommendations.schemas import summaries_mismatches
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.support_levels.analysis import compute_support_levels
from dantaro_assets.support_levels.assets import SUPPORT_LEVELS
from dantaro_assets.support_levels.schemas import INVARIANTS, level_breaches
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import materialise, real_candles, simulated_upstream, store, universe

from .conftest import io_resources_over

HOUR = pd.Timestamp("2025-10-08 10:00", tz="UTC")
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
PARTITIONS = {"candles_1m": hourly_partitions, "candles_1h": daily_partitions, "candles_1d": daily_partitions,
              "upbit_markets": daily_partitions, "upbit_instruments": daily_partitions}


def served_rows(asset: str, frame: pd.DataFrame) -> pd.DataFrame:
    """The rows as the API answers them: rounded for people."""
    return pd.DataFrame(for_people(asset, {"rows": frame.to_dict("records")})["rows"])


def assert_levels_keep_their_invariants(levels: pd.DataFrame) -> None:
    for name, rows in (("stored", levels), ("served", served_rows("support_levels", levels))):
        breaches = level_breaches(rows)
        assert not breaches.any().any(), {name: {k: INVARIANTS[k] for k in breaches.columns[breaches.any()]}}


def assert_summaries_match(picks: pd.DataFrame) -> None:
    for name, rows in (("stored", picks), ("served", served_rows("recommendations", picks))):
        records = rows.to_dict("records")
        wrong = {f"{r['as_of']} {r['scorer']} {r['market']}": why for r, why in zip(records, summaries_mismatches(records), strict=True)}
        assert {key: why for key, why in wrong.items() if why} == {}, name


@pytest.fixture(scope="module")
def io_resources(pg_url, redis_resource, settings):
    with own_schema(pg_url, f"{settings.db_schema}_many_markets") as postgres:
        yield io_resources_over(postgres, redis_resource, settings)


def _table(postgres: PostgresResource, name: str, order: str) -> pd.DataFrame:
    frame = postgres.read_frame(f"SELECT * FROM {postgres.table_name(name)} ORDER BY {order}")
    for column in ("reasons", "caution"):
        if column in frame and len(frame) and isinstance(frame[column].iloc[0], str):
            frame[column] = frame[column].map(json.loads)
    return frame


@pytest.fixture(scope="module")
def simulated(io_resources):
    """250 simulated markets stored as the candle assets store them, then both analyses materialised for one hour."""
    frames = simulated_upstream(250, HOUR)
    for name, frame in frames.items():
        partitions_def = PARTITIONS[name]
        column = "day" if name.startswith("upbit_") else "candle_start"
        first = partitions_def.get_partition_key_for_timestamp(max(frame[column].min(), pd.Timestamp(partitions_def.start)).timestamp())
        last = partitions_def.get_partition_key_for_timestamp(frame[column].max().timestamp())
        store(io_resources["io_manager"], name, frame, partitions_def=partitions_def, first=first, last=last)
    levels_run = materialise([SUPPORT_LEVELS.asset, SUPPORT_LEVELS.publish], PARTITION, io_resources)
    picks_run = materialise([RECOMMENDATIONS.asset, RECOMMENDATIONS.publish], PARTITION, io_resources)
    return {
        "levels": _table(io_resources["postgres"], "support_levels", "as_of, market, side, rank"),
        "picks": _table(io_resources["postgres"], "recommendations", "as_of, scorer, rank"),
        "metadata": picks_run.asset_materializations_for_node("recommendations")[0].metadata,
        "checks": [c.passed for run in (levels_run, picks_run) for c in run.get_asset_check_evaluations()],
        "snapshots": io_resources["snapshots"],
    }


@pytest.mark.slow
def test_250_simulated_markets_levels_keep_their_invariants_stored_and_served(simulated):
    levels = simulated["levels"]
    assert simulated["checks"] == [True, True]
    assert levels["market"].nunique() > 200 and levels["as_of"].nunique() == 4
    assert set(levels["side"]) == {"support", "resistance", "at_price"}
    assert_levels_keep_their_invariants(levels)
    for market in levels["market"].unique()[:25]:  # the per-market snapshots the API serves, as it serves them
        payload = simulated["snapshots"].latest("support_levels", market)
        assert_levels_keep_their_invariants(served_rows("support_levels", pd.DataFrame(payload["rows"]).assign(
            as_of=lambda f: pd.to_datetime(f["as_of"]))))


@pytest.mark.slow
def test_250_simulated_markets_picks_say_what_their_fields_say_stored_and_served(simulated):
    picks, metadata = simulated["picks"], simulated["metadata"]
    assert set(picks["scorer"]) <= set(SCORERS) and len(picks) > 0
    assert (picks["expected_return_net"] > 0).all() and (picks["horizon_hours"] == 24).all()
    assert metadata["excluded_negative_ev"].value >= 0 and "net of fees" in metadata["excluded_negative_ev_reason"].value
    assert_summaries_match(picks)
    latest = simulated["snapshots"].latest("recommendations")
    assert_summaries_match(pd.DataFrame(latest["rows"]))


@pytest.fixture(scope="module")
def recorded(upbit_data_dir):
    """A day of the recorded markets: candles_1h before the day's minutes, every hour of the day rebuilt from them."""
    day = pd.Timestamp("2025-09-24", tz="UTC")
    minutes = real_candles(upbit_data_dir, "1m")
    minutes = minutes[(minutes["candle_start"] >= day - pd.Timedelta(hours=3)) & (minutes["candle_start"] < day + pit.DAY)]
    hours = real_candles(upbit_data_dir, "1h")
    hours = hours[(hours["candle_start"] >= day - pd.Timedelta(days=15)) & (hours["candle_start"] < day - pd.Timedelta(hours=3))]
    days = pit.resample_bars(hours, pit.DAY)
    markets = universe(sorted(minutes["market"].unique()), ["2025-09-23", "2025-09-24"])
    ticks = tick_times(day, day + pit.DAY, 900)
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=minutes, candles_1h=hours, candles_1d=days, upbit_markets=markets)
    return inputs, ticks


def test_recorded_markets_levels_keep_their_invariants_stored_and_served(recorded):
    inputs, ticks = recorded
    levels = compute_support_levels(inputs, ticks).frame
    assert levels["as_of"].nunique() == len(ticks) == 96
    assert_levels_keep_their_invariants(levels)


def test_recorded_markets_picks_say_what_their_fields_say_stored_and_served(recorded, settings):
    inputs, ticks = recorded
    picks, counts = compute_recommendations(inputs, ticks, RecommendationParams(1e9, settings.min_reward_risk, tuple(SCORERS), top_n=1))
    assert counts["eligible"].eq(4).all()
    assert_summaries_match(picks)
