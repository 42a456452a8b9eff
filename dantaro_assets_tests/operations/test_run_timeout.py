"""A run past DANTARO_RUN_TIMEOUT, run as the daemon runs it: it ends within seconds, its worker process is
gone, nothing is stored, and neither a step retry nor a run retry brings it back once Upbit answers again."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta

import dagster as dg
import pandas as pd
import psutil
import pytest

from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import PostgresDataFrameIOManager
from dantaro_assets.lib.upbit import UpbitClient
from dantaro_assets.markets import assets as market_assets
from dantaro_assets.markets.assets import upbit_markets
from dantaro_assets.operations.limits import STOP_GRACE_SECONDS, TIMED_OUT_TAG
from dantaro_assets.resources import run_settings
from dantaro_assets_tests.fixtures.storage import own_schema
from dantaro_assets_tests.operations.daemon import (
    FINISHED,
    WorkspaceProcessContext,
    daemon_workspace,
    dequeue,
    monitor,
    project_instance,
    retries_daemon,
    run_worker_pid,
    status,
    submit,
)

TIMEOUT = 10  # the smallest DANTARO_RUN_TIMEOUT the settings accept


@pytest.fixture(scope="module")
def storage(pg_url: str, settings) -> Iterator[PostgresResource]:
    """A schema of the module's own: no other test's candles in it, whatever ran before."""
    with own_schema(pg_url, f"{settings.db_schema}_timeout") as postgres:
        yield postgres


@pytest.fixture(scope="module")
def closed_hour(replay_server, storage, redis_resource, settings) -> pd.Timestamp:
    """The replay's previous hour, its day's universe stored (candles_1m reads it); no candles stored."""
    hour = pd.Timestamp(replay_server.clock()).floor("h") - timedelta(hours=1)
    upbit = UpbitClient(base_url=replay_server.url, redis=redis_resource)
    resources = {"io_manager": PostgresDataFrameIOManager(postgres=storage), "postgres": storage, "upbit": upbit,
                 "run_settings": run_settings(settings)}
    result = dg.materialize(dg.load_assets_from_modules([market_assets]), selection=[upbit_markets], partition_key=hour.strftime("%Y-%m-%d"),
                            resources=resources)
    upbit.close()
    assert result.success
    return hour


@pytest.fixture(scope="module")
def instance(tmp_path_factory) -> Iterator[dg.DagsterInstance]:
    """One instance and code server for the module's tests (each code server start costs seconds)."""
    with project_instance(tmp_path_factory.mktemp("dagster_home")) as instance:
        yield instance


@pytest.fixture(scope="module")
def workspace(instance: dg.DagsterInstance, replay_server, storage) -> Iterator[WorkspaceProcessContext]:
    """The project's own definitions, fetching from the replay into the module's schema, with a 10 s run timeout."""
    env = {"UPBIT_BASE_URL": replay_server.url, "DANTARO_RUN_TIMEOUT": str(TIMEOUT), "DANTARO_SCHEMA": storage.db_schema}
    with daemon_workspace(instance, "dantaro_assets.definitions", env) as context:
        yield context


def _stored_candles(storage, hour: pd.Timestamp) -> int:
    tables = "SELECT count(*) FROM information_schema.tables WHERE table_schema = $1 AND table_name = 'candles_1m'"
    present = storage.read_arrow(tables, [storage.db_schema]).column(0)[0].as_py()
    if not present:
        return 0
    sql = f"SELECT count(*) FROM {storage.table_name('candles_1m')} WHERE candle_start >= $1 AND candle_start < $2"
    return storage.read_arrow(sql, [hour, hour + timedelta(hours=1)]).column(0)[0].as_py()


def _gone(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def _hanging_run(instance, workspace, replay, hour: pd.Timestamp) -> str:
    """A market_status run launched while every candle request hangs 40 s (longer than its 10 s timeout)."""
    replay.inject("latency", path="/v1/candles/*", count=None, seconds=40)
    run_id = submit(instance, workspace, "market_status_job", tags={"dagster/partition": hour.strftime("%Y-%m-%d-%H:%M")})
    dequeue(workspace)
    return run_id


def _daemons_until_finished(instance, workspace, retrying, run_id: str, timeout: float = 120) -> dg.DagsterRunStatus:
    deadline = time.monotonic() + timeout
    while status(instance, run_id) not in FINISHED and time.monotonic() < deadline:
        monitor(workspace)
        list(retrying.run_iteration(workspace))
        time.sleep(1)
    return status(instance, run_id)


def _assert_stopped_for_good(instance, workspace, retrying, replay, run_id: str, hour: pd.Timestamp, storage) -> None:
    """No step retry, no worker process left, and once Upbit answers again: no run retry, no later SUCCESS, no rows."""
    ended = status(instance, run_id)
    assert instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_UP_FOR_RETRY) == []
    pid = run_worker_pid(instance, run_id)
    assert pid is not None
    deadline = time.monotonic() + 10
    while not _gone(pid):
        assert time.monotonic() < deadline, f"run worker {pid} still alive after its run ended"
        time.sleep(0.5)

    replay.clear_faults()
    for _ in range(5):
        monitor(workspace)
        list(retrying.run_iteration(workspace))
        dequeue(workspace)
        time.sleep(1)
    assert instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id})) == []
    assert status(instance, run_id) == ended
    assert dg.DagsterRunStatus.SUCCESS not in {run.status for run in instance.get_runs()}
    assert _stored_candles(storage, hour) == 0


@pytest.mark.slow
def test_a_run_past_its_timeout_ends_within_seconds_and_is_never_retried(instance, workspace, replay, closed_hour, storage):
    assert _stored_candles(storage, closed_hour) == 0
    retrying = retries_daemon(workspace)
    run_id = _hanging_run(instance, workspace, replay, closed_hour)

    assert _daemons_until_finished(instance, workspace, retrying, run_id) == dg.DagsterRunStatus.FAILURE
    record = instance.get_run_record_by_id(run_id)
    ran = record.end_time - record.start_time
    assert TIMEOUT <= ran < TIMEOUT + STOP_GRACE_SECONDS, f"the run ended {ran:.1f} s after it started"
    assert record.dagster_run.tags[TIMED_OUT_TAG] == "true"
    assert record.dagster_run.tags["dagster/will_retry"] == "false"
    messages = [event.message for event in instance.all_logs(run_id) if event.message]
    assert any(f"exceeded DANTARO_RUN_TIMEOUT={TIMEOUT} s" in message for message in messages)
    (failure,) = instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_FAILURE)  # its error is the job log's
    error = failure.dagster_event.step_failure_data.error
    assert error.cls_name == "FetchStopped" and error.cause is None
    assert error.message.startswith(f"dantaro_assets.lib.upbit.client.FetchStopped: the run exceeded DANTARO_RUN_TIMEOUT={TIMEOUT} s")
    _assert_stopped_for_good(instance, workspace, retrying, replay, run_id, closed_hour, storage)


@pytest.mark.slow
def test_a_run_terminated_mid_fetch_ends_canceled_and_is_never_retried(instance, workspace, replay, closed_hour, storage):
    retrying = retries_daemon(workspace)
    run_id = _hanging_run(instance, workspace, replay, closed_hour)
    deadline = time.monotonic() + 60
    while not instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
        assert time.monotonic() < deadline, "the fetching step never started"
        time.sleep(0.5)
    time.sleep(1)  # requests in flight

    asked = time.time()
    assert instance.run_launcher.terminate(run_id)
    assert _daemons_until_finished(instance, workspace, retrying, run_id, timeout=60) == dg.DagsterRunStatus.CANCELED
    assert instance.get_run_record_by_id(run_id).end_time - asked < 5
    _assert_stopped_for_good(instance, workspace, retrying, replay, run_id, closed_hour, storage)
