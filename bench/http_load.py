"""A load generator for the API benchmarks: keep-alive HTTP/1.1 GETs from a process of its own.

``--concurrency`` connections each send a request, read the whole answer (it has a Content-Length, as the
API's JSON answers do) and send the next, until ``--requests`` answers are in; each answer's time is from
the request's write to its last byte. Raw asyncio streams (uvloop when installed), not an HTTP library,
so the generator costs the machine little next to the server it measures. Prints one JSON object:
``{"seconds", "errors", "latencies_ms": {path: [...]}}`` (an error: a status other than 200, or a broken
connection).

    python bench/http_load.py http://127.0.0.1:8000 /market-status/latest /support-levels/KRW-BTC --concurrency 20 --requests 20000
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import time
from collections.abc import Coroutine
from typing import Any, TypeVar
from urllib.parse import urlsplit

T = TypeVar("T")


async def _connection(host: str, port: int, paths: itertools.cycle, left: list[int], latencies: dict[str, list[float]],
                      errors: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while left[0] > 0:
            left[0] -= 1
            path = next(paths)
            started = time.perf_counter()
            writer.write(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
            head = await reader.readuntil(b"\r\n\r\n")
            length = next(int(line.split(b":", 1)[1]) for line in head.split(b"\r\n") if line.lower().startswith(b"content-length:"))
            await reader.readexactly(length)
            latencies[path].append((time.perf_counter() - started) * 1000)
            if head[9:12] != b"200":
                errors[0] += 1
    except (OSError, asyncio.IncompleteReadError, StopIteration):
        errors[0] += 1
    finally:
        writer.close()


async def load(url: str, paths: list[str], concurrency: int, requests: int) -> dict:
    parts = urlsplit(url)
    latencies: dict[str, list[float]] = {path: [] for path in paths}
    left, errors = [requests], [0]
    cycle = itertools.cycle(paths)
    started = time.perf_counter()
    await asyncio.gather(*(_connection(parts.hostname, parts.port, cycle, left, latencies, errors) for _ in range(concurrency)))
    return {"seconds": time.perf_counter() - started, "errors": errors[0], "latencies_ms": latencies}


def run_fast(main: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on uvloop when it is installed (uvicorn's extra brings it): the client costs less."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("paths", nargs="+")
    parser.add_argument("--concurrency", type=int, default=20)
    parser.add_argument("--requests", type=int, default=20_000)
    args = parser.parse_args()
    print(json.dumps(run_fast(load(args.url, args.paths, args.concurrency, args.requests))))


if __name__ == "__main__":
    main()
