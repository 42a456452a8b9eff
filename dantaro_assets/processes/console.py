"""What ``dantaro dev`` prints: Dagster's services and every run at ``WORKER_LOG_LEVEL``.

Dagster is louder than its levels promise (run events at DEBUG, daemon loops at INFO, stack traces), so at
INFO :class:`RunLines` prints each run's start and end from the run records and :class:`StackTraceFilter`
keeps an error's message without its frames; ``--verbose`` shows all (docs/operations.md, "The console").
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime

import dagster as dg

# The first line of a stack: Dagster's error events and Python's tracebacks; frames follow, indented.
_STACK_START = re.compile(r"^(Stack Trace:|Traceback \(most recent call last\):)\s*$")
# A sensor tick in flight while `dagster dev` shuts its code server down fails on the vanished location: the
# stop's noise, not a fault (sensors run in threads, so a stop often lands in a tick).
_STOP_NOISE = re.compile(r"SensorDaemon.* caught an error|DagsterCodeLocationNotFoundError: Location .+ does not exist in workspace")
_FINISHED = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)


def service_log_level(level: str) -> str:
    """``dagster dev --log-level`` (webserver, daemon) and ``--code-server-log-level`` for a console level."""
    return "warning" if level == "INFO" else level.lower()


class RunLines:
    """One console line when a run starts and one when it ends, read from the instance's run records."""

    def __init__(self, instance: dg.DagsterInstance):
        self.instance = instance
        self._since = datetime.now(UTC)
        self._announced: dict[str, set[dg.DagsterRunStatus]] = {}

    def poll(self) -> list[str]:
        """Lines for the starts and ends recorded since the last poll, oldest first."""
        records = self.instance.get_run_records(dg.RunsFilter(updated_after=self._since), order_by="update_timestamp", ascending=True)
        lines = []
        for record in records:
            self._since = max(self._since, record.update_timestamp)
            run = record.dagster_run
            announced = self._announced.setdefault(run.run_id, set())
            name = " ".join(filter(None, (run.job_name, _partitions(run.tags), f"({run.run_id[:8]})")))
            if record.start_time and dg.DagsterRunStatus.STARTED not in announced:
                announced.add(dg.DagsterRunStatus.STARTED)
                lines.append(f"{_stamp(record.start_time)} run {name} started")
            if run.status in _FINISHED and run.status not in announced:
                announced.add(run.status)
                took = f" in {record.end_time - record.start_time:.1f} s" if record.start_time and record.end_time else ""
                lines.append(f"{_stamp(record.end_time)} run {name} {run.status.value}{took}")
        return lines


def _partitions(tags: dict[str, str]) -> str | None:
    if "dagster/partition" in tags:
        return tags["dagster/partition"]
    if "dagster/asset_partition_range_start" in tags:
        return f"{tags['dagster/asset_partition_range_start']}...{tags['dagster/asset_partition_range_end']}"
    return None


def _stamp(timestamp: float | None) -> str:
    moment = datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)
    return f"{moment:%Y-%m-%d %H:%M:%S %z} - dantaro - INFO -"


class StackTraceFilter:
    """Console lines without stack frames: a stack's heading and the indented lines under it are dropped."""

    def __init__(self) -> None:
        self._in_stack = False

    def keep(self, line: str) -> bool:
        if _STACK_START.match(line):
            self._in_stack = True
            return False
        if self._in_stack and (not line.strip() or line[0].isspace()):
            return False
        self._in_stack = False
        return True

    def filter(self, lines: Iterable[str]) -> Iterator[str]:
        return (line for line in lines if self.keep(line))


def stop_noise(line: str) -> bool:
    """A line the stop itself causes (``_STOP_NOISE``): dropped from the console once a stop began."""
    return bool(_STOP_NOISE.search(line))
