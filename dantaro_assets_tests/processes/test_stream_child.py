"""The stream as `dantaro dev`'s child: restarted with backoff when it crashes, stopped for good on terminate."""

from __future__ import annotations

import sys
import time
from pathlib import Path

from dantaro_assets.processes.console import StackTraceFilter
from dantaro_assets.processes.stream_child import StreamChild, stream_command

CRASHING = "import sys; print('stream: up', flush=True); print('Traceback (most recent call last):'); print('  File x'); sys.exit(3)"


def test_the_stream_names_the_state_folder_so_dantaro_stop_finds_it(tmp_path):
    assert stream_command(tmp_path)[-3:] == ["stream", "--state-dir", str(tmp_path)]


def test_a_crashing_stream_is_reported_and_restarted_with_growing_backoff_until_terminated(tmp_path: Path, capfd):
    pids: list[int] = []
    child = StreamChild(tmp_path, {}, keep=StackTraceFilter().keep, on_start=pids.append)
    child.command = [sys.executable, "-c", CRASHING]  # what a stream that dies at start does
    child.start()
    deadline = time.monotonic() + 30
    while child.crashes < 2:  # 1 s, then 2 s
        assert time.monotonic() < deadline, "the stream was not restarted twice in 30 s"
        time.sleep(0.1)
    child.terminate()
    assert child.wait(timeout=10) == 3
    time.sleep(1.5)  # past the next backoff: nothing more is started
    assert len(pids) == len(set(pids)) == child.crashes == 2  # terminated during the second backoff
    out, err = capfd.readouterr()
    assert out.count("stream: up") == len(pids) and "File x" not in out  # stack frames dropped, as on dev's console
    assert f"the stream (pid {pids[0]}) exited with 3; candles_1m gets no live minutes until it is back: restarting in 1 s" in err
    assert f"the stream (pid {pids[1]}) exited with 3; candles_1m gets no live minutes until it is back: restarting in 2 s" in err


def test_terminate_stops_a_running_stream_with_sigterm(tmp_path: Path):
    pids: list[int] = []
    child = StreamChild(tmp_path, {}, keep=lambda _: True, on_start=pids.append)
    child.command = [sys.executable, "-c", "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *_: sys.exit(0)); time.sleep(60)"]
    child.start()
    deadline = time.monotonic() + 30
    while not pids:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    time.sleep(0.5)  # its SIGTERM handler is set
    child.terminate()
    assert child.wait(timeout=10) == 0 and child.crashes == 0
