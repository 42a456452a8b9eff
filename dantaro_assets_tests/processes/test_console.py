"""The console of `dantaro dev`: service levels, run start/end lines from the instance, errors without stack frames."""

from __future__ import annotations

import time
import warnings

import dagster as dg

from dantaro_assets.definitions import defs
from dantaro_assets.processes.console import (
    RunLines,
    StackTraceFilter,
    service_log_level,
    stop_noise,
)
from dantaro_assets.processes.instance import render_instance_config
from dantaro_assets.settings import load_settings


def test_services_are_a_level_quieter_at_info_and_the_runs_log_at_the_settings_level():
    assert [service_log_level(level) for level in ("DEBUG", "INFO", "WARNING", "ERROR")] == ["debug", "warning", "warning", "error"]
    assert render_instance_config(load_settings({"WORKER_LOG_LEVEL": "warning"}))["python_logs"] == {"python_log_level": "WARNING"}


def test_stack_frames_are_dropped_and_the_error_lines_kept():
    console = """2026-12-03 07:47:10 +0000 - dagster - ERROR - candles_1m_job - STEP_FAILURE - Execution of step "candles_1m" failed.

dantaro_assets.lib.upbit.client.FetchStopped: the run is being stopped

Stack Trace:
  File "/x/execute_plan.py", line 243, in dagster_event_sequence_for_step
    yield from check.generator(step_events)
                                ^^^^^^^^^^^

2026-12-03 07:47:10 +0000 - dagster - ERROR - candles_1m_job - RUN_CANCELED - Run was canceled.
Traceback (most recent call last):
  File "<stdin>", line 1, in <module>
KeyboardInterrupt
""".splitlines()
    assert list(StackTraceFilter().filter(console)) == [
        console[0], "", "dantaro_assets.lib.upbit.client.FetchStopped: the run is being stopped", "",
        "2026-12-03 07:47:10 +0000 - dagster - ERROR - candles_1m_job - RUN_CANCELED - Run was canceled.",
        "KeyboardInterrupt",
    ]


def test_one_line_when_a_run_starts_and_one_when_it_ends(instance: dg.DagsterInstance):
    lines = RunLines(instance)
    run = instance.create_run_for_job(defs.resolve_job_def("cleanup_job"))
    assert lines.poll() == []  # created, not started
    instance.handle_new_event(_event(run, dg.DagsterEventType.RUN_START))
    instance.handle_new_event(_event(run, dg.DagsterEventType.RUN_SUCCESS))
    (started, ended) = lines.poll()
    assert started.endswith(f"run cleanup_job ({run.run_id[:8]}) started")
    assert f"run cleanup_job ({run.run_id[:8]}) SUCCESS in " in ended
    assert lines.poll() == []


def _event(run: dg.DagsterRun, event_type: dg.DagsterEventType) -> dg.EventLogEntry:
    return dg.EventLogEntry(
        error_info=None, level="DEBUG", user_message="", run_id=run.run_id, timestamp=time.time(),
        dagster_event=dg.DagsterEvent(event_type.value, job_name=run.job_name),
    )


def test_every_job_runs_its_assets_under_one_backfill_policy():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # Dagster warns when a job's assets carry different policies
        resolved = [defs.resolve_job_def(job.name) for job in defs.jobs]
    assert len(resolved) == 7


def test_a_sensor_tick_caught_by_the_stop_is_the_stop_s_noise_and_other_errors_are_not():
    """The lines a stop printed when it landed in threaded sensor ticks (bench/first_start.py's console, 2026-12-07)."""
    caught = [
        "\x1b[32m2026-12-07 00:24:50 +0000\x1b[0m - dagster.daemon.SensorDaemon - \x1b[34mERROR\x1b[0m - \x1b[31mSensor tick caught an error\x1b[0m",
        "\x1b[32m2026-12-07 00:24:50 +0000\x1b[0m - dagster.daemon.SensorDaemon - \x1b[34mERROR\x1b[0m - "
        "\x1b[31mSensor daemon caught an error for sensor market_status_start_sensor\x1b[0m",
        "dagster._core.errors.DagsterCodeLocationNotFoundError: Location dantaro_assets.definitions does not exist in workspace",
    ]
    assert all(stop_noise(line) for line in caught)
    kept = [
        "2026-12-07 00:24:45 +0000 - dagster - ERROR - market_status_job - 9f - candles_1m - STEP_FAILURE - Execution of step failed.",
        "dantaro_assets.lib.checks.BlockingCheckFailed: schema check failed, nothing written (stored rows unchanged)",
        "2026-12-07 00:24:50 +0000 - dagster.daemon.SchedulerDaemon - ERROR - Scheduler caught an error",
    ]
    assert not any(stop_noise(line) for line in kept)
