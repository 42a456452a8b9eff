"""The ``dantaro`` command as a user runs it: from any folder, one state folder, a clean stop."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import pytest

from dantaro_assets.cli import processes_naming, use_instance
from dantaro_assets.operations.dev_server import IN_FLIGHT, QUEUED, free_port
from dantaro_assets.settings import load_settings

PROJECT_DIR = Path(__file__).resolve().parents[1]


def _env(state: Path, **extra: str) -> dict[str, str]:
    """The environment of a new user: a state folder and nothing else Dagster-specific; this worktree's code."""
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "UPBIT_BASE_URL")}
    return {**env, "PYTHONPATH": str(PROJECT_DIR), "DANTARO_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1", **extra}


def test_every_subcommand_finds_the_state_folders_instance_from_any_folder(tmp_path, monkeypatch):
    for variable in ("DAGSTER_HOME", "DANTARO_STATE_DIR"):  # restored after the test
        monkeypatch.setenv(variable, "unset")
        monkeypatch.delenv(variable)
    monkeypatch.chdir(tmp_path)
    home = use_instance(load_settings({"DANTARO_STATE_DIR": str(tmp_path / "state")}))
    assert home == tmp_path / "state" / "dagster_home" and (home / "dagster.yaml").exists()
    with dg.DagsterInstance.get() as instance:  # what `dantaro api` opens
        assert Path(instance.root_directory) == home
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "theirs"))
    assert use_instance(load_settings()) == tmp_path / "theirs"
    assert not (tmp_path / "theirs" / "dagster.yaml").exists()  # an operator's DAGSTER_HOME is theirs


@pytest.mark.slow
def test_api_started_elsewhere_serves_the_runs_of_the_state_folder(tmp_path):
    state = tmp_path / "state"
    with dg.DagsterInstance.from_config(str(use_instance(load_settings({"DANTARO_STATE_DIR": str(state)})))) as instance:
        run_id = str(uuid.uuid4())
        instance.add_run(dg.DagsterRun(job_name="market_status_job", run_id=run_id, status=dg.DagsterRunStatus.SUCCESS,
                                       tags={"dantaro/job": "market_status"}))
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "api", "--port", str(port)], cwd=tmp_path, env=_env(state),
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                status = httpx.get(f"http://127.0.0.1:{port}/worker/status", timeout=30).json()
                break
            except httpx.HTTPError:
                assert api.poll() is None, api.stdout.read()
                assert time.monotonic() < deadline, "dantaro api did not answer in 120 s"
                time.sleep(1)
    finally:
        api.terminate()
        api.wait(timeout=30)
    assert run_id in [job["job_id"] for job in status["last_jobs"]]


def _open_runs(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [f"{r.job_name} {r.status.value}" for r in instance.get_runs(dg.RunsFilter(statuses=[*QUEUED, *IN_FLIGHT]))]


@pytest.fixture
def fresh_state() -> Iterator[Path]:
    """A state folder outside pytest's base temp folder, which concurrent pytest sessions keep at mode 700:
    as root the embedded Postgres runs as the user pgserver, who must reach its data folder."""
    state = Path(tempfile.mkdtemp(prefix="dantaro-cli-test-"))
    yield state
    shutil.rmtree(state, ignore_errors=True)


@pytest.mark.slow
def test_sigterm_stops_dev_within_10_s_with_no_run_left_open_and_stop_leaves_no_process(tmp_path, fresh_state):
    """`dantaro dev --offline` on a fresh state folder (embedded Postgres and Redis), stopped while runs are in flight."""
    state = fresh_state
    env = _env(state, DATABASE_URL="", REDIS_URL="")
    dev = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "dev", "--offline", "--markets", "20", "--port", str(free_port())],
                           cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    home = state / "dagster_home"
    try:
        deadline = time.monotonic() + 240
        # dev.json is written once dantaro dev has created the instance's storage (opening it earlier would race)
        while not ((state / "dev.json").exists() and any(" STARTED" in run for run in _open_runs(home))):
            assert dev.poll() is None, dev.stdout.read()
            assert time.monotonic() < deadline, "no run started within 240 s"
            time.sleep(1)
        sent = time.monotonic()
        dev.send_signal(signal.SIGTERM)
        output, _ = dev.communicate(timeout=60)
        took = time.monotonic() - sent
    finally:
        if dev.poll() is None:
            dev.kill()
        stop = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "stop"], check=False, cwd=tmp_path, env=env, capture_output=True, text=True,
            timeout=120)
    assert dev.returncode == 0 and took < 10, f"exit {dev.returncode} after {took:.1f} s:\n{output[-3000:]}"
    assert "Traceback" not in output and "Stack Trace" not in output, output[-3000:]
    assert _open_runs(home) == []
    assert "Postgres, Redis" in stop.stdout and stop.returncode == 0, stop.stdout + stop.stderr[-4000:]
    assert processes_naming(state) == []  # `dantaro stop` exits 1 naming any process left
