"""The API's answers, encoded once and kept in the process for a second: a request costs a lookup, not a storage read.

One read per answer is shared by every request waiting for it; a snapshot's event drops its answer at once,
a stale one is served for ``STALE_S`` more seconds while one read refreshes it, and storage errors are
never kept (docs/api.md, "Speed: answers kept for a second").
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import partial
from typing import Any

from starlette.concurrency import run_in_threadpool

from dantaro_assets.api.for_people import for_people, unexpired
from dantaro_assets.lib.snapshot_store import SnapshotStore
from dantaro_assets.redaction import redact_text

log = logging.getLogger(__name__)

STALE_S = 2.0  # how long past its TTL an answer may be served while it is being read again


@dataclass(frozen=True)
class Answer:
    """An encoded answer, or none (``body`` None: the snapshot does not exist yet); ``as_of`` of a snapshot."""

    body: bytes | None
    as_of: str | None = None


def encode(content: Any) -> bytes:
    """JSON as the API answers it: compact UTF-8, never NaN (and so, for an event, one line)."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode()


def snapshot_answer(asset: str, payload: dict[str, Any] | None) -> Answer:
    """A snapshot as people read it (``for_people``), encoded; none for None."""
    return Answer(None) if payload is None else Answer(encode(for_people(asset, payload)), payload["as_of"])


class AnswerCache:
    """Answers by key, each read at most once per ``ttl`` seconds (``ttl`` 0: read for every request)."""

    def __init__(self, ttl: float) -> None:
        self.ttl = ttl
        self._answers: dict[Hashable, tuple[Answer, float]] = {}  # key -> (answer, when it was read)
        self._reading: dict[Hashable, asyncio.Task[Answer]] = {}
        self._generation: dict[Hashable, int] = {}

    async def get(self, key: Hashable, read: Callable[[], Answer]) -> Answer:
        """The kept answer of ``key`` if it is fresh, else the one ``read`` (a blocking call, run in a thread) returns."""
        kept = self._answers.get(key)
        if kept is not None:
            age = time.monotonic() - kept[1]
            if age < self.ttl:
                return kept[0]
            if age < self.ttl + STALE_S:
                if key not in self._reading:
                    self._start(key, read).add_done_callback(_log_failure)
                return kept[0]
        task = self._reading.get(key) or self._start(key, read)
        return await asyncio.shield(task)  # a cancelled request leaves the read to the others

    def _start(self, key: Hashable, read: Callable[[], Answer]) -> asyncio.Task[Answer]:
        task = self._reading[key] = asyncio.create_task(self._read(key, read))
        return task

    async def _read(self, key: Hashable, read: Callable[[], Answer]) -> Answer:
        generation = self._generation.get(key, 0)
        try:
            answer = await run_in_threadpool(read)
        finally:
            if self._reading.get(key) is asyncio.current_task():
                del self._reading[key]
        if self.ttl > 0 and self._generation.get(key, 0) == generation:
            self._answers[key] = (answer, time.monotonic())
        return answer

    def drop(self, key: Hashable) -> None:
        """Forget ``key``'s answer, and any read of it under way: the next request reads afresh."""
        self._generation[key] = self._generation.get(key, 0) + 1
        self._answers.pop(key, None)
        self._reading.pop(key, None)

    def clear(self) -> None:
        """Forget every answer (events may have been missed)."""
        for key in list(self._answers) + list(self._reading):
            self.drop(key)


def _log_failure(task: asyncio.Task[Answer]) -> None:
    """A background refresh failed: the answer it was to replace expires, and a request then meets the error."""
    if not task.cancelled() and (exc := task.exception()) is not None:
        log.warning("refreshing a kept answer failed: %s: %s", type(exc).__name__, redact_text(str(exc)))


class SnapshotAnswers(AnswerCache):
    """The answers of the snapshot endpoints (and of any other key through ``get``).

    A snapshot is read with ``SnapshotStore.latest`` (the newer of Redis and Postgres) and encoded once: a
    read that finds the snapshot it found before (same as_of, run, source and row count) reuses that
    answer, so keeping answers fresh each second costs the two storage reads, not the rounding. The
    recommendations lose their picks past ``expires_at`` first (``for_people.unexpired``).
    """

    def __init__(self, snapshots: SnapshotStore, ttl: float) -> None:
        super().__init__(ttl)
        self.snapshots = snapshots
        self._encoded: dict[tuple[str, str | None], tuple[tuple, Answer]] = {}

    async def snapshot(self, asset: str, market: str | None = None) -> Answer:
        return await self.get((asset, market), partial(self._encoded_latest, asset, market))

    def _encoded_latest(self, asset: str, market: str | None) -> Answer:
        payload = self.snapshots.latest(asset, market)
        if payload is None:
            return Answer(None)
        if asset == "recommendations":  # a pick past its horizon is not served; the row count below sees it go
            payload = unexpired(payload, datetime.now(timezone.utc))
        found = (payload["as_of"], payload.get("run_id"), payload["source"], len(payload["rows"]))
        encoded = self._encoded.get((asset, market))
        if encoded is None or encoded[0] != found:
            encoded = self._encoded[(asset, market)] = (found, snapshot_answer(asset, payload))
        return encoded[1]
