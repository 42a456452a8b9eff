"""The worker's job log, read from Dagster: runs are the jobs, their events the details.

Nothing is written twice: Dagster's run storage is the record, so the log survives restarts and follows the
run retention; a finished run never changes, so ``JobLog`` reads it once (fields: docs/operations.md, "Job log").
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dantaro_assets.operations.limits import JOB_TAG
from dantaro_assets.redaction import redact_text

# What a run processed: its analysis's markets, else (a run that only fetches) the markets its fetch returned.
# Never the largest of both: a candle step fetches every market over REST and none on the stream.
MARKET_COUNT_KEYS = ("markets", "markets_returned")
_FAILURE_EVENTS = {dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE}
_RUNNING, _QUEUED, _COMPLETED, _FAILED = "running", "queued", "completed", "failed"
CONTRACT_STATUS: Mapping[dg.DagsterRunStatus, str] = {
    dg.DagsterRunStatus.QUEUED: _QUEUED,
    dg.DagsterRunStatus.NOT_STARTED: _QUEUED,
    dg.DagsterRunStatus.SUSPENDED: _QUEUED,  # paused until resumed: waiting, like a queued run
    dg.DagsterRunStatus.STARTING: _RUNNING,
    dg.DagsterRunStatus.STARTED: _RUNNING,
    dg.DagsterRunStatus.CANCELING: _RUNNING,
    dg.DagsterRunStatus.MANAGED: _RUNNING,  # a run driven from outside Dagster: not finished as far as Dagster knows
    dg.DagsterRunStatus.SUCCESS: _COMPLETED,
    dg.DagsterRunStatus.FAILURE: _FAILED,
    dg.DagsterRunStatus.CANCELED: _FAILED,  # the contract has no cancel status: a canceled job did not complete
}
_FINISHED = {dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _markets_processed(instance: dg.DagsterInstance, run_id: str) -> int | None:
    counts: dict[str, list[int]] = {key: [] for key in MARKET_COUNT_KEYS}
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        for key in MARKET_COUNT_KEYS:
            if key in metadata and metadata[key].value is not None:
                counts[key].append(int(metadata[key].value))
    return next((max(found) for found in counts.values() if found), None)


def _error(instance: dg.DagsterInstance, run_id: str) -> str | None:
    """The first step failure's error (what broke), else the run failure message (e.g. a timeout); URLs redacted."""
    records = instance.get_records_for_run(run_id, of_type=_FAILURE_EVENTS).records
    for record in records:
        event = record.event_log_entry.dagster_event
        if event and event.event_type == dg.DagsterEventType.STEP_FAILURE and event.step_failure_data.error:
            error = event.step_failure_data.error
            while error.cause is not None:  # Dagster wraps the user's exception: report the root cause
                error = error.cause
            return redact_text(f"{event.step_key}: {error.cls_name}: {error.message.strip()}")
    for record in records:
        return redact_text(record.event_log_entry.message or "") or None
    return None


class JobLog:
    """The job log of one instance, remembering each finished run's counts and error (they never change).

    A refresh then costs one run query plus two event queries per run finished since the last one,
    instead of two per listed run.
    """

    def __init__(self, instance: dg.DagsterInstance) -> None:
        self.instance = instance
        self._finished: dict[str, tuple[int | None, str | None]] = {}

    def _details(self, run: dg.DagsterRun) -> tuple[int | None, str | None]:
        if run.status not in _FINISHED:
            return None, None
        if run.run_id not in self._finished:
            error = _error(self.instance, run.run_id) if run.status == dg.DagsterRunStatus.FAILURE else None
            if run.status == dg.DagsterRunStatus.CANCELED:
                error = "canceled"
            self._finished[run.run_id] = (_markets_processed(self.instance, run.run_id), error)
        return self._finished[run.run_id]

    def entries(self, limit: int = 20, job_type: str | None = None) -> list[dict[str, Any]]:
        """The newest ``limit`` runs (of one job type when given), newest first."""
        filters = dg.RunsFilter(tags={JOB_TAG: job_type}) if job_type else None
        records = self.instance.get_run_records(filters=filters, limit=limit)
        entries = [self._entry(record) for record in records]
        listed = {entry["job_id"] for entry in entries}
        self._finished = {run_id: details for run_id, details in self._finished.items() if run_id in listed}  # bounded by limit
        return entries

    def _entry(self, record: dg.RunRecord) -> dict[str, Any]:
        run = record.dagster_run
        duration = None
        if record.start_time is not None:
            end = record.end_time if record.end_time is not None else datetime.now(UTC).timestamp()
            duration = round(end - record.start_time, 3)
        markets, error = self._details(run)
        return {
            "job_id": run.run_id,
            "job_type": run.tags.get(JOB_TAG, run.job_name),
            "status": CONTRACT_STATUS[run.status],
            "duration": duration,
            "symbols_processed": markets,
            "error": error,
            "timestamp": _iso(record.create_timestamp.timestamp()),
            "dagster_status": run.status.value,
            "job_name": run.job_name,
            "partition": run.tags.get("dagster/partition"),
            "duration_s": duration,
            "markets_processed": markets,
            "started_at": _iso(record.start_time),
            "ended_at": _iso(record.end_time),
        }

