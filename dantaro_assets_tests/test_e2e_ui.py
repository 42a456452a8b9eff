"""The pipeline as a user drives it: `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME,
jobs and a backfill launched through GraphQL into the run queue, results read back through GraphQL."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import pytest

from dantaro_assets.api.job_log import JobLog
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.harness import DagsterDev, prepare_history

RUN_QUERY = """
query Run($runId: ID!) {
  runOrError(runId: $runId) {
    ... on Run {
      status
      tags { key value }
      assetMaterializations { assetKey { path } partition }
    }
  }
}
"""

ASSET_QUERY = """
query Asset($path: [String!]!) {
  assetNodeOrError(assetKey: {path: $path}) {
    ... on AssetNode {
      internalFreshnessPolicy { __typename }
      assetChecksOrError {
        ... on AssetChecks { checks { name blocking executionForLatestMaterialization { status runId partition } } }
      }
    }
  }
}
"""

SCHEDULES_QUERY = """
{ schedulesOrError(repositorySelector: {repositoryName: "__repository__", repositoryLocationName: "dantaro_assets.definitions"}) {
    ... on Schedules { results { name scheduleState { status } } } } }
"""


@pytest.fixture
def dagster_dev(tmp_path: Path, small_replay, pg_url, redis_client, settings, progress) -> Iterator[DagsterDev]:
    """Schedules stopped (WORKER_ENABLED=false) so only the test's runs happen; Upbit replayed (8 markets: the history
    backfill is a run of the same kind over fewer requests).

    Its Redis keys get a prefix of their own: the snapshots' high-water marks never expire, and a
    real-time snapshot left under the session's prefix would refuse other tests' older ones.
    """
    prefix = f"{settings.redis_prefix}.e2e"
    env = {"UPBIT_BASE_URL": small_replay.url, "WORKER_ENABLED": "false", "DANTARO_REDIS_PREFIX": prefix}
    try:
        progress("starting dagster dev (webserver + daemon)")
        with DagsterDev(tmp_path / "dagster_home", env, settings=load_settings({**os.environ, **env})) as dev:
            progress(f"dagster dev answers at {dev.url}")
            yield dev
            progress("stopping dagster dev")
    finally:
        keys = list(redis_client.scan_iter(f"{prefix}:*", count=1000))
        if keys:
            redis_client.delete(*keys)


def _run_to_success(dev: DagsterDev, job: str, partition: str, progress) -> str:
    run_id = dev.launch(job, partition)
    progress(f"{job} {partition}: run {run_id[:8]} queued")
    status = dev.wait(run_id, timeout=240)
    progress(f"{job} {partition}: run {run_id[:8]} {status}")
    if status != "SUCCESS":
        with dg.DagsterInstance.from_config(str(dev.home)) as instance:
            entry = next(e for e in JobLog(instance).entries() if e["job_id"] == run_id)
        pytest.fail(f"{job} run {run_id} ended {status}: {entry['error']}")
    return run_id


@pytest.mark.slow(minutes=2)
def test_jobs_launched_through_graphql_materialise_with_passing_checks(dagster_dev: DagsterDev, progress):
    dev = dagster_dev
    hour = prepare_history(dev, timeout=300, progress=progress)  # the universe, 1h/1d candles and minutes the analyses read
    run_id = _run_to_success(dev, "market_status_job", hour, progress)

    run = dev.query(RUN_QUERY, {"runId": run_id})["runOrError"]
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dantaro/job"] == "market_status" and tags["dagster/priority"] == "40"
    assert {(m["assetKey"]["path"][0], m["partition"]) for m in run["assetMaterializations"]} == {
        ("candles_1m", hour), ("market_status", hour), ("market_status_redis", hour)}  # fetch, compute, publish

    for asset in ("candles_1m", "market_status"):
        checks = dev.query(ASSET_QUERY, {"path": [asset]})["assetNodeOrError"]["assetChecksOrError"]["checks"]
        assert checks, f"{asset} has no checks"
        for check in checks:
            execution = check["executionForLatestMaterialization"]
            assert execution and execution["runId"] == run_id and execution["status"] == "SUCCEEDED", (asset, check)
    assert dev.query(ASSET_QUERY, {"path": ["market_status"]})["assetNodeOrError"]["internalFreshnessPolicy"]

    schedules = dev.query(SCHEDULES_QUERY)["schedulesOrError"]["results"]
    assert {s["name"] for s in schedules} >= {"market_status_schedule", "cleanup_schedule"}
    assert {s["scheduleState"]["status"] for s in schedules} == {"STOPPED"}  # WORKER_ENABLED=false
