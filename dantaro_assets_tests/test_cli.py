"""The ``dantaro`` command as a user runs it: from any folder, one state folder, a clean stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import dagster as dg
import httpx
import psutil
import pytest

from dantaro_assets.lib.embedded import stop_embedded
from dantaro_assets.processes.dagster_dev import IN_FLIGHT, QUEUED
from dantaro_assets.processes.instance import use_instance
from dantaro_assets.processes.stop import processes_naming
from dantaro_assets.resources import process_storage
from dantaro_assets.settings import load_settings
from dantaro_assets_tests.harness import free_port

pytestmark = pytest.mark.spread  # each test has its own state folder and processes

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


def _get(url: str, process: subprocess.Popen, timeout: float = 120) -> httpx.Response:
    """The first answer of a server still starting (connection refused until it listens)."""
    deadline = time.monotonic() + timeout
    with httpx.Client(timeout=30) as client:
        while True:
            try:
                return client.get(url)
            except httpx.TransportError:
                assert process.poll() is None, process.stdout.read()
                assert time.monotonic() < deadline, f"no answer from {url} in {timeout:.0f} s"
                time.sleep(0.5)


@pytest.mark.slow
def test_api_after_stop_answers_503_and_never_starts_the_embedded_servers(tmp_path, fresh_state):
    """`dantaro api` outliving `dantaro dev`: it reads the servers that run and never starts one that would outlive it."""
    state = fresh_state
    env = _env(state, DATABASE_URL="", REDIS_URL="")
    port = free_port()
    api = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "api", "--port", str(port)], cwd=tmp_path, env=env,
                           stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    latest = f"http://127.0.0.1:{port}/market-status/latest"
    try:
        before = _get(latest, api)
        assert processes_naming(state) == []  # no Postgres, no Redis: the request started nothing
        process_storage(load_settings(env)).urls()  # as `dantaro dev` starts them
        during = httpx.get(latest, timeout=30)
        stop = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "stop"], check=False, cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=120)
        after = httpx.get(latest, timeout=30)
        status = httpx.get(f"http://127.0.0.1:{port}/worker/status", timeout=30).json()
    finally:
        api.terminate()
        api.wait(timeout=30)
        subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "stop"], check=False, cwd=tmp_path, env=env, capture_output=True, timeout=120)
    assert before.status_code == 503 and before.json() == {"detail": "snapshot storage is unavailable; try again later"}
    assert during.status_code in (404, 503) and "Postgres, Redis" in stop.stdout, (during.text, stop.stdout)
    assert after.status_code == 503
    assert processes_naming(state) == [] and stop.returncode == 0, stop.stdout + stop.stderr
    assert status["stream"]["state"] == "unknown"  # Redis is down: the stream's health cannot be read
    assert not (state / "dev.json").exists()


def _open_runs(home: Path) -> list[str]:
    with dg.DagsterInstance.from_config(str(home)) as instance:
        return [f"{r.job_name} {r.status.value}" for r in instance.get_runs(dg.RunsFilter(statuses=[*QUEUED, *IN_FLIGHT]))]


@pytest.mark.slow
def test_candles_delete_dry_run_on_the_default_embedded_setup(tmp_path, fresh_state):
    """No DATABASE_URL: the command finds the state folder's embedded Postgres as every other process does."""
    command = [sys.executable, "-m", "dantaro_assets.cli", "candles", "delete", "--asset", "candles_1m",
               "--start", "2025-09-15T10:00Z", "--end", "2025-09-15T11:00Z", "--market", "KRW-BTC"]
    try:
        done = subprocess.run(command, check=False, cwd=tmp_path, env=_env(fresh_state, DATABASE_URL="", REDIS_URL=""), capture_output=True,
                              text=True, timeout=180)
    finally:
        stop_embedded(fresh_state)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "dry run: would delete 0 row(s) of " in done.stdout and (fresh_state / "postgres" / "PG_VERSION").exists()


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


def _stream_materialisations(home: Path) -> list[dict]:
    """Metadata of the runless candles_1m materialisations `dantaro stream` recorded (source: stream)."""
    with dg.DagsterInstance.from_config(str(home)) as instance:
        records = instance.fetch_materializations(dg.AssetKey("candles_1m"), limit=500).records
    found = []
    for record in records:
        metadata = record.asset_materialization.metadata
        if record.run_id == "" and getattr(metadata.get("source"), "value", None) == "stream":
            found.append({"partition": record.asset_materialization.partition, **{k: v.value for k, v in metadata.items()}})
    return found


def _dev_json(state: Path) -> dict:
    try:
        return json.loads((state / "dev.json").read_text())
    except (OSError, ValueError):
        return {}


@pytest.mark.slow(minutes=1)
def test_dev_runs_the_stream_restarts_it_after_a_crash_and_stop_leaves_none_after_dev_was_killed(tmp_path, fresh_state):
    """`dantaro dev --offline`: the stream writes minutes from the replay's WebSocket; a killed stream comes back; a killed
    `dantaro dev` leaves its stream and its replay server running, which `dantaro stop` stops."""
    state = fresh_state
    env = _env(state, DATABASE_URL="", REDIS_URL="", DANTARO_STREAM_REPORT_SECONDS="2",
               DANTARO_STREAM_GRACE_SECONDS="1")  # a minute is stored 1 s after it ends, not 5
    log = tmp_path / "dev.log"
    with log.open("w") as out:
        dev = subprocess.Popen([sys.executable, "-m", "dantaro_assets.cli", "dev", "--offline", "--markets", "20", "--port", str(free_port())],
                               cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT, text=True)
    home = state / "dagster_home"
    try:
        deadline = time.monotonic() + 420  # the history sensor stores upbit_markets, then a minute closes
        while not ((state / "dev.json").exists() and _stream_materialisations(home)):
            assert dev.poll() is None, log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"the stream recorded no minute within 420 s:\n{log.read_text()[-3000:]}"
            time.sleep(2)
        [written, *_] = _stream_materialisations(home)
        assert written["rows_written"] > 0 and written["markets"] == 20, written
        first = _dev_json(state)["stream_pid"]
        assert str(state) in " ".join(psutil.Process(first).cmdline())
        os.kill(first, signal.SIGKILL)  # a crash
        deadline = time.monotonic() + 60
        while _dev_json(state).get("stream_pid", first) == first:
            assert time.monotonic() < deadline, f"the stream was not restarted within 60 s:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        assert f"the stream (pid {first}) exited with -9" in log.read_text()
        second = _dev_json(state)["stream_pid"]
        assert psutil.Process(second).is_running()
        [replay] = [child for child in psutil.Process(dev.pid).children() if "dantaro_replay" in " ".join(child.cmdline())]
        dev.kill()
        dev.wait(timeout=30)
        assert psutil.Process(second).is_running() and replay.is_running()
    finally:
        if dev.poll() is None:
            dev.kill()
        stop = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "stop"], check=False, cwd=tmp_path, env=env, capture_output=True,
                              text=True, timeout=120)
    assert "Traceback" not in log.read_text(), log.read_text()[-3000:]
    postgres_log = (state / "postgres" / "log").read_text()[-2000:] if (state / "postgres" / "log").exists() else ""
    assert f"stopped the stream (pid {second}) left by dantaro dev" in stop.stdout and stop.returncode == 0, stop.stdout + stop.stderr[-3000:] + postgres_log
    # the replay server names no state folder: `dantaro stop` finds it in dev.json
    alive = replay.is_running() and replay.status() != psutil.STATUS_ZOMBIE
    if alive:
        replay.kill()  # not left behind when the assertion fails
    assert f"stopped the replay server (pid {replay.pid}) left by dantaro dev" in stop.stdout and not alive, stop.stdout
    assert processes_naming(state) == []


@pytest.fixture
def read_only_state(tmp_path: Path) -> Iterator[Path]:
    """A state folder this user cannot write: immutable (chattr +i, which binds root too), or mode 555 for a plain user."""
    state = tmp_path / "state"
    (state / "dagster_home").mkdir(parents=True)  # a folder that was in use, then made read-only
    if os.geteuid() != 0:
        for folder in (state / "dagster_home", state):
            folder.chmod(0o555)
    elif subprocess.run(["chattr", "-R", "+i", str(state)], check=False, capture_output=True).returncode:
        pytest.skip("chattr +i is not permitted here, and root writes any mode-555 folder")
    yield state
    if os.geteuid() == 0:
        subprocess.run(["chattr", "-R", "-i", str(state)], check=True)
    else:
        for folder in (state, state / "dagster_home"):
            folder.chmod(0o755)


@pytest.mark.parametrize("command", [["dev", "--no-stream", "--offline"], ["api"], ["stream"], ["stop"]], ids=lambda c: c[0])
def test_a_read_only_state_folder_is_one_clear_line_not_a_traceback(read_only_state, command):
    env = _env(read_only_state, UPBIT_BASE_URL="http://127.0.0.1:9")  # DATABASE_URL/REDIS_URL: the test servers
    if command[0] in ("dev", "api"):
        command = [*command, "--port", str(free_port())]
    done = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", *command], env=env, cwd=PROJECT_DIR, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr and len(done.stderr.strip().splitlines()) == 1, done.stderr
    assert done.stderr.startswith(f"dantaro {command[0]}: cannot write {read_only_state}/")
    assert f"the folder {read_only_state}" in done.stderr and "must be writable" in done.stderr


def test_dev_refuses_a_dagster_home_that_is_not_a_folder_in_one_line(tmp_path):
    env = {**_env(tmp_path / "state"), "DAGSTER_HOME": str(tmp_path / "missing")}
    done = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "dev", "--no-stream", "--offline", "--port", str(free_port())],
                          env=env, cwd=PROJECT_DIR, capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f"dantaro dev: DAGSTER_HOME {tmp_path / 'missing'} is not a folder" in done.stderr
