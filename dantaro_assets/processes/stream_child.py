"""``dantaro stream`` as a child of ``dantaro dev``: its lines on dev's console, restarted when it crashes.

It runs in a session of its own (Ctrl-C reaches only ``dantaro dev``, which stops it in order) and names the
state folder on its command line, so ``dantaro stop`` finds it even when ``dantaro dev`` was killed.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from pathlib import Path

BACKOFF_FIRST, BACKOFF_MAX = 1.0, 60.0
HEALTHY_SECONDS = 60.0  # a stream that ran this long before it exited starts the backoff afresh


def stream_command(state_dir: Path) -> list[str]:
    return [sys.executable, "-m", "dantaro_assets.cli", "stream", "--state-dir", str(state_dir)]


class StreamChild:
    """Keeps one `dantaro stream` running until :meth:`stop`; ``on_start`` hears each new process id."""

    def __init__(self, state_dir: Path, env: Mapping[str, str], keep: Callable[[str], bool], on_start: Callable[[int], None]):
        self.command = stream_command(state_dir)
        self.env = dict(env)
        self.keep = keep
        self.on_start = on_start
        self.process: subprocess.Popen | None = None
        self.crashes = 0
        self._stopping = threading.Event()
        self._lock = threading.Lock()  # no new process once stopping
        self._thread = threading.Thread(target=self._supervise, name="dantaro-stream", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _supervise(self) -> None:
        attempt = 0
        while not self._stopping.is_set():
            started = time.monotonic()
            with self._lock:
                if self._stopping.is_set():
                    return
                self.process = subprocess.Popen(self.command, env=self.env, start_new_session=True,
                                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                self.on_start(self.process.pid)
            for line in self.process.stdout:
                if self.keep(line):
                    sys.stdout.write(line)
                    sys.stdout.flush()
            code = self.process.wait()
            if self._stopping.is_set():
                return
            attempt = 0 if time.monotonic() - started >= HEALTHY_SECONDS else attempt
            delay = min(BACKOFF_MAX, BACKOFF_FIRST * 2**attempt)
            attempt += 1
            self.crashes += 1
            print(f"dantaro dev: the stream (pid {self.process.pid}) exited with {code}; candles_1m gets no live minutes "
                  f"until it is back: restarting in {delay:.0f} s", file=sys.stderr, flush=True)
            self._stopping.wait(delay)

    def terminate(self) -> None:
        """SIGTERM: the stream writes the minutes already closed, then exits; no restart after this."""
        with self._lock:
            self._stopping.set()
            if self.process is not None and self.process.poll() is None:
                self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float = 5.0) -> int | None:
        """The stream's exit code after :meth:`terminate`; killed when it takes longer than ``timeout`` s."""
        process = self.process
        if process is None:
            return None
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        self._thread.join(timeout=1)
        return process.returncode
