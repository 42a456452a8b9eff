"""SSE clients for bench/push.py, in a process of their own: ``--clients`` connections to ``GET /events``.

Each connection reads the chunked event stream (raw asyncio, uvloop when installed) and notes when each
event id arrived on ``time.monotonic()`` (the system's monotonic clock, the same in every process of the
machine). When every client has its first event (the current snapshot) the process prints ``ready``;
once each has ``--events`` more, or ``--timeout`` passes, it writes ``{"arrivals": [[[id, t], ...], ...]}`` to ``--out``
(a file: a pipe closed under the event loop's non-blocking writes cut the JSON at 64 KB).

    python bench/sse_clients.py http://127.0.0.1:8000 market_status --clients 100 --events 20 --out arrivals.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from pathlib import Path
from urllib.parse import urlsplit

from http_load import run_fast  # bench/, the script's folder


async def _client(host: str, port: int, topics: str, events: int, arrivals: list[tuple[str, float]], ready: asyncio.Queue) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(b"GET /events?topics=%s HTTP/1.1\r\nHost: %s\r\nAccept: text/event-stream\r\n\r\n" % (topics.encode(), host.encode()))
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        buffer = b""
        while len(arrivals) < events + 1:
            size = int((await reader.readuntil(b"\r\n")).strip(), 16)  # chunked transfer encoding: size, data, CRLF
            buffer += await reader.readexactly(size + 2)
            buffer = buffer[:-2]
            *complete, buffer = buffer.split(b"\n\n")
            for message in complete:
                for line in message.split(b"\n"):
                    if line.startswith(b"id: "):
                        arrivals.append((line[4:].decode(), time.monotonic()))
                        if len(arrivals) == 1:
                            ready.put_nowait(None)
    finally:
        writer.close()


async def listen(url: str, topics: str, clients: int, events: int, timeout: float) -> list[list[tuple[str, float]]]:
    parts = urlsplit(url)
    arrivals: list[list[tuple[str, float]]] = [[] for _ in range(clients)]
    ready: asyncio.Queue = asyncio.Queue()
    tasks = [asyncio.create_task(_client(parts.hostname, parts.port, topics, events, mine, ready)) for mine in arrivals]
    for _ in range(clients):
        await ready.get()
    print("ready", flush=True)
    await asyncio.wait(tasks, timeout=timeout)
    for task in tasks:
        task.cancel()
    return arrivals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("topics")
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--events", type=int, default=20)
    parser.add_argument("--timeout", type=float, default=120.0)
    parser.add_argument("--out", type=Path, required=True, help="the file the arrivals are written to")
    args = parser.parse_args()
    arrivals = run_fast(listen(args.url, args.topics, args.clients, args.events, args.timeout))
    args.out.write_text(json.dumps({"arrivals": arrivals}))


if __name__ == "__main__":
    main()
