"""A first start played through for real: the history sensor's runs and the analyses' start sensors on a fresh
instance, every run executed (Postgres, Redis, the simulated replay server), in the order the sensors ask."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

import dagster as dg
import pytest

from dantaro_assets.definitions import build_definitions
from dantaro_assets.markets.history import HISTORY_TAG, PRODUCT_TAG, products
from dantaro_assets.partitions import daily_partitions, hourly_partitions
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.operations.daemon import freeze_time

ANALYSES = ("market_status", "recommendations", "support_levels")


@pytest.fixture
def first_start(pg_url, settings, small_replay) -> Iterator[tuple[dg.Definitions, dg.DagsterInstance, datetime]]:
    """The definitions against the replay and a schema of the test's own, a fresh instance, and the moment of the start."""
    schema = f"{settings.db_schema}_first_{uuid.uuid4().hex[:6]}"
    with own_schema(pg_url, schema), dg.instance_for_test() as instance:
        defs = build_definitions(settings.model_copy(update={"upbit_base_url": small_replay.url, "db_schema": schema}))
        yield defs, instance, datetime.now(UTC).replace(microsecond=0)


def _evaluate(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, now: datetime) -> list[dg.RunRequest]:
    with freeze_time(now):
        with dg.build_sensor_context(instance=instance, definitions=defs, resources=defs.resources) as context:
            result = defs.resolve_sensor_def(name)(context)
    if isinstance(result, dg.SkipReason) or result is None:
        return []
    return list(result.run_requests or []) if isinstance(result, dg.SensorResult) else list(result)


def _schedule(defs: dg.Definitions, name: str, instance: dg.DagsterInstance, now: datetime) -> list[dg.RunRequest] | dg.SkipReason:
    with freeze_time(now):
        context = dg.build_schedule_context(instance=instance, scheduled_execution_time=now, repository_def=defs.get_repository_def())
        return defs.resolve_schedule_def(name).evaluate_tick(context).run_requests or dg.SkipReason("skipped")


def _execute(defs: dg.Definitions, instance: dg.DagsterInstance, request: dg.RunRequest, job_name: str | None = None) -> None:
    job = defs.resolve_job_def(request.job_name or job_name)
    result = job.execute_in_process(instance=instance, tags=request.tags, partition_key=request.partition_key,
                                    asset_selection=request.asset_selection, raise_on_error=False)
    assert result.success, f"{request.job_name} {request.tags}"


def _stored(instance: dg.DagsterInstance, asset: str, keys: set[str]) -> set[str]:
    return set(instance.get_latest_storage_id_by_partition(dg.AssetKey(asset), dg.DagsterEventType.ASSET_MATERIALIZATION, partitions=keys))


def _covered(instance: dg.DagsterInstance, needs: dict[str, frozenset[str]]) -> bool:
    return all(_stored(instance, asset, set(keys)) == set(keys) for asset, keys in needs.items())


def test_a_first_start_fetches_market_status_first_and_launches_each_analysis_once_what_it_reads_is_stored(first_start):
    """History runs go product by product (what market status reads, then what recommendations add, then support
    levels); each analysis's start sensor launches its open hour exactly when its lookback is stored, not before and
    not twice, while its schedule leaves that hour to it; the tick sizes are stored at first start."""
    defs, instance, now = first_start
    repository = defs.get_repository_def()
    ordered = products(repository, now)
    assert [product.name for product in ordered][:3] == list(ANALYSES)
    needs = {product.name: product.needs for product in ordered}
    open_hour = hourly_partitions.get_partition_key_for_timestamp(now.timestamp())

    history: list[dg.RunRequest] = []
    launched: dict[str, list[dg.RunRequest]] = {name: [] for name in ANALYSES}
    for _ in range(20):
        for name in ANALYSES:
            requests = _evaluate(defs, f"{name}_start_sensor", instance, now)
            # launched the moment its lookback is stored, and never before
            assert bool(requests) == (_covered(instance, needs[name]) and not launched[name]), (name, requests)
            assert all(r.partition_key == open_hour for r in requests)
            # a schedule's tick meanwhile leaves the cold open hour to the sensor
            if not launched[name]:
                ticked = _schedule(defs, f"{name}_schedule", instance, now)
                assert isinstance(ticked, dg.SkipReason) or all(r.partition_key != open_hour for r in ticked)
            for request in requests:
                _execute(defs, instance, request, f"{name}_job")
                launched[name].append(request)
        requests = _evaluate(defs, "history_sensor", instance, now)
        if not requests and all(launched.values()):
            break
        for request in sorted(requests, key=lambda r: -int(r.tags["dagster/priority"])):
            _execute(defs, instance, request)
            history.append(request)
    assert {name: len(requests) for name, requests in launched.items()} == dict.fromkeys(ANALYSES, 1)
    for name in ANALYSES:  # stored, and its open hour now the schedule's own
        assert _stored(instance, name, {open_hour}) == {open_hour}
        assert not _evaluate(defs, f"{name}_start_sensor", instance, now)

    # the history arrived product by product: every run for market status before any for recommendations ...
    order = [request.tags[PRODUCT_TAG] for request in history]
    assert order == sorted(order, key=list(ANALYSES).index), order
    assert order[0] == "market_status" and {request.tags[HISTORY_TAG] for request in history} == {"daily", "minute"}
    # ... and nothing fetched twice: each run's assets and range are its own
    fetched = [(request.tags[HISTORY_TAG], tuple(sorted(k.to_user_string() for k in request.asset_selection)),
                request.tags["dagster/asset_partition_range_start"]) for request in history]
    assert len(fetched) == len(set(fetched))

    today = daily_partitions.get_partition_key_for_timestamp(now.timestamp())
    assert _stored(instance, "upbit_instruments", {today}) == {today}  # the tick sizes, at first start
