"""What happened since a sensor's last look: the webhook events, read from what other parts stored.

Each detector reads stored outputs only and returns the events after a watermark with the new watermark;
an event's ``key`` names the occurrence, so reading rows twice queues nothing twice. A look reaches
``OVERLAP`` behind its watermark for what was stored late, and never more than ``CATCH_UP`` back.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import dagster as dg

from dantaro_assets.alerts.webhooks import Event, clock, iso
from dantaro_assets.lib.dagster_internals import ASSET_PARTITION_RANGE_END_TAG, ASSET_PARTITION_RANGE_START_TAG
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.postgres_io import read_table
from dantaro_assets.markets.seen import SeenStore, stream_status
from dantaro_assets.redaction import redact_text

CATCH_UP = timedelta(minutes=15)
OVERLAP = timedelta(seconds=60)
PICK_HORIZON_LIMIT = timedelta(hours=48)  # the longest holding horizon a pick may state: how far back an expiry is looked for
CHECK_HISTORY = 20  # evaluations read per check and tick: more than a check runs between two ticks
_PICK_COLUMNS = ("as_of", "market", "rank", "score", "entry", "target", "stop", "reward_risk", "summary")


def since(cursor: str | None, now: datetime) -> datetime:
    """What a detector reads after: ``OVERLAP`` before the sensor's cursor, never more than ``CATCH_UP`` before ``now``."""
    floor = now - CATCH_UP
    return max(datetime.fromisoformat(cursor) - OVERLAP, floor) if cursor else floor


def _words(regime: str) -> str:
    return regime.replace("_", "-")


def regime_changes(postgres: PostgresResource, after: datetime) -> tuple[list[Event], datetime | None]:
    """``regime_change`` for each market status snapshot newer than ``after`` whose regime differs from the
    snapshot before it; and the newest snapshot's ``as_of``."""
    table = postgres.table_name("market_status")
    frame = read_table(postgres, "market_status", where=f"as_of >= COALESCE((SELECT max(as_of) FROM {table} WHERE as_of <= $1), $1)",
                       params=[after], order=["as_of"])
    if frame is None or frame.empty:
        return [], None
    events = []
    rows = frame.to_dict("records")
    for previous, row in zip(rows, rows[1:], strict=False):
        as_of = row["as_of"].to_pydatetime()
        if as_of <= after or row["regime"] == previous["regime"]:
            continue
        detail = row["summary"].split(": ", 1)[-1]
        text = (f"KRW market turned {_words(row['regime'])} (score {row['score']:.0f}/100, was {_words(previous['regime'])} at "
                f"{previous['score']:.0f}) at {clock(as_of)}: {detail}")
        data = {"as_of": iso(as_of), "regime": row["regime"], "score": row["score"], "previous_regime": previous["regime"],
                "previous_score": previous["score"], "previous_as_of": iso(previous["as_of"].to_pydatetime()), "markets": int(row["markets"]),
                "breadth_1h": _finite(row.get("breadth_1h")), "summary": row["summary"]}
        events.append(Event("regime_change", f"regime_change:{iso(as_of)}", as_of, text, data))
    return events, rows[-1]["as_of"].to_pydatetime()


def _finite(value: Any) -> float | None:
    return None if value is None or value != value else float(value)  # NaN is not JSON


def _columns(postgres: PostgresResource, table: str) -> set[str]:
    """The columns of ``table`` (none when it was never written)."""
    found = postgres.read_arrow("SELECT column_name FROM information_schema.columns WHERE table_schema = $1 AND table_name = $2",
                                [postgres.db_schema, table])
    return set(found.column("column_name").to_pylist())


def _entering_picks(postgres: PostgresResource, scorer: str, where: str, params: list[Any],
                    with_expiry: bool) -> tuple[list[dict], datetime | None]:
    """The served picks (``scorer``'s rows) matching ``where`` whose market was not among the snapshot before
    theirs (a snapshot without one before it enters nothing), oldest first; and the newest snapshot's as_of.

    One statement, so the newest as_of and the rows come from one view of the table.
    """
    table = postgres.table_name("recommendations")
    columns = ", ".join(f"r.{column}" for column in _PICK_COLUMNS) + ", r.caution::text AS caution" + (", r.expires_at" if with_expiry else "")
    previous = f"(SELECT max(q.as_of) FROM {table} q WHERE q.scorer = $1 AND q.as_of < r.as_of)"
    sql = f"""
        WITH newest AS (SELECT max(as_of) AS as_of FROM {table} WHERE scorer = $1),
        entering AS (
            SELECT {columns} FROM {table} r
            WHERE r.scorer = $1 AND r.as_of <= (SELECT as_of FROM newest) AND {where}
              AND {previous} IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM {table} p WHERE p.scorer = $1 AND p.market = r.market AND p.as_of = {previous})
        )
        SELECT newest.as_of AS newest, entering.* FROM newest LEFT JOIN entering ON true ORDER BY entering.as_of, entering.rank"""
    rows = postgres.read_arrow(sql, [scorer, *params]).to_pylist()
    newest = rows[0]["newest"] if rows else None
    return [row for row in rows if row["market"] is not None], newest


def _pick_data(row: Mapping[str, Any]) -> dict[str, Any]:
    data = {column: iso(row[column]) if column == "as_of" else row[column] for column in _PICK_COLUMNS}
    data["score"], data["reward_risk"] = round(row["score"], 2), round(row["reward_risk"], 2)  # as the API answers them
    data["caution"] = json.loads(row["caution"]) if row["caution"] else []
    if row.get("expires_at") is not None:
        data["expires_at"] = iso(row["expires_at"])
    return data


def new_top_picks(postgres: PostgresResource, scorer: str, after: datetime) -> tuple[list[Event], datetime | None]:
    """``new_top_pick`` for each market that entered the served picks in a snapshot newer than ``after``; the newest as_of."""
    columns = _columns(postgres, "recommendations")
    if not columns:
        return [], None
    rows, newest = _entering_picks(postgres, scorer, "r.as_of > $2", [after], "expires_at" in columns)
    events = []
    for row in rows:
        as_of = row["as_of"]
        text = f"New pick at {clock(as_of)}, #{row['rank']} of {scorer}: {row['summary']}"
        if row.get("expires_at") is not None:
            text += f"; plan expires {clock(row['expires_at'], since=as_of)}"
        events.append(Event("new_top_pick", f"new_top_pick:{iso(as_of)}:{row['market']}", as_of, text, _pick_data(row)))
    return events, newest


def expired_picks(postgres: PostgresResource, scorer: str, after: datetime, now: datetime) -> list[Event]:
    """``picks_expired`` for each pick that entered the served picks and whose ``expires_at`` fell in (``after``, ``now``].

    Nothing while ``recommendations`` has no ``expires_at`` column (picks that state no horizon never expire).
    """
    if "expires_at" not in _columns(postgres, "recommendations"):
        return []
    where = "r.as_of > $2 AND r.expires_at > $3 AND r.expires_at <= $4"
    rows, _ = _entering_picks(postgres, scorer, where, [after - PICK_HORIZON_LIMIT, after, now], with_expiry=True)
    events = []
    for row in rows:
        expired = row["expires_at"]
        text = f"{row['market']} pick of {clock(row['as_of'])} expired at {clock(expired, since=row['as_of'])}; its plan no longer holds: {row['summary']}"
        events.append(Event("picks_expired", f"picks_expired:{iso(row['as_of'])}:{row['market']}", expired, text, _pick_data(row)))
    return events


def step_error(event: dg.DagsterEvent) -> str:
    """What broke in a failed step: the root cause Dagster wrapped, with the step's name."""
    error = event.step_failure_data.error
    while error.cause is not None:
        error = error.cause
    return f"{event.step_key}: {error.cls_name}: {error.message.strip()}"


def run_failed(run: dg.DagsterRun, failed_at: datetime, message: str | None, step_errors: Iterable[str]) -> Event:
    """``run_failed`` for ``run``: what broke is the first step's error, else the run's failure message (URLs redacted)."""
    error = redact_text(next(iter(step_errors), None) or message or "no error recorded").strip()
    first_line = error.splitlines()[0][:300] if error else ""
    partition = run.tags.get("dagster/partition") or "...".join(
        filter(None, [run.tags.get(ASSET_PARTITION_RANGE_START_TAG), run.tags.get(ASSET_PARTITION_RANGE_END_TAG)]))
    where = f" ({partition})" if partition else ""
    will_retry = run.tags.get("dagster/will_retry") == "true"  # run retries re-launch a run whose worker crashed
    text = (f"Run of {run.job_name}{where} failed at {clock(failed_at)}: {first_line} (run {run.run_id[:8]}"
            f"{'; it will be retried' if will_retry else ''})")
    data = {"run_id": run.run_id, "job_name": run.job_name, "partition": partition or None, "error": error[:2000], "will_retry": will_retry}
    return Event("run_failed", f"run_failed:{run.run_id}", failed_at, text, data)


def failed_checks(instance: dg.DagsterInstance, check_keys: Iterable[dg.AssetCheckKey], after: datetime) -> tuple[list[Event], datetime]:
    """``check_failed`` for each asset check evaluation that failed after ``after`` (read from Dagster's check
    records, so checks evaluated inside runs and reported outside them alike); the newest evaluation time."""
    events, newest = [], after
    for key in check_keys:
        for record in instance.event_log_storage.get_asset_check_execution_history(key, limit=CHECK_HISTORY):
            entry = record.event
            if entry is None or entry.dagster_event_type != dg.DagsterEventType.ASSET_CHECK_EVALUATION:
                continue  # planned, not evaluated yet
            at = datetime.fromtimestamp(entry.timestamp, UTC)
            newest = max(newest, at)
            evaluation = record.evaluation
            if at <= after or evaluation.passed:
                continue
            asset = key.asset_key.to_user_string()
            partition = evaluation.partition or record.partition
            where = f" ({partition})" if partition else ""
            description = redact_text(evaluation.description or "no description")
            text = (f"Check {key.name} on {asset}{where} failed at {clock(at)}: {description} "
                    f"({'blocking: nothing was written' if evaluation.blocking else 'not blocking'}; run {record.run_id[:8]})")
            data = {"asset": asset, "check": key.name, "partition": partition, "run_id": record.run_id, "blocking": bool(evaluation.blocking),
                    "severity": evaluation.severity.value, "description": description, "evaluated_at": iso(at)}
            events.append(Event("check_failed", f"check_failed:{asset}:{key.name}:{record.id}", at, text, data))
    return sorted(events, key=lambda event: event.occurred_at), newest


def freshness_failures(instance: dg.DagsterInstance, asset_keys: Iterable[dg.AssetKey], after: datetime) -> tuple[list[Event], datetime]:
    """``freshness_failed`` for each asset whose freshness state turned FAIL after ``after``, as the freshness
    daemon records it (``DagsterInstance.get_freshness_state_records``); the newest state change seen."""
    events, newest = [], after
    for key, record in instance.get_freshness_state_records(list(asset_keys)).items():
        changed = record.updated_at.astimezone(UTC)
        newest = max(newest, changed)
        if changed <= after or record.freshness_state != "FAIL":
            continue
        asset = key.to_user_string()
        latest = instance.get_latest_materialization_event(key)
        updated = datetime.fromtimestamp(latest.timestamp, UTC) if latest else None
        last = f"last updated {clock(updated)}" if updated else "never materialised"
        text = f"{asset} is stale: {last}, failing its freshness policy since {clock(changed)}"
        data = {"asset": asset, "failing_since": iso(changed), "last_updated": iso(updated) if updated else None}
        events.append(Event("freshness_failed", f"freshness_failed:{asset}:{changed.isoformat()}", changed, text, data))
    return sorted(events, key=lambda event: event.occurred_at), newest


def stream_changes(store: SeenStore, max_lag: float, cursor: str | None, now: datetime) -> tuple[list[Event], str | None]:
    """``stream_down`` when the stream's health record turns unhealthy, ``stream_up`` when it is healthy again.

    The cursor holds the last state seen (``{"up": bool, "down": key}``); the first look only records it, so
    a start while the stream is still coming up is no alert, and a stream that never ran is none either
    (``dantaro dev --no-stream``).
    """
    status = stream_status(store, max_lag, now.timestamp())
    if status["state"] == "never ran":
        return [], cursor
    seen = json.loads(cursor) if cursor else None
    up = bool(status["healthy"])
    if seen is None or seen["up"] == up:
        return [], json.dumps({"up": up, "down": seen.get("down") if seen else None})
    figures = {key: status.get(key) for key in ("state", "problem", "lag_s", "heartbeat", "covered_through", "reconnects", "markets")}
    if not up:
        key = f"stream_down:{status['heartbeat']}"
        text = (f"Live candle stream down at {clock(now)}: {status['problem']}; the analyses fetch the minutes it misses "
                "over REST meanwhile")
        return [Event("stream_down", key, now, text, figures)], json.dumps({"up": False, "down": key})
    down_key = seen.get("down")
    behind = f", {status['lag_s']} s behind Upbit's clock" if status["lag_s"] is not None else ""
    text = f"Live candle stream back at {clock(now)}{behind}"
    return [Event("stream_up", f"stream_up:{down_key or iso(now)}", now, text, figures)], json.dumps({"up": True, "down": None})
