"""The seed worker's job log, read from Dagster: runs are the jobs, their events the details.

One entry per run: job id (run id), job type (the ``dantaro/job`` tag), status, duration, markets
processed (the largest ``markets`` / ``markets_returned`` count in the run's materialisation metadata), error
(the run's or first step's failure message) and timestamp. Nothing is written twice: Dagster's run
and event storage is the record, so the log survives restarts and follows the run retention.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import dagster as dg

from dantaro_assets.operations.limits import JOB_TAG
from dantaro_assets.settings import redact_text

MARKET_COUNT_KEYS = ("markets", "markets_returned")  # analyses, candle fetches
_FAILURE_EVENTS = {dg.DagsterEventType.RUN_FAILURE, dg.DagsterEventType.STEP_FAILURE}


def _iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _markets_processed(instance: dg.DagsterInstance, run_id: str) -> int | None:
    counts = []
    for record in instance.get_records_for_run(run_id, of_type=dg.DagsterEventType.ASSET_MATERIALIZATION).records:
        metadata = record.asset_materialization.metadata if record.asset_materialization else {}
        counts += [int(metadata[key].value) for key in MARKET_COUNT_KEYS if key in metadata and metadata[key].value is not None]
    return max(counts) if counts else None


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


def job_log(instance: dg.DagsterInstance, limit: int = 20, job_type: str | None = None) -> list[dict[str, Any]]:
    """The newest ``limit`` runs (of one job type when given), newest first."""
    filters = dg.RunsFilter(tags={JOB_TAG: job_type}) if job_type else None
    entries = []
    for record in instance.get_run_records(filters=filters, limit=limit):
        run = record.dagster_run
        finished = run.status in (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE, dg.DagsterRunStatus.CANCELED)
        duration = None
        if record.start_time is not None:
            end = record.end_time if record.end_time is not None else datetime.now(UTC).timestamp()
            duration = round(end - record.start_time, 3)
        entries.append(
            {
                "job_id": run.run_id,
                "job_type": run.tags.get(JOB_TAG, run.job_name),
                "job_name": run.job_name,
                "partition": run.tags.get("dagster/partition"),
                "status": run.status.value,
                "duration_s": duration,
                "markets_processed": _markets_processed(instance, run.run_id) if finished else None,
                "error": _error(instance, run.run_id) if run.status == dg.DagsterRunStatus.FAILURE else None,
                "timestamp": _iso(record.create_timestamp.timestamp()),
                "started_at": _iso(record.start_time),
                "ended_at": _iso(record.end_time),
            }
        )
    return entries
