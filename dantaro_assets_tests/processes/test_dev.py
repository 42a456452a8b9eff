"""``dantaro dev`` as a newcomer meets it: one per state folder, a banner that is true, settings that say what it uses.

One module-wide start: two ``dantaro dev --offline --no-stream --markets 10`` launched at the same moment on
one state folder (against the machine's Postgres and Redis, so no embedded server start costs time).
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from dantaro_assets.processes.stop import dev_record
from dantaro_assets_tests.harness import free_port

PROJECT_DIR = Path(__file__).resolve().parents[2]
BANNER = "dantaro dev: UI on http://"


@dataclass
class Dev:
    """A ``dantaro dev`` process, its console and what /server_info answered the moment the banner was printed."""

    port: int
    process: subprocess.Popen
    lines: list[str] = field(default_factory=list)
    ui_at_banner: int | str | None = None  # status code, or the error of a UI not answering yet

    def read(self) -> None:
        for line in self.process.stdout:
            if line.startswith(BANNER) and self.ui_at_banner is None:
                try:
                    self.ui_at_banner = httpx.get(f"http://127.0.0.1:{self.port}/server_info", timeout=5).status_code
                except httpx.HTTPError as exc:
                    self.ui_at_banner = f"{type(exc).__name__}: {exc}"
            self.lines.append(line)

    @property
    def output(self) -> str:
        return "".join(self.lines)


def _env(state: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("DAGSTER_HOME", "UPBIT_BASE_URL")}
    return {**env, "PYTHONPATH": str(PROJECT_DIR), "DANTARO_STATE_DIR": str(state), "PYTHONUNBUFFERED": "1"}


@pytest.fixture(scope="module")
def state() -> Iterator[Path]:
    state = Path(tempfile.mkdtemp(prefix="dantaro-dev-test-"))
    yield state
    shutil.rmtree(state, ignore_errors=True)


@pytest.fixture(scope="module")
def two_devs(state: Path) -> Iterator[list[Dev]]:
    """Both started at once; returns when one has exited and the other's UI answers (or time is up)."""
    env = _env(state)
    devs = []
    for _ in range(2):
        port = free_port()
        command = [sys.executable, "-m", "dantaro_assets.cli", "dev", "--offline", "--no-stream", "--markets", "10", "--port", str(port)]
        devs.append(Dev(port, subprocess.Popen(command, cwd=state, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)))
    readers = [threading.Thread(target=dev.read, daemon=True) for dev in devs]
    for reader in readers:
        reader.start()
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and not (
            any(dev.process.poll() is not None for dev in devs) and any(dev.ui_at_banner is not None for dev in devs)
        ):
            time.sleep(0.5)
        yield devs
    finally:
        for dev in devs:
            if dev.process.poll() is None:
                dev.process.send_signal(signal.SIGTERM)
        for dev in devs:
            try:
                dev.process.wait(timeout=60)
            except subprocess.TimeoutExpired:
                dev.process.kill()
        subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "stop"], check=False, cwd=state, env=env, capture_output=True, timeout=120)


@pytest.mark.slow
def test_two_devs_started_at_once_on_one_state_folder_one_runs_the_other_is_refused(two_devs: list[Dev], state: Path):
    exited = [dev for dev in two_devs if dev.process.poll() is not None]
    running = [dev for dev in two_devs if dev.process.poll() is None]
    assert len(exited) == 1 and len(running) == 1, [dev.output[-2000:] for dev in two_devs]
    [refused], [winner] = exited, running
    assert refused.process.returncode == 1
    assert f"dantaro dev: already running for {state}" in refused.output and "Traceback" not in refused.output, refused.output
    assert dev_record(state)["pid"] == winner.process.pid


@pytest.mark.slow
def test_the_banner_is_printed_when_the_ui_answers(two_devs: list[Dev]):
    [announced] = [dev for dev in two_devs if dev.ui_at_banner is not None]
    assert announced.ui_at_banner == 200, announced.output[-3000:]


@pytest.mark.slow
def test_settings_show_the_replay_url_the_running_dev_uses(two_devs: list[Dev], state: Path):
    [running] = [dev for dev in two_devs if dev.process.poll() is None]
    replay_url = next(line for line in running.lines if "replaying a simulated market at" in line).split(" at ")[-1].strip()
    shown = subprocess.run([sys.executable, "-m", "dantaro_assets.cli", "settings"], check=True, cwd=state, env=_env(state),
                           capture_output=True, text=True, timeout=120).stdout
    [row] = [line for line in shown.splitlines() if line.startswith("| `UPBIT_BASE_URL` |")]
    assert f"| `{replay_url}` |" in row and f"the running `dantaro dev` (pid {running.process.pid})" in row, row
