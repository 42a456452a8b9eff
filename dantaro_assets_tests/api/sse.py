"""A Server-Sent Events reader over an httpx stream, for the event tests and the push benchmark.

It parses the wire format as a browser's EventSource does (fields ``id``, ``event``, ``data``, ``retry``;
``:`` comments), so the tests read exactly what a browser would.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Message:
    """One dispatched event, or a comment (``comment`` set, the rest empty)."""

    id: str | None = None
    event: str | None = None
    data: str = ""
    retry: int | None = None
    comment: str | None = None
    fields: list[str] = field(default_factory=list)

    def json(self) -> Any:
        return json.loads(self.data)


class _Parser:
    def __init__(self) -> None:
        self.message = Message()

    def feed(self, line: str) -> Message | None:
        """The message a blank line completes, or a comment; None while one is being read."""
        if line == "":
            done, self.message = self.message, Message()
            return done if done.fields else None
        if line.startswith(":"):
            return Message(comment=line[1:].strip())
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        self.message.fields.append(name)
        if name == "data":
            self.message.data = value if "data" not in self.message.fields[:-1] else f"{self.message.data}\n{value}"
        elif name == "id":
            self.message.id = value
        elif name == "event":
            self.message.event = value
        elif name == "retry" and value.isdigit():
            self.message.retry = int(value)
        return None


def messages(lines: Iterable[str]) -> Iterator[Message]:
    """Messages and comments of a stream's lines (``response.iter_lines()``)."""
    parser = _Parser()
    for line in lines:
        if (message := parser.feed(line)) is not None:
            yield message


async def amessages(lines: AsyncIterator[str]) -> AsyncIterator[Message]:
    """``messages`` of an async stream (``response.aiter_lines()``)."""
    parser = _Parser()
    async for line in lines:
        if (message := parser.feed(line)) is not None:
            yield message


def events(lines: Iterable[str]) -> Iterator[Message]:
    """Only the events (``id``/``event``/``data``), no comments or bare ``retry``."""
    return (m for m in messages(lines) if m.comment is None and "data" in m.fields)
