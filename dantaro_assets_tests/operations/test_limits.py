"""The worker's limits on a real Dagster instance: run queue order and caps, run timeout, memory cap.

Runs are launched by the real DefaultRunLauncher into run worker processes; the daemons' iterations
are called directly so each step of the queue can be observed.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import psycopg
import pytest

from dantaro_assets.market_status.assets import MARKET_STATUS
from dantaro_assets.operations.jobs import run_tags
from dantaro_assets.operations.limits import (
    JOB_TAG,
    MONITORING_GRACE_SECONDS,
    QUEUE_TAG,
    JobType,
    instance_limit_problems,
)
from dantaro_assets.processes.instance import write_instance_config
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.operations.daemon import (
    FINISHED,
    PROJECT_DIR,
    EventLogConsumerDaemon,
    WorkspaceProcessContext,
    daemon_workspace,
    dagster_instance_config,
    dequeue,
    monitor,
    retries_daemon,
    submit,
    wait_for,
)

pytestmark = pytest.mark.spread  # each test has an instance and workspace of its own


@pytest.fixture
def workspace(instance: dg.DagsterInstance) -> Iterator[WorkspaceProcessContext]:
    with daemon_workspace(instance, "dantaro_assets_tests.operations.limits_defs") as context:
        yield context


def _wait_config(seconds: float) -> dict:
    return {"ops": {"wait": {"config": {"seconds": seconds}}}}


def test_the_instance_config_matches_the_settings(instance: dg.DagsterInstance):
    assert instance_limit_problems(instance, load_settings()) == []
    assert instance.run_retries_max_retries == 3


def test_queue_starts_three_runs_highest_priority_first_and_one_per_job(instance, workspace):
    # submitted lowest priority first, so FIFO alone would get the order wrong
    order = ["cleanup", "support_levels", "recommendations", "market_status", "market_status", "daily_candles"]
    run_ids = [submit(instance, workspace, f"{job_type}_job", _wait_config(3)) for job_type in order]
    assert {instance.get_run_by_id(r).status for r in run_ids} == {dg.DagsterRunStatus.QUEUED}

    dequeue(workspace)
    launched = [r for r in run_ids if instance.get_run_by_id(r).status != dg.DagsterRunStatus.QUEUED]
    launched_types = sorted(instance.get_run_by_id(r).tags[JOB_TAG] for r in launched)
    # 3 at once: market status, recommendations, support levels; the second market status run waits
    # for the first (one per job), daily candles and cleanup wait for a free slot
    assert launched_types == ["market_status", "recommendations", "support_levels"]
    assert run_ids[3] in launched and run_ids[4] not in launched

    wait_for(instance, launched, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})
    assert {instance.get_run_by_id(r).status for r in launched} == {dg.DagsterRunStatus.SUCCESS}
    dequeue(workspace)
    # the next free slots go to the second market status run and daily candles; cleanup comes last
    second = {instance.get_run_by_id(r).tags[JOB_TAG] for r in run_ids if r not in launched and instance.get_run_by_id(r).status != dg.DagsterRunStatus.QUEUED}
    assert second == {"market_status", "daily_candles", "cleanup"}  # 3 free slots, 3 waiting runs
    wait_for(instance, run_ids, {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})


def test_run_monitoring_fails_a_run_over_its_max_runtime(instance, workspace):
    run_id = submit(instance, workspace, "support_levels_job", _wait_config(120), tags={"dagster/max_runtime": "2"})
    dequeue(workspace)
    assert wait_for(instance, [run_id], {dg.DagsterRunStatus.STARTED})[run_id] == dg.DagsterRunStatus.STARTED
    time.sleep(2.5)
    monitor(workspace)
    status = wait_for(instance, [run_id], {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}, timeout=60)[run_id]
    # Monitoring terminates the worker, then reports the failure; a worker that reports its cancellation
    # first leaves the run CANCELED (dagster/_daemon/monitoring/run_monitoring.py): stopped either way.
    assert status in {dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}
    messages = [event.message for event in instance.all_logs(run_id) if event.message]
    assert any("maximum runtime of 2 seconds" in message for message in messages)


def test_a_run_allocating_past_the_memory_limit_fails_and_one_under_it_succeeds(instance, workspace, settings):
    over = submit(instance, workspace, "allocating_job", {"ops": {"allocate": {"config": {"megabytes": settings.run_memory_mb + 256}}}})
    dequeue(workspace)
    assert wait_for(instance, [over], {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})[over] == dg.DagsterRunStatus.FAILURE
    failures = [e for e in instance.all_logs(over) if e.dagster_event and e.dagster_event.event_type == dg.DagsterEventType.STEP_FAILURE]
    assert failures and "MemoryError" in str(failures[0].dagster_event.step_failure_data.error)

    under = submit(instance, workspace, "allocating_job", {"ops": {"allocate": {"config": {"megabytes": 512}}}})
    dequeue(workspace)
    assert wait_for(instance, [under], {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE})[under] == dg.DagsterRunStatus.SUCCESS


def test_job_tags_carry_the_settings_timeout_and_no_celery_queue():
    tags = run_tags(MARKET_STATUS.job_type, load_settings({}))
    # the run stops itself at DANTARO_RUN_TIMEOUT (300 s); run monitoring is the backstop after a grace;
    # the Celery queue is added by the Celery instance's run coordinator only (test_celery_runs.py), from dantaro/queue
    assert tags == {
        "dagster/priority": "40",
        JOB_TAG: "market_status",
        QUEUE_TAG: "live",
        "dagster/max_runtime": str(300 + MONITORING_GRACE_SECONDS),
    }


def test_a_job_type_names_a_queue_the_celery_instance_has():
    assert JobType("backfill", priority=1).tags()[QUEUE_TAG] == "bulk"
    with pytest.raises(ValueError, match=r"job type fast: queue 'express' is not one of \['live', 'bulk'\]"):
        JobType("fast", priority=50, queue="express")


def test_no_job_schedule_or_sensor_of_the_definitions_tags_runs_for_celery():
    """What `dantaro dev` runs: the jobs' tags (on every run of the job) and the run requests' (schedules, sensors)."""
    from dantaro_assets.definitions import defs

    jobs = defs.resolve_all_job_defs()
    tag_sets = {job.name: job.run_tags for job in jobs}
    job_types = {JobType(tags[JOB_TAG], int(tags["dagster/priority"]), tags[QUEUE_TAG]) for tags in tag_sets.values() if JOB_TAG in tags}
    tag_sets |= {f"{job_type.name} run request": job_type.tags(finalise=final) for job_type in job_types for final in (False, True)}
    assert "market_status_job" in tag_sets
    assert {name: tags for name, tags in tag_sets.items() if any(tag.startswith("dagster-celery/") for tag in tags)} == {}


def test_instance_config_follows_worker_max_workers_and_mismatches_are_reported(tmp_path: Path):
    five = load_settings({"WORKER_MAX_WORKERS": "5"})
    write_instance_config(tmp_path, five)
    with dg.DagsterInstance.from_config(str(tmp_path)) as instance:
        assert instance.get_concurrency_config().run_queue_config.max_concurrent_runs == 5
        assert instance_limit_problems(instance, five) == []
        assert instance_limit_problems(instance, load_settings({})) == ["run queue allows 5 runs at once, WORKER_MAX_WORKERS=3"]


def test_the_production_config_carries_the_same_limits(tmp_path: Path):
    write_instance_config(tmp_path, load_settings({}), template=PROJECT_DIR / "deploy" / "dagster.prod.yaml")

    config, _ = dagster_instance_config(str(tmp_path))
    local, _ = dagster_instance_config(str(_local_home(tmp_path)))
    for section in ("concurrency", "run_monitoring", "run_retries", "run_coordinator", "schedules", "sensors"):
        assert config[section] == local[section], section
    assert "postgres" in config["storage"]


def _local_home(tmp_path: Path) -> Path:
    home = tmp_path / "local"
    write_instance_config(home, load_settings())
    return home


def test_a_run_whose_worker_dies_is_failed_by_monitoring_and_retried(instance, workspace):
    """run_retries re-launch a run whose worker crashed (here it exits as if OOM-killed), up to 3 times."""
    # the daemon that launches retries runs only when the instance enables run retries
    assert EventLogConsumerDaemon.daemon_type() in instance.get_required_daemon_types()
    retrying = retries_daemon(workspace)
    run_id = submit(instance, workspace, "crashing_job", {})
    dequeue(workspace)
    deadline = time.monotonic() + 90
    while instance.get_run_by_id(run_id).status != dg.DagsterRunStatus.FAILURE:
        assert time.monotonic() < deadline, f"run still {instance.get_run_by_id(run_id).status} after its worker died"
        monitor(workspace)
        time.sleep(1)

    list(retrying.run_iteration(workspace))

    retries = instance.get_runs(filters=dg.RunsFilter(tags={"dagster/parent_run_id": run_id}))
    assert len(retries) == 1
    assert retries[0].tags["dagster/retry_number"] == "1"
    assert retries[0].tags[JOB_TAG] == "market_status"  # the retry keeps its priority and one-at-a-time key
    assert instance.run_retries_max_retries == 3


def test_a_run_failed_by_monitoring_while_it_runs_stops_before_it_stores_and_stays_failed(instance, workspace, settings):
    """Run monitoring fails a run whose worker it takes for lost (here: reported from outside, as monitoring does,
    while the run's step computes); the run worker, alive after all, stores nothing and does not turn the run SUCCESS."""
    partition = "2025-09-01-05:00"
    hour_rows = f"SELECT count(*) FROM \"{settings.db_schema}\".stored_hour WHERE hour = '2025-09-01 05:00+00'"
    run_id = submit(instance, workspace, "storing_market_status_job", {"ops": {"stored_hour": {"config": {"seconds": 3}}}},
                    tags={"dagster/partition": partition})  # fmt: skip
    dequeue(workspace)
    deadline = time.monotonic() + 60
    while not instance.all_logs(run_id, of_type=dg.DagsterEventType.STEP_START):
        assert time.monotonic() < deadline, instance.get_run_by_id(run_id).status
        time.sleep(0.2)
    with psycopg.connect(settings.database_url) as conn:
        stored_before = conn.execute(hour_rows).fetchone()[0] if _table_exists(conn, settings.db_schema, "stored_hour") else 0
    instance.report_run_failed(instance.get_run_by_id(run_id), "Detected run worker status UNKNOWN: 'Unknown task status: PENDING'.")

    ends = {dg.DagsterEventType.RUN_SUCCESS, dg.DagsterEventType.ENGINE_EVENT}
    stopped = "Execution was interrupted for a run that was already in a failure state."
    while not any(e.message == stopped or e.dagster_event.event_type == dg.DagsterEventType.RUN_SUCCESS for e in instance.all_logs(run_id, of_type=ends)):
        assert time.monotonic() < deadline, "the run worker neither stopped nor ended"
        time.sleep(0.2)
    assert wait_for(instance, [run_id], set(), timeout=3)[run_id] == dg.DagsterRunStatus.FAILURE  # still, a few seconds on
    events = [e.dagster_event.event_type for e in instance.all_logs(run_id) if e.dagster_event]
    assert events.count(dg.DagsterEventType.RUN_FAILURE) == 1 and dg.DagsterEventType.RUN_SUCCESS not in events
    assert dg.DagsterEventType.HANDLED_OUTPUT not in events and dg.DagsterEventType.ASSET_MATERIALIZATION not in events
    messages = [e.message for e in instance.all_logs(run_id, of_type=dg.DagsterEventType.ENGINE_EVENT)]
    assert any(m.startswith("Run is FAILURE") and "before step stored_hour stores its output" in m for m in messages), messages
    with psycopg.connect(settings.database_url) as conn:
        stored_after = conn.execute(hour_rows).fetchone()[0] if _table_exists(conn, settings.db_schema, "stored_hour") else 0
    assert stored_before == stored_after == 0


def _table_exists(conn, schema: str, table: str) -> bool:
    return conn.execute("SELECT to_regclass(%s) IS NOT NULL", (f'"{schema}".{table}',)).fetchone()[0]


def _pool_until(instance: dg.DagsterInstance, holds: set[str], waits: set[str] = frozenset(), timeout: float = 60) -> tuple[set, set]:
    """Wait until the runs ``holds`` hold the upbit_api slots and ``waits`` wait for one; returns (holders, waiting)."""
    deadline = time.monotonic() + timeout
    while True:
        info = instance.event_log_storage.get_concurrency_info("upbit_api")
        state = (info.active_run_ids, info.pending_run_ids - info.active_run_ids)
        if state == (holds, set(waits)) or time.monotonic() > deadline:
            return state
        time.sleep(0.5)


@pytest.mark.slow(minutes=1)
def test_live_fetching_runs_pass_the_history_backfill_and_lower_priority_runs(instance, workspace):
    history = submit(instance, workspace, "history_job", _wait_config(60))
    dequeue(workspace)
    assert _pool_until(instance, {history}) == ({history}, set())

    daily = submit(instance, workspace, "daily_candles_job", _wait_config(60))
    dequeue(workspace)
    assert _pool_until(instance, {history, daily}) == ({history, daily}, set())

    # the history's two lanes hold two of the three upbit_api slots: a live run fetches beside them, never behind them
    live = submit(instance, workspace, "market_status_job", _wait_config(1))
    dequeue(workspace)
    assert wait_for(instance, [live], FINISHED, timeout=45)[live] == dg.DagsterRunStatus.SUCCESS
    assert {instance.get_run_by_id(run_id).status for run_id in (history, daily)} == {dg.DagsterRunStatus.STARTED}

    # a live fetch takes the third slot and the last run slot; then the lowest priority waits longest
    held = submit(instance, workspace, "recommendations_job", _wait_config(60))
    dequeue(workspace)
    assert _pool_until(instance, {history, daily, held}) == ({history, daily, held}, set())
    waiting = {
        job_type: submit(instance, workspace, f"{job_type}_job", _wait_config(1))
        for job_type in ("cleanup", "recommendation_outcomes", "market_status")
    }
    dequeue(workspace)
    assert {instance.get_run_by_id(run_id).status for run_id in waiting.values()} == {dg.DagsterRunStatus.QUEUED}  # no run slot
    instance.run_launcher.terminate(history)
    deadline = time.monotonic() + 60
    while instance.get_run_by_id(waiting["market_status"]).status == dg.DagsterRunStatus.QUEUED:
        assert time.monotonic() < deadline, "the freed run slot went to no one"
        dequeue(workspace)
        time.sleep(0.5)
    statuses = {job_type: instance.get_run_by_id(run_id).status for job_type, run_id in waiting.items()}
    assert statuses["recommendation_outcomes"] == statuses["cleanup"] == dg.DagsterRunStatus.QUEUED  # the live run went first

    for run_id in (daily, held):
        instance.run_launcher.terminate(run_id)
    live = waiting["market_status"]
    assert wait_for(instance, [live], FINISHED, timeout=60)[live] == dg.DagsterRunStatus.SUCCESS
    deadline = time.monotonic() + 60
    while dg.DagsterRunStatus.QUEUED in wait_for(instance, list(waiting.values()), FINISHED, timeout=0).values():
        assert time.monotonic() < deadline, "runs left in the queue"
        dequeue(workspace)
        time.sleep(1)
    assert set(wait_for(instance, list(waiting.values()), FINISHED).values()) == {dg.DagsterRunStatus.SUCCESS}
