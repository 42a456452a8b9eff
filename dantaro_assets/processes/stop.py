"""Finding and stopping what a ``dantaro dev`` started, even when it was killed: by its record and by ``/proc``.

``dantaro dev`` holds ``dev.lock`` in the state folder for its lifetime (one per state folder) and writes
``dev.json`` beside it: its pid, the settings it runs with (``dantaro settings`` shows them), its replay
server's pid, its `dagster dev` process group, the stream's pid. Every child names the state folder on its
command line, runs in that process group or is in the record, so ``dantaro stop`` finds them without the parent.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import IO

from dantaro_assets.settings import Settings

DEV_RECORD = "dev.json"  # in the state folder: the running `dantaro dev`, what it uses and what it started
DEV_LOCK = "dev.lock"  # held by the running `dantaro dev`; the kernel releases it when that process ends, however it ends


def alive(pid: int) -> bool:
    """Whether ``pid`` is a running dantaro process (a reused pid of another program does not count)."""
    try:
        return "dantaro" in Path(f"/proc/{pid}/cmdline").read_text()
    except OSError:
        return False


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def dev_record(state_dir: Path) -> dict | None:
    """What the last ``dantaro dev`` of ``state_dir`` wrote about itself (removed when it stops)."""
    try:
        return json.loads((state_dir / DEV_RECORD).read_text())
    except (OSError, ValueError):
        return None


def write_dev_record(state_dir: Path, record: dict) -> None:
    (state_dir / DEV_RECORD).write_text(json.dumps(record))


def claim_state(state_dir: Path) -> IO | None:
    """The state folder's dev lock, held until the returned file is closed (or the process ends); None while another
    ``dantaro dev`` holds it. Checking for a running dev and writing its record under one lock: two started at
    once cannot both pass the check."""
    state_dir.mkdir(parents=True, exist_ok=True)
    handle = open(state_dir / DEV_LOCK, "a")  # noqa: SIM115 - held for the caller's lifetime
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        return None
    return handle


def running_dev(state_dir: Path) -> dict | None:
    """The ``dantaro dev`` serving ``state_dir``, if it still runs."""
    record = dev_record(state_dir)
    return record if record and alive(record["pid"]) else None


def dagster_processes(pgid: int) -> list[int]:
    """Processes of a `dagster dev` process group still alive (its leader may be gone): Dagster's services and
    code servers, and the run workers the code server starts as `multiprocessing` spawn children."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            if int(fields[2]) == pgid and any(name in (stat.parent / "cmdline").read_text() for name in ("dagster", "multiprocessing")):
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def processes_naming(state: Path) -> list[str]:
    """Processes other than this one whose command line names the state folder (servers, dev, workers)."""
    found = []
    for proc in Path("/proc").glob("[0-9]*"):
        if proc.name.isdigit() and str(state) in (text := cmdline(int(proc.name))) and proc.name != str(os.getpid()):
            found.append(f"{proc.name}: {text[:160]}")
    return found


def terminate(pid: int, timeout: float) -> None:
    """SIGTERM, then SIGKILL after ``timeout`` s (the stream writes the minutes already closed on SIGTERM)."""
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        os.kill(pid, signal.SIGKILL)


def stop_state(settings: Settings, timeout: float) -> int:
    """``dantaro stop``: the ``dantaro dev`` of the state folder, what a killed one left, then the embedded servers."""
    from dantaro_assets.lib.embedded import stop_embedded

    if record := dev_record(settings.state_dir):
        if alive(record["pid"]):
            terminate(record["pid"], timeout)
            print(f"dantaro stop: stopped dantaro dev (pid {record['pid']})")
        if alive(stream_pid := record.get("stream_pid", 0)) and str(settings.state_dir) in cmdline(stream_pid):
            terminate(stream_pid, 10.0)  # left running by a killed `dantaro dev`
            print(f"dantaro stop: stopped the stream (pid {stream_pid}) left by dantaro dev")
        if alive(replay_pid := record.get("replay_pid", 0)) and "dantaro_replay" in cmdline(replay_pid):
            terminate(replay_pid, 10.0)  # left running by a killed `dantaro dev`
            print(f"dantaro stop: stopped the replay server (pid {replay_pid}) left by dantaro dev")
        # what a killed `dantaro dev` left running of its `dagster dev` (none if it was killed before starting it)
        left = dagster_processes(pgid) if (pgid := record.get("dagster_pgid")) else []
        for pid in left:
            os.kill(pid, signal.SIGKILL)
        if left:
            import dagster as dg  # only here: a stop with nothing of Dagster's left starts without its import

            from dantaro_assets.processes.dagster_dev import close_runs
            from dantaro_assets.processes.instance import use_instance

            with dg.DagsterInstance.from_config(str(use_instance(settings))) as instance:
                closed = close_runs(instance, "dantaro dev was killed before the run ended")
            print(f"dantaro stop: killed {len(left)} process(es) left by dantaro dev; {closed} run(s) marked CANCELED")
        (settings.state_dir / DEV_RECORD).unlink(missing_ok=True)
    stopped = stop_embedded(settings.state_dir)
    print(f"dantaro stop: embedded servers of {settings.state_dir}: {', '.join(stopped) if stopped else 'none running'}")
    deadline = time.monotonic() + 5  # servers just told to stop may take a moment to exit
    while (left := processes_naming(settings.state_dir)) and time.monotonic() < deadline:
        time.sleep(0.2)
    if left:
        print(f"dantaro stop: {len(left)} process(es) still name the state folder:", *left, sep="\n  ", file=sys.stderr)
        return 1
    return 0
