"""The kept answers: one read shared by every request waiting for it, kept for the TTL, dropped by an event; a snapshot encoded once."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid

import pandas as pd
import pytest

from dantaro_assets.api import answers
from dantaro_assets.api.answers import Answer, AnswerCache, SnapshotAnswers
from dantaro_assets.lib.postgres import PostgresResource
from dantaro_assets.lib.redis_store import RedisResource
from dantaro_assets.resources import build_snapshot_store


class Reads:
    """A blocking read (run in a thread, as a storage read is) that counts its calls and can be held."""

    def __init__(self) -> None:
        self.calls = 0
        self.release = threading.Event()
        self.release.set()

    def __call__(self) -> Answer:
        self.calls += 1
        call = self.calls
        self.release.wait(5)
        return Answer(b"%d" % call, "2026-03-10T11:00:00Z")


def test_concurrent_requests_share_one_read_and_the_answer_is_kept_for_the_ttl():
    async def scenario() -> None:
        cache, reads = AnswerCache(ttl=60), Reads()
        reads.release.clear()
        waiting = [asyncio.create_task(cache.get("k", reads)) for _ in range(20)]
        await asyncio.sleep(0.1)
        reads.release.set()
        assert {(await task).body for task in waiting} == {b"1"} and reads.calls == 1
        assert (await cache.get("k", reads)).body == b"1" and reads.calls == 1

        cache.drop("k")  # its event arrived
        assert (await cache.get("k", reads)).body == b"2"

    asyncio.run(scenario())


def test_an_answer_read_while_its_event_arrived_is_not_kept():
    async def scenario() -> None:
        cache, reads = AnswerCache(ttl=60), Reads()
        reads.release.clear()
        early = asyncio.create_task(cache.get("k", reads))
        await asyncio.sleep(0.1)
        cache.drop("k")  # the event came while the read was under way: that read may predate the snapshot
        later = asyncio.create_task(cache.get("k", reads))  # a request after the event reads afresh
        await asyncio.sleep(0.1)
        reads.release.set()
        assert ((await early).body, (await later).body) == (b"1", b"2")
        assert (await cache.get("k", reads)).body == b"2" and reads.calls == 2

    asyncio.run(scenario())


def test_a_failed_read_is_not_kept_and_ttl_zero_reads_every_time():
    async def scenario() -> None:
        cache = AnswerCache(ttl=60)
        failures = iter([ConnectionError("storage down")])

        def flaky() -> Answer:
            if (error := next(failures, None)) is not None:
                raise error
            return Answer(b"ok")

        with pytest.raises(ConnectionError):
            await cache.get("k", flaky)
        assert (await cache.get("k", flaky)).body == b"ok"

        uncached, reads = AnswerCache(ttl=0), Reads()
        for _ in range(3):
            await uncached.get("k", reads)
        assert reads.calls == 3

    asyncio.run(scenario())


def test_past_its_ttl_an_answer_is_served_while_it_is_read_again_and_an_idle_one_is_read_first(monkeypatch):
    monkeypatch.setattr(answers, "STALE_S", 0.3)

    async def scenario() -> None:
        cache, reads = AnswerCache(ttl=0.2), Reads()
        await cache.get("k", reads)
        time.sleep(0.25)  # expired, within the stale window
        reads.release.clear()
        assert (await cache.get("k", reads)).body == b"1"  # served at once
        await asyncio.sleep(0.1)
        assert reads.calls == 2 and (await cache.get("k", reads)).body == b"1"  # the read runs behind it, held
        reads.release.set()
        await asyncio.sleep(0.1)
        assert (await cache.get("k", reads)).body == b"2" and reads.calls == 2
        time.sleep(0.6)  # idle past TTL and stale window
        assert (await cache.get("k", reads)).body == b"3"

    asyncio.run(scenario())


def test_a_snapshot_read_again_unchanged_is_not_encoded_again(settings, pg_url, redis_client):
    """Real Redis: the same snapshot found twice yields the very same answer; the same tick recomputed by another run does not."""
    own = f"ans_{uuid.uuid4().hex[:6]}"
    store = build_snapshot_store(settings, RedisResource(url=settings.redis_url, prefix=f"{settings.redis_prefix}:{own}"),
                                 PostgresResource(url=pg_url, db_schema=f"{settings.db_schema}_{own}"))
    status = pd.DataFrame({"as_of": [pd.Timestamp("2026-03-10T11:00:00Z")], "score": [51.23456]})
    cache = SnapshotAnswers(store, ttl=0)

    async def read() -> Answer:
        return await cache.snapshot("market_status")

    assert asyncio.run(read()).body is None
    store.publish("market_status", status, run_id="run-1", partition=None)
    first = asyncio.run(read())
    assert asyncio.run(read()) is first and b'"score":51.23' in first.body
    store.publish("market_status", status.assign(score=60.0), run_id="run-2", partition=None)
    again = asyncio.run(read())
    assert again is not first and b'"score":60.0' in again.body
