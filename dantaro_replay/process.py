"""The replay server as a managed subprocess, for the CLI (`dantaro dev`), tests and benchmarks.

The server binds a free port itself (``--port 0``) and prints its URL, so there is no race between
picking a port and binding it; the handle then drives the ``/_replay`` control API. By default it dies
with the process that started it, even when that one is killed (:func:`terminate_with_parent`).
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

import httpx

from dantaro_assets.lib.tls import tls_context


class ReplayServer:
    """Handle on a running replay server process and its ``/_replay`` control API."""

    def __init__(self, process: subprocess.Popen, url: str, log_path: Path):
        self.process = process
        self.url = url
        self.log_path = log_path
        self._control = httpx.Client(base_url=url, timeout=10, verify=tls_context())

    def _call(self, method: str, path: str, json: object = None) -> object:
        response = self._control.request(method, path, json=json)
        response.raise_for_status()
        return response.json()

    def set_clock(self, now: datetime | str | None, running: bool = False, speed: float = 1.0) -> dict:
        """Freeze the replay clock at ``now`` (naive datetimes are UTC), or let it run from there at
        ``speed`` replay seconds per real second; None returns to real time."""
        if isinstance(now, datetime):
            now = (now if now.tzinfo else now.replace(tzinfo=timezone.utc)).isoformat()
        return self._call("POST", "/_replay/clock", {"now": now, "running": running, "speed": speed})

    @property
    def websocket_url(self) -> str:
        """Upbit's quotation WebSocket on this server (``ws://host:port/websocket/v1``)."""
        return "ws" + self.url.removeprefix("http") + "/websocket/v1"

    def clock(self) -> datetime:
        return datetime.fromisoformat(self._call("GET", "/_replay/clock")["now"])

    def inject(self, kind: str, path: str | None = None, count: int | None = 1, seconds: float | None = None,
               variant: str | None = None, market: str | None = None, minute: str | None = None) -> dict:
        """Add a fault rule (see dantaro_replay.faults); ``count=None`` keeps it forever."""
        spec = {"kind": kind, "path": path, "count": count, "variant": variant, "market": market}
        if minute is not None:
            spec["minute"] = minute
        if seconds is not None:
            spec["seconds"] = seconds
        return self._call("POST", "/_replay/faults", spec)[0]

    def clear_faults(self) -> None:
        self._call("DELETE", "/_replay/faults")

    def stats(self) -> dict:
        return self._call("GET", "/_replay/stats")

    def reset_stats(self) -> None:
        self._call("POST", "/_replay/stats/reset")

    def reset(self) -> None:
        """Faults, statistics, rate-limit windows and blocks cleared; the start-up clock restored."""
        self._call("POST", "/_replay/reset")

    def __enter__(self) -> ReplayServer:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._control.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


_PR_SET_PDEATHSIG = 1  # linux/prctl.h
_prctl = ctypes.CDLL(None, use_errno=True).prctl if sys.platform == "linux" else None  # resolved before any fork


def terminate_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` for ``subprocess.Popen``: the child gets SIGTERM when this process ends, even by SIGKILL
    (Linux ``PR_SET_PDEATHSIG``; None elsewhere). The signal follows the *thread* that started the child: start
    it from a thread that lives as long as the process (the main thread)."""
    if _prctl is None:
        return None
    parent = os.getpid()

    def _in_child() -> None:
        _prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before the line above: nobody will send the signal
            os.kill(os.getpid(), signal.SIGTERM)

    return _in_child


def start_replay_server(*args: str, timeout: float = 60.0, die_with_parent: bool = True) -> ReplayServer:
    """Start ``python -m dantaro_replay --port 0 ARGS`` and wait until it answers; with ``die_with_parent`` it
    ends when the calling process does, however that ends."""
    log_path = Path(tempfile.mkstemp(prefix="dantaro-replay-", suffix=".log")[1])
    with log_path.open("w") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "dantaro_replay", "--port", "0", *args],
            stdout=subprocess.PIPE, stderr=log, text=True, preexec_fn=terminate_with_parent() if die_with_parent else None,
        )
    first_line: list[str] = []
    reader = threading.Thread(target=lambda: first_line.append(process.stdout.readline()), daemon=True)
    reader.start()
    reader.join(timeout)
    if not first_line or "http://" not in first_line[0]:
        process.kill()
        raise RuntimeError(f"replay server {' '.join(args)} did not start within {timeout} s: {log_path.read_text()[-2000:]}")
    url = first_line[0].split("http://", 1)[1].split()[0]
    server = ReplayServer(process, f"http://{url}", log_path)
    deadline = time.monotonic() + timeout
    while True:
        try:
            server._call("GET", "/_replay/health")
            return server
        except httpx.HTTPError:
            if time.monotonic() > deadline or process.poll() is not None:
                server.stop()
                raise RuntimeError(f"replay server at {server.url} never answered: {log_path.read_text()[-2000:]}") from None
            time.sleep(0.1)
