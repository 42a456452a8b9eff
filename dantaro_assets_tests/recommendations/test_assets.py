"""The two assets materialised over the real Postgres IO manager and Redis, with upstream candles written first."""

from __future__ import annotations

import dataclasses
import json

import dagster as dg
import pandas as pd
import pytest

from dantaro_assets.api.job_log import JobLog
from dantaro_assets.cli import main
from dantaro_assets.lib.analysis_inputs import AnalysisInputs, AnalysisResult
from dantaro_assets.lib.checks import pandera_check
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.recommendations import assets as recommendation_assets
from dantaro_assets.recommendations.analysis import LOOKBACK, RECOMMENDATION_COLUMNS, RecommendationParams, compute_recommendations
from dantaro_assets.recommendations.assets import RECOMMENDATIONS, recommendation_outcomes
from dantaro_assets.recommendations.calibration import from_json
from dantaro_assets.recommendations.definitions import OUTCOMES_TYPE
from dantaro_assets.recommendations.outcomes import HORIZONS, SCORECARD_WINDOWS
from dantaro_assets.recommendations.schemas import (
    outcomes_schema,
    recommendations_schema,
)
from dantaro_assets.recommendations.scorers import SCORERS
from dantaro_assets.resources import run_settings
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.lib.candle_data import always_failing_schema

from .conftest import END, FAVOURABLE, io_resources_over

HOUR = END - pd.Timedelta(hours=5)
PARTITION = HOUR.strftime("%Y-%m-%d-%H:%M")
SETTINGS = load_settings()  # what conftest's environment gives, as the settings fixture
MIN_TURNOVER = SETTINGS.min_turnover_krw
SERVED = SETTINGS.scorer
MARKET_ASSETS = dg.load_assets_from_modules([market_assets])
recommendations, recommendations_redis = RECOMMENDATIONS.asset, RECOMMENDATIONS.publish


def _stand_in(upstream: dg.AssetsDefinition, frame: pd.DataFrame) -> dg.AssetsDefinition:
    """An unpartitioned asset with the upstream's key and metadata: writes the whole table in one run."""
    key = upstream.key

    @dg.asset(name=key.path[-1], metadata=dict(upstream.metadata_by_key[key]))
    def _seed() -> pd.DataFrame:
        return frame

    return _seed


@pytest.fixture(scope="module")
def calibration_file(tmp_path_factory):
    """A table under which every placeable plan of the synthetic market pays (served through DANTARO_CALIBRATION)."""
    path = tmp_path_factory.mktemp("calibration") / "favourable.json"
    path.write_text(FAVOURABLE.to_json())
    return path


@pytest.fixture(scope="module")
def io_resources(pg_url, redis_resource, settings, calibration_file):
    """This module's own schema (candles merge, so candles another module stored would reach the 24 h horizon) and
    the favourable table."""
    with own_schema(pg_url, f"{settings.db_schema}_recommendations") as postgres:
        yield io_resources_over(postgres, redis_resource, settings.model_copy(update={"calibration": str(calibration_file)}))


@pytest.fixture(scope="module")
def postgres_resource(io_resources):
    return io_resources["postgres"]


@pytest.fixture(scope="module")
def snapshot_store(io_resources):
    return io_resources["snapshots"]


@pytest.fixture(scope="module")
def stored(market, io_resources):
    """The synthetic market written through the IO manager; turnover scaled so the real minimum applies."""
    scale = MIN_TURNOVER / 1e7  # conftest's markets trade ~5e7..5e8 KRW a day, KRW-M002 a thousandth of that
    m1 = market.candles_1m.assign(value=market.candles_1m["value"] * scale)
    h1 = market.candles_1h.assign(value=market.candles_1h["value"] * scale)
    d1 = market.candles_1d.assign(value=market.candles_1d["value"] * scale)
    frames = {"candles_1m": m1, "candles_1h": h1, "candles_1d": d1, "upbit_markets": market.upbit_markets}
    seeds = [_stand_in(getattr(market_assets, name), frame) for name, frame in frames.items()]
    assert dg.materialize(seeds, resources=io_resources).success
    return frames


def _materialise(asset, io_resources, partition: str = PARTITION, **kwargs):
    upstream = [a.to_source_asset() for a in MARKET_ASSETS]
    others = [recommendations.to_source_asset()] if asset is recommendation_outcomes else [recommendations_redis]  # and its publish step
    return dg.materialize([*upstream, *others, asset], partition_key=partition, resources=io_resources, **kwargs)


def _table(postgres_resource, name: str) -> pd.DataFrame:
    """The stored rows; a plain query returns jsonb as text, decoded here as the IO manager decodes it."""
    frame = postgres_resource.read_frame(f"SELECT * FROM {postgres_resource.table_name(name)} ORDER BY as_of, scorer, rank")
    for column in ("reasons", "caution"):
        if column in frame:
            frame[column] = frame[column].map(json.loads)
    return frame


@pytest.fixture(scope="module")
def materialised(stored, io_resources, postgres_resource):
    result = _materialise(recommendations, io_resources)
    assert result.success
    return result, _table(postgres_resource, "recommendations")


def test_recommendations_rows_match_the_pure_function(stored, materialised):
    _, rows = materialised
    ticks = pd.date_range(HOUR, HOUR + pd.Timedelta(hours=1), freq="5min", inclusive="left")
    inputs = AnalysisInputs.assemble(LOOKBACK, ticks, candles_1m=stored["candles_1m"], candles_1h=stored["candles_1h"],
                                     candles_1d=stored["candles_1d"], upbit_markets=stored["upbit_markets"])
    params = RecommendationParams(MIN_TURNOVER, SETTINGS.min_reward_risk, tuple(SCORERS), calibration=FAVOURABLE)
    expected, _ = compute_recommendations(inputs, ticks, params)
    assert set(rows["as_of"]) == set(ticks)
    assert set(rows["scorer"]) == set(SCORERS)  # the served scorer's list and every challenger's, in shadow
    expected = expected.sort_values(["as_of", "scorer", "rank"], ignore_index=True)
    pd.testing.assert_frame_equal(rows[expected.columns].reset_index(drop=True), expected, check_dtype=False)


def test_recommendations_checks_metadata_and_redis(materialised, snapshot_store):
    result, rows = materialised
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed and evaluation.check_name == "schema"
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    assert metadata["ticks"].value == 12
    assert metadata["excluded_warning"].value == 1 and metadata["excluded_turnover"].value == 1
    assert metadata["universe_size"].value == 10
    assert metadata["min_reward_risk"].value == 1.5 and metadata["excluded_reward_risk"].value >= 0
    assert metadata["regime"].value == rows["regime"].iloc[-1]
    table = metadata["latest_snapshot"].value
    header = table.splitlines()[2]
    assert all(column in header for column in ("rank", "market", "score", "summary", "entry", "target", "stop"))
    served = rows[(rows["as_of"] == rows["as_of"].max()) & (rows["scorer"] == SERVED)]
    assert served["summary"].iloc[0] in table
    assert metadata["served_scorer"].value == SERVED
    published = result.asset_materializations_for_node("recommendations_redis")[0].metadata
    assert (published["rows"].value, published["keys"].value) == (len(served), [snapshot_store.key("recommendations")])
    snapshot = snapshot_store.cached("recommendations")
    assert snapshot["as_of"] == f"{rows['as_of'].max():%Y-%m-%dT%H:%M:%S}Z"
    assert [r["market"] for r in snapshot["rows"]] == list(served["market"])  # the shadow lists are not served
    assert {r["scorer"] for r in snapshot["rows"]} == {SERVED}


def test_rematerialising_gives_identical_rows(materialised, io_resources, postgres_resource):
    _, first = materialised
    assert _materialise(recommendations, io_resources).success
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendations"), first)


def test_outcomes_materialise_with_unreached_horizons_null(materialised, io_resources, postgres_resource):
    result = _materialise(recommendation_outcomes, io_resources)
    assert result.success
    [evaluation] = result.get_asset_check_evaluations()
    assert evaluation.passed
    outcomes = _table(postgres_resource, "recommendation_outcomes")
    _, rows = materialised
    assert len(outcomes) == len(rows)
    assert outcomes["return_4h"].notna().all()  # the candles end 5 h after the hour starts
    assert outcomes["return_24h"].isna().all() and outcomes["excess_24h"].isna().all()
    assert set(outcomes["first_hit"].dropna()) <= {"target", "stop"}  # 'neither' needs the whole 24 h
    metadata = result.asset_materializations_for_node("recommendation_outcomes")[0].metadata
    assert set(outcomes["scorer"]) == set(SCORERS)
    assert metadata["evaluated_4h"].value == (rows["scorer"] == SERVED).sum() and metadata["final"].value is False
    assert isinstance(metadata["rank_ic_1h"].value, float)
    card = metadata["scorecard"].value  # every scorer, both windows, every horizon
    assert {(r.data["window"], r.data["scorer"], r.data["horizon"]) for r in card.records} == {
        (w, s, h) for w in SCORECARD_WINDOWS for s in SCORERS for h in HORIZONS}
    four_hours = {r.data["scorer"]: r.data for r in card.records if r.data["window"] == "7d" and r.data["horizon"] == "4h"}
    for name, row in four_hours.items():
        graded = outcomes[outcomes["scorer"] == name]
        assert row["picks"] == len(graded)
        assert row["mean_excess"] == pytest.approx(graded["excess_4h"].mean(), abs=1e-6)
        assert row["hit_rate"] == pytest.approx((graded["excess_4h"] > 0).mean(), abs=1e-6)
        assert row["excess_ci_low"] is None and row["excess_ci_high"] is None  # one graded hour: no interval yet


def test_the_job_log_counts_the_markets_each_run_processed(materialised, io_resources, postgres_resource, instance):
    """/worker/status's symbols_processed: a recommendations run its eligible universe (not its picks, not the
    candles fetched), an outcomes run the markets it graded."""
    picked = _materialise(recommendations, io_resources, instance=instance, tags=RECOMMENDATIONS.job_type.tags())
    graded = _materialise(recommendation_outcomes, io_resources, instance=instance, tags=OUTCOMES_TYPE.tags())
    jobs = {entry["job_id"]: entry for entry in JobLog(instance).entries()}
    universe = picked.asset_materializations_for_node("recommendations")[0].metadata["universe_size"].value
    assert jobs[picked.run_id]["symbols_processed"] == universe == 10 == jobs[picked.run_id]["markets_processed"]
    outcomes = _table(postgres_resource, "recommendation_outcomes")
    assert jobs[graded.run_id]["symbols_processed"] == outcomes["market"].nunique() > 0


# --- bad data never passes the checks ---------------------------------------------------------

def _good(materialised) -> pd.DataFrame:
    return materialised[1].drop(columns=[c for c in materialised[1].columns if c not in _COLUMNS]).copy()


_COLUMNS = RECOMMENDATION_COLUMNS
_NO_WARNINGS = pd.DataFrame({"as_of": pd.Series(dtype="datetime64[ns, UTC]"), "market": pd.Series(dtype=object)})


@pytest.mark.parametrize(
    ("corrupt", "check"),
    [
        (lambda f: f.assign(score=f["score"] + 150.0), "in_range"),
        (lambda f: f.assign(rank=1), "ranks must run 1..N"),
        (lambda f: f.assign(stop=f["entry"] * 1.01), "stop < entry < target"),
        (lambda f: f.assign(as_of=f["as_of"] + pd.Timedelta(hours=1)), "at or after the window end"),
        (lambda f: f.assign(reasons="not json"), "must be a JSON object"),
        (lambda f: f.assign(entry=f["entry"] + f["tick_size"] / 3), "tick grid"),
        (lambda f: f.assign(target=f["entry"] + 0.5 * (f["entry"] - f["stop"]),
                            reward_risk=0.5), "below the floor"),
        (lambda f: f.assign(reward_risk=f["reward_risk"] * 2), "reward_risk must be"),
        (lambda f: f.assign(caution=""), "caution must be a list"),
        (lambda f: f.assign(regime="bullish"), "isin"),
        (lambda f: f.assign(expected_return_net=-0.001), "expected to lose money"),
        (lambda f: f.assign(expires_at=f["as_of"]), "expires_at must be as_of + horizon_hours"),
        (lambda f: f.assign(target=f["target"] - f["tick_size"], reward_risk=(f["target"] - f["tick_size"] - f["entry"])
                            / (f["entry"] - f["stop"])), "every figure of the summary must be the field it names"),
    ],
)
def test_recommendations_schema_rejects_bad_rows(materialised, corrupt, check):
    good = _good(materialised)
    schema = recommendations_schema(HOUR, HOUR + pd.Timedelta(hours=1), _NO_WARNINGS, 1.5)
    assert pandera_check(schema, good).passed
    result = pandera_check(schema, corrupt(good))
    assert not result.passed
    assert check in result.description


def test_recommendations_schema_rejects_a_warning_market(materialised):
    good = _good(materialised)
    warned = good[["as_of", "market"]].head(1)
    result = pandera_check(recommendations_schema(HOUR, HOUR + pd.Timedelta(hours=1), warned, 1.5), good)
    assert not result.passed and "warning flag was recommended" in result.description


def test_outcomes_schema_rejects_bad_rows(materialised, io_resources, postgres_resource):
    assert _materialise(recommendation_outcomes, io_resources).success
    good = _table(postgres_resource, "recommendation_outcomes")
    schema = outcomes_schema(HOUR, HOUR + pd.Timedelta(hours=1))
    assert pandera_check(schema, good).passed
    bad = good.assign(first_hit="maybe", return_1h=-2.0)
    result = pandera_check(schema, bad)
    assert not result.passed
    assert "isin" in result.description and "greater_than" in result.description


def test_a_failing_check_writes_nothing(materialised, io_resources, postgres_resource, snapshot_store):
    """A blocking check failure stops the step before the IO manager: the previous rows stay, nothing is published."""
    before = _table(postgres_resource, "recommendations")
    published = snapshot_store.cached("recommendations")
    def corrupted(*args, **kwargs) -> AnalysisResult:
        picks, counts = compute_recommendations(*args, **kwargs)
        return AnalysisResult(picks.assign(score=-1.0), counts)

    failing = dataclasses.replace(RECOMMENDATIONS, compute=corrupted)
    result = dg.materialize([*(a.to_source_asset() for a in MARKET_ASSETS), failing.asset, failing.publish],
                            partition_key=PARTITION, resources=io_resources, raise_on_error=False)
    assert not result.success
    assert result.asset_materializations_for_node("recommendations_redis") == [] and snapshot_store.cached("recommendations") == published
    [evaluation] = result.get_asset_check_evaluations()
    assert not evaluation.passed
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendations"), before)
    assert evaluation.metadata["failures"].value >= len(before)  # each row's score, and the score its summary states


def test_a_failing_outcomes_check_writes_nothing(materialised, io_resources, postgres_resource, monkeypatch):
    assert _materialise(recommendation_outcomes, io_resources).success
    before = _table(postgres_resource, "recommendation_outcomes")
    monkeypatch.setattr(recommendation_assets, "outcomes_schema", always_failing_schema)
    result = dg.materialize([*(a.to_source_asset() for a in MARKET_ASSETS), recommendations.to_source_asset(), recommendation_outcomes],
                            partition_key=PARTITION, resources=io_resources, raise_on_error=False)
    assert not result.success and [e.passed for e in result.get_asset_check_evaluations()] == [False]
    assert "schema check failed, nothing written" in result.failure_data_for_node("recommendation_outcomes").error.to_string()
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendation_outcomes"), before)


def test_an_hour_without_stored_candles_writes_no_snapshot(materialised, io_resources, postgres_resource):
    later = END + pd.Timedelta(days=3)  # no candles stored anywhere near this hour
    upstream = [a.to_source_asset() for a in MARKET_ASSETS]
    result = dg.materialize([*upstream, recommendations], partition_key=later.strftime("%Y-%m-%d-%H:%M"), resources=io_resources)
    assert result.success
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    assert metadata["ticks"].value == 0 and metadata["dagster/partition_row_count"].value == 0
    assert (_table(postgres_resource, "recommendations")["as_of"] < END).all()


def test_a_stricter_floor_that_leaves_no_plan_empties_the_stored_hour(materialised, io_resources, postgres_resource, settings,
                                                                      calibration_file):
    """Recomputed under a reward:risk floor no plan meets, every tick of the hour has no pick: the hour's stored picks go
    (the analysis asks for the delete because its ticks were computed), and come back under the usual floor."""
    before = _table(postgres_resource, "recommendations")
    in_hour = before["as_of"].between(HOUR, HOUR + pd.Timedelta(minutes=59))
    assert in_hour.sum() > 0
    stricter = settings.model_copy(update={"calibration": str(calibration_file), "min_reward_risk": 1000.0})
    strict = {**io_resources, "run_settings": run_settings(stricter)}

    result = _materialise(recommendations, strict)

    assert result.success
    metadata = result.asset_materializations_for_node("recommendations")[0].metadata
    assert (metadata["ticks"].value, metadata["delete_window"].value, metadata["dagster/partition_row_count"].value) == (12, True, 0)
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendations"), before[~in_hour].reset_index(drop=True))

    assert _materialise(recommendations, io_resources).success  # the usual floor: the same picks as before
    pd.testing.assert_frame_equal(_table(postgres_resource, "recommendations"), before)


def test_warned_pairs_follow_the_latest_day_of_each_tick():
    from dantaro_assets.recommendations.assets import _warned

    day = pd.Timestamp("2025-09-10", tz="UTC")
    universe = pd.DataFrame({"day": [day, day, day + pd.Timedelta(days=1), day + pd.Timedelta(days=1)],
                             "market": ["KRW-A", "KRW-B"] * 2, "warning": [True, False, False, True]})
    ticks = pd.DatetimeIndex([day - pd.Timedelta(hours=1), day + pd.Timedelta(hours=23), day + pd.Timedelta(hours=25)])
    pairs = _warned(universe, ticks)
    assert list(zip(pairs["as_of"], pairs["market"])) == [(ticks[1], "KRW-A"), (ticks[2], "KRW-B")]
    assert _warned(universe, ticks[:0]).empty


def test_a_refit_from_the_graded_picks_is_written_and_loads(materialised, io_resources, postgres_resource, calibration_file,
                                                            tmp_path, monkeypatch, capsys):
    """``dantaro calibration refit`` over the picks of an hour whose 24 h horizon the stored candles cover: a table
    counted from every scorer's graded picks, with the bins, shrinkage and reach of the table the pipeline serves
    (DANTARO_CALIBRATION), ready to be served in turn. Picks whose horizon has not ended are not counted."""
    graded_hour = (HOUR - pd.Timedelta(hours=25)).strftime("%Y-%m-%d-%H:%M")
    assert _materialise(recommendations, io_resources, graded_hour).success
    assert _materialise(recommendation_outcomes, io_resources, graded_hour).success
    assert _materialise(recommendation_outcomes, io_resources).success  # this hour's picks: graded 5 h in, not 24
    picks = _table(postgres_resource, "recommendations")
    picks = picks[picks["as_of"] < HOUR - pd.Timedelta(hours=24)]
    monkeypatch.setenv("DANTARO_SCHEMA", postgres_resource.db_schema)
    monkeypatch.setenv("DANTARO_CALIBRATION", str(calibration_file))
    out = tmp_path / "refit.json"
    assert main(["calibration", "refit", "--out", str(out)]) == 0
    assert "serve it with DANTARO_CALIBRATION=" in capsys.readouterr().out
    table = from_json(out.read_text())
    assert table.cells.loc[table.cells["level"] == 3, "n"].sum() == len(picks) > 0
    assert table.cells.loc[table.cells["level"] == 0, "n"].sum() == len(picks.drop_duplicates(["as_of", "market"]))
    assert table.fitted["source"] == "recommendation_outcomes" and pd.Timestamp(table.fitted["until"]) < HOUR
    assert table.reach == FAVOURABLE.reach and table.prior_strength == FAVOURABLE.prior_strength
    monkeypatch.setenv("DANTARO_SCHEMA", postgres_resource.db_schema + "_nothing_here")
    assert main(["calibration", "refit", "--out", str(tmp_path / "none.json")]) == 2
    assert "no graded picks to refit from" in capsys.readouterr().err and not (tmp_path / "none.json").exists()
