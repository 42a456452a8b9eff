"""Push: every stored snapshot reaches the API's clients as an event (``GET /events`` SSE, ``/ws`` WebSocket).

One Redis subscription per API process (``EventHub``) hears the snapshot store's pointers, reads each snapshot
once and offers it to every interested client without waiting: a slow client is dropped, never delays the
others, and never gets a topic's ``as_of`` twice or out of order (docs/api.md, "Events").
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from functools import cached_property

import anyio
import redis
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.types import Receive, Scope, Send
from starlette.websockets import WebSocket

from dantaro_assets.api.answers import Answer, SnapshotAnswers, snapshot_answer
from dantaro_assets.api.models import parse_market
from dantaro_assets.redaction import redact_text

log = logging.getLogger(__name__)

ASSETS = ("market_status", "recommendations", "support_levels")
PER_MARKET = "support_levels"  # the asset whose snapshots are also kept per market
DEFAULT_TOPICS = "market_status,recommendations"
MAX_TOPICS = 50
HEARTBEAT_S = 15.0
QUEUE_SIZE = 64  # events a client may fall behind before it is dropped
REPLAY_LIMIT = 50  # snapshots per topic a reconnect replays at most (the newest)
RETRY_MS = 2000  # how soon a browser's EventSource reconnects
_RESUBSCRIBE_S = (0.5, 1.0, 2.0, 5.0)
TOPICS_HELP = (f"comma-separated, at most {MAX_TOPICS}: market_status, recommendations, support_levels (every market's "
               "levels) and support_levels:<MARKET> (one market's, e.g. support_levels:KRW-BTC)")


@dataclass(frozen=True)
class Topic:
    asset: str
    market: str | None = None

    @property
    def name(self) -> str:
        return self.asset if self.market is None else f"{self.asset}:{self.market}"


def parse_topics(raw: str) -> tuple[Topic, ...]:
    """The topics of ``?topics=``; a ValueError that does not repeat the input names what is accepted."""
    topics: list[Topic] = []
    for name in filter(None, (part.strip() for part in raw.split(","))):
        asset, colon, market = name.partition(":")
        code = parse_market(market) if colon and asset == PER_MARKET else None
        if asset not in ASSETS or (colon and code is None):
            raise ValueError(f"unknown topic; topics are {TOPICS_HELP}")
        topics.append(Topic(asset, code))
    if not topics or len(topics) > MAX_TOPICS:
        raise ValueError(f"give 1 to {MAX_TOPICS} topics: {TOPICS_HELP}")
    return tuple(dict.fromkeys(topics))


@dataclass(frozen=True)
class Event:
    """One snapshot of one topic, encoded once for every client."""

    topic: str
    id: str  # the snapshot's as_of
    body: bytes  # the snapshot as GET .../latest answers it

    @cached_property
    def sse(self) -> bytes:
        return b"id: %s\nevent: %s\ndata: %s\n\n" % (self.id.encode(), self.topic.encode(), self.body)

    @cached_property
    def text(self) -> str:
        """The WebSocket message: ``{"id", "topic", "data"}``."""
        return f'{{"id":{json.dumps(self.id)},"topic":{json.dumps(self.topic)},"data":{self.body.decode()}}}'


@dataclass(eq=False)
class Subscriber:
    """One client: its topics, the events waiting for it, and the newest as_of it got of each topic."""

    topics: frozenset[str]
    queue: asyncio.Queue[Event]
    dropped: asyncio.Event = field(default_factory=asyncio.Event)
    sent: dict[str, str] = field(default_factory=dict)

    def fresh(self, event: Event) -> bool:
        """True, and remembered as sent, if ``event`` is newer than what this client got of its topic."""
        if event.id <= self.sent.get(event.topic, ""):
            return False
        self.sent[event.topic] = event.id
        return True


class EventHub:
    """The API process's one subscription to the snapshot events, fanned out to its clients.

    ``clients``, ``dropped`` and ``received`` are read by ``/metrics``.
    """

    def __init__(self, answers: SnapshotAnswers, queue_size: int = QUEUE_SIZE) -> None:
        self.snapshots = answers.snapshots
        self.answers = answers
        self.queue_size = queue_size
        self._subscribers: set[Subscriber] = set()
        self.dropped = 0
        self.received = 0
        self.subscribed = asyncio.Event()  # set while the subscription stands

    @property
    def clients(self) -> int:
        return len(self._subscribers)

    # --- clients ---------------------------------------------------------------------------------
    def subscribe(self, topics: Iterable[Topic]) -> Subscriber:
        subscriber = Subscriber(frozenset(t.name for t in topics), asyncio.Queue(self.queue_size))
        self._subscribers.add(subscriber)
        return subscriber

    def unsubscribe(self, subscriber: Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def _offer(self, event: Event) -> None:
        for subscriber in [s for s in self._subscribers if event.topic in s.topics]:
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                log.warning("dropped an event client %d events behind (it stopped reading)", self.queue_size)
                self._subscribers.discard(subscriber)
                self.dropped += 1
                subscriber.dropped.set()

    async def current(self, topic: Topic) -> Event | None:
        """The topic's snapshot now, as an event (None when there is none yet)."""
        return _event(topic, await self.answers.snapshot(topic.asset, topic.market))

    async def first_events(self, topics: Iterable[Topic], last_event_id: str | None) -> list[Event]:
        """What a client gets on connecting: the snapshots since ``last_event_id`` from Postgres (a reconnect),
        else each topic's current one; oldest first."""
        events: list[Event] = []
        for topic in topics:
            if last_event_id is not None:
                missed = await run_in_threadpool(self.snapshots.since, topic.asset, topic.market, after=last_event_id, limit=REPLAY_LIMIT)
                events += [e for e in (_event(topic, snapshot_answer(topic.asset, s)) for s in missed) if e is not None]
            current = await self.current(topic)  # newer than Postgres' when only Redis has it
            if current is not None and (last_event_id is None or current.id > last_event_id):
                events.append(current)
        return sorted(events, key=lambda e: e.id)

    # --- the subscription ----------------------------------------------------------------------
    async def run(self) -> None:
        """Subscribe, and resubscribe after every loss, until cancelled."""
        failures = 0
        while True:
            try:
                await self._listen(resubscribing=failures > 0)
                raise redis.ConnectionError("the subscription ended")
            except (redis.RedisError, OSError) as exc:
                failures = 0 if self.subscribed.is_set() else failures  # a subscription that stood starts the backoff over
                delay = _RESUBSCRIBE_S[min(failures, len(_RESUBSCRIBE_S) - 1)]
                failures += 1
                self.subscribed.clear()
                log.warning("snapshot events: subscription lost (%s: %s); resubscribing in %.1f s", type(exc).__name__,
                            redact_text(str(exc)), delay)
                await asyncio.sleep(delay)

    async def _listen(self, *, resubscribing: bool) -> None:
        client = self.snapshots.redis.subscriber()  # raises when Redis cannot be resolved (an embedded one not running)
        try:
            async with client.pubsub() as pubsub:
                await pubsub.subscribe(self.snapshots.events_channel)
                self.answers.clear()  # anything may have changed while no event could arrive
                self.subscribed.set()
                if resubscribing:
                    log.warning("snapshot events: subscribed again to %s", self.snapshots.events_channel)
                    await self._catch_up()
                async for message in pubsub.listen():
                    if message["type"] == "message":
                        await self._dispatch(message["data"])
        finally:
            await client.aclose()

    async def _dispatch(self, raw: bytes) -> None:
        """A snapshot was stored: forget its cached answer; read and offer it if a client wants its topic."""
        try:
            pointer = json.loads(raw)
            topic = Topic(pointer["asset"], pointer.get("market"))
        except (ValueError, KeyError, TypeError):
            log.warning("snapshot events: ignored a message that is not a snapshot pointer (%d bytes)", len(raw))
            return
        self.received += 1
        self.answers.drop((topic.asset, topic.market))
        if any(topic.name in s.topics for s in self._subscribers):
            await self._send_current(topic)

    async def _catch_up(self) -> None:
        wanted = {name for s in self._subscribers for name in s.topics}
        for name in sorted(wanted):
            await self._send_current(parse_topics(name)[0])

    async def _send_current(self, topic: Topic) -> None:
        try:
            event = await self.current(topic)
        except Exception as exc:  # noqa: BLE001 - a storage error loses this event, never the hub
            log.warning("snapshot events: cannot read %s: %s: %s", topic.name, type(exc).__name__, redact_text(str(exc)))
            return
        if event is not None:
            self._offer(event)


def _event(topic: Topic, answer: Answer) -> Event | None:
    return None if answer.body is None or answer.as_of is None else Event(topic.name, answer.as_of, answer.body)


async def _pump(subscriber: Subscriber, first: list[Event], gone: Callable[[], Awaitable[None]],
                write: Callable[[Event | None], Awaitable[None]], heartbeat_s: float | None) -> None:
    """Write the subscriber's first events, then its live ones (None after ``heartbeat_s`` of silence), until it is
    dropped or ``gone`` returns (its client left); a topic's as_of never twice."""
    async with anyio.create_task_group() as group:
        async def stop_when_dropped_or_gone() -> None:
            waiters = [asyncio.ensure_future(subscriber.dropped.wait()), asyncio.ensure_future(gone())]
            try:
                await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for waiter in waiters:
                    waiter.cancel()
            group.cancel_scope.cancel()

        group.start_soon(stop_when_dropped_or_gone)
        for event in first:
            if subscriber.fresh(event):
                await write(event)
        while True:
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), heartbeat_s)
            except TimeoutError:
                await write(None)
                continue
            if subscriber.fresh(event):
                await write(event)


class EventStream(Response):
    """``text/event-stream`` of one subscriber: ``retry``, its first events, then live events and a heartbeat comment.

    A dropped client's connection is closed where it stands (its socket is full, so nothing more can be
    written to it, not even the end of the response): uvicorn then logs that the response was not completed.
    """

    media_type = "text/event-stream"

    def __init__(self, hub: EventHub, subscriber: Subscriber, first: list[Event], heartbeat_s: float) -> None:
        self.status_code, self.background = 200, None
        self.init_headers({"cache-control": "no-cache", "x-accel-buffering": "no"})  # no body, so no content-length
        self.hub, self.subscriber, self.first, self.heartbeat_s = hub, subscriber, first, heartbeat_s

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def gone() -> None:
            while (await receive())["type"] != "http.disconnect":
                pass

        async def write(event: Event | None) -> None:
            chunk = b": heartbeat\n\n" if event is None else event.sse
            await send({"type": "http.response.body", "body": chunk, "more_body": True})

        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            await send({"type": "http.response.body", "body": b"retry: %d\n\n" % RETRY_MS, "more_body": True})
            await _pump(self.subscriber, self.first, gone, write, self.heartbeat_s)
        finally:
            self.hub.unsubscribe(self.subscriber)


async def serve_websocket(websocket: WebSocket, hub: EventHub, topics: tuple[Topic, ...], last_event_id: str | None) -> None:
    """``/ws``: the stream of ``/events`` as JSON text messages ``{"id", "topic", "data"}`` (no heartbeat: the
    WebSocket pings)."""
    subscriber = hub.subscribe(topics)
    try:
        first = await hub.first_events(topics, last_event_id)
        await websocket.accept()

        async def gone() -> None:
            while (await websocket.receive())["type"] != "websocket.disconnect":
                pass

        async def write(event: Event | None) -> None:
            await websocket.send_text(event.text)

        await _pump(subscriber, first, gone, write, None)
    finally:
        hub.unsubscribe(subscriber)
