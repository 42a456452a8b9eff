"""Log lines that a service can repeat many times a second (junk frames, an outage) without flooding its log.

Each kind of line is logged as it first comes; more of the same kind within ``every`` seconds are only
counted, and once that time has passed one summary says how many there were, with the last of them:
``stream: 229 more like this in the last 60 s (last: ...)``. The next one after the summary is logged in
full again. ``flush()`` writes the summaries that are due, so a burst that stopped is still reported.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass
class _Kind:
    since: float
    level: int
    suppressed: int = 0
    last: str = ""


class ThrottledLog:
    """``log(kind, level, message, *args)`` at most once per ``every`` seconds per kind, with counts of the rest."""

    def __init__(self, logger: logging.Logger, every: float, *, prefix: str = "", clock: Callable[[], float] = time.monotonic):
        self.logger = logger
        self.every = every
        self.prefix = prefix
        self.clock = clock
        self._kinds: dict[str, _Kind] = {}

    def log(self, kind: str, level: int, message: str, *args: object, exc_info: bool = False) -> None:
        now = self.clock()
        seen = self._kinds.get(kind)
        if seen is not None and now - seen.since < self.every:
            seen.suppressed += 1
            seen.last = message % args if args else message
            return
        if seen is not None:
            self._summarise(kind, seen, now)
        self.logger.log(level, message, *args, exc_info=exc_info)
        self._kinds[kind] = _Kind(now, level)

    def flush(self, *, everything: bool = False) -> None:
        """Summaries of the kinds whose time has passed, or of all (at shutdown), and forget them (so the next line
        is logged in full)."""
        now = self.clock()
        for kind, seen in list(self._kinds.items()):
            if everything or now - seen.since >= self.every:
                self._summarise(kind, seen, now)

    def _summarise(self, kind: str, seen: _Kind, now: float) -> None:
        del self._kinds[kind]
        if seen.suppressed:
            self.logger.log(seen.level, "%s%d more like this in the last %.0f s (last: %s)", self.prefix, seen.suppressed,
                            now - seen.since, seen.last[:300])
