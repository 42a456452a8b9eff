"""The pipeline as a user drives it: `dagster dev` (webserver + daemon) on a temporary DAGSTER_HOME,
jobs launched through GraphQL into the run queue, results read back through GraphQL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

import dagster as dg
import httpx
import pytest
from dagster_graphql import DagsterGraphQLClient, DagsterGraphQLClientError

from dantaro_assets.operations.instance import write_instance_config
from dantaro_assets.operations.job_log import job_log
from dantaro_assets.partitions import daily_partitions, hourly_partitions

PROJECT_DIR = Path(__file__).resolve().parents[2]

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


BACKFILL = """
mutation Backfill($params: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $params) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PythonError { message }
  }
}
"""

BACKFILL_STATUS = """
query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) { ... on PartitionBackfill { status } } }
"""


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def dagster_dev(tmp_path: Path, replay_server, pg_url, redis_client) -> Iterator[tuple[DagsterGraphQLClient, Path]]:
    """`dagster dev` in its own process group, schedules stopped (WORKER_ENABLED=false), Upbit replayed."""
    home = tmp_path / "dagster_home"
    write_instance_config(home)
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "UPBIT_BASE_URL": replay_server.url, "WORKER_ENABLED": "false"}
    log = (tmp_path / "dagster_dev.log").open("w")
    process = subprocess.Popen(
        [sys.executable, "-m", "dagster", "dev", "-w", str(PROJECT_DIR / "workspace.yaml"), "-p", str(port)],
        cwd=PROJECT_DIR, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            assert process.poll() is None, f"dagster dev exited: {(tmp_path / 'dagster_dev.log').read_text()[-3000:]}"
            assert time.monotonic() < deadline, "dagster dev did not answer /server_info in 180 s"
            try:
                if httpx.get(f"{url}/server_info", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(1)
        yield DagsterGraphQLClient("127.0.0.1", port_number=port), home
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()


def _launch_and_wait(client: DagsterGraphQLClient, home: Path, job: str, partition: str, timeout: float = 240) -> str:
    deadline = time.monotonic() + timeout
    while True:  # the code location may still be loading right after start-up
        try:
            run_id = client.submit_job_execution(job, tags={"dagster/partition": partition})
            break
        except DagsterGraphQLClientError:
            if time.monotonic() > deadline:
                raise
            time.sleep(2)
    while (status := client.get_run_status(run_id).value) not in ("SUCCESS", "FAILURE", "CANCELED"):
        assert time.monotonic() < deadline, f"{job} run {run_id} still {status} after {timeout} s"
        time.sleep(1)
    if status != "SUCCESS":
        with dg.DagsterInstance.from_config(str(home)) as instance:
            entry = next(e for e in job_log(instance) if e["job_id"] == run_id)
        pytest.fail(f"{job} run {run_id} ended {status}: {entry['error']}")
    return run_id


def _backfill(client: DagsterGraphQLClient, ranges: dict[str, tuple[str, str]], timeout: float = 300) -> None:
    """Backfill partition ranges as the UI's "Materialize selected" dialog does, and wait for it."""
    params = {
        "partitionsByAssets": [
            {"assetKey": {"path": [asset]}, "partitions": {"range": {"start": start, "end": end}}} for asset, (start, end) in ranges.items()
        ]
    }
    launched = client._execute(BACKFILL, {"params": params})["launchPartitionBackfill"]
    assert launched["__typename"] == "LaunchBackfillSuccess", launched
    deadline = time.monotonic() + timeout
    while (status := client._execute(BACKFILL_STATUS, {"id": launched["backfillId"]})["partitionBackfillOrError"]["status"]) in ("REQUESTED", "CANCELING", "FAILING"):
        assert time.monotonic() < deadline, f"backfill still {status} after {timeout} s"
        time.sleep(2)
    assert status in ("COMPLETED", "COMPLETED_SUCCESS"), f"backfill ended {status}"


@pytest.mark.slow
def test_jobs_launched_through_graphql_materialise_with_passing_checks(dagster_dev):
    client, home = dagster_dev
    now = datetime.now(timezone.utc).timestamp()
    day, hour = daily_partitions.get_partition_key_for_timestamp(now), hourly_partitions.get_partition_key_for_timestamp(now)

    # history the analyses look back over: yesterday's and today's universe and hourly candles, and a
    # day of minutes backfilled in one run (candles_1m has a single-run backfill policy)
    yesterday = daily_partitions.get_partition_key_for_timestamp(now - 86400)
    for key in (yesterday, day):
        _launch_and_wait(client, home, "daily_candles_job", key)
    _backfill(client, {"candles_1m": (hourly_partitions.get_partition_key_for_timestamp(now - 26 * 3600), hour)})
    run_id = _launch_and_wait(client, home, "market_status_job", hour)

    run = client._execute(RUN_QUERY, {"runId": run_id})["runOrError"]
    tags = {tag["key"]: tag["value"] for tag in run["tags"]}
    assert tags["dantaro/job"] == "market_status" and tags["dagster/priority"] == "40"
    assert {(m["assetKey"]["path"][0], m["partition"]) for m in run["assetMaterializations"]} == {("candles_1m", hour), ("market_status", hour)}

    for asset in ("candles_1m", "market_status"):
        node = client._execute(ASSET_QUERY, {"path": [asset]})["assetNodeOrError"]
        checks = node["assetChecksOrError"]["checks"]
        assert checks, f"{asset} has no checks"
        for check in checks:
            execution = check["executionForLatestMaterialization"]
            assert execution and execution["runId"] == run_id and execution["status"] == "SUCCEEDED", (asset, check)
    assert client._execute(ASSET_QUERY, {"path": ["market_status"]})["assetNodeOrError"]["internalFreshnessPolicy"]

    # schedules exist but WORKER_ENABLED=false left them stopped
    states = client._execute("{ schedulesOrError(repositorySelector: {repositoryName: \"__repository__\", repositoryLocationName: \"dantaro_assets.definitions\"}) { ... on Schedules { results { name scheduleState { status } } } } }")
    schedules = states["schedulesOrError"]["results"]
    assert {s["name"] for s in schedules} >= {"market_status_schedule", "cleanup_schedule"}
    assert {s["scheduleState"]["status"] for s in schedules} == {"STOPPED"}
