"""The worker's limits with runs on Celery workers: deploy/dagster.celery.yaml, two `dantaro worker` processes.

Dagster's storage is a Postgres database of the module's own, the broker and result backend a redis-server of
the module's own (never the machine's shared one: a test restarts it empty). The daemons' iterations are called
directly (daemon.py) so each step can be observed; the runs execute in the workers' processes, launched by
dagster-celery's run launcher.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from urllib.parse import urlsplit, urlunsplit

import dagster as dg
import psycopg
import pytest
import yaml
from dagster_celery.tags import DAGSTER_CELERY_QUEUE_TAG, DAGSTER_CELERY_TASK_ID_TAG

from dantaro_assets.operations.celery_runs import (
    WORKER_TAG,
    CeleryQueueRunCoordinator,
    WorkerCheckingCeleryRunLauncher,
)
from dantaro_assets.operations.limits import JOB_TAG, QUEUE_TAG, QUEUES, TIMED_OUT_TAG
from dantaro_assets.processes.instance import write_instance_config
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.conftest import RUN_TAG
from dantaro_assets_tests.fixtures.environment import environ
from dantaro_assets_tests.fixtures.redis_server import PrivateRedis
from dantaro_assets_tests.operations.daemon import (
    FINISHED,
    PROJECT_DIR,
    WorkspaceProcessContext,
    daemon_workspace,
    dagster_instance_config,
    dequeue,
    monitor,
    retries_daemon,
    submit,
    wait_for,
)
from dantaro_assets_tests.operations.limits_defs import JOB_TAGS, STORED_ROWS


def distributed(test):
    """Marks a test that needs the two workers: `pytest -m distributed` runs these alone; slow, so skipped by -m "not slow"."""
    return pytest.mark.slow(pytest.mark.distributed(test))


DEFS = "dantaro_assets_tests.operations.limits_defs"
WORKERS = (f"w1-{RUN_TAG}", f"w2-{RUN_TAG}")
RUN_TIMEOUT = 10  # DANTARO_RUN_TIMEOUT in the workers: the smallest the settings accept


@pytest.fixture(scope="module")
def dagster_pg_url(pg_url: str) -> Iterator[str]:
    """A database of the module's own for Dagster's storage (dagster-postgres creates its tables in it)."""
    name = f"dantaro_celery_{RUN_TAG}"
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    parts = urlsplit(pg_url)
    # psycopg2: SQLAlchemy 2.1 maps a bare postgresql:// to psycopg 3, whose LISTEN/NOTIFY dagster-postgres does not support
    yield urlunsplit(("postgresql+psycopg2", parts.netloc, f"/{name}", parts.query, ""))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def broker() -> Iterator[PrivateRedis]:
    """The module's broker and result backend: a redis-server it may kill and start again empty."""
    server = PrivateRedis()
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="module")
def celery_env(dagster_pg_url: str, broker: PrivateRedis, tmp_path_factory) -> dict[str, str]:
    """DAGSTER_HOME with the Celery template (two worker slots, both workers on both queues) and its variables."""
    home = tmp_path_factory.mktemp("celery_home")
    write_instance_config(home, load_settings(), template=PROJECT_DIR / "deploy" / "dagster.celery.yaml")
    config = yaml.safe_load((home / "dagster.yaml").read_text())
    runs = config["concurrency"]["runs"]
    runs["max_concurrent_runs"] = 2  # the two worker processes' slots
    for limit in runs["tag_concurrency_limits"]:
        if limit["key"] == "dagster-celery/queue":
            limit["limit"] = 2  # both workers take from both queues
    config["compute_logs"]["config"]["base_dir"] = str(home / "compute_logs")
    (home / "dagster.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return {
        "DAGSTER_HOME": str(home),
        "DAGSTER_PG_URL": dagster_pg_url,
        "DANTARO_CELERY_BROKER_URL": broker.url,
        "DANTARO_CELERY_BACKEND_URL": broker.url,
    }


@pytest.fixture(scope="module")
def instance(celery_env: dict[str, str]) -> Iterator[dg.DagsterInstance]:
    with environ(celery_env):
        instance = dg.DagsterInstance.from_config(celery_env["DAGSTER_HOME"])
        try:
            yield instance
        finally:
            instance.dispose()


@pytest.fixture(scope="module")
def workspace(instance: dg.DagsterInstance, celery_env) -> Iterator[WorkspaceProcessContext]:
    with daemon_workspace(instance, DEFS, celery_env) as context:
        yield context


def _start_worker(name: str, env: dict[str, str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "dantaro_assets.cli", "worker", "--queue", "live", "--queue", "bulk", "--name", f"{name}@%h",
               "--preload", DEFS, "--loglevel", "WARNING"]  # fmt: skip
    return subprocess.Popen(command, env=env, cwd=PROJECT_DIR, start_new_session=True)


@pytest.fixture(scope="module")
def workers(instance: dg.DagsterInstance, celery_env: dict[str, str]) -> Iterator[dict[str, subprocess.Popen]]:
    """Two `dantaro worker` processes taking runs from both queues, one run at a time each."""
    env = {**os.environ, **celery_env, "PYTHONPATH": str(PROJECT_DIR), "DANTARO_RUN_TIMEOUT": str(RUN_TIMEOUT)}
    processes = {name: _start_worker(name, env) for name in WORKERS}
    try:
        app = instance.run_launcher.celery
        deadline = time.monotonic() + 90
        while True:
            answered = {name.split("@")[0] for reply in app.control.ping(timeout=1.0) for name in reply}
            if set(WORKERS) <= answered:
                break
            assert all(p.poll() is None for p in processes.values()), "a worker exited at start"
            assert time.monotonic() < deadline, f"workers did not answer: {answered}"
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)


def test_a_worker_refuses_an_instance_without_the_celery_launcher(tmp_path, capsys):
    from dantaro_assets.operations.celery_runs import main

    write_instance_config(tmp_path, load_settings())  # the local dagster.yaml: DefaultRunLauncher
    with environ({"DAGSTER_HOME": str(tmp_path)}):
        assert main(["--queue", "live"]) == 2
    assert "not a Celery run launcher" in capsys.readouterr().err


def _wait_config(seconds: float) -> dict:
    return {"ops": {"wait": {"config": {"seconds": seconds}}}}


def _drain(instance, workspace, run_ids: list[str], timeout: float = 180) -> list[tuple[float, set[str]]]:
    """Dequeue until every run finished; returns (time, started run ids) samples taken between iterations."""
    samples = []
    deadline = time.monotonic() + timeout
    while True:
        runs = {run_id: instance.get_run_by_id(run_id) for run_id in run_ids}
        samples.append((time.monotonic(), {r for r, run in runs.items() if run.status == dg.DagsterRunStatus.STARTED}))
        if all(run.status in FINISHED for run in runs.values()):
            return samples
        assert time.monotonic() < deadline, {r: run.status for r, run in runs.items()}
        dequeue(workspace)
        time.sleep(0.3)


def _worker(instance, run_id: str) -> str:
    return instance.get_run_by_id(run_id).tags[WORKER_TAG].split("@")[0]


def test_the_celery_config_carries_the_same_limits_and_a_run_slot_per_celery_queue(tmp_path):
    write_instance_config(tmp_path, load_settings(), template=PROJECT_DIR / "deploy" / "dagster.celery.yaml")
    write_instance_config(tmp_path / "local", load_settings())
    config, _ = dagster_instance_config(str(tmp_path))
    local, _ = dagster_instance_config(str(tmp_path / "local"))
    for section in ("run_monitoring", "run_retries"):
        assert config[section] == local[section], section
    # the same run queue, whose coordinator also names each run's Celery queue
    assert config["run_coordinator"]["config"] == local["run_coordinator"]["config"]
    assert config["run_coordinator"]["class"] == "CeleryQueueRunCoordinator" and local["run_coordinator"]["class"] == "QueuedRunCoordinator"
    assert config["concurrency"]["pools"] == local["concurrency"]["pools"]
    runs, local_runs = config["concurrency"]["runs"], local["concurrency"]["runs"]
    assert runs["max_concurrent_runs"] == local_runs["max_concurrent_runs"]
    per_queue = [limit for limit in runs["tag_concurrency_limits"] if limit["key"] == DAGSTER_CELERY_QUEUE_TAG]
    assert [limit for limit in runs["tag_concurrency_limits"] if limit not in per_queue] == local_runs["tag_concurrency_limits"]
    # every queue a job type may name has its run slots, and they add up to the run cap
    assert {limit["value"] for limit in per_queue} == set(QUEUES)
    assert sum(limit["limit"] for limit in per_queue) == runs["max_concurrent_runs"]
    assert config["run_launcher"]["class"] == "WorkerCheckingCeleryRunLauncher"
    assert config["run_launcher"]["config"]["default_queue"] == "bulk"


@distributed
def test_the_celery_instance_launches_on_celery(instance):
    assert isinstance(instance.run_launcher, WorkerCheckingCeleryRunLauncher)
    assert instance.run_launcher.supports_check_run_worker_health
    assert isinstance(instance.run_coordinator, CeleryQueueRunCoordinator)
    assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 2  # the run queue's limits still apply


@distributed
def test_the_celery_instance_names_each_runs_queue_as_it_is_queued(instance, workspace):
    """Jobs carry no Celery tag (test_limits.py); the Celery instance's run coordinator adds it, before the run waits in the queue."""
    run_ids = {job_type: submit(instance, workspace, f"{job_type}_job", _wait_config(0)) for job_type in JOB_TAGS}
    explicit = submit(instance, workspace, "cleanup_job", _wait_config(0), tags={DAGSTER_CELERY_QUEUE_TAG: "live"})
    try:
        queued = {job_type: instance.get_run_by_id(run_id) for job_type, run_id in run_ids.items()}
        assert {run.status for run in queued.values()} == {dg.DagsterRunStatus.QUEUED}
        assert {job_type: run.tags[DAGSTER_CELERY_QUEUE_TAG] for job_type, run in queued.items()} == {
            job_type: tags[QUEUE_TAG] for job_type, tags in JOB_TAGS.items()}  # the queue each job type declares
        assert instance.get_run_by_id(explicit).tags[DAGSTER_CELERY_QUEUE_TAG] == "live"  # a queue given at launch wins
    finally:
        for run_id in [*run_ids.values(), explicit]:
            instance.run_coordinator.cancel_run(run_id)


@distributed
def test_runs_of_every_job_type_land_on_both_workers_two_at_a_time(instance, workspace, workers):
    run_ids = [submit(instance, workspace, f"{job_type}_job", _wait_config(1.5)) for job_type in JOB_TAGS]
    samples = _drain(instance, workspace, run_ids)
    assert {instance.get_run_by_id(r).status for r in run_ids} == {dg.DagsterRunStatus.SUCCESS}
    where = {instance.get_run_by_id(r).tags[JOB_TAG]: _worker(instance, r) for r in run_ids}
    assert set(where) == set(JOB_TAGS) and set(where.values()) == set(WORKERS), where
    assert max(len(started) for _, started in samples) == 2  # WORKER_MAX_WORKERS (2 here), reached and never passed
    for _, started in samples:  # runs at the same time are on different workers: an idle worker is never passed over
        assert len({_worker(instance, r) for r in started}) == len(started)  # the tag is set before the run starts


@distributed
def test_queue_starts_highest_priority_first_and_one_run_per_job(instance, workspace, workers):
    order = ["cleanup", "support_levels", "recommendations", "market_status", "market_status"]  # lowest priority first
    run_ids = [submit(instance, workspace, f"{job_type}_job", _wait_config(2)) for job_type in order]
    dequeue(workspace)
    launched = [r for r in run_ids if instance.get_run_by_id(r).status != dg.DagsterRunStatus.QUEUED]
    assert sorted(instance.get_run_by_id(r).tags[JOB_TAG] for r in launched) == ["market_status", "recommendations"]
    assert run_ids[3] in launched and run_ids[4] not in launched  # the second market status run waits for the first
    _drain(instance, workspace, run_ids)
    starts = {r: instance.get_run_record_by_id(r).start_time for r in run_ids}
    assert {instance.get_run_by_id(r).status for r in run_ids} == {dg.DagsterRunStatus.SUCCESS}
    # the second market status run follows the first; cleanup, the lowest priority, is launched last (two runs
    # dequeued in one pass start on two workers in whatever order the workers take, so the launch order, RUN_STARTING, is the promise)
    assert starts[run_ids[4]] > starts[run_ids[3]]
    launched_at = {r: instance.all_logs(r, of_type=dg.DagsterEventType.RUN_STARTING)[0].timestamp for r in run_ids}
    assert launched_at[run_ids[0]] == max(launched_at.values())


@distributed
def test_a_run_past_the_run_timeout_stops_itself_on_its_worker_and_is_not_retried(instance, workspace, workers):
    retrying = retries_daemon(workspace)
    run_id = submit(instance, workspace, "support_levels_job", _wait_config(120))
    began = time.monotonic()
    statuses = wait_for(instance, [run_id], FINISHED, timeout=0)
    while statuses[run_id] not in FINISHED:
        assert time.monotonic() - began < RUN_TIMEOUT + 60, statuses
        dequeue(workspace)
        monitor(workspace)
        time.sleep(1)
        statuses = wait_for(instance, [run_id], FINISHED, timeout=0)
    assert statuses[run_id] == dg.DagsterRunStatus.FAILURE
    run = instance.get_run_by_id(run_id)
    assert run.tags[TIMED_OUT_TAG] == "true" and run.tags["dagster/max_retries"] == "0"
    list(retrying.run_iteration(workspace))
    assert instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id})) == []


@distributed
def test_a_run_allocating_past_the_memory_limit_fails_on_its_worker_and_one_under_it_succeeds(instance, workspace, workers, settings):
    over = submit(instance, workspace, "allocating_job", {"ops": {"allocate": {"config": {"megabytes": settings.run_memory_mb + 256}}}})
    _drain(instance, workspace, [over])
    assert instance.get_run_by_id(over).status == dg.DagsterRunStatus.FAILURE
    failures = [e for e in instance.all_logs(over) if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures and "MemoryError" in str(failures[0].dagster_event.step_failure_data.error)

    under = submit(instance, workspace, "allocating_job", {"ops": {"allocate": {"config": {"megabytes": 512}}}})
    _drain(instance, workspace, [under])
    assert instance.get_run_by_id(under).status == dg.DagsterRunStatus.SUCCESS


@distributed
def test_a_run_whose_process_dies_is_failed_by_monitoring_and_retried(instance, workspace, workers):
    """The run's process exits as if OOM-killed: Celery records the task's failure, monitoring fails the run."""
    retrying = retries_daemon(workspace)
    run_id = submit(instance, workspace, "crashing_job", {})
    deadline = time.monotonic() + 90
    while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE:
        assert time.monotonic() < deadline, f"run still {instance.get_run_by_id(run_id).status} after its process died"
        dequeue(workspace)
        monitor(workspace)
        time.sleep(1)
    list(retrying.run_iteration(workspace))
    retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert len(retries) == 1 and retries[0].tags[JOB_TAG] == "market_status"
    instance.delete_run(retries[0].run_id)  # it would crash again: not this test's subject


STORING_SECONDS = 30  # the storing runs' step: the broker restarts early in it, and monitoring checks the runs for longer than
# the launcher takes a silent worker to be lost


@distributed
def test_a_broker_restarted_empty_under_two_runs_runs_each_partition_once_and_no_run_turns_from_failure_to_success(
    instance, workspace, workers, broker, settings
):
    """The broker and result backend SIGKILLed and started empty while two runs execute, one on each worker.

    The restarted backend has forgotten both tasks (their state reads PENDING): the runs must still be taken
    for alive, so neither is failed, retried and executed a second time, nor flips from FAILURE to SUCCESS.
    """
    retrying = retries_daemon(workspace)
    case = {"dantaro_test/case": f"broker-restart-{RUN_TAG}"}  # retries carry their parent's tags
    config = {"ops": {"stored_hour": {"config": {"seconds": STORING_SECONDS}}}}
    partitions = {"storing_market_status_job": "2025-09-01-00:00", "storing_recommendations_job": "2025-09-01-01:00"}
    originals = {submit(instance, workspace, job, config, tags={**case, "dagster/partition": key}): key for job, key in partitions.items()}
    deadline = time.monotonic() + 90
    while not all(instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START) for run_id in originals):
        assert time.monotonic() < deadline, {run_id: instance.get_run_by_id(run_id).status for run_id in originals}
        dequeue(workspace)
        time.sleep(0.3)
    assert {_worker(instance, run_id) for run_id in originals} == set(WORKERS)

    broker.kill()
    monitor(workspace)  # while the broker is down: the task states cannot be read, nothing is decided
    time.sleep(2)
    broker.start()  # empty: no persistence, as a Redis without AOF comes back
    tasks = [instance.run_launcher.celery.AsyncResult(instance.get_run_by_id(run_id).tags[DAGSTER_CELERY_TASK_ID_TAG]) for run_id in originals]
    assert [task.state for task in tasks] == ["PENDING", "PENDING"]  # the restarted backend has forgotten both running tasks

    in_progress = []
    deadline = time.monotonic() + 180
    while True:
        monitor(workspace)
        list(retrying.run_iteration(workspace))
        dequeue(workspace)
        runs = instance.get_runs(filters=dg.RunsFilter(tags=case))
        in_progress.append(sum(run.status in (dg.DagsterRunStatus.STARTING, dg.DagsterRunStatus.STARTED) for run in runs))
        if all(run.status in FINISHED for run in runs):
            break
        assert time.monotonic() < deadline, {run.run_id: run.status for run in runs}
        time.sleep(1)
    list(retrying.run_iteration(workspace))

    ends = {dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.RUN_SUCCESS}
    runs = instance.get_runs(filters=dg.RunsFilter(tags=case))
    summary = {
        run.run_id: {
            "partition": run.tags["dagster/partition"],
            "retry_of": run.parent_run_id,
            "ends": [event.dagster_event.event_type.value for event in instance.all_logs(run.run_id, of_type=ends)],
            "step_starts": len(instance.all_logs(run.run_id, of_type=dg.DagsterEventType.STEP_START)),
            "status": run.status.value,
        }
        for run in runs
    }
    assert all(len(run["ends"]) == 1 for run in summary.values()), summary  # never FAILURE, then SUCCESS
    assert set(summary) == set(originals), summary  # no retry: neither run was failed
    assert {run["status"] for run in summary.values()} == {"SUCCESS"}, summary
    step_starts = {key: sum(run["step_starts"] for run in summary.values() if run["partition"] == key) for key in partitions.values()}
    assert step_starts == {key: 1 for key in partitions.values()}, summary
    for key in partitions.values():
        materialisations = instance.fetch_materializations(dg.AssetRecordsFilter(asset_key=dg.AssetKey("stored_hour"), asset_partitions=[key]), limit=10)
        assert len(materialisations.records) == 1, key
    assert max(in_progress) <= 2  # never more runs starting or started than the two workers hold
    with psycopg.connect(settings.database_url) as conn:
        stored = conn.execute(
            "WITH rows AS (SELECT to_char(hour AT TIME ZONE 'UTC', 'YYYY-MM-DD-HH24:MI') AS partition, run_id"
            f' FROM "{settings.db_schema}".stored_hour) SELECT partition, run_id, count(*) FROM rows WHERE partition = ANY(%s) GROUP BY 1, 2',
            (list(partitions.values()),),
        ).fetchall()
    assert sorted(stored) == sorted((key, run_id, STORED_ROWS) for run_id, key in originals.items())  # one computation's rows

    after = submit(instance, workspace, "market_status_job", _wait_config(0))  # the workers take runs from the restarted broker
    _drain(instance, workspace, [after])
    assert instance.get_run_by_id(after).status == dg.DagsterRunStatus.SUCCESS


@distributed
def test_a_killed_worker_has_its_run_relaunched_on_the_other(instance, workspace, workers):
    """Last in the module: it kills one of the two workers."""
    retrying = retries_daemon(workspace)
    run_id = submit(instance, workspace, "market_status_job", _wait_config(8))
    deadline = time.monotonic() + 60
    while WORKER_TAG not in instance.get_run_by_id(run_id).tags or instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.STARTED:
        assert time.monotonic() < deadline, instance.get_run_by_id(run_id).status
        dequeue(workspace)
        time.sleep(0.3)
    victim = _worker(instance, run_id)
    os.killpg(workers[victim].pid, signal.SIGKILL)  # the worker and its run process, as when the host is lost
    workers[victim].wait(timeout=10)

    detected = time.monotonic()
    while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE:
        assert time.monotonic() - detected < 60, "the dead worker's run was not detected"
        monitor(workspace)
        time.sleep(1)
    list(retrying.run_iteration(workspace))
    retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert len(retries) == 1
    _drain(instance, workspace, [retries[0].run_id])
    assert instance.get_run_by_id(retries[0].run_id).status == dg.DagsterRunStatus.SUCCESS
    survivor = next(name for name in WORKERS if name != victim)
    assert _worker(instance, retries[0].run_id) == survivor
